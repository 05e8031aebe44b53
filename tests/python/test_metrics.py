"""Our numpy metrics against hand-computed values and against scikit-learn on random data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from mlebench_hpc.grading import metrics

sk = pytest.importorskip("sklearn.metrics")


# ---- hand-computed ---------------------------------------------------------------------------
def test_accuracy_by_hand() -> None:
    assert metrics.accuracy([True, False, True, True], [True, True, True, False]) == 0.5


def test_roc_auc_by_hand_with_a_tie() -> None:
    # positives 0.8, 0.4; negatives 0.4, 0.1: pairs (0.8>0.4)=1, (0.8>0.1)=1, (0.4=0.4)=0.5, (0.4>0.1)=1
    assert metrics.roc_auc([1, 0, 1, 0], [0.8, 0.4, 0.4, 0.1]) == pytest.approx(3.5 / 4)


def test_roc_auc_one_class_is_an_error() -> None:
    with pytest.raises(metrics.MetricError):
        metrics.roc_auc([1, 1, 1], [0.1, 0.2, 0.3])


def test_mean_columnwise_roc_auc_by_hand() -> None:
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    s = np.array([[0.9, 0.2], [0.1, 0.8], [0.7, 0.1], [0.3, 0.5]])
    # column 0: perfect (1.0); column 1: positives 0.8, 0.1 vs negatives 0.2, 0.5 -> 2/4
    assert metrics.mean_columnwise_roc_auc(y, s) == pytest.approx(0.75)


def test_log_loss_by_hand() -> None:
    y = np.array([[1, 0, 0], [0, 1, 0]])
    p = np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]])
    assert metrics.log_loss(y, p) == pytest.approx(-(math.log(0.5) + math.log(0.8)) / 2)


def test_log_loss_clips_zero_probability() -> None:
    eps = np.finfo(np.float64).eps
    assert metrics.log_loss([[1, 0]], [[0.0, 1.0]]) == pytest.approx(-math.log(eps))


def test_binary_log_loss_by_hand() -> None:
    assert metrics.binary_log_loss([1, 0], [0.8, 0.4]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)


def test_rmse_by_hand() -> None:
    assert metrics.rmse([1, 2, 3], [1, 2, 6]) == pytest.approx(math.sqrt(3))


def test_mean_columnwise_rmsle_by_hand() -> None:
    t = np.array([[0.0, math.e - 1], [0.0, math.e - 1]])
    p = np.array([[math.e - 1, math.e - 1], [math.e - 1, math.e - 1]])
    # column 0: log1p differences all 1 -> 1; column 1: 0 -> mean 0.5
    assert metrics.mean_columnwise_rmsle(t, p) == pytest.approx(0.5)


def test_rmsle_rejects_negative_values_like_sklearn_15() -> None:
    with pytest.raises(metrics.MetricError):
        metrics.rmsle([1.0, 2.0], [1.0, -0.5])


def test_quadratic_weighted_kappa_by_hand() -> None:
    assert metrics.quadratic_weighted_kappa([0, 1, 2], [0, 1, 2]) == pytest.approx(1.0)
    # a=[0,0,1,1], b=[0,1,0,1]: observed weighted disagreement 2/4, expected 0.5 -> kappa 0
    assert metrics.quadratic_weighted_kappa([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0)


# ---- against scikit-learn on random data ------------------------------------------------------
SEEDS = range(8)


@pytest.mark.parametrize("seed", SEEDS)
def test_roc_auc_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 3000))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    s = np.round(rng.random(n), int(rng.integers(1, 4)))  # rounding makes many ties
    assert metrics.roc_auc(y, s) == pytest.approx(sk.roc_auc_score(y, s), abs=1e-12)
    assert metrics.roc_auc(y.astype(bool), s) == pytest.approx(sk.roc_auc_score(y.astype(bool), s), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_mean_columnwise_roc_auc_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, (500, 6))
    y[:2] = [[0] * 6, [1] * 6]
    s = np.round(rng.random((500, 6)), 2)
    expected = sk.roc_auc_score(y, s, average="macro")
    assert metrics.mean_columnwise_roc_auc(y, s) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_log_loss_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 12))
    labels = rng.integers(0, k, 400)
    labels[:k] = np.arange(k)
    y = np.eye(k)[labels]
    p = rng.random((400, k)) ** 3
    p[rng.random((400, k)) < 0.05] = 0.0  # exact zeros exercise the clipping
    p[p.sum(axis=1) == 0, 0] = 1.0
    p /= p.sum(axis=1, keepdims=True)
    assert metrics.log_loss(y, p) == pytest.approx(sk.log_loss(y, p), rel=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_binary_log_loss_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    y[:2] = [0, 1]
    p = rng.random(300)
    p[:10] = [0.0, 1.0] * 5
    assert metrics.binary_log_loss(y, p) == pytest.approx(sk.log_loss(y, p), rel=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_rmse_and_rmsle_match_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    t, p = rng.random(200) * 10, rng.random(200) * 10
    assert metrics.rmse(t, p) == pytest.approx(math.sqrt(sk.mean_squared_error(t, p)), rel=1e-12)
    t2, p2 = rng.random((200, 2)) * 5, rng.random((200, 2)) * 5
    expected = np.mean([math.sqrt(sk.mean_squared_log_error(t2[:, j], p2[:, j])) for j in range(2)])
    assert metrics.mean_columnwise_rmsle(t2, p2) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_quadratic_weighted_kappa_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 5, 300)
    b = np.clip(a + rng.integers(-2, 3, 300), 0, 4)
    b[rng.random(300) < 0.1] = 7  # a label only one side uses: weights follow label positions
    expected = sk.cohen_kappa_score(a, b, weights="quadratic")
    assert metrics.quadratic_weighted_kappa(a, b) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_accuracy_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.integers(1, 8, 500), rng.integers(1, 8, 500)
    assert metrics.accuracy(a, b) == pytest.approx(sk.accuracy_score(a, b), rel=1e-15)
