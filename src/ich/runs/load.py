"""Loading trained runs for prediction: a run folder's model files, or a fold set's runs.

A run folder holds ``checkpoints/slice_best.safetensors`` (and ``sequence_best.safetensors``
when stage 2 ran); each file carries its :class:`~ich.models.spec.ModelSpec`, so what the
models are fed (windows, offsets, input size, crop, normalisation) comes from the files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from ich.data.datasets import ChannelSpec
from ich.data.preprocess import PreprocessSpec
from ich.domain import DomainModel, load_run_domain
from ich.errors import CheckpointError
from ich.models.sequence import StudyModel
from ich.models.slice_cnn import SliceModel
from ich.models.spec import ModelSpec, SequenceArch
from ich.onnx_engine import OnnxSliceModel, onnx_available
from ich.runs.checkpoint import (
    LEGACY_FORMAT,
    MODEL_SUFFIX,
    load_sequence_model,
    load_slice_model,
    read_spec,
)
from ich.runs.embed import FEATURES
from ich.runs.foldset import fold_runs, is_fold_set

#: How the slice CNN runs: PyTorch, ONNX Runtime, or ONNX Runtime when on the CPU and installed.
Engine = Literal["auto", "torch", "onnx"]

#: Model file names in ``RUN/checkpoints``, in the order they are looked for.
SLICE_FILES = ("slice_best", "slice_last")
SEQUENCE_FILES = ("sequence_best",)


@dataclass
class RunModels:
    """The models of one run and how to feed them (all read from their specs)."""

    run_dir: Path
    slice_model: SliceModel
    spec: ModelSpec
    sequence_model: StudyModel | None
    sequence_spec: ModelSpec | None
    onnx: OnnxSliceModel | None = None
    domain: DomainModel | None = None  # RUN/domain.json (ich.domain), None for older runs

    @property
    def channels(self) -> ChannelSpec:
        """Windows x neighbour offsets of the slice CNN's input."""
        return self.spec.channels

    @property
    def input_size(self) -> int:
        """Side of the square CNN input, pixels."""
        return self.spec.input_size

    @property
    def preprocess(self) -> PreprocessSpec:
        """The cache preprocessing the slice CNN was trained on."""
        return self.spec.preprocess

    @property
    def _sequence_arch(self) -> SequenceArch | None:
        return self.sequence_spec.sequence_arch if self.sequence_spec else None

    @property
    def sequence_features(self) -> str:
        """The recipe of the sequence model's per-slice input (``ich.runs.embed``)."""
        arch = self._sequence_arch
        return arch.features if arch else FEATURES

    @property
    def flip_features(self) -> bool:
        """Whether the sequence model trained on flip-averaged slice embeddings."""
        arch = self._sequence_arch
        return bool(arch.tta_flip) if arch else False

    @property
    def training_data(self) -> str:
        """What the run was trained on, in words (from the spec's provenance)."""
        return self.spec.provenance.training_data

    @property
    def backbone(self) -> str:
        """The slice CNN's timm backbone."""
        return self.spec.slice_arch.backbone if self.spec.slice_arch else "unknown"


def model_file(run_dir: Path, names: Sequence[str]) -> Path | None:
    """The first of ``RUN/checkpoints/<name>.safetensors`` that exists.

    Raises:
        CheckpointError: The run has only pickled checkpoints of an older ich.
    """
    for name in names:
        path = run_dir / "checkpoints" / f"{name}{MODEL_SUFFIX}"
        if path.is_file():
            return path
    for name in names:
        old = run_dir / "checkpoints" / f"{name}.pt"
        if old.is_file():
            raise CheckpointError(
                f"{old}: a pickled {LEGACY_FORMAT} checkpoint from an older ich; model files "
                f"are now weights + spec ({MODEL_SUFFIX}) and the server never unpickles: "
                "retrain the run with this version"
            )
    return None


