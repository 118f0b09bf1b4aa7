"""Batch prediction: a cache or a DICOM folder in, a per-slice table and a Kaggle submission out.

A DICOM folder is first turned into a preprocessing cache (parallel, resumable, bad files
recorded), then predicted series by series: memory stays bounded by one series, whatever the
number of slices (the RSNA test set has ~120k).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ich.atomic import atomic_path
from ich.data.build import build_cache
from ich.data.cache import SliceCache
from ich.errors import CacheError
from ich.inference import Predictor
from ich.labels import LABELS, write_submission

#: Catalog columns copied into every prediction table.
ID_COLUMNS = ("image_id", "patient_id", "study_instance_uid", "series_instance_uid", "slice_index")


def check_compatible(predictor: Predictor, cache: SliceCache) -> None:
    """Refuse a cache whose crop differs from the models' (its images would not be what the
    models saw in training); a different size is fine, images are resized on load."""
    want, have = predictor.preprocess, cache.spec
    if (want.crop, want.margin) != (have.crop, have.margin):
        raise CacheError(
            f"{cache.root}: built with crop={have.crop}, margin={have.margin}, but the model was "
            f"trained with crop={want.crop}, margin={want.margin}; rebuild it with `ich prepare`"
        )


#: Columns of the per-series table (``<out>.series.csv``), then the six label names.
SERIES_COLUMNS = (
    "study_instance_uid", "series_instance_uid", "n_slices", "in_domain", "domain_score"
)


def predict_cache(
    run_dirs: Sequence[str | Path] | Predictor,
    cache: str | Path | SliceCache,
    tta: int = 1,
    device: str = "cpu",
    progress: bool = True,
) -> pd.DataFrame:
    """Predict every series of a cache.

    Returns:
        One row per slice: ``ID_COLUMNS``, ``fold`` (-1), the true labels (NaN when the cache
        has none), ``p_<label>`` (slice CNN) and ``q_<label>`` (final, sequence-refined).
    """
    return predict_cache_series(run_dirs, cache, tta, device, progress)[0]


def predict_cache_series(
    run_dirs: Sequence[str | Path] | Predictor,
    cache: str | Path | SliceCache,
    tta: int = 1,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`predict_cache` plus one row per series: ``SERIES_COLUMNS`` and the six
    study-level probabilities (``in_domain`` empty when the runs have no domain model)."""
    predictor = (
        run_dirs if isinstance(run_dirs, Predictor) else Predictor.from_run(run_dirs, device, tta)
    )
    cache = cache if isinstance(cache, SliceCache) else SliceCache(Path(cache))
    check_compatible(predictor, cache)
    n = len(cache.catalog)
    cnn = np.zeros((n, len(LABELS)), np.float32)
    final = np.zeros((n, len(LABELS)), np.float32)
    spacing = cache.catalog["z_spacing"].to_numpy(dtype=np.float32)
    spacing = np.nan_to_num(spacing, nan=float(np.nanmedian(spacing)) if n else 5.0)
    series = cache.series_index()
    studies = cache.catalog["study_instance_uid"].to_numpy()
    rows: list[dict[str, object]] = []
    for uid, idx in tqdm(series.items(), desc="predict", unit="series", disable=not progress):
        idx = np.asarray(idx)
        cnn[idx], final[idx], study, domain = predictor.predict_with_domain(
            cache.images(idx), spacing[idx]
        )
        known = bool(np.isfinite(domain))
        rows.append({
            "study_instance_uid": studies[idx[0]],
            "series_instance_uid": uid,
            "n_slices": len(idx),
            "in_domain": bool(domain <= 1.0) if known else None,
            "domain_score": round(domain, 4) if known else None,
            **{name: float(p) for name, p in zip(LABELS, study, strict=True)},
        })
    frame = cache.catalog[list(ID_COLUMNS)].copy()
    frame["fold"] = -1
    frame[list(LABELS)] = cache.labels
    for j, name in enumerate(LABELS):
        frame[f"p_{name}"] = cnn[:, j]
        frame[f"q_{name}"] = final[:, j]
    return frame, pd.DataFrame(rows, columns=[*SERIES_COLUMNS, *LABELS])


def series_csv_path(out: Path) -> Path:
    """``X.csv`` -> ``X.series.csv``: the per-series table beside a submission."""
    return out.with_suffix(".series.csv")


def is_cache(path: Path) -> bool:
    """Whether ``path`` is a preprocessing cache (rather than a DICOM folder)."""
    return (path / "cache.json").is_file()


@dataclass
class SubmissionResult:
    """What ``ich predict`` wrote."""

    submission: Path
    predictions: pd.DataFrame
    failed: pd.DataFrame
    failed_csv: Path | None
    series: pd.DataFrame | None = None
    series_csv: Path | None = None


def predict_to_submission(
    run_dirs: Sequence[str | Path],
    source: Path,
    out: Path,
    tta: int = 1,
    workers: int | None = None,
    cache_dir: Path | None = None,
    device: str = "cpu",
) -> SubmissionResult:
    """Predict a DICOM folder (Kaggle test layout) or a cache and write a Kaggle submission.

    Files that could not be read are never dropped silently: they are listed in
    ``<out>.failed.csv`` with the reason and, so the submission stays complete, given the
    ensemble's mean prediction.
    """
    predictor = Predictor.from_run(run_dirs, device, tta)
    if is_cache(source):
        cache = SliceCache(source)
    else:
        with tempfile.TemporaryDirectory(prefix="ich-predict-") as tmp:
            root = cache_dir or Path(tmp) / "cache"
            build_cache(source, root, spec=predictor.preprocess, workers=workers or os.cpu_count())
            return _write(predictor, SliceCache(root), out, tta)
    return _write(predictor, cache, out, tta)


def _write(predictor: Predictor, cache: SliceCache, out: Path, tta: int) -> SubmissionResult:
    frame, per_series = predict_cache_series(predictor, cache, tta=tta)
    with atomic_path(series_csv_path(out)) as tmp:
        per_series.to_csv(tmp, index=False)
    probs = frame[[f"q_{name}" for name in LABELS]].to_numpy()
    failed = cache.errors[["image_id", "path", "error"]].copy() if len(cache.errors) else None
    ids = list(frame["image_id"])
    failed_csv = None
    if failed is not None and len(failed):
        fill = probs.mean(axis=0) if len(probs) else np.full(len(LABELS), 0.5)
        ids += list(failed["image_id"])
        probs = np.vstack([probs, np.tile(fill, (len(failed), 1))])
        failed_csv = out.with_suffix(".failed.csv")
        with atomic_path(failed_csv) as tmp:
            failed.to_csv(tmp, index=False)
    write_submission(ids, probs, out)
    return SubmissionResult(
        out, frame, failed if failed is not None else pd.DataFrame(), failed_csv,
        per_series, series_csv_path(out),
    )
