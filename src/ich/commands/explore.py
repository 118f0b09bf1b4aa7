"""``ich explore DICOM_DIR [--labels CSV] --out DIR``: the HTML report to read first on new data."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    """Register ``ich explore`` and its options."""
    p = sub.add_parser(
        name,
        help=help_text,
        description=(
            "Scan every DICOM header of a folder (in parallel) and a sample of pixel data, and "
            "write OUT/index.html: file counts and failures, patients/studies/series, header "
            "variants, HU histograms, label counts and co-occurrence, and image grids per "
            "subtype in the brain, subdural, soft-tissue and bone windows."
        ),
    )
    p.add_argument("dicom_dir", type=Path, help="folder of DICOM files (searched recursively)")
    p.add_argument(
        "--labels",
        type=Path,
        default=None,
        metavar="CSV",
        help="Kaggle long-format label CSV (ID,Label)",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder for index.html")
    p.add_argument(
        "--sample",
        type=int,
        default=200,
        help="slices whose pixels are read for the HU histogram (default 200)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes for scanning (default: CPU cores, at most 8)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check the inputs, run the exploration, print the counts and the report path."""
    from ich.errors import IchError
    from ich.explore import explore_folder

    dicom_dir: Path = args.dicom_dir
    if not dicom_dir.is_dir():
        raise IchError(f"{dicom_dir}: not a folder")
    if args.labels is not None and not Path(args.labels).is_file():
        raise IchError(f"{args.labels}: label CSV not found")
    s = explore_folder(
        dicom_dir,
        Path(args.out),
        labels_csv=args.labels,
        sample=max(0, int(args.sample)),
        workers=args.workers,
    )
    print(
        f"{s.n_files:,} files: {s.n_ok:,} readable, {s.n_failed:,} failed; "
        f"{s.n_patients:,} patients, {s.n_studies:,} studies, {s.n_series:,} series"
        + (f"; {s.n_labelled:,} labelled slices" if args.labels else "")
    )
    for reason, n in list(s.failures.items())[:10]:
        print(f"  failed ({n:,}): {reason}")
    _report_skipped(dicom_dir)
    print(f"report: {s.index_html}")
    return 0


def _report_skipped(folder: Path) -> None:
    """Name the files the scan left out (other extensions, hidden), never skip silently."""
    import os

    from ich.explore.scan import DICOM_SUFFIXES

    skipped = sorted(
        Path(d) / n for d, _, names in os.walk(folder) for n in names
        if n.startswith(".") or Path(n).suffix.lower() not in DICOM_SUFFIXES
    )
    if skipped:
        names = ", ".join(p.relative_to(folder).as_posix() for p in skipped[:3])
        print(f"skipped {len(skipped):,} file(s) not taken as DICOM (extension not one of "
              f"{', '.join(x or 'none' for x in DICOM_SUFFIXES)}, or hidden): {names}"
              + (", ..." if len(skipped) > 3 else ""))
