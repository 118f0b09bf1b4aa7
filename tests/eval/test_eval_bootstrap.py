"""Study-level bootstrap intervals: known answers, coverage of the estimate, width vs n."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ich.eval.bootstrap import (
    Interval,
    bootstrap_intervals,
    format_interval,
    group_weights,
    weighted_auc,
)

ONE = ("any",)


def _noisy(n_studies: int, slices: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Studies whose slices share a label and a noisy score (a separable-ish problem)."""
    rng = np.random.default_rng(seed)
    study_y = rng.random(n_studies) < 0.4
    groups = np.repeat(np.arange(n_studies), slices)
    y = study_y[groups].astype(float)[:, None]
    p = np.clip(0.3 + 0.4 * y[:, 0] + rng.normal(0, 0.25, n_studies)[groups], 0, 1)[:, None]
    return y, p, groups


def test_weighted_auc_with_unit_weights_is_sklearn() -> None:
    rng = np.random.default_rng(1)
    t = (rng.random(200) < 0.3).astype(float)
    p = np.round(rng.random(200) * 0.5 + 0.3 * t, 2)  # rounding: many ties
    assert weighted_auc(t, p, np.ones((1, 200)))[0] == pytest.approx(roc_auc_score(t, p))


def test_weighted_auc_counts_are_duplicated_rows() -> None:
    t = np.array([0, 1, 0, 1, 1.0])
    p = np.array([0.1, 0.4, 0.35, 0.8, 0.2])
    w = np.array([[2.0, 1, 0, 3, 1]])
    rows = np.repeat(np.arange(5), w[0].astype(int))
    assert weighted_auc(t, p, w)[0] == pytest.approx(roc_auc_score(t[rows], p[rows]))


def test_group_weights_resample_studies_with_replacement() -> None:
    w = group_weights(7, 120, seed=3)
    assert w.shape == (120, 7) and (w.sum(axis=1) == 7).all()
    assert (w == 0).any() and (w > 1).any()  # some studies left out, some drawn twice
    np.testing.assert_array_equal(w, group_weights(7, 120, seed=3))
    assert not np.array_equal(w, group_weights(7, 120, seed=4))


def test_perfect_separation_gives_one_one() -> None:
    y, _, groups = _noisy(40, 5, seed=0)
    p = 0.2 + 0.6 * y  # every positive above every negative
    res = bootstrap_intervals(y, p, groups, ONE, n_resamples=300)
    for iv in (res.labels["any"].auc, res.labels["any"].sensitivity,
               res.labels["any"].specificity):
        assert (iv.estimate, iv.low, iv.high) == (1.0, 1.0, 1.0)


def test_interval_contains_estimate_and_is_seeded() -> None:
    y, p, groups = _noisy(60, 8, seed=1)
    res = bootstrap_intervals(y, p, groups, ONE, n_resamples=500, seed=7)
    for name in ("auc", "sensitivity", "specificity"):
        iv = getattr(res.labels["any"], name)
        assert iv.low is not None and iv.high is not None and iv.estimate is not None
        assert iv.low <= iv.estimate <= iv.high and iv.low < iv.high
        assert iv.n_valid == 500
    assert res.labels["any"].auc.estimate == pytest.approx(roc_auc_score(y[:, 0], p[:, 0]))
    again = bootstrap_intervals(y, p, groups, ONE, n_resamples=500, seed=7)
    assert again == res


def test_width_shrinks_with_more_studies() -> None:
    def width(n: int) -> float:
        y, p, groups = _noisy(n, 4, seed=2)
        iv = bootstrap_intervals(y, p, groups, ONE, n_resamples=400).labels["any"].auc
        assert iv.low is not None and iv.high is not None
        return iv.high - iv.low

    assert width(400) < 0.6 * width(40)


def test_resampling_studies_is_wider_than_resampling_slices() -> None:
    """Slices of a study are not independent: treating them so understates the uncertainty."""
    y, p, groups = _noisy(50, 20, seed=5)
    by_study = bootstrap_intervals(y, p, groups, ONE, n_resamples=400).labels["any"].auc
    by_slice = bootstrap_intervals(y, p, np.arange(len(y)), ONE, n_resamples=400).labels["any"].auc
    assert by_study.high - by_study.low > 2 * (by_slice.high - by_slice.low)  # type: ignore[operator]


def test_single_class_has_no_auc() -> None:
    y = np.zeros((30, 1))
    p = np.linspace(0, 1, 30)[:, None]
    iv = bootstrap_intervals(y, p, np.arange(30), ONE, n_resamples=50).labels["any"]
    assert iv.auc == Interval(None, None, None, 0)
    assert iv.sensitivity.estimate is None and iv.specificity.estimate is not None


def test_format_interval() -> None:
    assert format_interval(Interval(0.931, 0.8812, 0.9701, 1000)) == "0.93 (0.88–0.97)"
    assert format_interval({"estimate": 0.5, "low": None, "high": None}) == "0.50"
    assert format_interval(None) == "n/a"
