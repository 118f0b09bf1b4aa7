"""Loader benchmark: augmented 256 px training slices per second, delivered from the cache.

Measures what the training loop receives from ``DataLoader(SliceDataset(train augment))`` with
2 persistent workers and batch 64 (uint8 windows, see ``SliceDataset(dtype=...)``), optionally
followed by the batched augmentation on the training device, against a naive baseline in the
same run: per-sample reads from the same cache, float64 numpy windowing and a per-sample
torchvision v2 augmentation, in the main process. Builds a phantom cache of >= 500 slices at
256 px first unless ``--cache DIR`` is given. Synthetic data: the point is speed, not accuracy.

    python benchmarks/bench_loader.py [--cache DIR] [--workers 2] [--json out.json]

The machine's load average is printed with the rates: on a shared machine the wall-clock rate
understates the loader; ``slices_per_cpu_s`` (slices per CPU-second of all loader processes) is
the load-independent figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ich.data.augment import (
    AugmentConfig,
    build_sample_transform,
    make_batch_augment,
    prepare_batch,
)
from ich.data.build import build_cache
from ich.data.cache import SliceCache
from ich.data.datasets import ChannelSpec, SliceDataset
from ich.data.loader import slice_loader
from ich.data.preprocess import PreprocessSpec
from ich.dicom.windowing import resolve_windows

SIZE = 256


def ensure_cache(cache_dir: Path | None, work: Path, min_slices: int) -> SliceCache:
    """Open ``cache_dir``, or synthesize a phantom cohort and cache it at 256 px in ``work``."""
    if cache_dir is not None:
        return SliceCache(cache_dir)
    from ich.phantom import generate_cohort

    studies = max(2, int(np.ceil(min_slices / 30)))  # phantom studies have 24-44 slices
    print(f"building a phantom cache: {studies} studies at {SIZE} px in {work}", file=sys.stderr)
    generate_cohort(work / "cohort", studies=studies, seed=0, size=SIZE, workers=2)
    build_cache(work / "cohort" / "images", work / "cache",
                labels_csv=work / "cohort" / "labels.csv", spec=PreprocessSpec(size=SIZE),
                workers=2, progress=False)
    return SliceCache(work / "cache")


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of processes (Linux /proc; 0 where unavailable)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def bench_fast(cache: SliceCache, workers: int, batch: int, min_slices: int, dtype: str,
               device: str | None) -> dict[str, Any]:
    """Slices/s from the DataLoader (+ BatchAugment on ``device`` when given)."""
    aug = AugmentConfig()
    ds = SliceDataset(cache, np.arange(len(cache.catalog)), ChannelSpec(), SIZE, aug,
                      dtype=dtype)  # type: ignore[arg-type]
    loader = slice_loader(ds, batch, shuffle=True, workers=workers, seed=0, drop_last=True)
    batch_aug = make_batch_augment(aug, seed=0) if device else None
    it = iter(loader)
    next(it)  # start the workers, first batch
    pids = [w.pid for w in getattr(it, "_workers", []) if w.pid]
    cpu0, main0 = _cpu_seconds(pids), time.process_time()
    t0, n = time.perf_counter(), 0
    while n < min_slices:
        for x, _, _ in it:
            if batch_aug is not None:
                x = prepare_batch(x, device or "cpu", batch_aug)
                if x.is_cuda:
                    torch.cuda.synchronize()
            n += len(x)
        it = iter(loader)
    wall = time.perf_counter() - t0
    worker_cpu, main_cpu = _cpu_seconds(pids) - cpu0, time.process_time() - main0
    cpu = worker_cpu + main_cpu
    del it, loader
    return {"slices": n, "seconds": wall, "slices_per_s": n / wall, "cpu_seconds": cpu,
            "worker_cpu_seconds": worker_cpu, "main_cpu_seconds": main_cpu,
            "slices_per_cpu_s": n / cpu if cpu > 0 else None,
            "workers": workers, "batch": batch, "dtype": dtype, "batch_augment_device": device}


def bench_naive(cache: SliceCache, n_slices: int, batch: int) -> dict[str, Any]:
    """The naive pipeline: per-sample float64 numpy windowing + v2 augmentation, 0 workers."""
    windows = resolve_windows(ChannelSpec().windows)
    transform = build_sample_transform(AugmentConfig(mode="sample"), SIZE)
    order = np.random.default_rng(0).permutation(len(cache.catalog))
    labels = cache.labels
    t0, cpu0, n = time.perf_counter(), time.process_time(), 0
    while n < n_slices:
        xs, ys = [], []
        for i in order[np.arange(n, n + batch) % len(order)]:
            hu = cache.image(int(i)).astype(np.float64)
            x = np.stack([np.clip((hu - (w.center - w.width / 2)) / w.width, 0, 1)
                          for w in windows])
            xs.append(transform(torch.from_numpy(x.astype(np.float32))))
            ys.append(torch.tensor(labels[i]))
        torch.stack(xs), torch.stack(ys)
        n += batch
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"slices": n, "seconds": wall, "slices_per_s": n / wall, "cpu_seconds": cpu,
            "slices_per_cpu_s": n / cpu if cpu > 0 else None, "workers": 0, "batch": batch}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, help="reuse this cache (built at 256 px)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--slices", type=int, default=3000, help="slices to time (fast path)")
    p.add_argument("--naive-slices", type=int, default=256, help="slices to time (baseline)")
    p.add_argument("--dtype", choices=["uint8", "float32"], default="uint8")
    p.add_argument("--device", default=None,
                   help="also run BatchAugment on this device (e.g. cuda); default: loader only")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="ich-bench-loader-") as tmp:
        cache = ensure_cache(args.cache, Path(tmp), min_slices=500)
        load0 = os.getloadavg()[0]
        fast = bench_fast(cache, args.workers, args.batch, args.slices, args.dtype, args.device)
        naive = bench_naive(cache, args.naive_slices, args.batch)
    result = {"size": SIZE, "cache_slices": len(cache.catalog), "cores": os.cpu_count(),
              "loadavg_1min": [load0, os.getloadavg()[0]], "fast": fast, "naive": naive,
              "speedup": fast["slices_per_s"] / naive["slices_per_s"]}
    print(f"cache: {len(cache.catalog)} slices at {SIZE} px; cores {os.cpu_count()}, "
          f"load average {load0:.1f} -> {os.getloadavg()[0]:.1f}")
    for name, r in (("fast ", fast), ("naive", naive)):
        per_cpu = r["slices_per_cpu_s"] or float("nan")
        print(f"{name}: {r['slices_per_s']:8.0f} slices/s  ({per_cpu:6.0f} per CPU-second, "
              f"{r['workers']} workers, batch {r['batch']})")
    print(f"speedup: {result['speedup']:.1f}x")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
