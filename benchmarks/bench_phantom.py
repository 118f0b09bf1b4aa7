"""Benchmark: phantom generation speed per core at 512 px (target >= 60 slices/s).

Rates are per CPU second of the one process (``time.process_time``), so they measure one core
even on a busy machine; the wall-clock rate is printed beside them. Runs
``generate_cohort(workers=1)`` (render + DICOM + masks + CSVs, one process, one core) and,
side by side in the same run, the floor that no generator can beat: writing the same number of
512 x 512 DICOM slices of a constant image with the same writer. The ratio says how much of the
time the phantom itself costs. It also times rendering alone (no files), split by level of the
head, because skull-base slices carry the most structures.

``--baseline SRC`` runs the same measurement first on another checkout's ``src`` folder (for
example main's) in a fresh interpreter, then on this one, and prints the ratio of the per-core
rates: the machine is shared, so the two runs go one right after the other. With
``--identity`` it also compares the two timed cohorts file by file (same seed: a speed-up must
not change a single byte of the DICOM files, masks or CSVs).

Usage::

    python benchmarks/bench_phantom.py --studies 8 --json benchmarks/out/phantom.json
    python benchmarks/bench_phantom.py --studies 8 --baseline ../main/src --identity
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core: numpy's FFT/BLAS must not fan out


def _write_floor(out: Path, n: int, size: int) -> float:
    """CPU seconds to write ``n`` constant slices with the phantom's DICOM writer."""
    from ich.phantom.dicom_writer import SliceHeader, write_slice

    hu = np.full((size, size), 30.0, dtype=np.float32)
    start = time.process_time()
    for k in range(n):
        header = SliceHeader(
            sop_instance_uid=f"ID_{k:09x}", patient_id="ID_00000000",
            study_instance_uid="ID_0000000000", series_instance_uid="ID_0000000001",
            instance_number=k + 1, image_position_patient=(-125.0, -125.0, 5.0 * k),
            image_orientation_patient=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0), pixel_spacing=0.488,
            slice_thickness=5.0, storage="int16", explicit_vr=True, multi_valued_window=False,
        )
        write_slice(out / f"ID_{k:09x}.dcm", hu, header)
    return time.process_time() - start


def _run_baseline(src: Path, args: argparse.Namespace, work: Path) -> dict[str, float]:
    """The same benchmark on another checkout's ``src`` (fresh interpreter, same settings);
    its cohort is kept in ``work / "baseline"`` when ``--identity`` asks for it."""
    out = work / "baseline.json"
    env = {**os.environ, "PYTHONPATH": str(src.resolve())}
    command = [sys.executable, __file__, "--studies", str(args.studies), "--size",
               str(args.size), "--seed", str(args.seed), "--json", str(out)]
    if args.identity:
        command += ["--cohort-dir", str(work / "baseline")]
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    result: dict[str, float] = json.loads(out.read_text())
    return result


def _compare_cohorts(a: Path, b: Path) -> dict[str, int]:
    """Files of cohort ``b`` that differ from ``a`` in name or bytes (all of them, counted)."""
    names_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    names_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    same = sum((a / n).read_bytes() == (b / n).read_bytes() for n in names_a & names_b)
    return {"files": len(names_a | names_b), "identical_files": same,
            "differing_files": len(names_a | names_b) - same}


def _render_only(studies: int, size: int, seed: int) -> dict[str, float]:
    """Slices per CPU second of rendering alone (no files), overall and by level of the head."""
    try:  # the generator's memory setting, where the measured checkout has one
        from ich.phantom.memory import keep_freed_memory
    except ImportError:
        keep_freed_memory = contextlib.nullcontext
    times: dict[str, list[float]] = {"skull_base": [], "mid": [], "vertex": []}
    with keep_freed_memory():
        _render_loop(studies, size, seed, times)
    every = [x for v in times.values() for x in v]
    out = {f"render_{k}_slices_per_s": len(v) / sum(v) for k, v in times.items()}
    out["render_slices_per_s"] = len(every) / sum(every)
    return out


def _render_loop(studies: int, size: int, seed: int, times: dict[str, list[float]]) -> None:
    """Render 32 slices of each study, timing each, filed by level of the head."""
    from ich.phantom.study import StudyPlan, _render_slice, _scene

    for index in range(studies):
        plan = StudyPlan(index, seed, index, "p", "s", "s", (), size, 1.0, index % 2 == 0)
        rng = np.random.default_rng([seed, 2, index])
        scene, _ = _scene(plan, rng)
        for t in np.linspace(0.02, 0.98, 32):
            start = time.process_time()
            _render_slice(scene, float(t), rng, False)
            level = "skull_base" if t < 0.3 else "vertex" if t > 0.75 else "mid"
            times[level].append(time.process_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--studies", type=int, default=8)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--baseline", type=Path, default=None,
                        help="src folder of another checkout to measure first (e.g. main's)")
    parser.add_argument("--identity", action="store_true",
                        help="with --baseline: compare the two cohorts file by file")
    parser.add_argument("--cohort-dir", type=Path, default=None,
                        help="keep the timed cohort here (a new folder) instead of discarding it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        baseline = _run_baseline(args.baseline, args, work) if args.baseline else None
        from ich.phantom import generate_cohort

        cohort = args.cohort_dir or work / "cohort"
        start, cpu = time.perf_counter(), time.process_time()
        summary = generate_cohort(cohort, studies=args.studies, seed=args.seed,
                                  size=args.size, workers=1)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        floor_dir = work / "floor"
        floor_dir.mkdir()
        floor = _write_floor(floor_dir, summary.slices, args.size)
        identity = (_compare_cohorts(work / "baseline", cohort)
                    if baseline is not None and args.identity else None)
    result: dict[str, float | int] = {
        "size": args.size,
        "studies": args.studies,
        "slices": summary.slices,
        "generate_seconds": seconds,
        "generate_slices_per_s_wall": summary.slices / seconds,
        # CPU seconds of this one process: the per-core rate, even on a busy shared machine.
        "generate_slices_per_s_per_core": summary.slices / cpu,
        "write_floor_slices_per_s": summary.slices / floor,
        "generate_vs_write_floor": cpu / floor,
        **_render_only(min(args.studies, 4), args.size, args.seed),
    }
    for key, value in result.items():
        print(f"{key:40s} {value:.2f}" if isinstance(value, float) else f"{key:40s} {value}")
    output: dict[str, object] = dict(result)
    if baseline is not None:
        print(f"baseline ({args.baseline}):")
        for key in ("generate_slices_per_s_per_core", "write_floor_slices_per_s",
                    "render_slices_per_s"):
            ratio = float(result[key]) / baseline[key]
            print(f"  {key:38s} {baseline[key]:.2f}  (this / baseline {ratio:.2f}x)")
        output["baseline"] = {"src": str(args.baseline), **baseline}
    if identity is not None:
        print(f"same seed, this vs baseline: {identity['identical_files']} of "
              f"{identity['files']} files byte-identical")
        output["identity"] = identity
    target = result["generate_slices_per_s_per_core"] >= 60.0
    print(f"target >= 60 slices/s per core at 512 px: {'met' if target else 'NOT met'}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(output, indent=2) + "\n")


if __name__ == "__main__":
    main()