def load_run(run_dir: str | Path, device: torch.device, engine: Engine = "auto") -> RunModels:
    """Load a run folder's best slice model and (when present) its sequence model.

    ``engine`` runs the slice CNN with PyTorch (``"torch"``) or ONNX Runtime (``"onnx"``);
    ``"auto"`` takes ONNX Runtime on the CPU when it is installed.

    Raises:
        CheckpointError: No model file, or a fold set given as one run.
    """
    run_dir = Path(run_dir)
    if is_fold_set(run_dir):
        raise CheckpointError(f"{run_dir}: a fold set; load its runs with load_member")
    slice_path = model_file(run_dir, SLICE_FILES)
    if slice_path is None:
        raise CheckpointError(
            f"{run_dir}: no checkpoints/slice_best{MODEL_SUFFIX}; is this an `ich train` run?"
        )
    slice_model, spec = load_slice_model(slice_path)
    seq_path = model_file(run_dir, SEQUENCE_FILES)
    seq_model, seq_spec = load_sequence_model(seq_path) if seq_path else (None, None)
    slice_model = slice_model.to(device)
    use_onnx = engine == "onnx" or (engine == "auto" and device.type == "cpu" and onnx_available())
    onnx = (
        OnnxSliceModel(slice_model, spec.channels.n_channels, spec.input_size)
        if use_onnx
        else None
    )
    return RunModels(
        run_dir=run_dir,
        slice_model=slice_model,
        spec=spec,
        sequence_model=seq_model.to(device) if seq_model is not None else None,
        sequence_spec=seq_spec,
        onnx=onnx,
        domain=load_run_domain(run_dir),
    )


def run_labels(run_dir: str | Path) -> tuple[str, ...] | None:
    """The labels a run (or a fold set, from its first fold) predicts, from its model spec.

    Reads only the spec, not the weights: evaluation and reports follow the run's own label
    set (six RSNA labels, a subset, or the user's names) without loading a model. None when
    the folder holds no model file (e.g. only out-of-fold predictions).

    Raises:
        CheckpointError: A model file that is not readable.
    """
    path = Path(run_dir)
    if is_fold_set(path):
        runs = fold_runs(path)
        if not runs:
            return None
        path = runs[0]
    found = model_file(path, SLICE_FILES)
    return None if found is None else tuple(read_spec(found).labels)


@dataclass
class Member:
    """One member of an ensemble: a run, or a fold set whose k fold runs are averaged inside
    it, so that each RUN given by the user counts once (with ``weight``).

    Attributes:
        path: The run or fold set folder.
        runs: Its loaded runs (one, or the k fold runs).
        weight: Its share of the ensemble average (relative; positive).
    """

    path: Path
    runs: list[RunModels]
    weight: float = 1.0

    @property
    def preprocess(self) -> PreprocessSpec:
        """The cache preprocessing its runs were trained on (one for all folds)."""
        return self.runs[0].preprocess


def load_member(
    path: str | Path, device: torch.device, engine: Engine = "auto", weight: float = 1.0
) -> Member:
    """Load a run folder, or a fold set's runs, as one ensemble member.

    Raises:
        CheckpointError: A run cannot be loaded, or a fold set's runs were trained with
            different preprocessing.
    """
    path = Path(path)
    runs = [load_run(p, device, engine) for p in (fold_runs(path) if is_fold_set(path) else [path])]
    specs = {r.preprocess for r in runs}
    if len(specs) > 1:
        raise CheckpointError(f"{path}: its fold runs were trained with different preprocessing")
    return Member(path, runs, float(weight))


def member_weights(n: int, weights: Sequence[float] | None) -> list[float]:
    """One positive weight per member (all 1 by default).

    Raises:
        ValueError: Not one weight per member, or a weight that is not positive.
    """
    if weights is None:
        return [1.0] * n
    if len(weights) != n:
        raise ValueError(f"{len(weights)} weights for {n} runs: give one weight per run")
    if any(not float(w) > 0 for w in weights):
        raise ValueError(f"weights must be positive numbers, got {list(weights)}")
    return [float(w) for w in weights]
