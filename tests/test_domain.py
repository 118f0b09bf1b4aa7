"""Domain check: exact cases on synthetic features, calibration, save/load, named errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ich.domain import (
    DomainModel,
    fit_calibrated,
    fit_domain,
    intensity_features,
    load_run_domain,
)
from ich.errors import CheckpointError


def _training(n: int = 200, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    intensity = rng.normal([0.3, 0.1, 0.05, 0, 30, 70, 12, 4], [0.02, 0.01, 0.01, 2, 2, 3, 1, 0.5],
                           size=(n, 8))
    embedding = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))  # correlated dimensions
    return intensity, embedding


def test_distance_is_zero_at_the_training_mean_and_grows_away_from_it() -> None:
    x, e = _training()
    model = fit_domain(x, e, k=4)
    at_mean = model.distance(x.mean(axis=0), e.mean(axis=0))
    assert at_mean.shape == (1,) and at_mean[0] == pytest.approx(0.0, abs=1e-9)
    step = x.std(axis=0) * np.eye(8)[4]  # one spread along soft_p50
    d1 = model.distance(x.mean(axis=0) + step, e.mean(axis=0))[0]
    d3 = model.distance(x.mean(axis=0) + 3 * step, e.mean(axis=0))[0]
    assert d3 == pytest.approx(9 * d1, rel=1e-6)  # squared distance: quadratic in the step
    # the mean squared distance of the training set is about the dimension (8 + k)
    assert np.mean(model.distance(x, e)) == pytest.approx(12, rel=0.2)


def test_calibration_flags_about_five_percent_in_domain_and_all_far_series() -> None:
    x, e = _training(300)
    train = np.arange(300) < 240
    model = fit_calibrated(x, e, train, quantile=0.95, k=4)
    assert model.info["held_out_series"] == 300 and model.info["validation_series"] == 60
    fresh_x, fresh_e = _training(2000, seed=5)
    flagged = (model.score(fresh_x, fresh_e) > 1).mean()
    assert 0.01 <= flagged <= 0.12
    shifted = fresh_x + np.array([0, 0, 0, 0, 15, 15, 0, 3])  # other HU calibration and noise
    assert (model.score(shifted, fresh_e) > 1).mean() > 0.99
    far_e = fresh_e + 10 * e.std(axis=0)  # other embeddings, same intensities
    assert (model.score(fresh_x, far_e) > 1).mean() > 0.9


def test_save_load_roundtrip_gives_the_same_scores(tmp_path: Path) -> None:
    x, e = _training(60)
    model = fit_calibrated(x, e, np.arange(60) < 48)
    path = model.save(tmp_path / "domain.json")
    again = DomainModel.load(path)
    np.testing.assert_allclose(again.score(x, e), model.score(x, e), rtol=1e-12)
    assert load_run_domain(tmp_path) is not None
    assert load_run_domain(tmp_path / "missing") is None


def test_bad_files_and_uncalibrated_models_are_named_errors(tmp_path: Path) -> None:
    bad = tmp_path / "domain.json"
    bad.write_text("{not json")
    with pytest.raises(CheckpointError, match=r"domain\.json"):
        DomainModel.load(bad)
    x, e = _training(20)
    with pytest.raises(CheckpointError, match="threshold"):
        fit_domain(x, e).score(x, e)
    with pytest.raises(ValueError, match=">= 3 series"):
        fit_domain(x[:2], e[:2])


def test_intensity_features_exact_small_case() -> None:
    img = np.full((2, 8, 8), -1000, np.int16)  # air
    img[:, 2:6, 2:6] = 40  # 16 brain pixels per slice
    img[:, 2, 2:6] = 1000  # 4 of them bone
    f = dict(zip(
        ["head_fraction", "bone_fraction", "fat_fraction", "p05", "p50", "p95", "iqr", "noise"],
        intensity_features(img), strict=True,
    ))
    assert f["head_fraction"] == pytest.approx(32 / 128)
    assert f["bone_fraction"] == pytest.approx(8 / 32)
    assert f["fat_fraction"] == 0
    assert f["p05"] == f["p50"] == f["p95"] == 40 and f["iqr"] == 0
    assert f["noise"] == 0  # flat brain
    rng = np.random.default_rng(0)
    noisy = (30 + rng.normal(0, 5, size=(4, 64, 64))).astype(np.float32)
    assert intensity_features(noisy)[-1] == pytest.approx(5.0, rel=0.1)
