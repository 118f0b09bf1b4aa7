"""``ich predict RUN [RUN ...] INPUT --out submission.csv``: a Kaggle submission from runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from ich.devices import check_device
from ich.errors import IchError


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    """Register ``ich predict`` and its options."""
    p = sub.add_parser(
        name,
        help=help_text,
        description=(
            "Predict a DICOM folder (the Kaggle test layout: ID_*.dcm) or a preprocessing cache "
            "with one or more trained runs (several are averaged; a fold set counts as one run, "
            "its folds averaged inside it) and write a Kaggle "
            "submission (ID,Label; probabilities clipped to [1e-6, 1-1e-6]). Files that cannot "
            "be read are listed in <out>.failed.csv with the reason. <out>.series.csv has one "
            "row per series: study and series UID, slices, the domain check (in_domain, "
            "domain_score: > 1 = outside the training data) and the study probabilities."
        ),
    )
    p.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="RUN [RUN ...] INPUT",
        help="run folders from `ich train`, then the DICOM folder or cache to predict",
    )
    p.add_argument("--out", type=Path, required=True, help="submission CSV to write")
    p.add_argument(
        "--tta",
        type=int,
        default=1,
        choices=(1, 2, 4, 8),  # ich.runs.tta.TTA_CHOICES (not imported: keeps --help fast)
        help=(
            "test-time augmentation views, averaged: 1 none; 2 + left-right flip (and the "
            "sequence model reads the series in reverse too); 4 + two small shifted crops; "
            "8 + those crops flipped and two more shifted crops"
        ),
    )
    p.add_argument(
        "--weights",
        type=_weights,
        default=None,
        metavar="W1,W2,...",
        help="one positive weight per RUN for the ensemble average (default: equal)",
    )
    p.add_argument("--workers", type=int, default=None, help="processes for reading DICOM")
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="keep the preprocessing cache of a DICOM INPUT here (default: temporary)",
    )
    p.add_argument(
        "--predictions",
        type=Path,
        default=None,
        help="also write the per-slice table (Parquet) with both models' probabilities",
    )
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument(
        "--binary",
        action="store_true",
        help="also write <out>.binary.csv: the same ID,Label rows as 0/1 decisions, cut at each "
        "label's threshold chosen on the run's out-of-fold predictions (RUN/thresholds.json)",
    )
    p.set_defaults(func=run)


def _weights(text: str) -> list[float]:
    """``"1,2"`` -> ``[1.0, 2.0]``; argparse reports a ValueError as a usage error."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}"
                                          ) from None
    if not values or any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"weights must be positive numbers: {text!r}")
    return values


def run(args: argparse.Namespace) -> int:
    """Predict and report what was written."""
    from ich.predict import predict_to_submission

    if len(args.paths) < 2:
        raise IchError("give at least one RUN folder and the INPUT to predict")
    *runs, source = args.paths
    if args.weights is not None and len(args.weights) != len(runs):
        raise IchError(f"--weights has {len(args.weights)} values for {len(runs)} RUN(s)")
    check_device(args.device)
    for run_dir in runs:
        if not Path(run_dir).is_dir():
            raise IchError(f"{run_dir}: run folder not found")
    if not Path(source).exists():
        raise IchError(f"{source}: INPUT not found (a DICOM folder or a cache)")
    thresholds = _thresholds(runs) if args.binary else None  # checked before predicting
    _report_skipped(Path(source))
    result = predict_to_submission(
        runs,
        source,
        args.out,
        tta=args.tta,
        workers=args.workers,
        cache_dir=args.cache_dir,
        device=args.device,
        weights=args.weights,
    )
    if args.predictions is not None:
        from ich.atomic import atomic_path

        with atomic_path(args.predictions, suffix=".parquet") as tmp:
            result.predictions.to_parquet(tmp, index=False)
    n = len(result.predictions)
    print(f"submission: {result.submission} ({n:,} slices from {len(runs)} run(s), tta {args.tta})")
    if result.series is not None:
        flagged = int((result.series["in_domain"] == False).sum())  # noqa: E712 (None = unknown)
        print(f"series:     {result.series_csv} ({len(result.series)} series, {flagged} outside "
              "the model's training data: their results are unreliable)")
    if thresholds is not None:
        binary = _write_binary(args.out, thresholds)
        print(f"decisions: {binary} (0/1 at the runs' out-of-fold thresholds: "
              + ", ".join(f"{k} {v:.3f}" for k, v in thresholds.items()) + ")")
    if result.failed_csv is not None:
        print(
            f"WARNING: {len(result.failed)} file(s) could not be read; they got the mean "
            f"prediction and are listed with reasons in {result.failed_csv}"
        )
    return 0


def _thresholds(runs: list[Path]) -> dict[str, float]:
    """Per-label thresholds of the runs (the mean over several runs, as their probabilities)."""
    from ich.eval.thresholds import load_thresholds

    found = [load_thresholds(r) for r in runs]
    names = list(found[0])
    for run_dir, t in zip(runs, found, strict=True):
        if list(t) != names:  # runs of other label sets: the ensemble refuses them too
            raise IchError(f"{run_dir}: thresholds for {', '.join(t)}, but {runs[0]} has "
                           f"them for {', '.join(names)}: combine runs of one label set")
    return {n: sum(t[n] for t in found) / len(found) for n in names}


def _write_binary(out: Path, thresholds: dict[str, float]) -> Path:
    """``<out>.binary.csv`` from the written submission (same rows, 0/1), atomically."""
    import pandas as pd

    from ich.atomic import atomic_path
    from ich.eval.thresholds import binary_submission

    path = out.with_name(f"{out.stem}.binary.csv")
    with atomic_path(path) as tmp:
        binary_submission(pd.read_csv(out), thresholds).to_csv(tmp, index=False)
    return path


def _report_skipped(source: Path) -> None:
    """Say which files of a DICOM folder are not read (wrong extension), never skip silently."""
    from ich.data.catalog import describe_skipped, skipped_files
    from ich.predict import is_cache

    if source.is_dir() and not is_cache(source):
        skipped = skipped_files(source)
        if skipped:
            print(f"ich predict: {describe_skipped(skipped, source, all_files=True)} "
                  "(only *.dcm files are predicted)", flush=True)
