"""Self-describing checkpoints: weights plus everything needed to rebuild and feed the model.

A checkpoint carries the model's constructor arguments, the resolved run configuration, the
label order, the windows (name, center, width), the neighbour offsets, the input size and the
preprocessing spec of the cache it was trained on. Inference reads all of these from the
checkpoint and never from constants, so a model trained with other windows or sizes is fed
exactly what it saw in training.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ich.atomic import atomic_path
from ich.errors import CheckpointError

if TYPE_CHECKING:
    from ich.models.sequence import SequenceModel
    from ich.models.slice_cnn import SliceModel

#: Format tag written into (and required from) every checkpoint.
FORMAT = "ich-checkpoint/1"
#: Keys every checkpoint must have; training state keys (optimizer, ...) are optional.
REQUIRED_KEYS: tuple[str, ...] = (
    "format",
    "kind",
    "model",
    "model_args",
    "config",
    "labels",
    "windows",
    "offsets",
    "input_size",
    "preprocess",
)


def save_checkpoint(path: Path | str, payload: dict[str, Any]) -> Path:
    """Write ``payload`` with ``torch.save`` to a temp file beside ``path``, then rename.

    An interrupted save (kill, full disk) leaves the previous checkpoint intact.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **payload}, tmp)
    return path


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint written by :func:`save_checkpoint`.

    The file is unpickled with ``weights_only=False`` because it holds RNG states and the config:
    only load checkpoints you trust (as with any pickle).

    Raises:
        CheckpointError: missing file, unreadable file, wrong format tag, or missing keys.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # torch raises many kinds on corrupt files
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc})") from exc
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not an ich checkpoint (a {type(ckpt).__name__})")
    if ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {ckpt.get('format')!r}, expected {FORMAT!r}")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks keys {missing}")
    ckpt["path"] = str(path)
    return ckpt


def _as_ckpt(ckpt: dict[str, Any] | Path | str, kind: str) -> dict[str, Any]:
    data = ckpt if isinstance(ckpt, dict) else load_checkpoint(ckpt)
    if data.get("kind") != kind:
        where = data.get("path", "<checkpoint>")
        raise CheckpointError(f"{where}: a {data.get('kind')!r} checkpoint, expected {kind!r}")
    return data


def load_slice_model(ckpt: dict[str, Any] | Path | str) -> SliceModel:
    """Rebuild the slice CNN from a ``kind == "slice"`` checkpoint (eval mode, CPU).

    Pretrained weights are never downloaded here: the state dict already holds them.
    """
    from ich.models.slice_cnn import SliceModel

    data = _as_ckpt(ckpt, "slice")
    args = {**data["model_args"], "pretrained": False, "weights": None}
    # Rebuilding "from scratch" is right here (the state dict follows): silence that warning.
    log = logging.getLogger(SliceModel.__module__)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        model = SliceModel(**args)
    finally:
        log.setLevel(level)
    model.load_state_dict(data["model"])
    return model.eval()


def load_sequence_model(ckpt: dict[str, Any] | Path | str) -> SequenceModel:
    """Rebuild the study sequence model from a ``kind == "sequence"`` checkpoint (eval mode)."""
    from ich.models.sequence import SequenceModel

    data = _as_ckpt(ckpt, "sequence")
    model = SequenceModel(**data["model_args"])
    model.load_state_dict(data["model"])
    return model.eval()


def rng_state() -> dict[str, Any]:
    """RNG states of python, numpy and torch (CPU and CUDA), for exact resume."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu() if hasattr(state["torch"], "cpu") else state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
