"""Exponential moving average (EMA) of model weights (``train.ema_decay``).

After every optimizer step ``ema = decay * ema + (1 - decay) * weights`` for every
floating-point entry of the state dict (parameters and BatchNorm statistics); integer buffers
(``num_batches_tracked``) are copied. The averaged model usually validates better and more
smoothly than the raw one late in training, which is why the winners of the RSNA challenge and
timm's recipes use it; with EMA on, validation and ``slice_best`` use the averaged weights.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class ModelEma:
    """A frozen copy of ``model`` whose weights track the EMA of the training weights.

    Args:
        model: The model being trained (not a DDP wrapper: pass its ``.module``).
        decay: ``decay`` in ``ema = decay * ema + (1 - decay) * weights``, e.g. 0.999.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for param in self.module.parameters():
            param.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One EMA step towards ``model``'s current weights."""
        source = model.state_dict()
        for name, ema_value in self.module.state_dict().items():
            value = source[name].detach()
            if ema_value.dtype.is_floating_point:
                ema_value.mul_(self.decay).add_(value.to(ema_value.dtype), alpha=1 - self.decay)
            else:
                ema_value.copy_(value)

    def state_dict(self) -> dict[str, Any]:
        """The averaged weights (CPU tensors, as checkpoints store them)."""
        return {k: v.detach().cpu() for k, v in self.module.state_dict().items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore averaged weights saved by :meth:`state_dict`."""
        self.module.load_state_dict(state)
