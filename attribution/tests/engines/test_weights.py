import numpy as np
import pytest

from attribution.engines.weights import (
    contributor_ranking,
    contributor_shares,
    contributor_shares_matrix,
    model_contributor_weights,
)

CONTRIBUTORS = ["alice", "bob", "alice", "carol", None]


def test_query_shares_are_net_influence_clipped_at_zero():
    # alice: 3 - 5 = -2 -> nothing (and not below zero); bob 1; unattributed 1
    shares = contributor_shares(np.array([3.0, 1.0, -5.0, 0.0, 1.0]), CONTRIBUTORS)
    assert shares == {"bob": 0.5, "": 0.5}
    # a smaller negative only reduces alice's own share: 3 - 1 = 2 of 2 + 1 + 1
    shares = contributor_shares(np.array([3.0, 1.0, -1.0, 0.0, 1.0]), CONTRIBUTORS)
    assert shares == {"alice": 0.5, "bob": 0.25, "": 0.25}
    assert sum(shares.values()) == pytest.approx(1.0)


def test_query_without_positive_influence_has_no_shares():
    assert contributor_shares(np.array([-1.0, -2.0, 0.0, -0.5, 0.0]), CONTRIBUTORS) == {}


def test_negative_mass_is_reported_separately():
    names, shares, negative = contributor_shares_matrix(np.array([[3.0, 1.0, -5.0, 0.0, 1.0]]), CONTRIBUTORS)
    assert names == ["", "alice", "bob", "carol"]
    assert negative[0].tolist() == [0.0, -5.0, 0.0, 0.0]
    assert shares[0].sum() == pytest.approx(1.0)


def test_model_weights_sum_to_one_and_are_deterministic():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((50, 5))
    scores[3] = -1.0  # a query with no positive influence is left out
    w1 = model_contributor_weights(scores, CONTRIBUTORS)
    w2 = model_contributor_weights(scores.copy(), list(CONTRIBUTORS))
    assert w1 == w2
    assert set(w1) == {"", "alice", "bob", "carol"}
    assert sum(w1.values()) == pytest.approx(1.0, abs=1e-12)
    assert all(w >= 0 for w in w1.values())
    # each query counts once, whatever its scale
    scaled = scores * rng.uniform(0.1, 100, size=(50, 1))
    assert model_contributor_weights(scaled, CONTRIBUTORS) == pytest.approx(w1)


def test_model_weights_without_signal_are_equal():
    w = model_contributor_weights(-np.ones((3, 5)), CONTRIBUTORS)
    assert w == {"": 0.25, "alice": 0.25, "bob": 0.25, "carol": 0.25}
    assert contributor_ranking({"b": 0.5, "a": 0.5, "c": 0.9}) == ["c", "a", "b"]


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="4 scores per query but 5 records"):
        contributor_shares(np.zeros(4), CONTRIBUTORS)
