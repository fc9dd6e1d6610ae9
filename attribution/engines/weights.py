"""Contributor weights from attribution scores: what the ledger pays by.

Rule (the same for every method):

* Per query: each contributor's NET influence is the sum of their records' scores, positive and negative.
  Their share is that net clipped at zero, divided by the sum of all clipped nets. So a record that
  pushed against the prediction (negative score) offsets what the same contributor's other records earned
  on that query, but a contributor never goes below zero: nobody is charged, and one contributor's
  harmful data never lowers another's share. The negative mass (sum of negative record scores) is also
  reported per contributor (`negative`), for curation. A query where no contributor has a positive net
  has no shares (empty dict) and is left out of model-level weights.
  Why net and not only the positive record scores: mislabeled records have large gradients, so they
  collect large positive scores on some queries while hurting most others; counting only their positive
  part paid the contributor with 30% flipped labels the MOST (rank 1 of 5 on the quality benchmark), the
  net rule pays them the least (rank 5 of 5, weight 0.13 vs 0.2 for an honest share).
* Per model: the mean of the per-query share vectors over the validation queries that have shares, so
  each query counts once whatever the scale of its scores; normalised to sum to 1. If no query has any
  positive influence, every contributor with records in the index gets an equal share.

Shares are computed in float64 over contributors sorted by name, so they are deterministic for fixed
scores (and the scores are deterministic for a fixed seed). Records without a contributor are pooled
under "" (unattributed).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _codes(contributors: Sequence[str | None]) -> tuple[list[str], np.ndarray]:
    names = sorted({c or "" for c in contributors})
    position = {name: i for i, name in enumerate(names)}
    return names, np.array([position[c or ""] for c in contributors], dtype=np.int64)


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


def model_contributor_weights(scores: np.ndarray, contributors: Sequence[str | None]) -> dict[str, float]:
    """Model level: mean per-query share over validation queries, normalised; every contributor listed."""
    names, shares, _ = contributor_shares_matrix(scores, contributors)
    with_signal = shares.sum(axis=1) > 0
    if not with_signal.any():
        return {name: 1.0 / len(names) for name in names}
    mean = shares[with_signal].mean(axis=0)
    mean = mean / mean.sum()
    return {name: float(w) for name, w in zip(names, mean, strict=True)}


def contributor_ranking(weights: dict[str, float]) -> list[str]:
    """Contributors from highest to lowest weight (ties by name)."""
    return sorted(weights, key=lambda name: (-weights[name], name))


class ModelWeightsAccumulator:
    """`model_contributor_weights` over validation queries fed in chunks, so the (n_val, n_records) score
    matrix never has to be in memory at once. Same rule and same result as the one-shot function.
    """

    def __init__(self, contributors: Sequence[str | None]):
        self.contributors = list(contributors)
        self.names, _ = _codes(self.contributors)
        self._share_sum = np.zeros(len(self.names))
        self._negative_sum = np.zeros(len(self.names))
        self._record_positive = np.zeros(len(self.contributors))
        self.queries = 0
        self.queries_with_signal = 0

    def add(self, scores: np.ndarray) -> None:
        scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
        names, shares, negative = contributor_shares_matrix(scores, self.contributors)
        with_signal = shares.sum(axis=1) > 0
        self._share_sum += shares[with_signal].sum(axis=0)
        self._negative_sum += negative.sum(axis=0)
        self._record_positive += np.clip(scores, 0, None).sum(axis=0)
        self.queries += scores.shape[0]
        self.queries_with_signal += int(with_signal.sum())

    def weights(self) -> dict[str, float]:
        if not self.queries_with_signal:
            return {name: 1.0 / len(self.names) for name in self.names}
        mean = self._share_sum / self.queries_with_signal
        mean = mean / mean.sum()
        return {name: float(w) for name, w in zip(self.names, mean, strict=True)}

    def negative(self) -> dict[str, float]:
        """Mean negative influence per query for each contributor (<= 0); reported, never paid or charged."""
        n = max(self.queries, 1)
        return {name: float(v / n) for name, v in zip(self.names, self._negative_sum, strict=True)}

    def record_positive(self) -> np.ndarray:
        """Per record: its positive influence summed over the queries (the "most influential" list)."""
        return self._record_positive.copy()
