"""PreprocessSpec and preprocess_hu: the per-slice transform shared by the cache and inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ich.data.preprocess import (
    PreprocessSpec,
    full_box,
    preprocess_files,
    preprocess_hu,
    preprocess_stored,
)


def test_spec_round_trip_and_key() -> None:
    spec = PreprocessSpec(size=128, crop=False, margin=0.1)
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    assert spec.key() == PreprocessSpec(size=128, crop=False, margin=0.1).key()
    assert spec.key() != PreprocessSpec().key()
    assert len(spec.key()) == 12


def test_spec_rejects_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValueError, match="unknown"):
        PreprocessSpec.from_dict({"size": 64, "colour": True})
    with pytest.raises(ValueError):
        PreprocessSpec(size=2)
    with pytest.raises(ValueError):
        PreprocessSpec(margin=-0.1)


def test_full_box_pads_short_side() -> None:
    assert full_box((60, 100)) == (-20, 80, 0, 100)
    assert full_box((8, 8)) == (0, 8, 0, 8)


def test_preprocess_no_crop_is_area_resize_rounded() -> None:
    hu = np.zeros((4, 4), dtype=np.float32)
    hu[:2, :2] = 10.6  # blocks of a 16x16 image shrunk 2x: means stay 10.6 -> rounds to 11
    spec = PreprocessSpec(size=8, crop=False)
    out = preprocess_hu(np.kron(hu, np.ones((4, 4), np.float32)), spec)  # 16x16 -> 8x8
    assert out.dtype == np.int16 and out.shape == (8, 8)
    expected = np.kron(np.round(hu).astype(np.int16), np.ones((2, 2), np.int16))
    np.testing.assert_array_equal(out, expected)


def test_preprocess_clips_to_int16() -> None:
    hu = np.full((16, 16), 1e6, dtype=np.float32)
    hu[0, 0] = -1e6
    out = preprocess_hu(hu, PreprocessSpec(size=16, crop=False))
    assert out.max() == 32767 and out.min() == -32768


def test_preprocess_crops_to_head() -> None:
    size = 256
    hu = np.full((size, size), -1000.0, dtype=np.float32)
    yy, xx = np.mgrid[:size, :size]
    hu[(yy - 100) ** 2 + (xx - 128) ** 2 < 50**2] = 40.0
    hu[220:224, 20:236] = 100.0  # headrest
    out = preprocess_hu(hu, PreprocessSpec(size=64))
    assert out.shape == (64, 64) and out.dtype == np.int16
    assert (out == 100).sum() == 0  # headrest cropped away
    # The head fills the crop: ~ disc area / box area = pi/4 / 1.1^2 of the pixels.
    frac = (out > 0).mean()
    assert abs(frac - np.pi / 4 / 1.21) < 0.05
    assert out[0, 0] == -1000 and out[32, 32] == 40


def test_preprocess_rejects_3d() -> None:
    with pytest.raises(ValueError):
        preprocess_hu(np.zeros((2, 4, 4)))


def test_preprocess_files_records_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "ID_bad.dcm"
    bad.write_text("not dicom")
    block, rows = preprocess_files([bad], PreprocessSpec(size=16), chunk=3)
    assert block.shape == (0, 16, 16)
    assert rows[0]["status"] == "error" and rows[0]["image_id"] == "ID_bad"
    assert rows[0]["error_kind"] == "NotDicomError" and rows[0]["error"]


def _hu_of(stored: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    from ich.dicom.windowing import to_hu

    return to_hu(stored, slope, intercept, 16, 1)[0]


@pytest.mark.parametrize(
    ("dtype", "slope", "intercept", "crop"),
    [
        (np.uint16, 1.0, -1024.0, True),   # 12/16-bit unsigned, the usual CT header
        (np.int16, 1.0, 0.0, True),        # signed 16-bit
        (np.int16, 1.0, -1024.0, False),   # no crop: padded with air
        (np.uint16, 0.5, -1024.0, True),   # slope below 1
        (np.uint16, 2.0, -2048.0, True),   # slope above 1: float resize of the crop
        (np.int16, -1.0, 0.0, True),       # negative slope: mask threshold flips
        (np.uint16, 1.0, -1024.5, True),   # non-integral intercept
        (np.uint16, 1.0, 30000.0, False),  # air (-31000 stored) does not fit uint16: padding
    ],
)
def test_preprocess_stored_matches_hu_path(dtype, slope, intercept, crop) -> None:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:300, :280]
    hu = np.full((300, 280), -1000.0)
    hu[(yy - 140) ** 2 + (xx - 150) ** 2 < 110**2] = 40.0
    hu[(yy - 140) ** 2 + (xx - 150) ** 2 < 30**2] = 900.0
    hu[280:285, 10:270] = 100.0  # headrest
    hu += rng.normal(0, 8, hu.shape)
    stored = np.rint((hu - intercept) / slope).astype(dtype)
    spec = PreprocessSpec(size=128, crop=crop)
    expected = preprocess_hu(_hu_of(stored, slope, intercept), spec)
    out = preprocess_stored(stored, slope, intercept, spec)
    assert out.dtype == np.int16 and out.shape == (128, 128)
    assert np.abs(out.astype(int) - expected).max() <= 1


def test_preprocess_stored_matches_on_files(tiny_cohort: Path, rsna_sample: Path) -> None:
    from ich.dicom.io import read_slice, read_stored

    phantom = sorted((tiny_cohort / "images").glob("*.dcm"))
    # The phantom's 12-bit wrap faults fall on random slices: take some wherever they are.
    faulty = [p for p in phantom if read_stored(p)[1].wrap_fixed][:3]
    files = phantom[:40] + faulty + sorted(rsna_sample.rglob("*.dcm"))[:40]
    wrapped = 0
    for path in files:
        stored, meta = read_stored(path)
        wrapped += meta.wrap_fixed
        spec = PreprocessSpec(size=64)
        expected = preprocess_hu(read_slice(path).hu, spec)
        out = preprocess_stored(stored, meta.rescale_slope, meta.rescale_intercept, spec)
        assert np.abs(out.astype(int) - expected).max() <= 1, path
    assert wrapped  # the wrap-fault path was exercised
