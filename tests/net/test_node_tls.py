"""DICOM over TLS: the SCP with --tls-cert/--tls-key (and --tls-ca requiring client
certificates), reached by an ssl-wrapped pynetdicom SCU on loopback."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ich.errors import ConfigError
from ich.net.node import NodeSettings

pytestmark = pytest.mark.net


def _cert(folder: Path, name: str, ca: tuple[Path, Path] | None = None) -> tuple[Path, Path]:
    """A PEM certificate and key for 127.0.0.1 (self-signed, or signed by ``ca``)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not installed")
    crt, key = folder / f"{name}.crt", folder / f"{name}.key"
    subj = ["-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1"]
    if ca is None:
        subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-keyout", str(key), "-out", str(crt), *subj], check=True,
                       capture_output=True)
    else:
        csr = folder / f"{name}.csr"
        subprocess.run([openssl, "req", "-new", "-newkey", "rsa:2048", "-nodes",
                        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}"],
                       check=True, capture_output=True)
        subprocess.run([openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey",
                        str(ca[1]), "-CAcreateserial", "-days", "2", "-out", str(crt)],
                       check=True, capture_output=True)
    return crt, key


def _echo(port: int, ctx: ssl.SSLContext | None) -> bool:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title="SENDER")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title="ICH",
                         tls_args=(ctx, "127.0.0.1") if ctx is not None else None)
    if not assoc.is_established:
        return False
    ok = bool(assoc.send_c_echo().Status == 0)
    assoc.release()
    return ok


def test_tls_echo_and_client_certificates(make_node: Any, tmp_path: Path) -> None:
    server = _cert(tmp_path, "node")
    node = make_node(tls_cert=server[0], tls_key=server[1])
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(server[0]))
    assert _echo(node.port, client)
    assert not _echo(node.port, None)  # plain DICOM is not spoken on a TLS port

    ca = _cert(tmp_path, "ca")
    strict = make_node(data_dir=tmp_path / "strict", tls_cert=server[0], tls_key=server[1],
                       tls_ca=ca[0])
    assert not _echo(strict.port, client)  # no client certificate
    signed = _cert(tmp_path, "sender", ca=ca)
    client.load_cert_chain(str(signed[0]), str(signed[1]))
    assert _echo(strict.port, client)


def test_tls_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="both"):
        NodeSettings(data_dir=tmp_path, tls_cert=tmp_path / "x.crt").validate()
    with pytest.raises(ConfigError, match=r"missing\.crt"):
        NodeSettings(data_dir=tmp_path, tls_cert=tmp_path / "missing.crt",
                     tls_key=tmp_path / "missing.key").validate()
