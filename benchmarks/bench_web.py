"""Benchmark of the web application against a real uvicorn server on 127.0.0.1.

Measures (1) from the end of the upload of one N-slice study to its results, (2) slice PNG and
(3) heatmap PNG latency, uncached (first request per slice) and cached, with a bounded number of
requests, and (4) the latency of the worklist and of slice PNGs while a flood of concurrent
heatmap requests is being served (target: ≤ 200 ms; Grad-CAM has a bounded pool of its own).
With ``--model RUN`` the real ``ich.inference.Predictor`` is used; without it, the
deterministic test double from ``tests/web/web_helpers.py`` (during the flood its
heatmaps sleep ``--heat-delay`` seconds, standing in for Grad-CAM's cost).

    python benchmarks/bench_web.py [--model RUN] [--slices 40] [--requests 40] [--dicom DIR]
        [--flood 80] [--heat-delay 0.05]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pydicom

REPO = Path(__file__).resolve().parents[1]
SAMPLE = Path(os.environ.get("ICH_RSNA_SAMPLE", REPO.parent / "shared" / "data" / "rsna-sample")
              ) / "stage_2_train"


def study_files(n: int, dicom_dir: Path | None) -> list[tuple[str, bytes]]:
    """``n`` slices of one series: from ``dicom_dir`` as they are, or the real sample's largest
    series cycled under new UIDs and positions (5 mm apart) when no folder is given."""
    if dicom_dir is not None:
        return [(p.name, p.read_bytes()) for p in sorted(dicom_dir.rglob("*.dcm"))[:n]]
    groups: dict[str, list[Path]] = {}
    for p in sorted(SAMPLE.glob("*.dcm")):
        groups.setdefault(str(pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID),
                          []).append(p)
    src = max(groups.values(), key=len)
    out = []
    for i in range(n):
        ds = pydicom.dcmread(src[i % len(src)])
        ds.StudyInstanceUID, ds.SeriesInstanceUID = "ID_benchstudy", "ID_benchseries"
        ds.SOPInstanceUID = f"ID_bench{i:04d}"
        ds.ImagePositionPatient = [-125.0, -125.0, 5.0 * i]
        buf = io.BytesIO()
        ds.save_as(buf)
        out.append((f"bench_{i}.dcm", buf.getvalue()))
    return out


@functools.cache
def web_helpers() -> Any:
    """The web tests' helper module (its test double and free-port helper), loaded once."""
    spec = importlib.util.spec_from_file_location("web_helpers", REPO / "tests/web/web_helpers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_double() -> Any:
    """The deterministic stand-in predictor of the web tests."""
    return web_helpers().FakePredictor()


def start_server(data: Path, model: list[Path] | None, predictor: Any = None
                 ) -> tuple[Callable[[], None], str]:
    """The server on a free loopback port; returns (stop, base URL).

    A real model is served by ``ich serve`` in a process of its own, as deployed: the flood's
    client threads then share no interpreter lock with the server, so the latencies are the
    server's. The test double lives only in this process, so it runs uvicorn in a thread here.
    """
    port = int(web_helpers().free_port())
    if model:
        cmd = [sys.executable, "-m", "ich", "serve", "--data", str(data), "--port", str(port)]
        for run_dir in model:
            cmd += ["--model", str(run_dir)]
        log = (data / "serve.log").open("wb")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"bench_web: ich serve exited ({proc.returncode}): "
                                 + (data / "serve.log").read_text(errors="replace")[-2000:])
            try:
                httpx.get(base + "/api/info", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                time.sleep(0.1)

        def stop() -> None:
            proc.terminate()
            proc.wait(timeout=30)
            log.close()
        return stop, base

    import uvicorn

    from ich.web.app import create_app
    from ich.web.settings import WebSettings

    settings = WebSettings(data_dir=data, port=port, model_dir=None)
    app = create_app(settings, predictor)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)

    def stop_thread() -> None:
        server.should_exit = True
    return stop_thread, f"http://127.0.0.1:{port}"


def timed(client: httpx.Client, url: str) -> float:
    """Seconds for one GET (asserting it succeeded)."""
    t = time.perf_counter()
    r = client.get(url)
    r.raise_for_status()
    return time.perf_counter() - t


