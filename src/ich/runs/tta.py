"""Test-time augmentation views: left-right flips and small shifted crops of a slice batch.

The winners of the RSNA 2019 challenge averaged predictions over flips and crops. A view is a
crop of the input shifted by a few pixels (resized back to the input size) and optionally
flipped left-right; ``tta`` views are averaged:

- 1: the input as is;
- 2: + its left-right flip;
- 4: + two crops shifted diagonally (down-right and up-left);
- 8: + those two crops flipped, and the two crops shifted along the other diagonal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional

#: The numbers of views ``--tta`` accepts.
TTA_CHOICES = (1, 2, 4, 8)

#: Crop margin as a fraction of the input size (5%: ~13 px at 256, anatomy stays in view).
SHIFT_FRACTION = 0.05


@dataclass(frozen=True)
class View:
    """One test-time view: a crop shifted by (dy, dx) margins (-1, 0, +1) and a flip."""

    dy: int = 0
    dx: int = 0
    flip: bool = False

    @property
    def shifted(self) -> bool:
        return self.dy != 0 or self.dx != 0


_VIEWS: dict[int, tuple[View, ...]] = {
    1: (View(),),
    2: (View(), View(flip=True)),
    4: (View(), View(flip=True), View(1, 1), View(-1, -1)),
    8: (View(), View(flip=True), View(1, 1), View(-1, -1),
        View(1, 1, True), View(-1, -1, True), View(1, -1), View(-1, 1)),
}


def tta_views(n: int) -> tuple[View, ...]:
    """The ``n`` views of ``--tta n``.

    Raises:
        ValueError: ``n`` is not one of :data:`TTA_CHOICES`.
    """
    if n not in _VIEWS:
        raise ValueError(f"tta must be one of {TTA_CHOICES}, got {n}")
    return _VIEWS[n]


def apply_view(x: torch.Tensor, view: View) -> torch.Tensor:
    """The view of a batch (B, C, H, W): a crop of size (H - 2m, W - 2m) moved by ``m`` pixels
    per shift step (m = 5% of the size) and resized back to (H, W), then flipped if asked."""
    if view.shifted:
        h, w = x.shape[-2:]
        m = max(1, round(SHIFT_FRACTION * min(h, w)))
        top, left = m + view.dy * m, m + view.dx * m
        crop = x[..., top : top + h - 2 * m, left : left + w - 2 * m]
        resized = functional.interpolate(
            crop.float(), size=(h, w), mode="bilinear", align_corners=False
        )
        x = resized.to(x.dtype)
    return torch.flip(x, dims=[-1]) if view.flip else x


def apply_view_np(x: np.ndarray, view: View) -> np.ndarray:
    """:func:`apply_view` on a numpy batch (the ONNX engine's input)."""
    return apply_view(torch.from_numpy(np.ascontiguousarray(x)), view).numpy()
