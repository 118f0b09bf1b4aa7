"""Run the slice CNN through ONNX Runtime on the CPU: the same network, several times faster
than PyTorch eager on few cores (``benchmarks/bench_inference.py`` measures it).

The model is exported once per process, at load time, from the weights in the checkpoint (a
temporary file; nothing is written into the run folder), and its outputs are checked against
PyTorch on a random batch before it is used, so a faulty export can never change results.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ich.errors import CheckpointError
from ich.models.slice_cnn import SliceModel

#: Largest difference allowed between ONNX Runtime and PyTorch outputs at load time.
TOLERANCE = 1e-3


class _EmbedAndHead(nn.Module):
    """(B, C, S, S) -> (embeddings (B, D), logits (B, L)): what stage 2 needs in one graph."""

    def __init__(self, model: SliceModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.model.embed(x)
        return emb, self.model.head(emb)


def onnx_available() -> bool:
    """Whether onnxruntime can be imported (the ``onnx`` extra)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OnnxSliceModel:
    """A :class:`SliceModel` exported to ONNX, called like ``embed_batch`` on numpy input.

    Args:
        model: The loaded slice CNN (eval mode).
        in_chans: Input channels.
        size: Input side in pixels.
    """

    def __init__(self, model: SliceModel, in_chans: int, size: int) -> None:
        import onnxruntime as ort

        # eval() on the wrapper too: the exporter restores the wrapper's mode on every child,
        # and a wrapper left in training mode would put BatchNorm back into training.
        wrapper = _EmbedAndHead(model.cpu()).eval()
        probe = torch.rand(2, in_chans, size, size)
        with tempfile.TemporaryDirectory(prefix="ich-onnx-") as tmp:
            path = Path(tmp) / "slice.onnx"
            with warnings.catch_warnings():  # the TorchScript exporter is deprecated, not wrong
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    wrapper,
                    (probe,),
                    str(path),
                    input_names=["x"],
                    output_names=["embeddings", "logits"],
                    dynamic_axes={
                        "x": {0: "batch"},
                        "embeddings": {0: "batch"},
                        "logits": {0: "batch"},
                    },
                    dynamo=False,
                )
            opts = ort.SessionOptions()
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        with torch.no_grad():
            want = [t.numpy() for t in wrapper(probe)]
        got = self.run(probe.numpy())
        worst = max(float(np.abs(g - w).max()) for g, w in zip(got, want, strict=True))
        if worst > TOLERANCE:
            raise CheckpointError(
                f"ONNX export of the slice model differs from PyTorch by {worst:.2g}; "
                "use the torch engine"
            )

    def run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings (B, D) and logits (B, L) of a float32 batch (B, C, S, S)."""
        emb, logits = self.session.run(None, {"x": np.ascontiguousarray(x, dtype=np.float32)})
        return emb, logits

    def embed_batch(self, x: np.ndarray, tta_flip: bool) -> tuple[np.ndarray, np.ndarray]:
        """Like :func:`ich.train.embeddings.embed_batch`: averaged over a left-right flip when
        ``tta_flip``."""
        emb, logits = self.run(x)
        if tta_flip:
            emb_f, logits_f = self.run(x[..., ::-1])
            emb, logits = (emb + emb_f) / 2, (logits + logits_f) / 2
        return emb, logits
