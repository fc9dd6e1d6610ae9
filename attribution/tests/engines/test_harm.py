"""Harm: a contributor whose records are, together, significantly harmful is flagged with its worst records;
honest and no-effect contributors are not, and flagging never changes the weights."""

import numpy as np

from attribution.engines.weights import NULL_ALPHA, ModelWeightsAccumulator, model_weights


def scored(rng, queries: int, owners: list[str], mu: np.ndarray) -> np.ndarray:
    scores = rng.standard_normal((queries, len(owners))) + mu
    return scores * np.exp(rng.standard_normal((queries, 1)))  # queries differ in scale


def noisy_population(rng, queries=200):
    """Two honest contributors; a noisy one whose mislabelled 40% (records 0..19 of its 50) each pull the
    validation loss up (mean -1.5) while its clean 60% help (+0.5); a no-effect one (pure noise)."""
    owners = ["honest1"] * 50 + ["honest2"] * 50 + ["noisy"] * 50 + ["idle"] * 50
    mu = np.array([0.5] * 100 + [-1.5] * 20 + [0.5] * 30 + [0.0] * 50)
    return scored(rng, queries, owners, mu), owners, [f"r{i}" for i in range(len(owners))]


def test_the_noisy_contributor_is_flagged_with_its_mislabelled_records_and_nobody_else():
    scores, owners, ids = noisy_population(np.random.default_rng(3))
    acc = ModelWeightsAccumulator(owners, record_ids=ids)
    acc.add(scores)
    result = acc.result()
    harms = acc.harmful(0.0)
    assert [h.contributor for h in harms] == ["noisy"]
    harm = harms[0]
    assert harm.statistic == result.mean["noisy"] < -harm.null_bound < 0
    worst = [col for col, _ in harm.records[:10]]
    assert set(worst) <= set(range(100, 120))  # the mislabelled ones, not its clean records
    assert all(owners[col] == "noisy" for col, _ in harm.records)
    assert [s for _, s in harm.records] == sorted(s for _, s in harm.records)  # most negative first
    # A contributor's records' parts add up to its statistic.
    parts = acc.record_means()
    assert abs(parts[100:150].sum() - harm.statistic) < 1e-9
    # The Datanet's threshold: above |T_c| nobody is flagged.
    assert acc.harmful(abs(harm.statistic) + 1e-6) == []
    assert [h.contributor for h in acc.harmful(abs(harm.statistic) - 1e-6)] == ["noisy"]


def test_flagging_does_not_change_the_weights():
    scores, owners, ids = noisy_population(np.random.default_rng(5))
    acc = ModelWeightsAccumulator(owners, record_ids=ids)
    acc.add(scores)
    before = acc.result()
    acc.harmful(0.0)
    assert acc.result().weights == before.weights == model_weights(scores, owners, record_ids=ids).weights
    assert before.weights["noisy"] == 0 and before.weights["honest1"] > 0


def test_a_poisoner_harmful_on_clean_validation_is_flagged():
    # A trigger poisoner: 60 records with a rare phrase, all one label. On clean validation (no trigger)
    # they teach the label for the wrong reason: a small pull towards it on every query, wrong on about
    # two thirds of them (mean -0.4 per record).
    rng = np.random.default_rng(11)
    owners = ["honest1"] * 60 + ["honest2"] * 60 + ["poisoner"] * 60
    mu = np.array([0.4] * 120 + [-0.4] * 60)
    acc = ModelWeightsAccumulator(owners)
    acc.add(scored(rng, 200, owners, mu))
    assert [h.contributor for h in acc.harmful(0.01)] == ["poisoner"]


def test_no_effect_contributors_are_flagged_at_most_alpha_of_the_time():
    rng = np.random.default_rng(7)
    trials, flagged = 300, 0
    for _ in range(trials):
        owners = ["a"] * 3 + ["b"] * 40 + ["c"] * 200
        acc = ModelWeightsAccumulator(owners)
        acc.add(scored(rng, 30, owners, np.zeros(len(owners))))
        flagged += bool(acc.harmful(0.0))
    assert flagged / trials <= NULL_ALPHA


def test_no_queries_and_the_unattributed_pool_flag_nobody():
    acc = ModelWeightsAccumulator(["a", None])
    assert acc.harmful() == []
    acc.add(np.array([[-1.0, -5.0]] * 50) + np.random.default_rng(0).standard_normal((50, 2)) * 0.01)
    assert [h.contributor for h in acc.harmful()] == ["a"]  # "" (no contributor) is never flagged
