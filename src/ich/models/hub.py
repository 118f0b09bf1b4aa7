"""Can timm's pretrained weights be had on this machine? Asked before training starts.

Why: on a machine without internet, ``timm.create_model(..., pretrained=True)`` spends about
70 s in Hugging Face hub retries and then fails. A one-second probe (and a look in the local
caches, which work offline) lets ``ich train`` fall back to training from scratch with one
clear line instead, or use the cached file without any network.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

#: Where timm fetches weights from; probed with one TCP connection.
HUB_ADDRESS: tuple[str, int] = ("huggingface.co", 443)
#: Seconds the probe may take (DNS + TCP connect) before the hub counts as unreachable.
PROBE_TIMEOUT = 3.0
_OFFLINE_VALUES = ("1", "true", "yes", "on")


def hub_offline() -> str | None:
    """Why the hub cannot be reached (``HF_HUB_OFFLINE`` set, no connection), or None."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in _OFFLINE_VALUES:
        return "HF_HUB_OFFLINE is set"
    result: dict[str, str] = {}

    def probe() -> None:
        try:
            with socket.create_connection(HUB_ADDRESS, timeout=PROBE_TIMEOUT):
                result["ok"] = ""
        except OSError as exc:
            result["error"] = f"{HUB_ADDRESS[0]}:{HUB_ADDRESS[1]} unreachable ({exc})"

    # A thread because name resolution (getaddrinfo) has no timeout of its own.
    thread = threading.Thread(target=probe, name="ich-hub-probe", daemon=True)
    thread.start()
    thread.join(PROBE_TIMEOUT + 0.5)
    if "ok" in result:
        return None
    return result.get("error", f"{HUB_ADDRESS[0]}: no answer within {PROBE_TIMEOUT:.0f} s")


def weights_in_cache(backbone: str) -> bool:
    """Whether timm's pretrained weights for ``backbone`` are already on this machine
    (Hugging Face hub cache, or torch hub's checkpoint folder for URL weights)."""
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(backbone)
    except Exception:  # unknown names and tags: checked elsewhere with a proper message
        return False
    if cfg is None:
        return False
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else []
        for name in [*names, "model.safetensors", "pytorch_model.bin"]:
            if isinstance(try_to_load_from_cache(cfg.hf_hub_id, name), str):
                return True
    if isinstance(cfg.url, str) and cfg.url:
        import torch

        if (Path(torch.hub.get_dir()) / "checkpoints" / cfg.url.rsplit("/", 1)[-1]).is_file():
            return True
    return False


def pretrained_unavailable(backbone: str) -> str | None:
    """None when timm can load pretrained ``backbone`` weights now, else the reason why not.

    When the weights are cached but the hub is unreachable, ``HF_HUB_OFFLINE=1`` is set for
    this process so that timm reads the cache without trying the network first.
    """
    reason = hub_offline()
    if reason is None:
        return None
    if weights_in_cache(backbone):
        os.environ["HF_HUB_OFFLINE"] = "1"
        return None
    return reason
