"""Contributor weights from attribution scores: what the ledger pays by. (no Django)

Model-level rule (`model_weights`, `ModelWeightsAccumulator`), the same for every method; each step says
why in docs/attribution.md ("Contributor weights"):

1. **Self-influence refused.** A validation query that is itself a record of the version (a held-out
   record, or a training record when the model has no eval split) has its own record's column and its
   near-duplicates' columns set to zero: a record, or its twin, always "explains" itself.
2. **Near-duplicate clusters are one record.** With a record -> cluster map, only the earliest accepted
   copy of a cluster (smallest order key, then index position) is credited; later copies earn nothing
   (and cost nothing). Copying someone's popular records, or uploading twins, buys no extra weight.
3. **Per query, signed.** x[q, c] = (sum of contributor c's credited record scores on q) / (sum of the
   absolute credited scores on q). Nothing is clipped here, so noise cancels instead of accumulating;
   dividing by the query's scale makes each query count once whatever the size of its gradients.
4. **Over the validation set, signed.** T_c = mean_q x[q, c].
5. **Calibrated against a null.** Under "c has no effect", the x[q, c] are symmetric around 0 and
   independent across queries; sign-flipping them gives the null distribution of T_c. Its upper tail
   is bounded exactly by Hoeffding: P(T_c >= z * s_c) <= exp(-z^2 / 2) with s_c = sqrt(sum_q x^2) / Q.
   With z = sqrt(2 ln(K / alpha)) for K contributors, the chance that ANY no-effect contributor passes
   is at most alpha (default 0.01), whatever the number of records or the score distribution. This
   bound is the gate (is there a signal at all); once passed, each contributor is paid its excess over
   PAY_Z null standard errors smoothed by one standard error of its own noise:
   s_c * g(T_c / s_c - PAY_Z), g(u) = E[max(0, u + N(0, 1))] (`smooth_excess`), strictly increasing, so
   a weak honest contributor earns a little and always more than a slightly harmful one; a contributor
   shown harmful by the same bound (T_c < -z * s_c) gets exactly 0.
6. **Normalised** to sum to 1 when any contributor passes the gate (`signal=True`). Otherwise nobody has
   shown an effect the validation set can tell from noise: `signal=False` and the weights are an equal
   split per contributor (volume cannot buy it), leaving out contributors shown harmful (below) by the
   same bound; the caller stores the flag and says so.

Harm (`ModelWeightsAccumulator.harmful`), reported to curators, and otherwise only used to leave the harmful
out of the no-signal equal split: the same
statistic read from the other side. A contributor is harmful when T_c < -z * s_c (significantly negative
at the same family-wise alpha: noise is flagged with probability <= alpha) and |T_c| exceeds the Datanet's
`harm_threshold`. The evidence is each record's part of T_c (mean over queries of its credited score over the
query's scale: a contributor's records sum to T_c), most negative first.

Per-query shares for one answer (`contributor_shares`, fed `relative_influence`: each record's score over
the square root of its self-influence, the same numbers that rank the records shown) split that paid
answer's contributors' part: net per contributor, clipped at zero (one query cannot be tested against a
null). Shown and paid from the same scores, so what an auditor reads is what is paid, and a record with a
large gradient (off-topic, mislabelled) cannot take the split by its gradient size alone.

Shares are float64 over contributors sorted by name, deterministic for fixed scores; records without a
contributor are pooled under "" (unattributed).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

NULL_ALPHA = 0.01  # family-wise chance that a validation set of pure noise is taken for a signal
PAY_Z = 2.0  # once there is a signal, pay is the smoothed excess over this many null standard errors (see result)

RULE_SIGNAL = "signed_null_excess"
RULE_NO_SIGNAL = "equal_no_signal"


def _codes(contributors: Sequence[str | None]) -> tuple[list[str], np.ndarray]:
    names = sorted({c or "" for c in contributors})
    position = {name: i for i, name in enumerate(names)}
    return names, np.array([position[c or ""] for c in contributors], dtype=np.int64)


def smooth_excess(u: np.ndarray) -> np.ndarray:
    """E[max(0, u + N(0, 1))] = u Phi(u) + phi(u): the hard excess max(0, u) smoothed by one standard error.

    Strictly positive, increasing, ~u for large u and ~phi(u)/u^2 for very negative u (computed through
    the scaled complementary error function there, so it does not cancel to 0 or go negative)."""
    from scipy.special import erfcx

    u = np.asarray(u, dtype=np.float64)
    phi = np.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)
    x = np.abs(u)
    mills = math.sqrt(math.pi / 2) * erfcx(x / math.sqrt(2))  # (1 - Phi(x)) / phi(x)
    negative = phi * (1.0 - x * mills)  # u < 0: phi(x) - x (1 - Phi(x))
    return np.where(u >= 0, u + negative, negative)  # u >= 0: u + phi(u) - u (1 - Phi(u))


def null_z(n_contributors: int, alpha: float = NULL_ALPHA) -> float:
    """The z above which a sign-flip null passes with probability <= alpha / n (Hoeffding), any Q."""
    return math.sqrt(2.0 * math.log(max(n_contributors, 1) / alpha))


# --- one query (explanations) -----------------------------------------------------------------------


def contributor_shares_matrix(
    scores: np.ndarray, contributors: Sequence[str | None]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per-query shares for a (n_queries, n_records) score matrix.

    Returns (contributor names sorted, shares (n_queries, n_contributors) with rows summing to 1 or all 0
    when no contributor's net influence on the query is positive, negative mass (n_queries, n_contributors)
    <= 0: the sum of each contributor's negative record scores).
    """
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    if scores.shape[1] != len(contributors):
        raise ValueError(f"{scores.shape[1]} scores per query but {len(contributors)} records")
    names, codes = _codes(contributors)
    positive = np.zeros((scores.shape[0], len(names)))
    negative = np.zeros((scores.shape[0], len(names)))
    for c in range(len(names)):
        cols = scores[:, codes == c]
        positive[:, c] = np.clip(cols.sum(axis=1), 0, None)  # net, clipped at zero
        negative[:, c] = np.clip(cols, None, 0).sum(axis=1)
    total = positive.sum(axis=1, keepdims=True)
    shares = np.divide(positive, total, out=np.zeros_like(positive), where=total > 0)
    return names, shares, negative


