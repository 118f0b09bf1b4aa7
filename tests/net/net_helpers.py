"""Helpers of the network tests: conformant copies of phantom/RSNA files, free ports, peers
started as processes (stopped by PID), and waiting.

(A module of its own, not conftest.py, so test files can import these names.)
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pydicom
from pydicom.uid import CTImageStorage, generate_uid


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def conformant_copies(files: Iterable[Path], out: Path, salt: str = "",
                      transform: Callable[[pydicom.Dataset], None] | None = None) -> list[Path]:
    """Copies with valid UIDs (RSNA/phantom ``ID_...`` mapped to 2.25 UIDs, ``salt`` makes a
    new study from the same files) and (0008,0016) SOP Class UID set, as storescu requires."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for f in files:
        ds = pydicom.dcmread(f)
        for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                   "FrameOfReferenceUID"):
            if kw in ds:
                setattr(ds, kw, str(generate_uid(entropy_srcs=[salt, str(getattr(ds, kw))])))
        ds.SOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if "Modality" not in ds:
            ds.Modality = "CT"
        if transform is not None:
            transform(ds)
        path = out / f"{Path(f).stem}.dcm"
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
    return written


def wait_for(check: Callable[[], object], timeout: float, what: str) -> object:
    """Poll ``check`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def tool(name: str) -> str:
    """Path of a Debian tool (the test is skipped where it is not installed)."""
    import pytest

    # System folders only: pynetdicom installs Python apps named storescu/echoscu/... in the
    # virtual environment's bin, which must not stand in for dcmtk's.
    path = shutil.which(name, path="/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin")
    if path is None:
        pytest.skip(f"{name} not installed (apt-get install dcmtk dicom3tools orthanc)")
    return path


def recoded(files: Iterable[Path], encoder: str, out: Path) -> list[Path]:
    """Copies of ``files`` in ``out`` re-encoded by a dcmtk tool (``dcmcrle``, ``dcmcjpeg``):
    compressed transfer syntaxes as a scanner or PACS would send them."""
    out.mkdir(parents=True, exist_ok=True)
    done = []
    for i, f in enumerate(files):
        target = out / f"{i}.dcm"
        subprocess.run([tool(encoder), str(f), str(target)], check=True)
        done.append(target)
    return done


class Proc:
    """A peer process started by a test and stopped by its PID."""

    def __init__(self, args: list[str], cwd: Path | None = None) -> None:
        self.log = (cwd or Path("/tmp")) / f"{Path(args[0]).name}-{os.getpid()}-{time.time()}.log"
        self._fh = open(self.log, "wb")  # noqa: SIM115 - closed in stop()
        self.p = subprocess.Popen(args, cwd=cwd, stdout=self._fh, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.p.poll() is None:
            os.kill(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.p.pid, signal.SIGKILL)
                self.p.wait(10)
        self._fh.close()


def wait_port(port: int, timeout: float = 20.0) -> None:
    """Wait until something listens on loopback ``port``."""
    def up() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    wait_for(up, timeout, f"port {port}")
