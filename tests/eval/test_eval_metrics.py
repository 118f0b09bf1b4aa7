"""Evaluation metrics against scikit-learn and hand-computed tiny cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

from ich.eval.metrics import (
    base_rate_predictor,
    compute_metrics,
    expected_calibration_error,
    study_level,
    threshold_for_sensitivity,
)
from ich.labels import LABEL_WEIGHTS, LABELS


@pytest.fixture()
def random_case() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = (rng.random((300, 6)) < [0.3, 0.05, 0.1, 0.1, 0.1, 0.15]).astype(float)
    p = np.clip(0.6 * y + 0.5 * rng.random((300, 6)) - 0.1, 0.01, 0.99)
    return y, p


def test_auc_ap_logloss_match_sklearn(random_case: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = random_case
    m = compute_metrics(y, p)
    for j, name in enumerate(LABELS):
        lm = m["labels"][name]
        assert lm["auc"] == pytest.approx(roc_auc_score(y[:, j], p[:, j]))
        assert lm["ap"] == pytest.approx(average_precision_score(y[:, j], p[:, j]))
        assert lm["log_loss"] == pytest.approx(log_loss(y[:, j], p[:, j], labels=[0, 1]))
        assert lm["n_positive"] == int(y[:, j].sum())
    expected = np.average(
        [log_loss(y[:, j], p[:, j], labels=[0, 1]) for j in range(6)], weights=LABEL_WEIGHTS
    )
    assert m["weighted_log_loss"] == pytest.approx(expected)


def test_counts_at_threshold_hand_case() -> None:
    y = np.zeros((4, 6))
    y[:2, 0] = 1  # any: two positives
    p = np.zeros((4, 6))
    p[:, 0] = [0.9, 0.4, 0.6, 0.1]  # tp, fn, fp, tn
    at = compute_metrics(y, p, threshold=0.5)["labels"]["any"]["at_threshold"]
    assert (at["tp"], at["fn"], at["fp"], at["tn"]) == (1, 1, 1, 1)
    assert at["sensitivity"] == 0.5
    assert at["specificity"] == 0.5
    assert at["precision"] == 0.5
    assert at["accuracy"] == 0.5
    assert at["threshold"] == 0.5


def test_single_class_gives_none_not_crash() -> None:
    y = np.zeros((10, 6))
    y[:3, 0] = 1
    y[:3, 2] = 1
    p = np.full((10, 6), 0.2)
    m = compute_metrics(y, p)
    ep = m["labels"]["epidural"]
    assert ep["auc"] is None and ep["ap"] is None
    assert "one class" in ep["note"]
    assert ep["at_threshold"]["sensitivity"] is None  # no positives: undefined, not 0
    assert ep["at_95_sensitivity"]["threshold"] is None
    assert m["labels"]["any"]["auc"] == pytest.approx(0.5)


def test_95_sensitivity_operating_point() -> None:
    # 20 positives scored 0.05..1.0, 20 negatives 0.0125..0.4875: 19 of 20 positives must be
    # caught, so the threshold is the 19th highest positive score (0.10); 16 negatives lie above.
    pos = np.linspace(0.05, 1.0, 20)
    neg = np.arange(20) * 0.025 + 0.0125
    t = np.r_[np.ones(20), np.zeros(20)]
    s = np.r_[pos, neg]
    thr = threshold_for_sensitivity(t, s)
    assert thr == pytest.approx(0.10)
    assert ((s >= thr) & (t == 1)).sum() / 20 >= 0.95
    assert ((s >= thr + 1e-9) & (t == 1)).sum() / 20 < 0.95  # highest such threshold
    y = np.zeros((40, 6))
    y[:, 0] = t
    p = np.zeros((40, 6))
    p[:, 0] = s
    hi = compute_metrics(y, p)["labels"]["any"]["at_95_sensitivity"]
    assert hi["threshold"] == pytest.approx(0.10)
    assert hi["sensitivity"] == pytest.approx(0.95)
    assert hi["specificity"] == pytest.approx(4 / 20)
    assert hi["precision"] == pytest.approx(19 / 35)


def test_expected_calibration_error_hand_case() -> None:
    t = np.array([1, 0, 1, 0], dtype=float)
    assert expected_calibration_error(t, np.full(4, 0.8)) == pytest.approx(0.3)
    # Two bins, each perfectly calibrated in the mean: 0.
    t2 = np.array([0, 0, 0, 1, 1, 1, 1, 0], dtype=float)
    p2 = np.array([0.25, 0.25, 0.25, 0.25, 0.75, 0.75, 0.75, 0.75])
    assert expected_calibration_error(t2, p2) == pytest.approx(0.0)
    # Bins of 0.5/0.5 rows, errors 0.1 and 0.2 -> 0.15.
    t3 = np.array([0, 1], dtype=float)
    assert expected_calibration_error(t3, np.array([0.1, 0.8])) == pytest.approx(0.15)


def test_base_rate_predictor_is_prevalence() -> None:
    y = np.zeros((4, 6))
    y[:1, 0] = 1
    y[:2, 5] = 1
    np.testing.assert_allclose(base_rate_predictor(y), [0.25, 0, 0, 0, 0, 0.5])
    with pytest.raises(ValueError):
        base_rate_predictor(np.zeros((0, 6)))


def test_study_level_takes_max_per_study() -> None:
    y = np.zeros((5, 6))
    y[1, 3] = 1
    p = np.zeros((5, 6))
    p[:, 0] = [0.1, 0.7, 0.2, 0.3, 0.05]
    groups = np.array(["b", "b", "a", "a", "c"])
    big_y, big_p, ids = study_level(y, p, groups)
    assert ids.tolist() == ["a", "b", "c"]
    np.testing.assert_allclose(big_p[:, 0], [0.3, 0.7, 0.05])
    np.testing.assert_allclose(big_y[:, 3], [0, 1, 0])
    assert big_y.shape == big_p.shape == (3, 6)
    with pytest.raises(ValueError):
        study_level(y, p, groups[:4])
