"""Heatmaps that show where the slice CNN looked: Grad-CAM (``grad-cam`` package) mapped back
onto the original slice.

The model sees a head-cropped, resized copy of the slice; the map is computed there and then
pasted back through the same crop box (the inverse of the same ``cv2.resize`` pixel-centre
mapping), so it lines up with the image a person scrolls. Grad-CAM of a coarse feature map is
blocky and covers the whole square crop, air corners included; pasted back, that showed as a
rectangle around the head. The map is therefore kept to the head itself (the same head mask the
crop is built from, feathered by a few pixels), so the overlay follows the skull.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import nn

from ich.data.augment import to_unit_float
from ich.data.datasets import SeriesArrays, SliceDataset, collate_slices
from ich.data.preprocess import PreprocessSpec, full_box, preprocess_hu
from ich.dicom.headcrop import head_bbox, head_mask
from ich.labels import LABELS
from ich.runs.load import RunModels


def crop_box(hu: np.ndarray, spec: PreprocessSpec) -> tuple[int, int, int, int]:
    """The square box ``preprocess_hu`` crops from this slice (``y0, y1, x0, x1``)."""
    return head_bbox(hu, spec.margin) if spec.crop else full_box(hu.shape)


def last_conv(model: nn.Module) -> nn.Module:
    """The last 2-D convolution: the deepest layer that still has a spatial map, which is
    what Grad-CAM needs, whatever the timm backbone."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("the slice model has no Conv2d layer for Grad-CAM")
    return convs[-1]


def paste_back(
    cam: np.ndarray, box: tuple[int, int, int, int], shape: tuple[int, int]
) -> np.ndarray:
    """Resize a map of the cropped square back to the box and place it on a (H, W) canvas."""
    y0, y1, x0, x1 = box
    big = cv2.resize(cam.astype(np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    out = np.zeros(shape, dtype=np.float32)
    ty0, tx0 = max(y0, 0), max(x0, 0)
    ty1, tx1 = min(y1, shape[0]), min(x1, shape[1])
    if ty1 > ty0 and tx1 > tx0:
        out[ty0:ty1, tx0:tx1] = big[ty0 - y0 : ty1 - y0, tx0 - x0 : tx1 - x0]
    return out


def follow_head(heat: np.ndarray, hu: np.ndarray, feather_frac: float = 0.01) -> np.ndarray:
    """``heat`` kept to the head of ``hu``, its edge feathered over ~``feather_frac`` of the
    image side (a soft edge, not a cut); unchanged where no head is found."""
    mask = head_mask(hu).astype(np.float32)
    if not mask.any():
        return heat.astype(np.float32)
    h, w = mask.shape
    f = 4 if min(h, w) >= 128 else 1  # blur a quarter-size copy: same edge, ~10x cheaper
    small = cv2.resize(mask, (w // f, h // f), interpolation=cv2.INTER_AREA) if f > 1 else mask
    sigma = max(1.0, feather_frac * max(h, w) / f)
    soft = cv2.GaussianBlur(small, (0, 0), sigmaX=sigma)
    if f > 1:
        soft = cv2.resize(soft, (w, h), interpolation=cv2.INTER_LINEAR)
    return (heat * np.maximum(soft, mask)).astype(np.float32)


def model_input(
    run: RunModels, hu: np.ndarray, neighbours: Sequence[np.ndarray] | None
) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """The CNN input (1, C, S, S) for one slice, built by the training dataset itself, and the
    slice's crop box.

    The neighbours are laid out as a short series (position = offset - min offset) so that
    :class:`SliceDataset` picks exactly them for the run's offsets.
    """
    offsets = run.channels.offsets
    slices = list(neighbours) if neighbours is not None else [hu] * len(offsets)
    if len(slices) != len(offsets):
        raise ValueError(
            f"need {len(offsets)} neighbour images for offsets {offsets}, got {len(slices)}"
        )
    low = min(offsets)
    crops = [preprocess_hu(img, run.preprocess) for img in slices]  # each around its own head
    series = [crops[offsets.index(0)] if 0 in offsets else crops[0]] * (max(offsets) - low + 1)
    for img, off in zip(crops, offsets, strict=True):
        series[off - low] = img
    ds = SliceDataset(
        SeriesArrays(np.stack(series)), [-low], run.channels, run.input_size, None, "uint8"
    )
    x = to_unit_float(collate_slices(ds.__getitems__([0]))[0])  # (1, C, S, S), as in training
    return x, crop_box(hu, run.preprocess)


def grad_cam_heatmap(
    run: RunModels,
    hu: np.ndarray,
    label: str,
    neighbours: Sequence[np.ndarray] | None,
    device: torch.device,
) -> np.ndarray:
    """Grad-CAM for ``label`` on one slice: float32 (rows, columns) in [0, 1]."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    if label not in LABELS:
        raise ValueError(f"unknown label {label!r}; use one of {', '.join(LABELS)}")
    x, box = model_input(run, np.asarray(hu, dtype=np.float32), neighbours)
    model = run.slice_model.eval()
    with GradCAM(model=model, target_layers=[last_conv(model)]) as cam:
        grayscale = cam(
            input_tensor=x.to(device), targets=[ClassifierOutputTarget(LABELS.index(label))]
        )[0]  # (S, S) in [0, 1]
    hu = np.asarray(hu, dtype=np.float32)
    return np.clip(follow_head(paste_back(grayscale, box, hu.shape[:2]), hu), 0.0, 1.0)
