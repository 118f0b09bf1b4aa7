"""Learning-rate schedules as pure functions of the optimizer step.

The loop sets the learning rate itself at every step (nanoGPT style) instead of keeping a
stateful scheduler object: the only state to checkpoint is the step counter, so resume is exact
and the curve can be tested and plotted without an optimizer. The one schedule that depends on
more than the step, ``plateau`` (it reacts to the validation loss), takes its current reduction
as an argument; :class:`ich.train.optim.Scheduler` keeps and checkpoints that reduction.
"""

from __future__ import annotations

import math
from typing import Literal

ScheduleKind = Literal["cosine", "onecycle", "step", "exponential", "plateau", "constant"]


def lr_factor(
    step: int,
    total_steps: int,
    kind: ScheduleKind = "cosine",
    warmup_frac: float = 0.05,
    min_lr_frac: float = 0.01,
    *,
    steps_per_epoch: int = 1,
    step_epochs: int = 1,
    gamma: float = 1.0,
    plateau_factor: float = 1.0,
) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based).

    * ``cosine``: linear warmup from ~0 to 1 over ``warmup_frac`` of the steps, then a cosine
      decay to ``min_lr_frac`` at the last step.
    * ``onecycle``: warmup (at least 30% of the steps, as in Smith's one-cycle) from
      ``1/25`` to 1 with a cosine ramp, then cosine annealing to ``min_lr_frac / 25``.
    * ``constant``: 1 after a linear warmup.
    * ``step``: ``gamma ** (epoch // step_epochs)`` after a linear warmup, where
      ``epoch = step // steps_per_epoch`` (a staircase that drops at epoch boundaries).
    * ``exponential``: ``gamma ** epoch`` after a linear warmup (e.g. 0.8 per epoch).
    * ``plateau``: ``plateau_factor`` after a linear warmup; the caller lowers it when the
      validation loss stops improving (see :class:`ich.train.optim.Scheduler`).

    ``step`` and ``exponential`` have no floor (they follow their formula exactly); the
    warmup ramp multiplies every schedule but ``onecycle``, which has its own.

    Args:
        step: Optimizer steps taken so far.
        total_steps: Steps of the whole run (all epochs).
        kind: Schedule shape.
        warmup_frac: Fraction of ``total_steps`` spent warming up.
        min_lr_frac: Final multiplier (``cosine``, ``onecycle``).
        steps_per_epoch: Optimizer steps per epoch (``step``, ``exponential``).
        step_epochs: Epochs between two drops of ``step``.
        gamma: Decay per drop (``step``) or per epoch (``exponential``).
        plateau_factor: Current reduction of ``plateau`` (1 until the first reduction).
    """
    if total_steps <= 0:
        return 1.0
    step = min(max(step, 0), total_steps - 1)
    if kind == "onecycle":
        warm = max(1, round(max(warmup_frac, 0.3) * total_steps))
        start, end = 1.0 / 25.0, min_lr_frac / 25.0
        if step < warm:
            return start + (1.0 - start) * (1 - math.cos(math.pi * step / warm)) / 2
        span = max(1, total_steps - 1 - warm)
        t = (step - warm) / span
        return end + (1.0 - end) * (1 + math.cos(math.pi * t)) / 2
    warm = round(warmup_frac * total_steps)
    ramp = (step + 1) / (warm + 1) if step < warm else 1.0
    epoch = step // max(1, steps_per_epoch)
    if kind == "step":
        return ramp * gamma ** (epoch // max(1, step_epochs))
    if kind == "exponential":
        return ramp * gamma**epoch
    if kind == "plateau":
        return ramp * plateau_factor
    if step < warm:
        return ramp
    if kind == "constant":
        return 1.0
    if kind != "cosine":
        raise ValueError(f"unknown schedule {kind!r}")
    span = max(1, total_steps - 1 - warm)
    t = (step - warm) / span
    return min_lr_frac + (1.0 - min_lr_frac) * (1 + math.cos(math.pi * t)) / 2


def lr_at(
    step: int,
    total_steps: int,
    base_lr: float,
    kind: ScheduleKind = "cosine",
    warmup_frac: float = 0.05,
    min_lr_frac: float = 0.01,
) -> float:
    """Learning rate at ``step``: ``base_lr * lr_factor(...)``."""
    return base_lr * lr_factor(step, total_steps, kind, warmup_frac, min_lr_frac)
