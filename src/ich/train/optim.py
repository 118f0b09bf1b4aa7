"""Optimizer, parameter groups, backbone freezing and the learning-rate scheduler of a run.

Everything the ``optim`` section of the config decides is built here, behind one call each
(:func:`build_optimizer`, :func:`build_scheduler`), so the training loop stays a plain loop:

* parameter groups: backbone / head (discriminative learning rate, ``backbone_lr_mult``) x
  decay / no decay (weight decay never on normalisation weights and biases unless
  ``decay_norm_bias``); each group carries its ``lr_mult``, and the scheduler sets
  ``lr = base_lr * factor(step) * lr_mult`` at every step;
* freezing: ``train.freeze_epochs`` trains the head on a frozen backbone first
  (:func:`set_backbone_trainable`);
* the scheduler is a pure function of the step (:mod:`ich.train.schedule`) plus, for
  ``plateau``, a reduction that follows the validation loss; :meth:`Scheduler.state_dict` is
  what the checkpoint keeps so that ``--resume`` continues the exact curve.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ich.config import OptimConfig
from ich.train.schedule import lr_factor


def param_groups(model: nn.Module, cfg: OptimConfig) -> list[dict[str, Any]]:
    """Split the trainable parameters into optimizer groups.

    Backbone parameters (names starting with ``backbone.``, as in
    :class:`ich.models.slice_cnn.SliceModel`) get ``lr_mult = cfg.backbone_lr_mult``; the rest
    (the new head) gets 1. Parameters with one dimension or fewer (biases, BatchNorm/LayerNorm
    scales and shifts) get no weight decay unless ``cfg.decay_norm_bias``: decaying them pulls
    normalisation scales to zero without regularising anything.

    Returns:
        Non-empty groups, each ``{"params", "weight_decay", "lr_mult", "name"}`` with ``name``
        one of ``backbone``, ``backbone_no_decay``, ``head``, ``head_no_decay``.
    """
    buckets: dict[str, list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        part = "backbone" if name.startswith("backbone.") else "head"
        no_decay = param.ndim <= 1 and not cfg.decay_norm_bias
        buckets.setdefault(part + ("_no_decay" if no_decay else ""), []).append(param)
    groups = []
    for key in ("backbone", "backbone_no_decay", "head", "head_no_decay"):
        if key not in buckets:
            continue
        groups.append(
            {
                "params": buckets[key],
                "weight_decay": 0.0 if key.endswith("_no_decay") else cfg.weight_decay,
                "lr_mult": cfg.backbone_lr_mult if key.startswith("backbone") else 1.0,
                "name": key,
            }
        )
    return groups


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """The configured optimizer over :func:`param_groups` of ``model``.

    * ``adamw``: decoupled weight decay (``p -= lr * wd * p`` beside the Adam step).
    * ``adam``: weight decay as an L2 term added to the gradient (torch's Adam).
    * ``sgd``: L2 weight decay, ``momentum`` and ``nesterov`` as in torch's SGD.

    The learning rates set here are the peak ones; the scheduler overwrites them every step.
    """
    groups = param_groups(model, cfg)
    for group in groups:
        group["lr"] = cfg.lr * group["lr_mult"]
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    raise ValueError(f"unknown optimizer {cfg.name!r}")


def set_backbone_trainable(model: nn.Module, trainable: bool) -> bool:
    """Freeze or unfreeze ``model.backbone`` (feature extraction vs fine-tuning).

    A frozen backbone gets no gradients (``requires_grad=False``: the optimizer skips it and no
    backward pass runs through it) and is put in eval mode so its BatchNorm statistics stay
    those it was pretrained with. Call it after ``model.train()``, which resets the mode.

    Returns:
        Whether the model has a backbone to freeze.
    """
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        return False
    for param in backbone.parameters():
        param.requires_grad_(trainable)
    if not trainable:
        backbone.eval()
    return True


class Scheduler:
    """Learning rate per optimizer step, for every parameter group.

    Args:
        cfg: The ``optim`` section.
        total_steps: Optimizer steps of the whole run.
        steps_per_epoch: Optimizer steps per epoch (``step``/``exponential`` decay per epoch).
        base_lr: Peak learning rate; ``cfg.lr`` when None (the sequence stage passes its own).
    """

    def __init__(
        self,
        cfg: OptimConfig,
        total_steps: int,
        steps_per_epoch: int,
        base_lr: float | None = None,
    ) -> None:
        self.cfg = cfg
        self.total_steps = total_steps
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.base_lr = cfg.lr if base_lr is None else base_lr
        self.plateau_factor = 1.0
        self.best: float | None = None
        self.bad_epochs = 0

    def factor(self, step: int) -> float:
        """Multiplier of the base learning rate at ``step`` (see :func:`lr_factor`)."""
        c = self.cfg
        return lr_factor(
            step,
            self.total_steps,
            c.schedule,
            c.warmup_frac,
            c.min_lr_frac,
            steps_per_epoch=self.steps_per_epoch,
            step_epochs=c.step_epochs,
            gamma=c.gamma,
            plateau_factor=self.plateau_factor,
        )

    def apply(self, opt: torch.optim.Optimizer, step: int) -> float:
        """Set every group's ``lr = base_lr * factor(step) * lr_mult``; return the base one."""
        lr = self.base_lr * self.factor(step)
        for group in opt.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        return lr

    def epoch_end(self, val_loss: float | None) -> bool:
        """Feed the epoch's validation loss to ``plateau``; True when the rate was reduced.

        Like Keras' ReduceLROnPlateau (no cooldown, strict improvement): after
        ``plateau_patience`` epochs without a new best, the factor is multiplied by
        ``plateau_factor`` (never below ``min_lr_frac``) and the count restarts. Other
        schedules ignore it.
        """
        if self.cfg.schedule != "plateau" or val_loss is None:
            return False
        if self.best is None or val_loss < self.best:
            self.best, self.bad_epochs = val_loss, 0
            return False
        self.bad_epochs += 1
        if self.bad_epochs < self.cfg.plateau_patience:
            return False
        self.bad_epochs = 0
        reduced = max(self.plateau_factor * self.cfg.plateau_factor, self.cfg.min_lr_frac)
        changed = reduced < self.plateau_factor
        self.plateau_factor = reduced
        return changed

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint keeps (the step itself is saved by the loop)."""
        return {
            "kind": self.cfg.schedule,
            "total_steps": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "plateau_factor": self.plateau_factor,
            "plateau_best": self.best,
            "plateau_bad_epochs": self.bad_epochs,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (older checkpoints without plateau state keep factor 1)."""
        self.plateau_factor = float(state.get("plateau_factor", 1.0))
        self.best = state.get("plateau_best")
        self.bad_epochs = int(state.get("plateau_bad_epochs", 0))


def build_scheduler(
    cfg: OptimConfig, total_steps: int, steps_per_epoch: int, base_lr: float | None = None
) -> Scheduler:
    """The configured learning-rate scheduler (see :class:`Scheduler`)."""
    return Scheduler(cfg, total_steps, steps_per_epoch, base_lr)

