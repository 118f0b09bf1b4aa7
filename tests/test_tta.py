"""Test-time augmentation: flips and shifted crops (ich.runs.tta) through the Predictor."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from ich.data.cache import SliceCache
from ich.inference import Predictor
from ich.runs.load import load_member
from ich.runs.tta import TTA_CHOICES, View, apply_view, tta_views


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    return np.log(p / (1 - p))


def test_views_are_distinct_and_numbered_as_asked() -> None:
    for n in TTA_CHOICES:
        views = tta_views(n)
        assert len(views) == n == len(set(views))
        assert views[0] == View()
    with pytest.raises(ValueError, match="tta must be one of"):
        tta_views(3)


def test_apply_view_flips_and_shifts_the_crop() -> None:
    x = torch.arange(40 * 40, dtype=torch.float32).reshape(1, 1, 40, 40)
    assert torch.equal(apply_view(x, View()), x)
    assert torch.equal(apply_view(x, View(flip=True)), torch.flip(x, dims=[-1]))
    down, up = apply_view(x, View(1, 1)), apply_view(x, View(-1, -1))
    assert down.shape == up.shape == x.shape
    # Values increase down and right: the down-right crop sees larger values than the up-left.
    assert float(down.mean()) > float(x.mean()) > float(up.mean())


@pytest.fixture(scope="module")
def series(tiny_cache: Path) -> tuple[np.ndarray, np.ndarray]:
    cache = SliceCache(tiny_cache)
    idx = next(iter(cache.series_index().values()))
    images = cache.images(idx).copy()
    images[:, 8:24, 4:20] = 80  # a bright blob on one side: no view equals another
    return images, cache.catalog["z_spacing"].to_numpy()[idx]


def _cnn_only(tiny_run: Path, tta: int) -> Predictor:
    member = load_member(tiny_run, torch.device("cpu"), "torch", 1.0)
    run = dataclasses.replace(member.runs[0], sequence_model=None, sequence_spec=None)
    return Predictor([run], torch.device("cpu"), tta)


def test_tta2_is_the_mean_of_the_original_and_flipped_predictions(
    tiny_run: Path, series: tuple[np.ndarray, np.ndarray]
) -> None:
    images, spacing = series
    plain = _cnn_only(tiny_run, 1)
    a = plain.predict_preprocessed(images, spacing)[0]
    b = plain.predict_preprocessed(np.ascontiguousarray(images[..., ::-1]), spacing)[0]
    two = _cnn_only(tiny_run, 2).predict_preprocessed(images, spacing)[0]
    assert np.abs(a - b).max() > 1e-4  # the input is asymmetric: the flip is a new view
    # The views are averaged in logit space (as the slice CNN's flip average always was).
    np.testing.assert_allclose(_logit(two), (_logit(a) + _logit(b)) / 2, atol=1e-4)


@pytest.mark.parametrize("with_sequence", [False, True])
def test_tta4_and_8_run_and_differ_from_one_view(
    tiny_run: Path, series: tuple[np.ndarray, np.ndarray], with_sequence: bool
) -> None:
    images, spacing = series
    outs = {}
    for n in (1, 4, 8):
        pred = (Predictor.from_run(tiny_run, tta=n) if with_sequence else _cnn_only(tiny_run, n))
        outs[n] = pred.predict_preprocessed(images, spacing)
    for n in (4, 8):
        cnn, final, study = outs[n]
        assert cnn.shape == outs[1][0].shape and study.shape == outs[1][2].shape
        assert np.all((final > 0) & (final < 1))
        assert np.abs(cnn - outs[1][0]).max() > 1e-5
        assert np.abs(final - outs[1][1]).max() > 1e-5
    assert np.abs(outs[8][0] - outs[4][0]).max() > 1e-5


def test_predictor_refuses_an_unknown_number_of_views(tiny_run: Path) -> None:
    with pytest.raises(ValueError, match="tta must be one of"):
        Predictor.from_run(tiny_run, tta=3)
