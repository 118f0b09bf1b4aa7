"""Epoch-end bookkeeping, written once for both stages: best, patience, log, checkpoints.

Why one function: stage 1 (slice CNN) and stage 2 (sequence model) end an epoch the same way;
two copies drift (one forgets the patience count, the other the log line).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ich.train.common import MetricsLog
from ich.train.distributed import DistInfo, broadcast_object
from ich.train.state import EvalResult, TrainState


@dataclass(frozen=True)
class EpochEnd:
    """How a stage ends its epochs.

    Attributes:
        stage: ``"slice"`` or ``"sequence"`` (log records and the printed line).
        epochs: Planned epochs (for the printed line).
        patience: Stop after this many epochs without a better validation score (None: never).
        save_best: Writes the best model; called on rank 0 when the score improved.
        save_last: Writes the resume point; called on rank 0 every epoch (None: not kept).
    """

    stage: str
    epochs: int
    patience: int | None
    save_best: Callable[[], object]
    save_last: Callable[[], object] | None = None


def end_epoch(
    how: EpochEnd,
    state: TrainState,
    log: MetricsLog,
    info: DistInfo,
    train_loss: float,
    val: EvalResult | None,
    seconds: float,
) -> bool:
    """Record one finished epoch (``state.epoch`` already counts it); True means stop.

    Updates the best score and patience count, logs the train loss and validation scores,
    saves the best model when validation improved (or when there is no validation) and the
    resume point, prints one line, and decides early stopping the same way on every rank.
    """
    improved = state.update_best(val)
    if info.is_main:
        rec = {"stage": how.stage, "epoch": state.epoch, "step": state.step}
        log.write({**rec, "split": "train", "loss": train_loss})
        if val is not None:
            log.write({**rec, "split": "val", "loss": val.wll, **val.record()})
        if improved:
            how.save_best()
        if how.save_last is not None:
            how.save_last()
        vtxt = f"  val wll {val.wll:.4f}" if val else ""
        mark = "  *best" if improved and val else ""
        print(
            f"{how.stage} epoch {state.epoch}/{how.epochs}  train loss {train_loss:.4f}{vtxt}"
            f"  ({seconds:.1f} s){mark}",
            flush=True,
        )
    stop = bool(how.patience is not None and val is not None and state.bad_epochs >= how.patience)
    stop = bool(broadcast_object(stop, info))
    if stop and info.is_main:
        print(f"early stopping: no improvement for {how.patience} epochs", flush=True)
    return stop
