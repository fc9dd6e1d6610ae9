"""The weight rule: noise earns nothing, signal is paid, copies and self-influence buy nothing."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attribution.engines.weights import (
    NULL_ALPHA,
    RULE_NO_SIGNAL,
    RULE_SIGNAL,
    ModelWeightsAccumulator,
    contributor_ranking,
    contributor_shares,
    contributor_shares_matrix,
    explanation_rows,
    model_contributor_weights,
    model_weights,
    null_z,
    relative_influence,
    smooth_excess,
)

CONTRIBUTORS = ["alice", "bob", "alice", "carol", None]


def population(rng, sizes: dict[str, int], queries: int, means: dict[str, float] | None = None, spread=1.0):
    """A score matrix: each contributor's records get N(mean, 1) scores (heavy-ish tails via a per-query
    scale, as real influence scores have); returns (scores, contributors, record ids)."""
    means = means or {}
    contributors = [name for name, n in sizes.items() for _ in range(n)]
    mu = np.array([means.get(c, 0.0) for c in contributors])
    scores = rng.standard_normal((queries, len(contributors))) * spread + mu
    scores *= np.exp(rng.standard_normal((queries, 1)))  # queries differ in scale
    return scores, contributors, [f"r{i}" for i in range(len(contributors))]


# --- one query (one answer's split: the net-clipped rule on relative influence) ---------------------------------------------


def test_query_shares_are_net_influence_clipped_at_zero():
    shares = contributor_shares(np.array([3.0, 1.0, -5.0, 0.0, 1.0]), CONTRIBUTORS)
    assert shares == {"bob": 0.5, "": 0.5}
    shares = contributor_shares(np.array([3.0, 1.0, -1.0, 0.0, 1.0]), CONTRIBUTORS)
    assert shares == {"alice": 0.5, "bob": 0.25, "": 0.25}
    assert contributor_shares(np.array([-1.0, -2.0, 0.0, -0.5, 0.0]), CONTRIBUTORS) == {}
    names, _, negative = contributor_shares_matrix(np.array([[3.0, 1.0, -5.0, 0.0, 1.0]]), CONTRIBUTORS)
    assert names == ["", "alice", "bob", "carol"] and negative[0].tolist() == [0.0, -5.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="4 scores per query but 5 records"):
        contributor_shares(np.zeros(4), CONTRIBUTORS)
    assert contributor_ranking({"b": 0.5, "a": 0.5, "c": 0.9}) == ["c", "a", "b"]


# --- the model level ---------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), n_noise=st.integers(1, 3000), queries=st.integers(5, 300),
       contributors=st.integers(1, 6))
def test_pure_noise_pays_nobody_whatever_the_record_count(seed, n_noise, queries, contributors):
    rng = np.random.default_rng(seed)
    sizes = {f"c{i}": max(1, n_noise // (i + 1)) for i in range(contributors)}
    scores, owners, _ = population(rng, sizes, queries)
    result = model_weights(scores, owners)
    # No contributor shows an effect: the flag says so and the split is equal per contributor, so
    # uploading more noise records buys nothing.
    assert not result.signal and result.rule == RULE_NO_SIGNAL
    assert result.weights == pytest.approx({name: 1 / len(sizes) for name in sizes})


@settings(max_examples=40, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), n_noise=st.integers(1, 3000), n_signal=st.integers(5, 200),
       mu=st.floats(0.2, 2.0))
def test_true_signal_gets_the_weight_and_noise_stays_bounded(seed, n_noise, n_signal, mu):
    rng = np.random.default_rng(seed)
    scores, owners, _ = population(rng, {"honest": n_signal, "stuffer": n_noise, "other": 30}, 200,
                                   means={"honest": mu})
    result = model_weights(scores, owners)
    assert result.signal and result.rule == RULE_SIGNAL
    assert sum(result.weights.values()) == pytest.approx(1.0, abs=1e-12)
    # once a signal is established, a noise contributor is paid only its smoothed excess over PAY_Z null
    # standard errors: small, whatever its number of records
    # (per draw it is a random excess; its expectation is tested below)
    assert result.weights["stuffer"] + result.weights["other"] <= 0.25
    assert result.weights["honest"] == max(result.weights.values())


def test_a_noise_contributors_expected_share_does_not_grow_with_its_records():
    """The old per-query clipping paid zero-mean noise a share that grew with its record count; now the
    expected share of a stuffer is small and the same for 10 or 3,000 noise records."""
    rng = np.random.default_rng(11)
    mean_share = {}
    for n_noise in (10, 3000):
        shares = []
        for _ in range(150):
            scores, owners, _ = population(rng, {"honest": 60, "stuffer": n_noise}, 200, means={"honest": 0.5})
            shares.append(model_weights(scores, owners).weights["stuffer"])
        mean_share[n_noise] = float(np.mean(shares))
    assert mean_share[10] <= 0.04 and mean_share[3000] <= 0.04, mean_share
    assert mean_share[3000] <= mean_share[10] + 0.02, mean_share


def test_false_positive_rate_is_below_alpha():
    # The Hoeffding quantile bounds the chance that ANY of K no-effect contributors is paid by alpha.
    rng = np.random.default_rng(7)
    trials, paid = 600, 0
    for _ in range(trials):
        scores, owners, _ = population(rng, {"a": 3, "b": 40, "c": 400}, 30)
        paid += model_weights(scores, owners).signal
    assert paid / trials <= NULL_ALPHA
    assert null_z(8) == pytest.approx(np.sqrt(2 * np.log(800)))


def test_a_net_harmful_contributor_is_paid_nothing():
    rng = np.random.default_rng(1)
    scores, owners, _ = population(rng, {"honest": 50, "noisy": 50, "other": 50}, 150,
                                   means={"honest": 0.5, "noisy": -0.3, "other": 0.3})
    result = model_weights(scores, owners)
    assert result.weights["noisy"] == 0 and result.mean["noisy"] < 0
    assert result.weights["honest"] > result.weights["other"] > 0


@pytest.mark.parametrize("seed", range(6))
def test_a_weak_honest_contributor_is_paid_and_ranked_above_the_harmful(seed):
    """A weakly useful contributor (0 to 3 standard errors, not distinguishable from noise alone) is paid
    something, always more than a slightly harmful one, who is paid ~0; one shown harmful is paid exactly 0.
    The hard excess over one standard error paid such a contributor 0, tied with the mislabelled ones."""
    rng = np.random.default_rng(seed)
    scores, owners, _ = population(rng, {"strong": 50, "weak": 50, "noisy": 50, "poisoner": 30, "stuffer": 300},
                                   200, means={"strong": 0.4, "weak": 0.02, "noisy": -0.2, "poisoner": -0.04})
    result = model_weights(scores, owners)
    z = {c: result.mean[c] / result.threshold[c] * null_z(5) for c in result.mean}
    assert result.signal and 0 < z["weak"] < 3 and z["noisy"] < -null_z(5)
    assert result.weights["weak"] > 1e-4
    assert result.weights["weak"] > 100 * result.weights["poisoner"] and result.weights["poisoner"] < 1e-4
    assert result.weights["noisy"] == 0.0  # shown harmful: nothing, not a tiny amount
    assert result.weights["strong"] > 0.85


def test_the_smoothed_excess():
    from scipy.stats import norm

    u = np.array([-30.0, -8.0, -3.0, -1.0, 0.0, 0.5, 2.0, 9.0])
    assert smooth_excess(u) == pytest.approx(u * norm.cdf(u) + norm.pdf(u), rel=1e-9, abs=1e-300)
    assert np.all(np.diff(smooth_excess(u)) > 0) and np.all(smooth_excess(u) > 0)
    assert smooth_excess(np.array([40.0]))[0] == pytest.approx(40.0)  # ~ the hard excess far above the line


@settings(max_examples=30, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), copies=st.integers(1, 40), jitter=st.floats(0, 0.5))
def test_copying_another_contributors_records_does_not_raise_the_copiers_weight(seed, copies, jitter):
    rng = np.random.default_rng(seed)
    scores, owners, ids = population(rng, {"victim": 40, "copier": 20, "honest": 40}, 120,
                                     means={"victim": 0.6, "copier": 0.2, "honest": 0.4})
    order = list(range(len(ids)))
    before = model_weights(scores, owners, record_ids=ids, order=order)
    # The copier adds near-copies of the victim's best records: their scores nearly equal the originals'.
    victim_cols = [i for i, o in enumerate(owners) if o == "victim"]
    best = sorted(victim_cols, key=lambda i: -scores[:, i].mean())[:copies]
    copied = scores[:, best] + jitter * rng.standard_normal((scores.shape[0], len(best)))
    new_ids = [f"copy{j}" for j in range(len(best))]
    clusters = {**{ids[i]: f"k{i}" for i in best}, **{nid: f"k{i}" for nid, i in zip(new_ids, best, strict=True)}}
    after = model_weights(np.hstack([scores, copied]), owners + ["copier"] * len(best), record_ids=ids + new_ids,
                          clusters=clusters, order=order + [len(ids) + j for j in range(len(best))])
    assert after.weights["copier"] <= before.weights["copier"] + 1e-12
    assert after.weights == pytest.approx(before.weights)  # the copies changed nothing at all
    # The earliest accepted copy is credited, whoever holds it: give the copies the earlier keys and
    # the victim's originals stop earning instead.
    reversed_order = model_weights(np.hstack([scores, copied]), owners + ["copier"] * len(best),
                                   record_ids=ids + new_ids, clusters=clusters,
                                   order=[o + len(best) for o in order] + list(range(len(best))))
    assert reversed_order.mean["copier"] > after.mean["copier"]


def test_a_query_never_scores_its_own_record_or_its_twins():
    # Every query is one of the records (a model without an eval split); each record "explains" itself
    # hugely. The twin planter's records also explain their twin.
    rng = np.random.default_rng(3)
    sizes = {"a": 30, "b": 30, "twins": 30}
    scores, owners, ids = population(rng, sizes, 90)
    scores = scores * 0.1
    scores[np.arange(90), np.arange(90)] += 10.0  # self-influence
    twin_of = {i: i + 1 if i % 2 == 0 else i - 1 for i in range(60, 90)}
    for i, j in twin_of.items():
        scores[i, j] += 10.0
    naive = model_weights(scores, owners)
    assert naive.signal  # self-influence alone looks like signal
    no_self = model_weights(scores, owners, record_ids=ids, query_ids=ids)
    assert no_self.signal and no_self.weights["twins"] > 0.9  # without the cluster map the twins still pay
    clusters = {ids[i]: f"pair{min(i, j)}" for i, j in twin_of.items()}
    fair = model_weights(scores, owners, record_ids=ids, clusters=clusters, query_ids=ids)
    assert not fair.signal and fair.rule == RULE_NO_SIGNAL


def test_chunking_scaling_and_order_of_queries_do_not_change_the_weights():
    rng = np.random.default_rng(5)
    scores, owners, ids = population(rng, {"a": 20, "b": 60, "c": 5}, 100, means={"a": 0.4, "c": 0.8})
    owners[3] = None  # an unattributed record is pooled under ""
    qids = ids + [None] * 15  # 85 queries are records, 15 are not
    whole = model_weights(scores, owners, record_ids=ids, query_ids=qids)
    acc = ModelWeightsAccumulator(owners, record_ids=ids)
    for start in range(0, 100, 17):
        acc.add(scores[start : start + 17], query_ids=qids[start : start + 17])
    assert acc.result().weights == pytest.approx(whole.weights, abs=1e-12)
    assert set(whole.weights) == {"", "a", "b", "c"}
    scaled = scores * rng.uniform(0.01, 100, size=(100, 1))
    assert model_weights(scaled, owners, record_ids=ids, query_ids=qids).weights == pytest.approx(whole.weights)
    perm = rng.permutation(100)
    assert model_weights(scores[perm], owners, record_ids=ids,
                         query_ids=[qids[i] for i in perm]).weights == pytest.approx(whole.weights)
    assert whole.signal and whole.weights["c"] > 0
    assert acc.negative()["a"] < 0 and acc.record_positive().shape == (85,)


def test_no_scores_and_bad_shapes():
    result = model_weights(np.zeros((4, 5)), CONTRIBUTORS)
    assert not result.signal and result.weights == {"": 0.25, "alice": 0.25, "bob": 0.25, "carol": 0.25}
    assert model_contributor_weights(-np.ones((3, 5)), CONTRIBUTORS) == result.weights
    with pytest.raises(ValueError, match="4 scores per query but 5 records"):
        model_weights(np.zeros((2, 4)), CONTRIBUTORS)
    with pytest.raises(ValueError, match="clusters need the record ids"):
        ModelWeightsAccumulator(CONTRIBUTORS, clusters={"x": 1})
    with pytest.raises(ValueError, match="query ids need the record ids"):
        model_weights(np.zeros((1, 5)), CONTRIBUTORS, query_ids=["r1"])


def test_a_copy_of_a_held_out_original_is_not_credited_as_the_original():
    """The original (accept order 0) is a validation query, so only its copy is a training record: the copy
    must not collect the original's credit."""
    rng = np.random.default_rng(3)
    n_q = 200
    honest = [f"h{i}" for i in range(20)]
    record_ids = [*honest, "copy"]
    owners = ["honest"] * 20 + ["copier"]
    scores = np.concatenate([rng.normal(0.5, 1.0, (n_q, 20)), rng.normal(3.0, 1.0, (n_q, 1))], axis=1)
    clusters = {"original": "k", "copy": "k"}
    order = [*range(1, 21), 21]
    paid_as_original = model_weights(scores, owners, record_ids=record_ids, clusters=clusters, order=order)
    assert paid_as_original.weights["copier"] > 0.1  # the gap: among training records the copy is earliest
    fixed = model_weights(scores, owners, record_ids=record_ids, clusters=clusters, order=order,
                          cluster_first_order={"k": 0})
    assert fixed.weights["copier"] == 0.0 and fixed.weights["honest"] == pytest.approx(1.0)


