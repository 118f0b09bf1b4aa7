"""The training recipe of a run in words: optimizer, schedule, loss, transfer learning, EMA.

Reports and the training log show these lines so that a reader sees what was used without
reading the YAML (which the report shows too). Pure functions of the typed configuration.
"""

from __future__ import annotations

from typing import Any

import yaml

from ich.config import LossConfig, OptimConfig, RunConfig, config_from_dict
from ich.errors import ConfigError


def describe_optim(cfg: OptimConfig) -> str:
    """One line, e.g. ``sgd lr 0.01, ..., momentum 0.9 nesterov; schedule exponential x0.8 ...``."""
    text = f"{cfg.name} lr {cfg.lr:g}, weight decay {cfg.weight_decay:g}"
    if cfg.name == "sgd":
        text += f", momentum {cfg.momentum:g}" + (" nesterov" if cfg.nesterov else "")
    if cfg.backbone_lr_mult != 1.0:
        text += f", backbone lr x{cfg.backbone_lr_mult:g}"
    sched: str = cfg.schedule
    if sched == "step":
        sched += f" x{cfg.gamma:g} every {cfg.step_epochs} epochs"
    elif sched == "exponential":
        sched += f" x{cfg.gamma:g} per epoch"
    elif sched == "plateau":
        sched += f" x{cfg.plateau_factor:g} after {cfg.plateau_patience} epochs"
    return f"{text}; schedule {sched}, warmup {cfg.warmup_frac:g}"


def describe_loss(cfg: LossConfig) -> str:
    """One line for logs and reports, e.g. ``focal (gamma 2), smoothing 0.05, weights metric``."""
    text = "weighted BCE" if cfg.name == "bce" else f"focal (gamma {cfg.gamma:g})"
    if cfg.smoothing:
        text += f", label smoothing {cfg.smoothing:g}"
    weights = cfg.label_weights
    text += ", label weights " + (
        "of the metric" if weights is None else "[" + ", ".join(f"{w:g}" for w in weights) + "]"
    )
    return text


def recipe_rows(cfg: RunConfig) -> list[tuple[str, str]]:
    """(what, how) rows for the report's recipe table."""
    t = cfg.train
    rows = [("Optimizer", describe_optim(cfg.optim)), ("Loss", describe_loss(cfg.loss))]
    if t.freeze_epochs:
        rows.append(
            (
                "Transfer learning",
                f"head only on a frozen backbone for {t.freeze_epochs} epochs, then all layers "
                f"(backbone lr x{cfg.optim.backbone_lr_mult:g})",
            )
        )
    batch = t.batch_size * t.accumulate
    accum = f" ({t.accumulate} accumulated batches of {t.batch_size})" if t.accumulate > 1 else ""
    rows.append(("Batch per step", f"{batch}{accum}"))
    rows.append(
        ("Weights", f"EMA, decay {t.ema_decay:g}" if t.ema_decay else "last optimizer step")
    )
    rows.append(("Sequence model input", "the slice CNN's logits alone" if
                 cfg.sequence.features == "logits" else "the slice CNN's embeddings and logits"))
    if cfg.sequence.temperature_scaling:  # its in-domain figures are fitted on their own fold
        rows.append(("Sequence model calibration", "one temperature fitted on the validation fold "
                     "(printed by ich train, kept in the model file)"))
    return rows


def recipe_rows_from_text(text: str | None) -> list[tuple[str, str]]:
    """:func:`recipe_rows` of a run's ``config.yaml`` text; empty when it is not a valid config
    (a report of an old or foreign run folder still renders, with the YAML shown below)."""
    try:
        values: Any = yaml.safe_load(text or "null")
    except yaml.YAMLError:
        return []
    if not isinstance(values, dict):
        return []
    try:
        return recipe_rows(config_from_dict(values, "config.yaml"))
    except ConfigError:
        return []
