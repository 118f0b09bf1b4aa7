"""``ich predict RUN [RUN ...] INPUT --out submission.csv``: a Kaggle submission from runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from ich.errors import IchError


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    """Register ``ich predict`` and its options."""
    p = sub.add_parser(
        name,
        help=help_text,
        description=(
            "Predict a DICOM folder (the Kaggle test layout: ID_*.dcm) or a preprocessing cache "
            "with one or more trained runs (several runs are averaged) and write a Kaggle "
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
        choices=(1, 2),
        help="test-time augmentation views: 1 none, 2 flip + reversed series",
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Predict and report what was written."""
    from ich.predict import predict_to_submission

    if len(args.paths) < 2:
        raise IchError("give at least one RUN folder and the INPUT to predict")
    *runs, source = args.paths
    result = predict_to_submission(
        runs,
        source,
        args.out,
        tta=args.tta,
        workers=args.workers,
        cache_dir=args.cache_dir,
        device=args.device,
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
    if result.failed_csv is not None:
        print(
            f"WARNING: {len(result.failed)} file(s) could not be read; they got the mean "
            f"prediction and are listed with reasons in {result.failed_csv}"
        )
    return 0