def test_no_signal_split_leaves_out_a_contributor_shown_harmful():
    """Nobody beats the null, but one contributor is significantly harmful: the equal split skips it."""
    rng = np.random.default_rng(5)
    scores, owners, _ = population(rng, {"a": 40, "b": 40, "noisy": 40}, 200, means={"noisy": -0.8})
    result = model_weights(scores, owners)
    assert not result.signal and result.rule == RULE_NO_SIGNAL
    assert result.mean["noisy"] < -result.threshold["noisy"]
    assert result.weights == pytest.approx({"a": 0.5, "b": 0.5, "noisy": 0.0})


# --- records shown for one query -----------------------------------------------------------------------


def test_shown_records_are_ranked_by_relative_influence_not_by_gradient_size():
    """Scores g_q^T P g_i of three records: a high-loss record (large gradient, loosely aligned with the query)
    outscores two aligned records whose gradients are small; relative influence ranks the aligned first."""
    rng = np.random.default_rng(0)
    g_q = rng.standard_normal(16)
    aligned = [0.05 * (g_q + 0.1 * rng.standard_normal(16)) for _ in range(2)]
    loud = 20.0 * (rng.standard_normal(16) + 0.2 * g_q)
    unrelated = rng.standard_normal(16)
    grads = np.stack([loud, *aligned, unrelated])
    scores = grads @ g_q
    self_influence = (grads * grads).sum(axis=1)
    assert np.argmax(scores) == 0  # raw score: the loud record first
    rows, relevance = explanation_rows(scores, self_influence, 3)
    assert sorted(rows[:2].tolist()) == [1, 2] and rows[2] == 0
    assert relevance.tolist() == sorted(relevance.tolist(), reverse=True)
    # Cauchy-Schwarz: relative influence never exceeds the query's own norm, even for a near-zero gradient
    tiny = np.append(scores, 1e-12 * g_q @ g_q)
    rows, relevance = explanation_rows(tiny, np.append(self_influence, 1e-24 * g_q @ g_q), 5)
    assert relevance.max() <= np.linalg.norm(g_q) * (1 + 1e-6)
    assert explanation_rows(scores, self_influence, 0)[0].size == 0
    assert explanation_rows(scores, self_influence, 99)[0].size == 4
    with pytest.raises(ValueError, match="4 scores but 3 self-influence"):
        explanation_rows(scores, self_influence[:3], 2)


