"""Benchmark: ``ich prepare`` (build_cache) against the naive per-slice PNG loop.

The naive loop is what most RSNA 2019 notebooks started with: pydicom ``dcmread`` ->
``pixel_array`` -> HU -> three windows in float64 -> ``cv2.resize`` -> one PNG per slice, in one
process. Both run on the same phantom files (512 x 512) in one invocation; the script prints both
rates, the ratio and peak memory, and peak memory of ``build_cache`` at two file counts to show it
does not grow with the number of files.

Usage::

    python benchmarks/bench_prepare.py --slices 2000 --json benchmarks/out/prepare.json
    python benchmarks/bench_prepare.py --cohort DIR   # reuse a cohort made by `ich synth`
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pydicom

WINDOWS = ((40.0, 80.0), (80.0, 200.0), (40.0, 380.0))  # brain, subdural, soft tissue


def naive_loop(files: list[Path], out: Path, size: int) -> float:
    """The baseline: one process, float64 windows, a PNG per slice. Returns seconds."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for path in files:
        ds = pydicom.dcmread(path)
        hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        channels = []
        for center, width in WINDOWS:
            low, high = center - width / 2, center + width / 2
            channels.append((np.clip(hu, low, high) - low) / (high - low))
        img = cv2.resize(np.stack(channels, axis=-1), (size, size))
        cv2.imwrite(str(out / f"{path.stem}.png"), (img * 255).astype(np.uint8))
    return time.perf_counter() - start


