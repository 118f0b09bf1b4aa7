"""Head mask, head box and crop/resize: exact tiny cases, then real slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ich.dicom.headcrop import AIR_HU, crop_resize, head_bbox, head_mask


def _phantom(size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Air image with a 40 HU disc (the head) and a separate thin 100 HU bar (the headrest)."""
    hu = np.full((size, size), AIR_HU, dtype=np.float32)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - 0.4 * size) ** 2 + (xx - 0.5 * size) ** 2 < (0.3 * size) ** 2
    hu[disc] = 40.0
    hu[int(0.8 * size) : int(0.8 * size) + size // 64, size // 10 : size - size // 10] = 100.0
    return hu, disc


@pytest.mark.parametrize("size", [128, 512])
def test_head_mask_drops_headrest_and_fills_holes(size: int) -> None:
    hu, disc = _phantom(size)
    hu[int(0.4 * size), int(0.5 * size)] = -1000.0  # a hole (air inside the head)
    mask = head_mask(hu)
    assert mask.shape == hu.shape and mask.dtype == bool
    bar_row = int(0.8 * size) + size // 128
    assert not mask[bar_row].any()  # headrest gone
    assert mask[int(0.4 * size), int(0.5 * size)]  # hole filled
    overlap = (mask & disc).sum() / disc.sum()
    assert overlap > 0.97 and (mask & ~disc).sum() < 0.05 * disc.sum()


def test_head_mask_empty_image() -> None:
    assert not head_mask(np.full((64, 64), -1000.0)).any()


@pytest.mark.parametrize("size", [128, 512])
def test_head_bbox_square_contains_disc_excludes_bar(size: int) -> None:
    hu, disc = _phantom(size)
    y0, y1, x0, x1 = head_bbox(hu, margin_frac=0.05)
    assert y1 - y0 == x1 - x0  # square
    ys, xs = np.nonzero(disc)
    assert y0 <= ys.min() and y1 > ys.max() and x0 <= xs.min() and x1 > xs.max()
    assert y1 <= int(0.8 * size)  # stops above the headrest
    # Side = disc diameter padded by 5% each side (up to mask/downsampling rounding).
    assert abs((y1 - y0) - 0.6 * size * 1.1) <= max(4, size // 32)


def test_head_bbox_empty_falls_back_to_whole_image() -> None:
    assert head_bbox(np.full((60, 100), -1000.0)) == (-20, 80, 0, 100)
    assert head_bbox(np.full((64, 64), -1000.0)) == (0, 64, 0, 64)


def test_crop_resize_pads_outside_with_air() -> None:
    hu = np.arange(16, dtype=np.float32).reshape(4, 4)
    out = crop_resize(hu, (-2, 6, -2, 6), 8)  # same scale: no interpolation
    assert out.shape == (8, 8) and out.dtype == np.float32
    np.testing.assert_array_equal(out[2:6, 2:6], hu)
    assert (out[:2] == AIR_HU).all() and (out[:, 6:] == AIR_HU).all()


def test_crop_resize_down_uses_area_mean_and_up_is_linear() -> None:
    hu = np.zeros((4, 4), dtype=np.float32)
    hu[:2, :2] = 100.0
    down = crop_resize(hu, (0, 4, 0, 4), 2)
    np.testing.assert_allclose(down, [[100.0, 0.0], [0.0, 0.0]])  # exact 2x2 means
    up = crop_resize(np.array([[0.0, 100.0], [0.0, 100.0]], np.float32), (0, 2, 0, 2), 4)
    assert up.shape == (4, 4) and up.min() >= 0.0 and up.max() <= 100.0
    assert np.all(np.diff(up[0]) >= 0)  # monotonic ramp, no ringing


def test_crop_resize_box_fully_outside_is_air() -> None:
    out = crop_resize(np.zeros((4, 4), np.float32), (10, 14, 10, 14), 4)
    assert (out == AIR_HU).all()


def test_crop_resize_rejects_empty_box() -> None:
    with pytest.raises(ValueError):
        crop_resize(np.zeros((4, 4)), (2, 2, 0, 4), 4)


@pytest.mark.real
def test_head_bbox_on_real_slices(rsna_sample: Path) -> None:
    from ich.dicom.io import read_slice

    files = sorted((rsna_sample / "stage_2_train").glob("*.dcm"))[:12]
    for path in files:
        hu = read_slice(path).hu
        mask = head_mask(hu)
        y0, y1, x0, x1 = head_bbox(hu)
        assert y1 - y0 == x1 - x0 > 0
        if mask.any():
            # The box holds the whole mask and is no larger than needed plus margin.
            ys, xs = np.nonzero(mask)
            assert y0 <= ys.min() and y1 > ys.max() and x0 <= xs.min() and x1 > xs.max()
            assert mask.sum() < 0.9 * hu.size
