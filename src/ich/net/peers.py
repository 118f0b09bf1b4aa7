"""DICOM peers written ``AET@HOST:PORT`` on the command line, and one-way digests for logs."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ich.errors import ConfigError

#: (0008,0054)-style AE titles: 1-16 characters, no backslash or control characters.
_AET = re.compile(r"^[^\\\x00-\x1f]{1,16}$")


@dataclass(frozen=True)
class Peer:
    """A remote Application Entity."""

    aet: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.aet}@{self.host}:{self.port}"


def check_aet(aet: str) -> str:
    """Return ``aet`` stripped, or raise ConfigError saying why it is not a valid AE title."""
    text = aet.strip()
    if not _AET.match(text):
        raise ConfigError(f"AE title {aet!r} must be 1-16 characters without backslashes")
    return text


def parse_peer(text: str) -> Peer:
    """Parse ``AET@HOST:PORT`` (IPv6 hosts in brackets: ``AET@[::1]:104``).

    Raises:
        ConfigError: the text does not have that shape or the port is not a TCP port.
    """
    match = re.match(r"^(?P<aet>[^@]+)@(?P<host>\[[^\]]+\]|[^:]+):(?P<port>\d+)$", text.strip())
    if match is None:
        raise ConfigError(f"peer {text!r} must look like AET@HOST:PORT (e.g. PACS@10.0.0.5:104)")
    port = int(match["port"])
    if not 0 < port < 65536:
        raise ConfigError(f"peer {text!r}: {port} is not a valid TCP port")
    return Peer(check_aet(match["aet"]), match["host"].strip("[]"), port)


def hash_id(value: str) -> str:
    """A short one-way digest of an identifier (UIDs never appear in logs as they are)."""
    return hashlib.sha256(value.encode()).hexdigest()[:10]
