"""Training losses: the metric-weighted BCE (default), focal loss, label smoothing.

All losses here are averaged the way the RSNA metric averages: a mean over samples per label,
then a weighted mean over labels, ``sum_l w_l * mean_n loss[n, l] / sum_l w_l``. With the
default BCE, no smoothing and the metric's weights the training loss *is* the competition's
weighted log loss of ``sigmoid(logits)`` (up to the evaluation's clipping), so the training
curve and the validation score speak the same units.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from ich.config import LossConfig
from ich.labels import LABEL_WEIGHTS


class LossFn(Protocol):
    """``loss(logits (..., L), targets (..., L)) -> scalar``."""

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor: ...


def smooth_targets(targets: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Label smoothing for binary labels: ``y * (1 - s) + s / 2`` (0 -> s/2, 1 -> 1 - s/2).

    Args:
        targets: (..., L) in [0, 1].
        smoothing: ``s`` in [0, 1).
    """
    if smoothing == 0:
        return targets
    return targets * (1.0 - smoothing) + smoothing / 2.0


def elementwise_loss(
    logits: torch.Tensor, targets: torch.Tensor, name: str = "bce", gamma: float = 2.0
) -> torch.Tensor:
    """Per-element loss (same shape as ``logits``), before any averaging.

    * ``bce``: ``-(y log p + (1 - y) log(1 - p))`` with ``p = sigmoid(logit)``.
    * ``focal``: ``(1 - p_t) ** gamma * bce`` where ``p_t = p y + (1 - p)(1 - y)`` is the
      probability given to the true class (Lin et al., "Focal Loss for Dense Object
      Detection", 2017, without the alpha balancing: the label weights play that part).
      ``gamma = 0`` is the BCE.
    """
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if name == "bce":
        return bce
    if name != "focal":
        raise ValueError(f"unknown loss {name!r}")
    p = torch.sigmoid(logits)
    p_t = p * targets + (1.0 - p) * (1.0 - targets)
    return (1.0 - p_t).pow(gamma) * bce


def weighted_label_mean(per_element: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_l w_l * mean_n x[n, l] / sum_l w_l`` over a (..., L) tensor."""
    per_label = per_element.reshape(-1, per_element.shape[-1]).mean(0)  # (L,)
    return (per_label * weights).sum() / weights.sum()


class LabelWeightedLoss:
    """The configured loss as a callable: element loss, smoothing, per-label weights.

    Args:
        cfg: The ``loss`` section of the run configuration.
        default_weights: Weights used when ``cfg.label_weights`` is null: the metric's
            weights for the run's labels (``any`` = 2, each subtype 1).
    """

    def __init__(self, cfg: LossConfig, default_weights: Sequence[float] | np.ndarray) -> None:
        self.cfg = cfg
        chosen = cfg.label_weights if cfg.label_weights is not None else default_weights
        self.weights = torch.as_tensor(np.asarray(chosen, dtype=np.float64))

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if logits.shape[-1] != len(self.weights):
            raise ValueError(
                f"loss.label_weights has {len(self.weights)} values but the model has "
                f"{logits.shape[-1]} labels"
            )
        y = smooth_targets(targets.to(logits.dtype), self.cfg.smoothing)
        per = elementwise_loss(logits, y, self.cfg.name, self.cfg.gamma)
        w = self.weights.to(device=logits.device, dtype=logits.dtype)
        return weighted_label_mean(per, w)


def build_loss(
    cfg: LossConfig, default_weights: Sequence[float] | np.ndarray = LABEL_WEIGHTS
) -> LossFn:
    """The training loss of a run from its ``loss`` section (see :class:`LabelWeightedLoss`)."""
    return LabelWeightedLoss(cfg, default_weights)

