"""Benchmark of the DICOM node with dcmtk peers on 127.0.0.1, in one run.

Measures (1) receive rate: dcmtk ``storescu`` sending one N-slice study to the node vs to dcmtk
``storescp`` (the baseline, same files, alternated, median of ``--repeats``); (2) the time from
the stable moment (association release + ``--stable-seconds``) to the SR accepted by a
destination (``storescp``), from the node's own records; (3) the node's memory (RSS) while 10
studies arrive at once by 10 associations. With ``--model RUN`` the real predictor is used;
without it the deterministic stand-in of the web tests (measures the plumbing only).

    python benchmarks/bench_node.py [--model RUN] [--slices 40] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import CTImageStorage, generate_uid

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "rsna-sample" / "stage_2_train"
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/usr/sbin:/bin"


def dcmtk(name: str) -> str:
    """A dcmtk tool from the system (pynetdicom puts Python apps of the same name in venvs)."""
    path = shutil.which(name, path=SYSTEM_PATH)
    if path is None:
        sys.exit(f"{name} not found: apt-get install dcmtk")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def make_study(out: Path, n: int, salt: str, source: Path | None) -> list[Path]:
    """``n`` conformant CT slices of one new study: the real sample's largest series (or a
    phantom study when the sample is absent) cycled, 5 mm apart, fresh UIDs per ``salt``."""
    if source is None:
        groups: dict[str, list[Path]] = {}
        files = sorted(SAMPLE.glob("*.dcm")) if SAMPLE.is_dir() else []
        if not files:
            from ich.phantom import generate_cohort

            generate_cohort(out / "phantom", studies=1, seed=0, size=512)
            files = sorted((out / "phantom" / "images").glob("*.dcm"))
        for p in files:
            groups.setdefault(str(pydicom.dcmread(p, stop_before_pixels=True)
                                  .SeriesInstanceUID), []).append(p)
        src = max(groups.values(), key=len)
    else:
        src = sorted(source.rglob("*.dcm"))
    study, series = generate_uid(entropy_srcs=[salt, "st"]), generate_uid(entropy_srcs=[salt])
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        ds = pydicom.dcmread(src[i % len(src)])
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[salt, str(i)])
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.ImagePositionPatient = [-125.0, -125.0, 5.0 * i]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.InstanceNumber = i + 1
        path = out / f"{salt}_{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def send(port: int, aet: str, files: list[Path]) -> float:
    """Seconds storescu needs to send ``files`` in one association (process start included)."""
    start = time.perf_counter()
    subprocess.run([dcmtk("storescu"), "-aec", aet, "127.0.0.1", str(port), *map(str, files)],
                   check=True, capture_output=True)
    return time.perf_counter() - start


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2**20


def predictor(model: list[Path] | None) -> Any:
    if model:
        from ich.web.predictor import load_predictor

        return load_predictor(model[0] if len(model) == 1 else model)
    sys.path.insert(0, str(REPO / "tests" / "web"))
    from web_helpers import FakePredictor

    return FakePredictor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, nargs="+", default=None)
    ap.add_argument("--slices", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stable-seconds", type=float, default=1.0)
    ap.add_argument("--dicom", type=Path, default=None, help="source slices (default: sample)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    from ich.net.node import Node, NodeSettings
    from ich.net.peers import parse_peer

    tmp = Path(tempfile.mkdtemp(prefix="bench_node_"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        files = make_study(tmp / "study", args.slices, "rate", args.dicom)
        mb = sum(f.stat().st_size for f in files) / 2**20
        base_port, dest_port = free_port(), free_port()
        for port, folder, aet in ((base_port, "baseline", "BASE"), (dest_port, "dest", "DEST")):
            (tmp / folder).mkdir()
            procs.append(subprocess.Popen([dcmtk("storescp"), "-aet", aet, "-od",
                                           str(tmp / folder), str(port)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_port(port)
        pred = predictor(args.model)
        node = Node(NodeSettings(data_dir=tmp / "data", port=0,
                                 stable_seconds=args.stable_seconds,
                                 destinations=[parse_peer(f"DEST@127.0.0.1:{dest_port}")]),
                    predictor=pred)
        node.start()
        # (1) receive rate, alternating baseline and node, same files.
        t_base, t_node = [], []
        for _ in range(args.repeats):
            t_base.append(send(base_port, "BASE", files))
            t_node.append(send(node.port, "ICH", files))
        # (2) stable moment -> SR accepted, for the study sent last (re-sent: re-triaged).
        # Wait for each re-send's triage and delivery; the last one is measured.
        uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
        latency = stable_to_sr(node, uid, 120.0)
        # (3) memory while 10 studies arrive at once.
        studies = [make_study(tmp / f"s{i}", args.slices, f"mem{i}", args.dicom)
                   for i in range(10)]
        rss0, peak = rss_mib(), [rss_mib()]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], rss_mib())
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.perf_counter()
        senders = [subprocess.Popen([dcmtk("storescu"), "-aec", "ICH", "-aet", f"CT{i}",
                                     "127.0.0.1", str(node.port), *map(str, s)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                   for i, s in enumerate(studies)]
        assert all(p.wait(600) == 0 for p in senders)
        receive10 = time.perf_counter() - start
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and len(node.store.query(
                "SELECT 1 FROM node_studies WHERE status='done'")) < 11:
            time.sleep(0.2)
        all10 = time.perf_counter() - start
        stop.set()
        sampler.join()
        node.stop()
        n = args.slices
        res = {
            "slices": n, "study_mib": round(mb, 1),
            "baseline_storescp_inst_per_s": round(n / statistics.median(t_base), 1),
            "node_inst_per_s": round(n / statistics.median(t_node), 1),
            "ratio_node_vs_storescp": round(statistics.median(t_base)
                                            / statistics.median(t_node), 2),
            "stable_to_sr_accepted_s": round(latency, 2),
            "model": "stand-in (no model)" if not args.model else str(args.model),
            "ten_studies_receive_s": round(receive10, 1),
            "ten_studies_all_triaged_and_sent_s": round(all10, 1),
            "rss_before_mib": round(rss0, 0), "rss_peak_during_10_mib": round(peak[0], 0),
        }
        print(json.dumps(res, indent=2))
        if args.json:
            args.json.write_text(json.dumps(res, indent=2))
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def stable_to_sr(node: Any, uid: str, timeout: float) -> float:
    """Seconds from the study's stable moment to its SR's accepted C-STORE (node records)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = node.store.query(
            "SELECT o.sent AS sent, s.last_received AS last, a.ended AS ended FROM node_outbox o "
            "JOIN node_studies s ON s.study_instance_uid = o.study_instance_uid "
            "JOIN node_associations a ON a.id = s.last_assoc WHERE o.study_instance_uid=? AND "
            "o.sop_class_uid='1.2.840.10008.5.1.4.1.1.88.34' AND s.status='done' "
            "ORDER BY o.id DESC LIMIT 1", (uid,))
        if rows and rows[0]["sent"] and rows[0]["sent"] > rows[0]["ended"]:
            stable = max(rows[0]["last"], rows[0]["ended"]) + node.settings.stable_seconds
            return float(rows[0]["sent"] - stable)
        time.sleep(0.1)
    raise RuntimeError("no SR accepted in time")


if __name__ == "__main__":
    main()
