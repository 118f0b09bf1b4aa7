"""Training state files: what ``--resume`` needs beyond the weights (never used for serving).

A run's models are written as model files (weights + ModelSpec, :mod:`ich.runs.checkpoint`);
beside ``slice_last.safetensors`` lies ``slice_last.state.pt`` with the optimizer, the AMP
scaler, the schedule position, the RNG states and the :class:`~ich.train.state.TrainState`.
It is a pickle (RNG states are Python objects), loaded with ``weights_only=False`` by
training only: the server and ``ich predict`` never open it.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ich.atomic import atomic_path
from ich.errors import CheckpointError
from ich.train.state import TrainState

#: Format tag written into (and required from) every training state file.
STATE_FORMAT = "ich-train-state/1"
#: Suffix of training state files (``slice_last.state.pt`` beside ``slice_last.safetensors``).
STATE_SUFFIX = ".state.pt"


@dataclass
class ResumePoint:
    """Everything a training state file holds.

    Attributes:
        state: Epoch, step, best score, patience count.
        optimizer: ``optimizer.state_dict()``.
        scaler: ``GradScaler.state_dict()``.
        scheduler: Schedule position (``kind``, ``step``, ``total_steps``).
        rng: RNG states from :func:`rng_state`.
    """

    state: TrainState
    optimizer: dict[str, Any]
    scaler: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]


def save_train_state(path: Path | str, point: ResumePoint) -> Path:
    """Write a training state file atomically."""
    path = Path(path)
    payload = {
        "format": STATE_FORMAT,
        "state": asdict(point.state),
        "optimizer": point.optimizer,
        "scaler": point.scaler,
        "scheduler": point.scheduler,
        "rng": point.rng,
    }
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)
    return path


def load_train_state(path: Path | str) -> ResumePoint:
    """Read a training state file (a trusted pickle: only files this run wrote).

    Raises:
        CheckpointError: Missing or unreadable file, wrong format, missing parts.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no training state file; cannot resume from it")
    try:
        data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many kinds on corrupt files
        raise CheckpointError(f"{path}: cannot read training state ({exc})") from exc
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path}: not an {STATE_FORMAT} training state file")
    missing = [k for k in ("state", "optimizer", "scaler", "scheduler", "rng") if k not in data]
    if missing:
        raise CheckpointError(f"{path}: training state lacks {missing}; cannot resume from it")
    return ResumePoint(
        TrainState(**data["state"]), data["optimizer"], data["scaler"], data["scheduler"],
        data["rng"],
    )


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
