"""Typed state of a training stage and typed validation results.

Why: the loop's progress (epoch, step, best score, patience) and its validation scores cross
functions and files (the resume file, the metrics log); a dataclass says what they hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ich.labels import LABELS


@dataclass
class TrainState:
    """Where a training stage stands; saved in the resume file, restored by ``--resume``.

    Attributes:
        epoch: Epochs finished.
        step: Optimizer steps taken.
        best: Best validation weighted log loss so far (None before the first validation).
        bad_epochs: Epochs since ``best`` last improved (early stopping's patience count).
    """

    epoch: int = 0
    step: int = 0
    best: float | None = None
    bad_epochs: int = 0

    def update_best(self, val: EvalResult | None) -> bool:
        """Record a validation result; True when it is a new best (or there is none)."""
        improved = val is None or self.best is None or val.wll < self.best
        if val is not None and improved:
            self.best, self.bad_epochs = val.wll, 0
        elif val is not None:
            self.bad_epochs += 1
        return improved


@dataclass(frozen=True)
class EvalResult:
    """Validation scores: the RSNA weighted log loss and the per-label log losses.

    Attributes:
        wll: Weighted multi-label log loss (``any`` x2 when the run has it).
        per_label: Log loss per label, in ``labels`` order (empty when not computed).
        labels: The run's label names (default the six RSNA labels).
    """

    wll: float
    per_label: tuple[float, ...] = ()
    labels: tuple[str, ...] = LABELS

    def record(self) -> dict[str, float]:
        """Flat numbers for the metrics log: ``wll`` and ``ll_<label>``."""
        out = {"wll": float(self.wll)}
        out.update({f"ll_{k}": float(v) for k, v in zip(self.labels, self.per_label, strict=False)})
        return out


@dataclass(frozen=True)
class TrainSummary:
    """What :func:`ich.train.runner.run_training` (or a fold set) leaves behind, for people.

    Attributes:
        run_dir: The run (or fold set) folder.
        device: Where it trained (None for a fold set: each fold says so itself).
        train_slices: Training slices of this run's fold split.
        val_slices: Validation slices.
        slice_best: Best slice-CNN model file.
        sequence_best: Best sequence-model file.
        oof_predictions: The out-of-fold predictions table, when written.
        domain: The run's domain statistics (how far new series lie from the training data).
        fold_runs: A fold set's runs, in fold order (empty for one run).
        scores: Validation weighted log losses by name (``slice_wll``, ``slice_wll_tta``,
            ``sequence_wll`` (calibrated), ``sequence_wll_uncalibrated``, ``oof_slice_wll``,
            ``fold0_slice_wll``...); None where a stage had nothing to validate.
    """

    run_dir: Path
    device: str | None = None
    train_slices: int | None = None
    val_slices: int | None = None
    slice_best: Path | None = None
    sequence_best: Path | None = None
    oof_predictions: Path | None = None
    domain: Path | None = None
    fold_runs: tuple[Path, ...] = ()
    scores: dict[str, float | None] = field(default_factory=dict)