def ensure_cohort(cohort: Path | None, slices: int, workdir: Path) -> Path:
    """The images folder of a phantom cohort with at least ``slices`` 512 x 512 files."""
    if cohort is not None:
        return cohort / "images" if (cohort / "images").is_dir() else cohort
    from ich.phantom import generate_cohort

    out = workdir / "cohort"
    studies = max(1, slices // 30 + 1)  # ~34 slices per study on average
    while True:
        generate_cohort(out, studies=studies, seed=0, size=512, workers=2)
        if len(list((out / "images").glob("*.dcm"))) >= slices:
            return out / "images"
        shutil.rmtree(out)
        studies += max(1, studies // 4)


def subset(images: Path, n: int, dst: Path) -> Path:
    """A folder of symlinks to the first ``n`` files (same bytes, a smaller build)."""
    dst.mkdir(parents=True, exist_ok=True)
    for path in sorted(images.glob("*.dcm"))[:n]:
        (dst / path.name).symlink_to(path.resolve())
    return dst


def _tree_rss_mib(root: int) -> float:
    """Resident memory (MiB) of a process and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            pages = int(Path(f"/proc/{entry}/statm").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = pages
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total * os.sysconf("SC_PAGE_SIZE") / 2**20


def child_build(images: Path, out: Path, workers: int, size: int, chunk: int) -> None:
    """Child mode: run build_cache and print its time and CPU time (process + reaped workers).

    No sampling thread runs here: a single-threaded build process may fork its workers, which
    is what ``ich prepare`` does; memory is sampled from the parent (:func:`measure_build`).
    """
    from ich.data.build import build_cache
    from ich.data.preprocess import PreprocessSpec

    start = time.perf_counter()
    summary = build_cache(images, out, spec=PreprocessSpec(size=size), workers=workers,
                          progress=False, chunk_size=chunk)
    seconds = time.perf_counter() - start
    cpu = sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
              for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"files": summary.files, "ok": summary.ok, "seconds": seconds,
                      "cpu_seconds": cpu, "parent_maxrss_mib": maxrss}))


def measure_build(
    images: Path, out: Path, workers: int, size: int, chunk: int, interval: float | None = None
) -> dict[str, float]:
    """Run build_cache in a fresh interpreter; sample its tree's RSS every ``interval`` s.

    Sampling reads all of ``/proc`` (CPU taken from the build on a small machine), so the
    timed run does not sample (``interval=None``) and the memory runs do.
    """
    cmd = [sys.executable, __file__, "--child-build", str(images), str(out), str(workers),
           str(size), str(chunk)]
    peak = 0.0
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        while interval is not None and proc.poll() is None:
            peak = max(peak, _tree_rss_mib(proc.pid))
            time.sleep(interval)
        stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(stderr)
    stats: dict[str, float] = json.loads(stdout.strip().splitlines()[-1])
    stats["peak_tree_mib"] = peak
    stats["slices_per_s"] = stats["files"] / stats["seconds"]
    stats["cpu_ms_per_slice"] = 1e3 * stats["cpu_seconds"] / stats["files"]
    return stats


def main(argv: list[str] | None = None) -> int:
    """Generate or reuse a cohort, time both pipelines, measure memory, print and save."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child-build"]:
        images, out, workers, size, chunk = argv[1:6]
        child_build(Path(images), Path(out), int(workers), int(size), int(chunk))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=2000, help="slices to time (>= 500)")
    parser.add_argument("--cohort", type=Path, help="reuse this cohort (or images folder)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--memory-counts", default="1000,2000", help="two file counts for memory")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    try:
        small, large = (int(v) for v in args.memory_counts.split(","))
        images = ensure_cohort(args.cohort, max(args.slices, large), work)
        files = sorted(images.glob("*.dcm"))[: args.slices]
        timed = subset(images, len(files), work / "timed")
        print(f"{len(files)} slices of 512x512 from {images}", flush=True)
        cpu0 = time.process_time()
        naive_s = naive_loop(files, work / "png", args.size)
        naive_cpu_ms = 1e3 * (time.process_time() - cpu0) / len(files)
        naive_rate = len(files) / naive_s
        print(f"naive loop (dcmread/pixel_array/float64 windows/resize/PNG, 1 process): "
              f"{naive_rate:.1f} slices/s ({naive_cpu_ms:.2f} ms CPU per slice)", flush=True)
        fast = measure_build(timed, work / "cache", args.workers, args.size, args.chunk_size)
        ratio = fast["slices_per_s"] / naive_rate
        print(f"build_cache ({args.workers} workers, size {args.size}, includes worker start "
              f"and catalog): {fast['slices_per_s']:.1f} slices/s -> {ratio:.1f}x the naive loop",
              flush=True)
        # CPU time from a one-process build: exact (no worker accounting), includes imports.
        single = measure_build(timed, work / "cache1", 1, args.size, args.chunk_size)
        print(f"build_cache (1 process): {single['slices_per_s']:.1f} slices/s, "
              f"{single['cpu_ms_per_slice']:.2f} ms CPU per slice (naive: {naive_cpu_ms:.2f})",
              flush=True)
        memory = {}
        for n in (small, large):
            stats = measure_build(subset(images, n, work / f"m{n}"), work / f"cache{n}",
                                  args.workers, args.size, args.chunk_size, interval=0.05)
            memory[str(n)] = stats
            print(f"peak memory at {int(stats['files'])} files: {stats['peak_tree_mib']:.0f} MiB "
                  f"(build process + {args.workers} workers, summed RSS)", flush=True)
        # Fixed costs (worker start, catalog) cancel in the difference of the two builds.
        extra = memory[str(large)]["seconds"] - memory[str(small)]["seconds"]
        steady = (large - small) / extra if extra > 0 else float("nan")
        print(f"build_cache without fixed start-up/finalize costs ({small}->{large} files): "
              f"{steady:.1f} slices/s -> {steady / naive_rate:.1f}x the naive loop", flush=True)
        results = {
            "slices": len(files), "cpu_count": os.cpu_count(), "workers": args.workers,
            "size": args.size, "chunk_size": args.chunk_size,
            "naive_slices_per_s": naive_rate, "prepare_slices_per_s": fast["slices_per_s"],
            "ratio": ratio, "prepare": fast, "prepare_one_process": single,
            "memory_by_files": memory,
            "naive_cpu_ms_per_slice": naive_cpu_ms, "steady_slices_per_s": steady,
            "steady_ratio": steady / naive_rate,
            "self_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "load_avg": os.getloadavg(),
        }
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2))
            print(f"results: {args.json}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