def summary(values: list[float]) -> dict[str, float]:
    """Median, p95 and max in milliseconds."""
    ms = sorted(v * 1000 for v in values)
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 1),
            "p95_ms": round(ms[max(0, int(0.95 * len(ms)) - 1)], 1), "max_ms": round(ms[-1], 1)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    files = study_files(args.slices, args.dicom)
    heat_error = ""
    with tempfile.TemporaryDirectory() as tmp:
        double = None if args.model else test_double()
        stop, base = start_server(Path(tmp), args.model, double)
        client = httpx.Client(base_url=base, timeout=120)
        while args.model and not (info := client.get("/api/info").json())["model_ready"]:
            if "failed" in str(info["provenance"].get("note", "")):
                raise SystemExit(f"bench_web: {info['provenance']['note']}")
            time.sleep(0.2)  # the model loads once at startup; not part of the upload timing
        t0 = time.perf_counter()
        r = client.post("/api/studies", files=[("files", (n, b, "application/dicom"))
                                               for n, b in files])
        r.raise_for_status()
        t_upload = time.perf_counter()
        sid = r.json()["id"]
        while (d := client.get(f"/api/studies/{sid}").json())["status"] in ("queued", "processing"):
            time.sleep(0.02)
        t_done = time.perf_counter()
        n = min(args.requests, d["n_slices"])
        url = f"/api/studies/{sid}/slices/{{}}.png?window={{}}"
        first = [timed(client, url.format(i, "brain")) for i in range(n)]
        cached = [timed(client, url.format(i, "brain")) for i in range(n)]
        other = [timed(client, url.format(i, "40,120")) for i in range(n)]
        heat_url = f"/api/studies/{sid}/slices/{{}}/heatmap.png?label=any"
        try:
            heat = [timed(client, heat_url.format(i)) for i in range(n)]
            heat_cached = [timed(client, heat_url.format(i)) for i in range(n)]
        except httpx.HTTPStatusError as exc:
            heat, heat_cached = [], []
            heat_error = exc.response.json().get("detail", str(exc))
        if double is not None:  # from here on the double's heatmaps cost like Grad-CAM's
            double.heat_delay = args.heat_delay
        calm, flood, n_flood = cheap_under_flood(client, sid, d["n_slices"], args.flood)
        stop()
    return {
        "predictor": "model " + ",".join(map(str, args.model)) if args.model else "test double",
        "slices": d["n_slices"], "status": d["status"],
        "upload_request_s": round(t_upload - t0, 3),
        "upload_end_to_results_s": round(t_done - t_upload, 3),
        "slice_png_first": summary(first), "slice_png_cached": summary(cached),
        "slice_png_new_window": summary(other),
        "heatmap_png_first": summary(heat) if heat else heat_error,
        "heatmap_png_cached": summary(heat_cached) if heat else heat_error,
        "cheap_requests_calm": summary(calm),
        f"cheap_requests_during_{args.flood}_heatmaps": summary(flood),
        "flood_heatmaps_answered_200": n_flood,
    }


def cheap_under_flood(client: httpx.Client, sid: str, n_slices: int, n_heat: int
                      ) -> tuple[list[float], list[float], int]:
    """Worklist and uncached slice-PNG latencies, calm and while ``n_heat`` uncached heatmaps
    (other labels than those measured above) are requested at once."""
    labels = ["epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural"]
    urls = [f"/api/studies/{sid}/slices/{i % n_slices}/heatmap.png?label={labels[i % 5]}"
            for i in range(n_heat)]

    def cheap(k: int) -> list[float]:
        out = []
        for j in range(10):
            out.append(timed(client, "/api/studies"))
            out.append(timed(client, f"/api/studies/{sid}/slices/{j % n_slices}.png"
                             f"?window=40,{300 + 10 * k + j}"))
        return out

    calm = cheap(0)
    codes: list[int] = []
    threads = [threading.Thread(target=lambda u=u: codes.append(client.get(u).status_code))
               for u in urls]
    for t in threads:
        t.start()
    time.sleep(0.05)  # let the flood arrive first
    flood = cheap(1)
    for t in threads:
        t.join()
    return calm, flood, codes.count(200)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, action="append", help="trained run folder(s)")
    p.add_argument("--slices", type=int, default=40)
    p.add_argument("--requests", type=int, default=40, help="images per measurement (bounded)")
    p.add_argument("--dicom", type=Path, default=None, help="folder of one series to upload")
    p.add_argument("--flood", type=int, default=80, help="concurrent heatmap requests")
    p.add_argument("--heat-delay", type=float, default=0.05,
                   help="seconds per heatmap of the test double (Grad-CAM stand-in)")
    from ich.web.app import quiet_patient_data_logs

    quiet_patient_data_logs()
    report = run(p.parse_args())
    print(json.dumps(report, indent=1))
    ok = report["upload_end_to_results_s"] <= 5.0 and all(
        isinstance(report[k], dict) and report[k]["median_ms"] <= 100
        for k in report if k.endswith(("first", "cached")))
    flood = report[f"cheap_requests_during_{report_flood(report)}_heatmaps"]
    ok = ok and flood["max_ms"] <= 200
    print("targets (≤ 5 s to results, ≤ 100 ms per image, ≤ 200 ms for cheap requests under a "
          "heatmap flood):", "met" if ok else "NOT met", file=sys.stderr)
    return 0


def report_flood(report: dict[str, Any]) -> str:
    """The flood size recorded in a report's key."""
    key = next(k for k in report if k.startswith("cheap_requests_during_"))
    return key.split("_")[3]


if __name__ == "__main__":
    raise SystemExit(main())
