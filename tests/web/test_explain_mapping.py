"""Issue 11 point 7: the heatmap lands on the displayed slice's own pixels and follows the head."""

from __future__ import annotations

import numpy as np
import pytest

from ich.data.preprocess import PreprocessSpec
from ich.dicom.headcrop import crop_resize_any
from ich.explain import crop_box, follow_head, paste_back


def _head(shape: tuple[int, int], cy: int, cx: int, r: int) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.where((yy - cy) ** 2 + (xx - cx) ** 2 < r**2, 35.0, -1000.0).astype(np.float32)


@pytest.mark.parametrize("shape,centre,radius,size", [
    ((512, 512), (300, 220), 150, 64),   # off-centre head, shrunk
    ((400, 520), (200, 330), 120, 256),  # not square, enlarged
    ((512, 512), (60, 256), 110, 96),    # head cut by the top edge: box beyond the image
])
def test_a_point_seen_by_the_model_maps_back_to_the_same_pixel(shape, centre, radius,
                                                               size) -> None:
    hu = _head(shape, *centre, radius)
    spec = PreprocessSpec(size=size)
    box = crop_box(hu, spec)
    target = (centre[0] + radius // 3, centre[1] - radius // 4)
    marker = np.zeros(shape, np.float32)
    marker[target[0] - 4 : target[0] + 5, target[1] - 4 : target[1] + 5] = 1.0
    seen = crop_resize_any(marker, box, size, 0.0)  # the model's view, as preprocess_hu makes it
    back = paste_back(seen, box, shape)
    ys, xs = np.nonzero(back > 0.5 * back.max())
    w = back[ys, xs]
    peak = (float(np.average(ys, weights=w)), float(np.average(xs, weights=w)))
    tol = max(1.0, 0.5 * (box[1] - box[0]) / size)  # half a model pixel
    assert abs(peak[0] - target[0]) <= tol and abs(peak[1] - target[1]) <= tol, (peak, target)
    assert back.shape == shape


def test_heat_follows_the_head_without_a_rectangular_edge() -> None:
    hu = _head((512, 512), 256, 256, 180)
    box = crop_box(hu, PreprocessSpec(size=64))
    flat = paste_back(np.ones((64, 64), np.float32), box, hu.shape)  # a blocky, square CAM
    assert flat[box[0] + 2, box[2] + 2] == pytest.approx(1.0)  # corner of the box: the edge
    out = follow_head(flat, hu)
    assert out[box[0] + 2, box[2] + 2] < 0.01  # air corner of the crop: no heat now
    assert out[256, 256] == pytest.approx(1.0)  # inside the head: unchanged
    ring = out[256, 256 + 176:256 + 190]  # across the skin edge: a soft fall, no step to zero
    assert np.all(np.diff(ring) <= 1e-6) and ring[0] > 0.3 and ring[-1] < 0.3
