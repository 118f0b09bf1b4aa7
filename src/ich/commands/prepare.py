"""``ich prepare DICOM_DIR --out CACHE``: build the preprocessing cache (catalog + int16 HU)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ich.errors import IchError


def _shard(text: str) -> tuple[int, int]:
    """Parse ``I/N`` (e.g. ``0/4``)."""
    try:
        index, total = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected I/N such as 0/4, got {text!r}") from None
    if total < 1 or not 0 <= index < total:
        raise argparse.ArgumentTypeError(f"shard {text}: need 0 <= I < N")
    return index, total


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    """Register ``ich prepare`` and its options."""
    p = sub.add_parser(
        name,
        help=help_text,
        description=(
            "Read every DICOM file once and write a cache that training and evaluation read at "
            "random with no decoding cost: a Parquet catalog (one row per file: identifiers, "
            "geometry, header fields, labels, status and error) and the slices cropped to the "
            "head, resized and stored as int16 HU in memory-mapped chunks. Parallel, resumable "
            "(rerun the same command to finish an interrupted build), shardable over machines."
        ),
    )
    p.add_argument("dicom_dir", type=Path, metavar="DICOM_DIR",
                   help="folder of DICOM files (searched recursively)")
    p.add_argument("--out", type=Path, required=True, metavar="CACHE", help="cache folder to write")
    p.add_argument("--labels", type=Path, metavar="CSV",
                   help="label CSV: Kaggle long format (ID,Label: the six RSNA labels or your "
                   "own name, e.g. ID_x_hemorrhage) or wide (ID or file column, then one 0/1 "
                   "column per label, named as you like: the run's labels come from here; an "
                   "optional patient_id column groups images into patients for the folds); "
                   "checked before any image is read")
    p.add_argument("--soft-labels", action="store_true",
                   help="accept label values in [0, 1] (probabilities), not only 0 and 1")
    p.add_argument("--relabel", action="store_true",
                   help="replace the labels of an existing cache built with other labels")
    p.add_argument("--size", type=int, default=256,
                   help="side of the cached square images (default 256)")
    p.add_argument("--margin", type=float, default=0.05,
                   help="padding around the head crop, fraction of the head size (default 0.05)")
    p.add_argument("--no-crop", action="store_true",
                   help="resize the whole image instead of the head crop")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="worker processes (default: all cores)")
    p.add_argument("--shard", type=_shard, default=(0, 1), metavar="I/N",
                   help="build only chunks k with k %% N == I (several machines, one cache folder)")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="files per chunk (default 1024, fewer when that leaves workers idle)")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable file")
    p.add_argument("--all-files", action="store_true", help="take every file, not only *.dcm")
    p.add_argument("--force", action="store_true", help="rebuild a cache made with other settings")
    p.add_argument("--images", choices=("windowed8", "hu16"), default=None,
                   help="read PNG/JPEG/TIFF slices instead of DICOM: windowed8 = 8-bit grey "
                   "images of one window (--image-window), hu16 = 16-bit HU + --hu-offset")
    p.add_argument("--image-window", default="brain", metavar="NAME|C,W",
                   help="window the 8-bit images were made with (default brain = 40,80)")
    p.add_argument("--hu-offset", type=float, default=32768.0,
                   help="value a 16-bit image stores for 0 HU (default 32768)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Convert the options, build the cache, print the summary."""
    from ich.data.build import build_cache, format_summary
    from ich.data.images import ImageEncoding
    from ich.data.preprocess import PreprocessSpec

    try:
        spec = PreprocessSpec(size=args.size, crop=not args.no_crop, margin=args.margin)
        images = (ImageEncoding(args.images, args.image_window, args.hu_offset)
                  if args.images else None)
        if images is not None:
            images.hu_range()  # an unknown window name fails here, before any work
    except ValueError as exc:
        raise IchError(str(exc)) from None
    summary = build_cache(
        args.dicom_dir, args.out, labels_csv=args.labels, spec=spec, workers=args.workers,
        shard=args.shard, strict=args.strict, progress=not args.quiet,
        chunk_size=args.chunk_size, all_files=args.all_files, force=args.force,
        soft_labels=args.soft_labels, relabel=args.relabel, images=images,
    )
    print(format_summary(summary))
    return 0
