"""``ich serve --dicom-port``: web app and node in one process with a real trained run; a study
sent by storescu appears in the worklist with its source and gets results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from net_helpers import free_port, tool, wait_for, wait_port

pytestmark = [pytest.mark.net, pytest.mark.slow]


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def test_serve_with_dicom_port_real_model(tiny_run: Path, ct_study: list[Path],
                                          tmp_path: Path) -> None:
    http, dicom = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "ich", "serve", "--model", str(tiny_run), "--data",
         str(tmp_path / "data"), "--port", str(http), "--dicom-port", str(dicom),
         "--dicom-aet", "ICHWEB", "--stable-seconds", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_port(http, 90)
        wait_port(dicom, 30)
        subprocess.run([tool("storescu"), "-aec", "ICHWEB", "-aet", "CT_SCANNER", "127.0.0.1",
                        str(dicom), *map(str, ct_study)], check=True, capture_output=True,
                       timeout=120)
        base = f"http://127.0.0.1:{http}/api/studies"
        done = wait_for(lambda: [s for s in _get(base) if s["status"] == "done"], 120,
                        "the received study in the worklist, done")
        study = done[0]  # type: ignore[index]
        assert study["source"] == "DICOM from CT_SCANNER"
        assert study["probabilities"] is not None
        detail = _get(f"{base}/{study['id']}")
        assert detail["sends"] == [] and detail["n_slices"] == len(ct_study)
        sr = wait_for(lambda: list((tmp_path / "data" / "outputs").rglob("sr_*.dcm")), 60,
                      "the SR written")
        assert sr
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(30)
        log.close()
    assert b"Traceback" not in (tmp_path / "serve.log").read_bytes()
