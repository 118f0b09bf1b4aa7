"""Settings of the web application, one typed object built by ``ich serve`` or by tests.

Why a dataclass and not globals: several apps (tests, a restarted server) must coexist in one
process, each with its own data folder, token and limits.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from ich.errors import ConfigError

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})


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
        allowed_hosts: Extra names the Host header may carry (``--allowed-host``), besides
            the bound host (and, for loopback, every loopback name).
        ssl_certfile: PEM certificate for HTTPS (``--ssl-certfile``); with ``ssl_keyfile``.
        ssl_keyfile: PEM private key for HTTPS (``--ssl-keyfile``).
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
    allowed_hosts: list[str] = field(default_factory=list)
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    @property
    def tls(self) -> bool:
        """Whether the server speaks HTTPS (then cookies are ``Secure``)."""
        return self.ssl_certfile is not None

    def allowed_host_names(self) -> frozenset[str]:
        """Host header names this server answers (DNS-rebinding defence).

        The bound host, every loopback name when bound to loopback, the machine's own names
        when bound to all interfaces, and ``allowed_hosts``.
        """
        extra = (h.lower().strip("[]") for h in self.allowed_hosts)
        names = {self.host.lower().strip("[]"), *extra}
        if self.host in LOOPBACK_HOSTS or self.host in WILDCARD_HOSTS:
            names |= LOOPBACK_HOSTS
        if self.host in WILDCARD_HOSTS:
            names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        return frozenset(names - {"", "0.0.0.0", "::"})

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
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ConfigError("HTTPS needs both --ssl-certfile and --ssl-keyfile")
        for path in (self.ssl_certfile, self.ssl_keyfile):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"{path}: TLS certificate or key file not found")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port {self.port} is not a valid TCP port")
