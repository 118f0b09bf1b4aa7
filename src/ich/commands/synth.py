"""``ich synth OUT --studies N --seed S``: write a synthetic (phantom) head-CT cohort."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    """Register ``ich synth`` and its options."""
    p = sub.add_parser(
        name,
        help=help_text,
        description=(
            "Write a synthetic head-CT cohort in the Kaggle RSNA 2019 layout: OUT/images/ID_*.dcm "
            "(RSNA-like headers, including the 12-bit wrap fault on a few files), OUT/labels.csv "
            "(ID,Label long format), OUT/masks/ID_*.npz (exact per-subtype masks) and "
            "OUT/patients.csv. The same seed and size give the same files. The data are "
            "synthetic: models trained on them are for demonstration and testing only."
        ),
    )
    p.add_argument("out", type=Path, help="output folder (must not already hold a cohort)")
    p.add_argument("--studies", type=int, default=20, help="number of studies (default 20)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--size", type=int, default=512, help="rows = columns in pixels (default 512)")
    p.add_argument(
        "--prevalence",
        type=float,
        default=None,
        help="per-slice rate of 'any' (default: RSNA rates, any = 0.144)",
    )
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate the cohort and print what was written."""
    from ich.phantom import generate_cohort

    out = Path(args.out)
    print("ich synth: the images are synthetic (a phantom), not patient data.", file=sys.stderr)
    start = time.perf_counter()
    summary = generate_cohort(
        out,
        studies=int(args.studies),
        seed=int(args.seed),
        size=int(args.size),
        prevalence=None if args.prevalence is None else float(args.prevalence),
        workers=int(args.workers),
        progress=sys.stderr.isatty(),
    )
    seconds = time.perf_counter() - start
    print(
        f"Wrote {summary.slices:,} slices of {summary.studies} studies "
        f"({summary.patients} patients) in {seconds:.1f} s "
        f"({summary.slices / max(seconds, 1e-9):.0f} slices/s)."
    )
    print("Positive slices per label:")
    for label, count in summary.positives.items():
        print(f"  {label:<17} {count:>7,}  ({count / max(summary.slices, 1):6.1%})")
    print(f"RSNA 12-bit wrap-fault files: {summary.wrap_fault_files}")
    print(f"images:   {out / 'images'}")
    print(f"labels:   {out / 'labels.csv'}")
    print(f"masks:    {out / 'masks'}")
    print(f"patients: {out / 'patients.csv'}")
    return 0
