"""Heatmaps that show where the slice CNN looked: Grad-CAM mapped back onto the original slice.

The model sees a head-cropped, resized copy of the slice; the map is computed there and then
pasted back through the same crop box (the inverse of the same ``cv2.resize`` pixel-centre
mapping), so it lines up with the image a person scrolls. Grad-CAM of a coarse feature map is
blocky and covers the whole square crop, air corners included; pasted back, that showed as a
rectangle around the head. The map is therefore kept to the head itself (the same head mask the
crop is built from, feathered by a few pixels), so the overlay follows the skull.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import nn

from ich.data.augment import to_unit_float
from ich.data.datasets import SeriesArrays, SliceDataset, collate_slices
from ich.data.preprocess import PreprocessSpec, full_box, preprocess_hu
from ich.dicom.headcrop import head_bbox, head_mask
from ich.errors import UnknownLabelError
from ich.runs.load import RunModels


def crop_box(hu: np.ndarray, spec: PreprocessSpec) -> tuple[int, int, int, int]:
    """The square box ``preprocess_hu`` crops from this slice (``y0, y1, x0, x1``)."""
    return head_bbox(hu, spec.margin) if spec.crop else full_box(hu.shape)


#: ``last_conv`` per model, found once (walking a backbone's modules costs ~1.5 ms).
_LAST_CONV: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()
#: ``cam_layer`` per model, found once (it costs one forward pass).
_CAM_LAYER: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()


def last_conv(model: nn.Module) -> nn.Module:
    """The last 2-D convolution: the deepest layer that still has a spatial map, which is
    what Grad-CAM needs, whatever the timm backbone."""
    found = _LAST_CONV.get(model)
    if found is None:
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        if not convs:
            raise ValueError("the slice model has no Conv2d layer for Grad-CAM")
        found = _LAST_CONV[model] = convs[-1]
    return found


def cam_layer(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """The backbone's last stage: the module whose output is the final feature map.

    Why not simply the last ``Conv2d``: in a ResNet the last convolution registered is the
    shortcut's (``layer4.0.downsample``), a side branch, so Grad-CAM there is not where the
    model looked. The backbone's top-level children are run once on ``x`` and the last one
    whose output is still a spatial (h x w > 1) map is taken: ``layer4`` in a ResNet, ``bn2``
    (after ``conv_head``) in an EfficientNet. Falls back to :func:`last_conv`.
    """
    found = _CAM_LAYER.get(model)
    if found is not None:
        return found
    backbone = getattr(model, "backbone", model)
    spatial: list[nn.Module] = []

    def record(module: nn.Module, _inputs: object, output: object) -> None:
        if isinstance(output, torch.Tensor) and output.ndim == 4 and output.shape[-2:].numel() > 1:
            spatial.append(module)

    handles = [child.register_forward_hook(record) for child in backbone.children()]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    found = _CAM_LAYER[model] = spatial[-1] if spatial else last_conv(model)
    return found


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


def _unit(img: np.ndarray) -> np.ndarray:
    """Shift to 0 and scale to a maximum of ~1 (Grad-CAM's usual normalisation)."""
    img = img - img.min()
    return (img / (1e-7 + img.max())).astype(np.float32)


def grad_cam(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: int) -> np.ndarray:
    """Grad-CAM (Selvaraju et al., 2017) of logit ``target`` at ``layer`` for one input.

    The same numbers as ``pytorch_grad_cam.GradCAM`` (a test compares them), at about the cost
    of one forward pass. Why not that package: it back-propagates through the whole network and
    accumulates every parameter's ``.grad`` on the shared serving model, although Grad-CAM needs
    only d logit / d activation at one layer. Here the forward runs without autograd up to
    ``layer``; its output becomes a fresh leaf that requires grad, so the recorded graph holds
    only the layers after it, and ``torch.autograd.grad`` computes just that one gradient.

    Args:
        model: Maps (1, C, S, S) to logits (1, K); in eval mode.
        layer: A module of ``model`` whose output is a (1, D, h, w) feature map.
        x: The model input (1, C, S, S), on the model's device.
        target: Index of the logit to explain.

    Returns:
        float32 (S, S) in [0, 1].
    """
    leaves: list[torch.Tensor] = []

    def make_leaf(_m: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        torch.set_grad_enabled(True)  # record from here on; the no_grad block restores the mode
        leaf = output.detach().requires_grad_(True)
        leaves.append(leaf)
        return leaf.clone()  # a non-leaf, so later in-place ops (ReLU) stay legal

    handle = layer.register_forward_hook(make_leaf)
    try:
        with torch.no_grad():
            logits = model(x)
        if not leaves:
            raise ValueError("the Grad-CAM layer was not used by the model's forward pass")
        with torch.enable_grad():  # the indexing is recorded too, whatever the caller's mode
            (grads,) = torch.autograd.grad(logits[0, target], leaves[-1])
    finally:
        handle.remove()
    act = leaves[-1].detach()[0].float().cpu().numpy()  # (D, h, w)
    weights = grads[0].float().cpu().numpy().mean(axis=(1, 2))  # (D,) pooled gradients
    cam = np.maximum((weights[:, None, None] * act).sum(axis=0), 0.0)  # (h, w)
    size = (int(x.shape[-1]), int(x.shape[-2]))
    return _unit(cv2.resize(_unit(cam), size))  # (S, S)


def grad_cam_heatmap(
    run: RunModels,
    hu: np.ndarray,
    label: str,
    neighbours: Sequence[np.ndarray] | None,
    device: torch.device,
) -> np.ndarray:
    """Grad-CAM for ``label`` on one slice: float32 (rows, columns) in [0, 1].

    Raises:
        UnknownLabelError: ``label`` is not one of the run's labels (its model spec).
    """
    labels = tuple(run.spec.labels)
    if label not in labels:
        raise UnknownLabelError(f"unknown label {label!r} for run {run.run_dir}: use one of "
                                f"its labels ({', '.join(labels)})")
    x, box = model_input(run, np.asarray(hu, dtype=np.float32), neighbours)
    model = run.slice_model
    if model.training:  # eval() walks every module (~4 ms): only when needed
        model.eval()
    x = x.to(device)
    grayscale = grad_cam(model, cam_layer(model, x), x, labels.index(label))
    hu = np.asarray(hu, dtype=np.float32)
    return np.clip(follow_head(paste_back(grayscale, box, hu.shape[:2]), hu), 0.0, 1.0)
