"""Issue 11 point 6: heatmaps run in a bounded pool of their own (ordering, not timing: the
latency figures come from benchmarks/bench_web.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from web_helpers import FakePredictor, as_files, phantom_studies, wait_done

from ich.web.heatpool import HeatmapPool, PoolBusyError


def test_pool_shares_identical_requests_and_is_bounded() -> None:
    pool = HeatmapPool(max_pending=2)
    gate = threading.Event()
    calls: list[str] = []

    def slow(tag: str) -> bytes:
        calls.append(tag)
        gate.wait(5)
        return tag.encode()

    a1 = pool.submit("a", lambda: slow("a"))
    a2 = pool.submit("a", lambda: slow("a-again"))
    assert a1 is a2
    pool.submit("b", lambda: slow("b"))
    with pytest.raises(PoolBusyError):
        pool.submit("c", lambda: slow("c"))
    gate.set()
    assert a1.result(5) == b"a"
    end = time.time() + 5
    while pool.pending and time.time() < end:
        time.sleep(0.01)
    assert pool.pending == 0 and calls == ["a", "b"]
    pool.shutdown()


def test_heatmap_flood_leaves_cheap_requests_answered(make_client, tiny_cohort: Path) -> None:
    predictor = FakePredictor(heat_delay=0.05)
    client = make_client(predictor=predictor)
    files = next(iter(phantom_studies(tiny_cohort).values()))
    sid = client.post("/api/studies", files=as_files(files)).json()["id"]
    wait_done(client, sid)
    n = len(files)
    codes: list[int] = []

    def heat(i: int) -> None:
        codes.append(client.get(f"/api/studies/{sid}/slices/{i % n}/heatmap.png").status_code)

    threads = [threading.Thread(target=heat, args=(i,)) for i in range(80)]
    for t in threads:
        t.start()
    pool = client.app.state.ich.heat_pool
    end = time.time() + 10
    while pool.pending < 5 and time.time() < end:
        time.sleep(0.005)
    assert client.get("/api/studies").status_code == 200
    assert client.get(f"/api/studies/{sid}/slices/1.png").status_code == 200
    assert pool.pending >= 3  # the cheap answers came while heatmaps were still waiting
    for t in threads:
        t.join(60)
    assert codes.count(200) == 80
    assert predictor.heat_calls <= n + 1  # identical requests shared; +1 for the warm-up
