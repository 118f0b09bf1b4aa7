"""Checking a torch device name before a command starts work on it.

Why a check of its own: ``torch.device("cuda")`` is accepted on a machine without a GPU and
fails only at the first tensor moved there, after the run folder exists and a traceback from deep
inside torch is all the user sees.
"""

from __future__ import annotations

from ich.errors import ConfigError


def check_device(name: str) -> None:
    """Raise ConfigError when ``name`` is not a device this machine has.

    Accepts ``auto``, ``cpu``, ``cuda``, ``cuda:N`` (N below the GPU count) and ``mps`` where
    PyTorch has it.
    """
    import torch

    if name in ("auto", "cpu"):
        return
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"device {name!r}: not a torch device ({exc}); use auto, cpu, "
                          "cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device {name!r}: no CUDA GPU is visible on this machine "
                              "(torch.cuda.is_available() is False); use cpu or auto")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device {name!r}: this machine has {count} GPU(s), "
                              f"cuda:0 to cuda:{count - 1}")
    elif device.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ConfigError(f"device {name!r}: Apple MPS is not available here")
    elif device.type != "cpu":
        raise ConfigError(f"device {name!r}: unsupported device type {device.type!r}")
