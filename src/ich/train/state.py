"""Typed state of a training stage and typed validation results.

Why: the loop's progress (epoch, step, best score, patience) and its validation scores cross
functions and files (the resume file, the metrics log); a dataclass says what they hold.
"""

from __future__ import annotations

from dataclasses import dataclass

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
        wll: Weighted multi-label log loss (``any`` x2).
        per_label: Log loss per label, in ``ich.LABELS`` order (empty when not computed).
    """

    wll: float
    per_label: tuple[float, ...] = ()

    def record(self) -> dict[str, float]:
        """Flat numbers for the metrics log: ``wll`` and ``ll_<label>``."""
        out = {"wll": float(self.wll)}
        out.update({f"ll_{k}": float(v) for k, v in zip(LABELS, self.per_label, strict=False)})
        return out
