"""Small pieces shared by both training stages: device, seeding, the metric's loss, the log."""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from ich.labels import LABEL_WEIGHTS


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> this rank's CUDA device when there is one, else the CPU."""
    if name == "auto":
        return (
            torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
        )
    if name == "cuda" and torch.cuda.is_available():
        return torch.device(f"cuda:{local_rank}")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch; ask torch for deterministic kernels where it has them.

    ``warn_only`` keeps ops without a deterministic implementation usable (on CUDA some
    backward kernels have none); on the CPU the result is bit-reproducible.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def worker_init(worker_id: int) -> None:
    """Seed numpy/python in a DataLoader worker from torch's per-worker seed (itself derived
    from the loader's seeded generator), so augmentation is reproducible with workers > 0."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def weighted_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits weighted like the RSNA metric: any=2, subtypes=1.

    Averaged as ``sum_l w_l * mean_n bce[n, l] / sum_l w_l`` so that the training loss is the
    competition's weighted log loss of ``sigmoid(logits)`` (up to the evaluation's clipping).

    Args:
        logits: (..., 6) raw scores.
        targets: (..., 6) in {0, 1}.
    """
    from ich.train.losses import weighted_label_mean

    w = torch.as_tensor(LABEL_WEIGHTS, dtype=logits.dtype, device=logits.device)
    bce = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    return weighted_label_mean(bce, w)


class MetricsLog:
    """Append-only ``RUN/metrics.jsonl`` (+ TensorBoard scalars when installed); rank 0 only."""

    def __init__(self, run_dir: Path, enabled: bool = True) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        self.enabled = enabled
        self._tb: Any = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
            except Exception:  # tensorboard is optional
                self._tb = None

    def write(self, record: dict[str, Any]) -> None:
        """Append one record; numbers are written as plain floats."""
        if not self.enabled:
            return
        rec = {"time": round(time.time(), 3), **record}
        with self.path.open("a") as fh:
            fh.write(json.dumps(rec, default=float) + "\n")
        if rec.get("split") == "train" and "step" in rec and not sys.stdout.isatty():
            # Progress bars draw nothing when output is not a terminal (batch jobs, `| tee`,
            # CI): a plain line every train.log_every steps shows that the run is alive.
            print(progress_line(rec), flush=True)
        if self._tb is not None:
            tag = f"{rec.get('stage', 'run')}/{rec.get('split', 'train')}"
            step = int(rec.get("step", 0))
            for key, value in rec.items():
                if key in ("loss", "wll", "lr") and isinstance(value, int | float):
                    self._tb.add_scalar(f"{tag}/{key}", value, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def progress_line(record: dict[str, Any]) -> str:
    """``slice epoch 2 step 150 loss 0.1234 lr 4.1e-04``: one metrics record as a log line."""
    parts = [str(record.get("stage", "train")), f"epoch {record.get('epoch', '?')}",
             f"step {record.get('step', '?')}"]
    for key in ("loss", "lr"):
        value = record.get(key)
        if isinstance(value, int | float):
            parts.append(f"{key} {value:.4f}" if key == "loss" else f"{key} {value:.2e}")
    return "  " + " ".join(parts)