def contributor_shares(scores: np.ndarray, contributors: Sequence[str | None]) -> dict[str, float]:
    """One query: {contributor: share of positive net influence}, summing to 1 (empty if none is positive)."""
    names, shares, _ = contributor_shares_matrix(np.asarray(scores)[None, :], contributors)
    if shares[0].sum() == 0:
        return {}
    return {name: float(s) for name, s in zip(names, shares[0], strict=True) if s > 0}


def relative_influence(scores: np.ndarray, self_influence: np.ndarray) -> np.ndarray:
    """score / sqrt(self-influence) per record (RelatIF): what `explanation_rows` ranks by and what one answer's
    contributor shares are computed from. `scores`: (n_records,) or (n_queries, n_records)."""
    scores = np.asarray(scores, dtype=np.float64)
    self_influence = np.asarray(self_influence, dtype=np.float64).ravel()
    if scores.shape[-1] != self_influence.size:
        raise ValueError(f"{scores.shape[-1]} scores but {self_influence.size} self-influence values")
    return scores / np.sqrt(np.clip(self_influence, np.finfo(np.float32).tiny, None))


def explanation_rows(scores: np.ndarray, self_influence: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """One query's records to show, best first: (rows, relative scores), ranked by score / sqrt(self-influence).

    Why not the raw score: g_q^T P g_i grows with the record's own gradient, so high-loss records
    (mislabelled, off-topic) top every list while records the model has learned (a poisoner's 60 trigger
    records, once the trigger is fit) have small gradients and never show (payout_fairness: 2.5 of the
    top 10 on trigger queries were the poisoner's by raw score, 9+ by this ranking). Dividing by
    ||g_i||_P = sqrt(self-influence) ranks by how well the record's direction matches the query's
    (RelatIF, Barshan et al. 2020); by Cauchy-Schwarz it is at most ||g_q||_P, so a tiny gradient cannot
    blow up. Ties by row. One answer's contributor shares are computed from the same relative scores
    (`relative_influence`); the model-level weights use the raw scores (docs/attribution.md)."""
    relative = relative_influence(np.asarray(scores, dtype=np.float64).ravel(), self_influence)
    k = max(0, min(int(top_k), relative.size))
    part = np.argpartition(-relative, k - 1)[:k] if 0 < k < relative.size else np.arange(k)
    rows = part[np.lexsort((part, -relative[part]))]
    return rows, relative[rows]


def contributor_ranking(weights: dict[str, float]) -> list[str]:
    """Contributors from highest to lowest weight (ties by name)."""
    return sorted(weights, key=lambda name: (-weights[name], name))


# --- the model level (what is paid) ------------------------------------------------------------------


@dataclass
class ModelWeights:
    """The model-level result. `weights` always sums to 1 over every contributor (0 for the unpaid);
    `signal` says whether it is the calibrated rule (True) or the no-signal equal split (False)."""

    weights: dict[str, float]
    signal: bool
    rule: str
    mean: dict[str, float] = field(default_factory=dict)       # T_c, signed mean normalised influence
    threshold: dict[str, float] = field(default_factory=dict)  # z * s_c, the null's quantile
    queries: int = 0                                           # queries with any credited score

    def as_json(self) -> dict:
        return {"signal": self.signal, "rule": self.rule, "null_alpha": NULL_ALPHA,
                "mean": self.mean, "threshold": self.threshold, "queries_scored": self.queries}


@dataclass
class Harm:
    """A contributor significantly harmful on the validation set, with the evidence (see the docstring)."""

    contributor: str
    statistic: float                 # T_c < 0
    null_bound: float                # z * s_c; T_c < -null_bound
    records: list[tuple[int, float]]  # (column position, part of T_c), most negative first


class ModelWeightsAccumulator:
    """The model-level rule over validation queries fed in chunks, so the (n_val, n_records) score matrix
    never has to be in memory at once; the result does not depend on the chunking.

    `record_ids` (needed for `clusters` and for `add(query_ids=...)`): the index's record ids in column
    order. `clusters`: {record id: cluster id} of near-duplicates (records not in it are their own
    cluster). `order`: per column, the accept order key (smaller = accepted earlier); default the column
    position.
    """

    def __init__(
        self,
        contributors: Sequence[str | None],
        *,
        record_ids: Sequence[str] | None = None,
        clusters: Mapping[str, Hashable] | None = None,
        order: Sequence[float] | None = None,
        cluster_first_order: Mapping[Hashable, float] | None = None,
        alpha: float = NULL_ALPHA,
    ):
        self.contributors = list(contributors)
        n = len(self.contributors)
        if record_ids is not None and len(record_ids) != n:
            raise ValueError(f"{len(record_ids)} record ids but {n} contributors")
        if order is not None and len(order) != n:
            raise ValueError(f"{len(order)} order keys but {n} records")
        if clusters and record_ids is None:
            raise ValueError("clusters need the record ids")
        self.alpha = alpha
        self.names, self._codes = _codes(self.contributors)
        self._clusters = dict(clusters or {})
        # Exclusion key of each column: its cluster, else its own record id (so a query excludes itself).
        self._key_code: dict[Hashable, int] = {}
        col_keys = np.full(n, -1, dtype=np.int64)
        if record_ids is not None:
            for m, rid in enumerate(record_ids):
                key = self._clusters.get(str(rid), ("record", str(rid)))
                col_keys[m] = self._key_code.setdefault(key, len(self._key_code))
        self._col_order = np.argsort(col_keys, kind="stable")
        self._sorted_keys = col_keys[self._col_order]
        # Credit: the earliest accepted copy of each cluster; singletons are their own earliest copy.
        self._credited = np.ones(n, dtype=bool)
        if self._clusters:
            rank = np.asarray(order if order is not None else np.arange(n), dtype=np.float64)
            by_key_then_order = np.lexsort((np.arange(n), rank, col_keys))
            first = np.ones(n, dtype=bool)
            first[1:] = col_keys[by_key_then_order][1:] != col_keys[by_key_then_order][:-1]
            self._credited[:] = False
            self._credited[by_key_then_order[first]] = True
            # The earliest copy may not be a training record (held out as a validation query): then no
            # training copy is the original, and none is credited (a copier is not paid for what it copied).
            if cluster_first_order:
                for m, rid in enumerate(record_ids):
                    key = self._clusters.get(str(rid))
                    if key is not None and key in cluster_first_order and rank[m] > cluster_first_order[key]:
                        self._credited[m] = False
        self._by_owner = np.argsort(self._codes, kind="stable")
        self._owner_starts = np.searchsorted(self._codes[self._by_owner], np.arange(len(self.names)))
        k = len(self.names)
        self._sum_x = np.zeros(k)
        self._sum_x2 = np.zeros(k)
        self._negative_sum = np.zeros(k)
        self._record_positive = np.zeros(n)
        self._record_x = np.zeros(n)  # per record: sum over queries of credited score / query scale
        self.queries = 0
        self.queries_scored = 0

    def _per_contributor(self, matrix: np.ndarray) -> np.ndarray:
        """(B, n_records) -> (B, n_contributors) sums over each contributor's columns (one pass)."""
        if matrix.shape[1] == 0:
            return np.zeros((matrix.shape[0], len(self.names)))
        return np.add.reduceat(matrix[:, self._by_owner], self._owner_starts, axis=1)

    def _exclude(self, scores: np.ndarray, query_ids: Sequence[str | None]) -> None:
        for i, qid in enumerate(query_ids):
            if qid is None:
                continue
            code = self._key_code.get(self._clusters.get(str(qid), ("record", str(qid))))
            if code is None:
                continue
            lo, hi = np.searchsorted(self._sorted_keys, [code, code + 1])
            scores[i, self._col_order[lo:hi]] = 0.0

    def add(self, scores: np.ndarray, *, query_ids: Sequence[str | None] | None = None) -> None:
        """Add a chunk of queries' scores. `query_ids`: the record id each query was taken from (None for
        one that is no record), so its own and its near-duplicates' scores are left out."""
        scores = np.array(np.atleast_2d(scores), dtype=np.float64)  # a copy: exclusion writes into it
        if scores.shape[1] != len(self.contributors):
            raise ValueError(f"{scores.shape[1]} scores per query but {len(self.contributors)} records")
        if query_ids is not None:
            if len(query_ids) != scores.shape[0]:
                raise ValueError(f"{len(query_ids)} query ids for {scores.shape[0]} queries")
            if len(self._key_code) == 0 and any(q is not None for q in query_ids):
                raise ValueError("query ids need the record ids")
            self._exclude(scores, query_ids)
        self._negative_sum += self._per_contributor(np.clip(scores, None, 0)).sum(axis=0)
        self._record_positive += np.clip(scores, 0, None).sum(axis=0)
        credited = scores * self._credited
        scale = np.abs(credited).sum(axis=1)
        scored = scale > 0
        normalised = credited[scored] / scale[scored, None]
        self._record_x += normalised.sum(axis=0)
        x = self._per_contributor(normalised)
        self._sum_x += x.sum(axis=0)
        self._sum_x2 += (x * x).sum(axis=0)
        self.queries += scores.shape[0]
        self.queries_scored += int(scored.sum())

    def result(self, *, pay_z: float = PAY_Z) -> ModelWeights:
        k, q = len(self.names), self.queries_scored
        if q == 0:
            mean = threshold = np.zeros(k)
        else:
            mean = self._sum_x / q
            threshold = null_z(k, self.alpha) * np.sqrt(self._sum_x2) / q
        # Two stages. The gate: does anyone's effect pass the family-wise bound (threshold)? If not, the
        # validation set cannot tell any contributor from noise. The pay: once it does, every contributor is
        # paid s_c * smooth_excess(T_c / s_c - pay_z), the hard excess max(0, T_c - pay_z * s_c) averaged
        # over one standard error of its own noise (docs/attribution.md, rule 4). Not the gate's bound,
        # which with a few hundred queries left all but the strongest honest contributor at 0; not the hard
        # excess, which ties every weak honest contributor at 0 with the mislabelled ones (payout_fairness
        # seed 1: honest at +0.70 and -0.84 standard errors, paid 0 like the noisy contributor at -6.8).
        # A no-effect contributor's expected pay is bounded by its own standard error, not growing with its
        # number of records as the old per-query clipping did; one shown harmful (T_c < -threshold) gets 0.
        scale = np.divide(threshold, null_z(k, self.alpha), out=np.zeros_like(threshold),
                          where=threshold > 0)
        signal = bool(np.any(mean - threshold > 0))
        harmful = mean < -threshold
        excess = np.where(harmful | (scale == 0), 0.0,
                          scale * smooth_excess(np.divide(mean, scale, out=np.zeros_like(mean), where=scale > 0) - pay_z))
        if signal:
            weights = excess / excess.sum()
        else:
            # No signal: an equal split, but not to a contributor the same bound shows to be harmful (the
            # harm flag's test): mislabelled data must not earn a share because nobody else stood out.
            eligible = ~harmful
            weights = eligible / eligible.sum() if eligible.any() else np.full(k, 1.0 / k)
        return ModelWeights(
            weights={name: float(w) for name, w in zip(self.names, weights, strict=True)},
            signal=signal,
            rule=RULE_SIGNAL if signal else RULE_NO_SIGNAL,
            mean={name: float(v) for name, v in zip(self.names, mean, strict=True)},
            threshold={name: float(v) for name, v in zip(self.names, threshold, strict=True)},
            queries=q,
        )

    def weights(self) -> dict[str, float]:
        return self.result().weights

    def record_means(self) -> np.ndarray:
        """Per record: its part of its contributor's T_c (mean over scored queries of score / query scale)."""
        return self._record_x / max(self.queries_scored, 1)

    def harmful(self, harm_threshold: float = 0.0, *, top: int = 20,
                result: ModelWeights | None = None) -> list[Harm]:
        """Contributors whose T_c is below minus the null bound and below -harm_threshold, most harmful first,
        each with its `top` most negative records (column positions and their parts of T_c). Never "" (the
        unattributed pool has nobody to flag)."""
        result = result or self.result()
        if self.queries_scored == 0:
            return []
        means = self.record_means()
        out = []
        for code, name in enumerate(self.names):
            t, bound = result.mean[name], result.threshold[name]
            if not name or not (t < -bound and -t > harm_threshold):
                continue
            cols = self._by_owner[self._owner_starts[code]:(self._owner_starts[code + 1]
                                                              if code + 1 < len(self.names) else None)]
            cols = cols[self._credited[cols] & (means[cols] < 0)]
            worst = cols[np.argsort(means[cols], kind="stable")[:top]]
            out.append(Harm(contributor=name, statistic=t, null_bound=bound,
                            records=[(int(i), float(means[i])) for i in worst]))
        return sorted(out, key=lambda h: (h.statistic, h.contributor))

    def negative(self) -> dict[str, float]:
        """Mean negative influence per query for each contributor's own records (<= 0); for curation."""
        n = max(self.queries, 1)
        return {name: float(v / n) for name, v in zip(self.names, self._negative_sum, strict=True)}

    def record_positive(self) -> np.ndarray:
        """Per record: its positive influence summed over the queries (the "most influential" list)."""
        return self._record_positive.copy()


def model_weights(
    scores: np.ndarray,
    contributors: Sequence[str | None],
    *,
    record_ids: Sequence[str] | None = None,
    clusters: Mapping[str, Hashable] | None = None,
    order: Sequence[float] | None = None,
    cluster_first_order: Mapping[Hashable, float] | None = None,
    query_ids: Sequence[str | None] | None = None,
    alpha: float = NULL_ALPHA,
    pay_z: float = PAY_Z,
) -> ModelWeights:
    """The model-level rule on a whole (n_queries, n_records) matrix; see the module docstring."""
    acc = ModelWeightsAccumulator(contributors, record_ids=record_ids, clusters=clusters, order=order,
                                  cluster_first_order=cluster_first_order, alpha=alpha)
    acc.add(scores, query_ids=query_ids)
    return acc.result(pay_z=pay_z)


def model_contributor_weights(scores: np.ndarray, contributors: Sequence[str | None], **kwargs) -> dict[str, float]:
    """`model_weights(...).weights`: every contributor listed, summing to 1."""
    return model_weights(scores, contributors, **kwargs).weights