def test_one_answer_is_split_by_the_relative_influence_it_shows():
    """A loud record (large gradient, loosely aligned) outscores a contributor's three aligned records on raw
    score and would take most of the answer's split; on relative influence, the numbers the records shown are
    ranked by, the aligned contributor holds the top share, and the shown top rows are theirs."""
    rng = np.random.default_rng(1)
    g_q = rng.standard_normal(16)
    aligned = [0.05 * (g_q + 0.1 * rng.standard_normal(16)) for _ in range(3)]
    noise = rng.standard_normal(16)
    noise -= (noise @ g_q) / (g_q @ g_q) * g_q  # orthogonal to the query: only the 0.3 g_q part scores
    loud = 30.0 * (noise + 0.3 * g_q)
    grads = np.stack([loud, *aligned])
    owners = ["stuffer", "poisoner", "poisoner", "poisoner"]
    scores, self_influence = grads @ g_q, (grads * grads).sum(axis=1)
    assert scores[0] > scores[1:].sum() > 0  # raw: the loud record's owner would take the split
    assert max(contributor_shares(scores, owners).items(), key=lambda kv: kv[1])[0] == "stuffer"
    relative = relative_influence(scores, self_influence)
    np.testing.assert_allclose(relative, scores / np.sqrt(self_influence))
    rows, shown = explanation_rows(scores, self_influence, 4)
    np.testing.assert_array_equal(shown, relative[rows])  # what is shown is what is split
    shares = contributor_shares(relative, owners)
    assert shares["poisoner"] > 0.5 and shares["poisoner"] > shares.get("stuffer", 0.0)
    assert sorted(rows[:3].tolist()) == [1, 2, 3]
    # a (queries, records) matrix works row by row; a length mismatch is refused
    np.testing.assert_allclose(relative_influence(np.stack([scores, -scores]), self_influence), [relative, -relative])
    with pytest.raises(ValueError, match="4 scores but 3 self-influence"):
        relative_influence(scores, self_influence[:3])
