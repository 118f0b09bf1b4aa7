"""Settings of the web application, one typed object built by ``ich serve`` or by tests.

Why a dataclass and not globals: several apps (tests, a restarted server) must coexist in one
process, each with its own data folder, token and limits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ich.errors import ConfigError

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def default_data_dir() -> Path:
    """The user's data folder for ich (``$XDG_DATA_HOME/ich`` or ``~/.local/share/ich``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ich"


@dataclass
class WebSettings:
    """Everything the server needs to know.

    Attributes:
        data_dir: Folder holding ``ich.sqlite`` and the stored files (created when missing).
        host: Interface to bind; anything but loopback requires ``token``.
        port: TCP port.
        token: Shared secret checked on every request when set (``Authorization: Bearer`` or
            ``?token=`` for image URLs); ``None`` disables the check (loopback only).
        model_dir: Run folder(s) for ``ich.inference.Predictor.from_run`` when no predictor
            object is given to ``create_app``.
        max_upload_bytes: Largest accepted request body (413 above it).
        max_files: Most files in one upload, after unpacking .zip archives (413 above it).
        start_worker: Run the background prediction worker (tests switch it off to simulate a
            server that stopped before a job ran).
        png_cache_items: Rendered PNGs kept in memory (LRU), so scrolling back is instant.
        device: Torch device for the predictor built from ``model_dir``.
    """

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    model_dir: Path | list[Path] | None = None
    max_upload_bytes: int = 2 * 1024**3
    max_files: int = 5000
    start_worker: bool = True
    png_cache_items: int = 2048
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).expanduser()
        if self.token == "":
            self.token = None

    def validate(self) -> None:
        """Refuse unsafe or impossible settings before anything binds a socket.

        Raises:
            ConfigError: a non-loopback host without a token, or non-positive limits.
        """
        if self.host not in LOOPBACK_HOSTS and not self.token:
            raise ConfigError(
                f"binding to {self.host} exposes patient images to the network: "
                "set a token with --token or the ICH_TOKEN environment variable"
            )
        if self.max_upload_bytes <= 0 or self.max_files <= 0:
            raise ConfigError("upload limits must be positive")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port {self.port} is not a valid TCP port")
