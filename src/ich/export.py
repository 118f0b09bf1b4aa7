"""``ich export``: a run's slice CNN as a standalone ONNX or TorchScript file, checked for parity.

The exported graph maps a float32 batch (B, C, S, S) of windowed slices in [0, 1] to
``embeddings`` (B, D) and ``logits`` (B, L), exactly like the run's PyTorch model; it is
compared with PyTorch on random and constant batches before the file is moved into place, so a
faulty export is never left behind. A JSON file beside it (``FILE.json``) says what the input is
(labels, windows, neighbour offsets, input size, head crop and HU range), because a bare graph
does not: the same preprocessing must be applied by whoever runs it.

The sequence (study) model is not exported: it runs on embeddings and is small enough for
PyTorch anywhere.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from ich.atomic import atomic_path, atomic_write_text
from ich.errors import CheckpointError, ConfigError

ExportFormat = Literal["onnx", "torchscript"]
#: Largest |exported - PyTorch| allowed on the parity batches (logits and embeddings).
TOLERANCE = 1e-3


class _EmbedAndHead(nn.Module):
    """(B, C, S, S) -> (embeddings (B, D), logits (B, L))."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.model.embed(x)
        return emb, self.model.head(emb)


@dataclass
class ExportResult:
    """What ``export_run`` wrote and how close it is to PyTorch."""

    path: Path
    meta_path: Path
    max_abs_diff: float


def _checkpoint(run_dir: Path) -> Path:
    if (run_dir / "foldset.json").is_file():
        raise ConfigError(f"{run_dir} is a fold set: export one of its runs ({run_dir}/fold0, ...)")
    from ich.runs.checkpoint import MODEL_SUFFIX

    for name in (f"slice_best{MODEL_SUFFIX}", f"slice_last{MODEL_SUFFIX}"):
        if (run_dir / "checkpoints" / name).is_file():
            return run_dir / "checkpoints" / name
    raise CheckpointError(f"{run_dir}: no checkpoints/slice_best{MODEL_SUFFIX}; is this an "
                          "`ich train` run?")


def _parity_batches(in_chans: int, size: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.rand(3, in_chans, size, size, generator=gen),
            torch.full((1, in_chans, size, size), 0.5)]


def _run_exported(fmt: ExportFormat, path: Path, x: torch.Tensor) -> list[np.ndarray]:
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return [np.asarray(o) for o in session.run(None, {"x": x.numpy()})]
    loaded = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return [t.numpy() for t in loaded(x)]


def _write(fmt: ExportFormat, wrapper: nn.Module, probe: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():  # tracer and TorchScript-exporter deprecation notices
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            torch.onnx.export(
                wrapper, (probe,), str(path), input_names=["x"],
                output_names=["embeddings", "logits"],
                dynamic_axes={"x": {0: "batch"}, "embeddings": {0: "batch"},
                              "logits": {0: "batch"}},
                dynamo=False,
            )
        else:
            with torch.no_grad():
                traced = torch.jit.trace(wrapper, (probe,), check_trace=False)
            torch.jit.save(traced, str(path))


def export_run(
    run_dir: str | Path, out: str | Path, fmt: ExportFormat, tolerance: float = TOLERANCE
) -> ExportResult:
    """Export a run's slice CNN to ``out`` and check it against PyTorch.

    Raises:
        ConfigError: a fold set, or an unknown format; CheckpointError: no checkpoint, or
            outputs that differ from PyTorch by more than ``tolerance`` (nothing is written).
    """
    from ich.runs.checkpoint import load_slice_model

    if fmt not in ("onnx", "torchscript"):
        raise ConfigError(f"export format {fmt!r}: expected onnx or torchscript")
    run_dir, out = Path(run_dir), Path(out)
    ckpt_path = _checkpoint(run_dir)
    model, spec = load_slice_model(ckpt_path)
    wrapper = _EmbedAndHead(model.cpu().eval()).eval()
    size = int(spec.input_size)
    in_chans = len(spec.windows) * len(spec.offsets)
    batches = _parity_batches(in_chans, size)
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="ich-export-") as tmp:
        path = Path(tmp) / f"model.{'onnx' if fmt == 'onnx' else 'pt'}"
        _write(fmt, wrapper, batches[0], path)
        for x in batches:
            with torch.no_grad():
                want = [t.numpy() for t in wrapper(x)]
            got = _run_exported(fmt, path, x)
            worst = max(worst, *(float(np.abs(g - w).max()) for g, w in zip(got, want,
                                                                             strict=True)))
        if worst > tolerance:
            raise CheckpointError(
                f"{ckpt_path}: the {fmt} export differs from PyTorch by {worst:.3g} "
                f"(> {tolerance:g}); nothing written")
        with atomic_path(out) as final:
            final.write_bytes(path.read_bytes())
    meta = {
        "format": fmt, "source": str(ckpt_path), "inputs": {"x": ["batch", in_chans, size, size]},
        "outputs": ["embeddings", "logits"], "labels": list(spec.labels),
        "windows": [list(w) for w in spec.windows], "offsets": list(spec.offsets),
        "input_size": size, "preprocess": spec.preprocess.to_dict(),
        "mean": list(spec.mean), "std": list(spec.std), "parity_max_abs_diff": worst,
        "input_range": "each channel: HU windowed to [0, 1] (center - width/2 -> 0), as the "
                       "run's model file receives it (see mean/std in its ModelSpec)",
    }
    meta_path = atomic_write_text(out.with_name(out.name + ".json"), json.dumps(meta, indent=2))
    return ExportResult(out, meta_path, worst)
