"""kill -9 of the node (after receiving, and mid-triage), then restart: nothing lost, nothing
triaged or sent twice."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from net_helpers import Proc, free_port, tool, wait_for, wait_port

pytestmark = [pytest.mark.net, pytest.mark.slow]
SCRIPT = Path(__file__).with_name("node_process.py")


def _start(data: Path, port: int, dest: str, delay: float) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(data), str(port), "1.5",
                             str(delay), dest], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_port(port, 60)
    return proc


def _kill9(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


def _query(data: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(data / "ich.sqlite", timeout=10) as db:
        return list(db.execute(sql).fetchall())


def _status(data: Path) -> str | None:
    try:
        rows = _query(data, "SELECT status FROM node_studies")
    except sqlite3.OperationalError:
        return None
    return str(rows[0][0]) if rows else None


def test_kill9_after_receive_and_mid_triage(tmp_path: Path, ct_study: list[Path]) -> None:
    dport, out = free_port(), tmp_path / "received"
    out.mkdir()
    dest = Proc([tool("storescp"), "-aet", "DEST", "-od", str(out), str(dport)], cwd=tmp_path)
    data, port = tmp_path / "data", free_port()
    node = _start(data, port, f"DEST@127.0.0.1:{dport}", delay=4.0)
    try:
        wait_port(dport)
        subprocess.run([tool("storescu"), "-aec", "ICH", "127.0.0.1", str(port),
                        *map(str, ct_study)], check=True, capture_output=True, timeout=120)
        _kill9(node)  # received and released, not yet stable: nothing may be lost
        assert len(_query(data, "SELECT 1 FROM node_instances")) == len(ct_study)
        node = _start(data, port, f"DEST@127.0.0.1:{dport}", delay=4.0)
        wait_for(lambda: _status(data) == "triaging", 60, "triage to start")
        time.sleep(0.5)
        _kill9(node)  # mid-triage (the stand-in model takes 4 s)
        assert list(out.iterdir()) == []
        node = _start(data, port, f"DEST@127.0.0.1:{dport}", delay=0.0)
        wait_for(lambda: len(list(out.iterdir())) >= 4, 60, "results after restart")
        wait_for(lambda: _query(data, "SELECT COUNT(*) FROM node_outbox WHERE status='sent'"
                                )[0][0] == 4, 20, "sends recorded")
        _kill9(node)  # after everything: a restart must not triage or send again
        node = _start(data, port, f"DEST@127.0.0.1:{dport}", delay=0.0)
        time.sleep(3)
        assert len(list(out.iterdir())) == 4  # one SR + three key images, once
        assert _query(data, "SELECT COUNT(*) FROM node_outbox")[0][0] == 4
        assert _status(data) == "done"
        assert _query(data, "SELECT COUNT(*) FROM studies")[0][0] == 1
    finally:
        if node.poll() is None:
            _kill9(node)
        dest.stop()
