"""Benchmark: ``ich prepare`` (build_cache) against the naive per-slice PNG loop.

The naive loop is what most RSNA 2019 notebooks started with: pydicom ``dcmread`` ->
``pixel_array`` -> HU -> three windows in float64 -> ``cv2.resize`` -> one PNG per slice, in one
process. Both run on the same phantom files (512 x 512) in one invocation; the script prints both
rates, the ratio and peak memory, and peak memory of ``build_cache`` at two file counts to show it
does not grow with the number of files.

Usage::

    python benchmarks/bench_prepare.py --slices 600 --json benchmarks/out/prepare.json
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
    """Child mode: run build_cache while a thread samples the RSS of this process tree."""
    import threading

    from ich.data.cache import build_cache
    from ich.data.preprocess import PreprocessSpec

    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss_mib(os.getpid()))
            time.sleep(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    summary = build_cache(images, out, spec=PreprocessSpec(size=size), workers=workers,
                          progress=False, chunk_size=chunk)
    seconds = time.perf_counter() - start
    done.set()
    thread.join()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"files": summary.files, "ok": summary.ok, "seconds": seconds,
                      "peak_tree_mib": peak[0], "parent_maxrss_mib": maxrss}))


def measure_build(images: Path, out: Path, workers: int, size: int, chunk: int) -> dict[str, float]:
    """Run build_cache in a fresh interpreter so that its memory is measured alone."""
    cmd = [sys.executable, __file__, "--child-build", str(images), str(out), str(workers),
           str(size), str(chunk)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    stats: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    stats["slices_per_s"] = stats["files"] / stats["seconds"]
    return stats


def main(argv: list[str] | None = None) -> int:
    """Generate or reuse a cohort, time both pipelines, measure memory, print and save."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child-build"]:
        images, out, workers, size, chunk = argv[1:6]
        child_build(Path(images), Path(out), int(workers), int(size), int(chunk))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=600, help="slices to time (>= 500)")
    parser.add_argument("--cohort", type=Path, help="reuse this cohort (or images folder)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--chunk-size", type=int, default=64)
    parser.add_argument("--memory-counts", default="250,1000", help="two file counts for memory")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench_prepare_"))
    try:
        small, large = (int(v) for v in args.memory_counts.split(","))
        images = ensure_cohort(args.cohort, max(args.slices, large), work)
        files = sorted(images.glob("*.dcm"))[: args.slices]
        timed = subset(images, len(files), work / "timed")
        print(f"{len(files)} slices of 512x512 from {images}", flush=True)
        naive_s = naive_loop(files, work / "png", args.size)
        naive_rate = len(files) / naive_s
        print(f"naive loop (dcmread/pixel_array/float64 windows/resize/PNG, 1 process): "
              f"{naive_rate:.1f} slices/s", flush=True)
        fast = measure_build(timed, work / "cache", args.workers, args.size, args.chunk_size)
        ratio = fast["slices_per_s"] / naive_rate
        print(f"build_cache ({args.workers} workers, size {args.size}, includes worker start "
              f"and catalog): {fast['slices_per_s']:.1f} slices/s -> {ratio:.1f}x the naive loop; "
              f"peak {fast['peak_tree_mib']:.0f} MiB", flush=True)
        memory = {}
        for n in (small, large):
            stats = measure_build(subset(images, n, work / f"m{n}"), work / f"cache{n}",
                                  args.workers, args.size, args.chunk_size)
            memory[str(n)] = stats
            print(f"peak memory at {int(stats['files'])} files: {stats['peak_tree_mib']:.0f} MiB "
                  f"(build process + forkserver + {args.workers} workers, summed RSS)", flush=True)
        results = {
            "slices": len(files), "cpu_count": os.cpu_count(), "workers": args.workers,
            "size": args.size, "chunk_size": args.chunk_size,
            "naive_slices_per_s": naive_rate, "prepare_slices_per_s": fast["slices_per_s"],
            "ratio": ratio, "prepare": fast, "memory_by_files": memory,
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
