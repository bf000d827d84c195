import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mammo_core import metrics


def test_auc_binary_matches_sklearn(rng):
    y = rng.integers(0, 2, 200)
    p1 = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    p = np.stack([1 - p1, p1], axis=1)
    assert metrics.auc(y, p) == pytest.approx(roc_auc_score(y, p1))
    assert np.isnan(metrics.auc(np.zeros(5, int), np.tile([0.5, 0.5], (5, 1))))


def test_ece_zero_when_calibrated_and_large_when_overconfident():
    y = np.array([0, 1] * 50)
    p_perfect = np.eye(2)[y]
    assert metrics.expected_calibration_error(y, p_perfect) == pytest.approx(0.0)
    p_wrong = np.eye(2)[1 - y] * 0.99 + 0.005
    assert metrics.expected_calibration_error(y, p_wrong) > 0.9


def test_classification_metrics_confusion_rows_are_truth():
    y = np.array([0, 0, 1, 1])
    p = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7]])
    m = metrics.classification_metrics(y, p, ("a", "b"))
    assert m["confusion_matrix"] == [[1, 1], [0, 2]]
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["auc"] == pytest.approx(1.0)


def test_bootstrap_interval_contains_point_estimate(rng):
    y = rng.integers(0, 2, 300)
    p1 = np.clip(0.35 * y + 0.65 * rng.random(300), 0, 1)
    p = np.stack([1 - p1, p1], 1)
    lo, hi = metrics.bootstrap_ci(y, p, n_boot=300)
    assert lo < metrics.auc(y, p) < hi
