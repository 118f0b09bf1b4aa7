"""Model files: weights (safetensors) plus their :class:`~ich.models.spec.ModelSpec` as JSON.

Why safetensors: a model file is data, never code. The server loads it without unpickling
anything, so a model file from elsewhere cannot run code on load. The spec travels inside the
file (safetensors metadata ``ich_spec``), so weights and their description cannot be separated.
Training state (optimizer, RNG, scheduler) lives in another file (``ich.train.checkpoint``)
that serving never opens.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from ich.atomic import atomic_path
from ich.errors import CheckpointError
from ich.models.sequence import SequenceEnsemble, SequenceModel, StudyModel
from ich.models.slice_cnn import SliceModel
from ich.models.spec import ModelSpec, SequenceArch
from ich.runs.embed import FEATURE_RECIPES

#: Format tag in every model file's metadata.
MODEL_FORMAT = "ich-model/2"
#: Suffix of model files.
MODEL_SUFFIX = ".safetensors"
#: What an ich before model files wrote (a pickled dict); refused with a clear message.
LEGACY_FORMAT = "ich-checkpoint/1"


def save_model(path: Path | str, state_dict: dict[str, torch.Tensor], spec: ModelSpec) -> Path:
    """Write weights and spec atomically (an interrupted save leaves the old file intact)."""
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    with atomic_path(path, suffix=MODEL_SUFFIX) as tmp:
        save_file(tensors, str(tmp), metadata={"format": MODEL_FORMAT, "ich_spec": spec.to_json()})
    return path


def read_spec(path: Path | str) -> ModelSpec:
    """The spec of a model file, without reading its weights.

    Raises:
        CheckpointError: Missing file, an old pickled checkpoint, not an ich model file.
    """
    path = _check_path(Path(path))
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read model file ({exc})") from exc
    if meta.get("format") != MODEL_FORMAT or "ich_spec" not in meta:
        raise CheckpointError(f"{path}: not an {MODEL_FORMAT} model file (no ich spec)")
    return ModelSpec.from_json(meta["ich_spec"], str(path))


def load_model_file(path: Path | str) -> tuple[dict[str, torch.Tensor], ModelSpec]:
    """Weights (on the CPU) and spec of a model file written by :func:`save_model`."""
    spec = read_spec(path)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read model weights ({exc})") from exc
    return state, spec


def _check_path(path: Path) -> Path:
    if path.suffix != MODEL_SUFFIX and path.with_suffix(MODEL_SUFFIX).is_file():
        path = path.with_suffix(MODEL_SUFFIX)
    if path.suffix == ".pt" and path.is_file():
        raise CheckpointError(
            f"{path}: a pickled {LEGACY_FORMAT} checkpoint from an older ich; model files are "
            f"now weights + spec ({MODEL_FORMAT}, {MODEL_SUFFIX}) and pickles are never loaded "
            "for serving: retrain the run with this version"
        )
    if not path.is_file():
        raise CheckpointError(f"{path}: model file not found")
    return path


def load_slice_model(path: Path | str) -> tuple[SliceModel, ModelSpec]:
    """Rebuild the slice CNN of a ``kind == "slice"`` model file (eval mode, CPU).

    Pretrained weights are never downloaded here: the file holds them.
    """
    state, spec = load_model_file(path)
    if spec.kind != "slice" or spec.slice_arch is None:
        raise CheckpointError(f"{path}: a {spec.kind!r} model file, expected 'slice'")
    arch = spec.slice_arch
    # Rebuilding "from scratch" is right here (the state dict follows): silence that warning.
    log = logging.getLogger(SliceModel.__module__)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        model = SliceModel(
            arch.backbone, arch.in_chans, drop_rate=arch.drop_rate,
            mean=spec.mean or None, std=spec.std or None, num_labels=len(spec.labels),
        )
    finally:
        log.setLevel(level)
    _load_state(model, state, path)
    return model.eval(), spec


def load_sequence_model(path: Path | str) -> tuple[StudyModel, ModelSpec]:
    """Rebuild the study sequence model (or ensemble) of a ``kind == "sequence"`` model file
    (eval mode)."""
    state, spec = load_model_file(path)
    if spec.kind != "sequence" or spec.sequence_arch is None:
        raise CheckpointError(f"{path}: a {spec.kind!r} model file, expected 'sequence'")
    a = spec.sequence_arch
    if a.features not in FEATURE_RECIPES:
        raise CheckpointError(f"{path}: sequence features {a.features!r} are not known to this "
                              f"ich version (known: {', '.join(FEATURE_RECIPES)})")
    n = len(spec.labels)
    model: StudyModel = (
        sequence_member(a, n, a.temperature) if a.members == 1
        else SequenceEnsemble([sequence_member(a, n) for _ in range(a.members)], a.temperature)
    )
    _load_state(model, state, path)
    return model.eval(), spec


def sequence_member(a: SequenceArch, num_labels: int, temperature: float = 1.0) -> SequenceModel:
    """One untrained sequence model of architecture ``a``."""
    return SequenceModel(a.in_dim, a.kind, a.hidden, a.layers, a.dropout, num_labels, temperature)


def _load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path | str) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the model its spec describes ({exc})"
                              ) from exc
