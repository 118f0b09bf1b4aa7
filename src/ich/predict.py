"""Batch prediction: a cache or a DICOM folder in, a per-slice table and a Kaggle submission out.

A DICOM folder is first turned into a preprocessing cache (parallel, resumable, bad files
recorded), then predicted series by series: memory stays bounded by one series, whatever the
number of slices (the RSNA test set has ~120k).

The outputs name the run's own labels (its model spec: the six RSNA labels, a subset, or the
user's, e.g. one ``hemorrhage``): the submission's ``ID_<image>_<label>`` rows, the ``p_`` /
``q_`` columns and the study columns. Truth columns are copied only for the run's labels the
cache has; a cache labelled otherwise is still predicted, without truth.
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
from ich.data.preprocess import PreprocessSpec
from ich.errors import CacheError
from ich.inference import Predictor
from ich.labels import write_submission
from ich.runs.load import Member

#: Catalog columns copied into every prediction table.
ID_COLUMNS = ("image_id", "patient_id", "study_instance_uid", "series_instance_uid", "slice_index")


def check_compatible(predictor: Predictor, cache: SliceCache) -> None:
    """Refuse a cache whose crop differs from any member's (its images would not be what that
    model saw in training); a different size is fine, images are resized on load."""
    have = cache.spec
    for member in predictor.members:
        want = member.preprocess
        if (want.crop, want.margin) != (have.crop, have.margin):
            raise CacheError(
                f"{cache.root}: built with crop={have.crop}, margin={have.margin}, but the model "
                f"{member.path} was trained with crop={want.crop}, margin={want.margin}; rebuild "
                "it with `ich prepare` (a DICOM folder as INPUT is preprocessed per model)"
            )


#: Columns of the per-series table (``<out>.series.csv``), then the run's label names.
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
        One row per slice: ``ID_COLUMNS``, ``fold`` (-1), the true labels (those of the run's
        labels the cache has; NaN when its slices are unlabelled), ``p_<label>`` (slice CNN)
        and ``q_<label>`` (final, sequence-refined) for each of the run's labels.
    """
    return predict_cache_series(run_dirs, cache, tta, device, progress)[0]


def predict_cache_series(
    run_dirs: Sequence[str | Path] | Predictor,
    cache: str | Path | SliceCache,
    tta: int = 1,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`predict_cache` plus one row per series: ``SERIES_COLUMNS`` and the study-level
    probability of each of the run's labels (``in_domain`` empty when the runs have no domain
    model)."""
    predictor = (
        run_dirs if isinstance(run_dirs, Predictor) else Predictor.from_run(run_dirs, device, tta)
    )
    cache = cache if isinstance(cache, SliceCache) else SliceCache(Path(cache))
    check_compatible(predictor, cache)
    labels = predictor.labels
    n = len(cache.catalog)
    cnn = np.zeros((n, len(labels)), np.float32)
    final = np.zeros((n, len(labels)), np.float32)
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
            **{name: float(p) for name, p in zip(labels, study, strict=True)},
        })
    frame = cache.catalog[list(ID_COLUMNS)].copy()
    frame["fold"] = -1
    for name in labels:  # truth only where the cache has the label (else there is none)
        if name in cache.label_names:
            frame[name] = cache.labels[:, cache.label_names.index(name)]
    for j, name in enumerate(labels):
        frame[f"p_{name}"] = cnn[:, j]
        frame[f"q_{name}"] = final[:, j]
    return frame, pd.DataFrame(rows, columns=[*SERIES_COLUMNS, *labels])


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
    weights: Sequence[float] | None = None,
) -> SubmissionResult:
    """Predict a DICOM folder (Kaggle test layout) or a cache and write a Kaggle submission.

    Each entry of ``run_dirs`` (a run or a fold set) counts once, with its ``weights`` entry
    (default equal). A DICOM folder is preprocessed once per distinct crop among the members,
    so each model sees what it was trained on; a cache must match every member's crop.

    Files that could not be read are never dropped silently: they are listed in
    ``<out>.failed.csv`` with the reason and, so the submission stays complete, given the
    ensemble's mean prediction.
    """
    predictor = Predictor.from_run(run_dirs, device, tta, weights=weights)
    if is_cache(source):
        return _write(predictor, SliceCache(source), out, tta)
    groups = predictor.preprocess_groups()
    with tempfile.TemporaryDirectory(prefix="ich-predict-") as tmp:
        base = cache_dir or Path(tmp) / "cache"
        caches = []
        for i, (spec, _) in enumerate(groups):
            root = base if len(groups) == 1 else base / f"crop{i}"
            build_cache(source, root, spec=spec, workers=workers or os.cpu_count())
            caches.append(SliceCache(root))
        if len(groups) == 1:
            return _write(predictor, caches[0], out, tta)
        return _write_groups(predictor, groups, caches, out, tta)


def _write_groups(
    predictor: Predictor,
    groups: list[tuple[PreprocessSpec, list[Member]]],
    caches: list[SliceCache],
    out: Path,
    tta: int,
) -> SubmissionResult:
    """Predict each preprocessing group on its own cache and average by weight, per image."""
    frames, shares = [], []
    for (_, members), cache in zip(groups, caches, strict=True):
        frame = predict_cache(predictor.subset(members), cache, tta=tta)
        frames.append(frame.set_index("image_id"))
        shares.append(sum(m.weight for m in members))
    first = frames[0]
    for cache, f in zip(caches[1:], frames[1:], strict=True):
        if set(f.index) != set(first.index):
            raise CacheError(
                f"{cache.root}: the preprocessing caches of the ensemble's members hold "
                f"different slices ({len(f)} vs {len(first)}); see each cache's errors"
            )
    cols = [f"{p}_{name}" for p in ("p", "q") for name in predictor.labels]
    merged = first.copy()
    mixed = [w * f.loc[first.index, cols].to_numpy() for w, f in zip(shares, frames, strict=True)]
    merged[cols] = np.sum(mixed, axis=0) / sum(shares)
    return _write(predictor, caches[0], out, tta, frame=merged.reset_index())


def _write(
    predictor: Predictor, cache: SliceCache, out: Path, tta: int,
    frame: pd.DataFrame | None = None,
) -> SubmissionResult:
    per_series = None  # the per-series table (X.series.csv) of a single preprocessing group
    if frame is None:
        frame, per_series = predict_cache_series(predictor, cache, tta=tta)
        with atomic_path(series_csv_path(out)) as tmp:
            per_series.to_csv(tmp, index=False)
    labels = predictor.labels  # the submission names the run's own labels
    probs = frame[[f"q_{name}" for name in labels]].to_numpy()
    failed = cache.errors[["image_id", "path", "error"]].copy() if len(cache.errors) else None
    ids = list(frame["image_id"])
    failed_csv = None
    if failed is not None and len(failed):
        fill = probs.mean(axis=0) if len(probs) else np.full(len(labels), 0.5)
        ids += list(failed["image_id"])
        probs = np.vstack([probs, np.tile(fill, (len(failed), 1))])
        failed_csv = out.with_suffix(".failed.csv")
        with atomic_path(failed_csv) as tmp:
            failed.to_csv(tmp, index=False)
    write_submission(ids, probs, out, labels=labels)
    return SubmissionResult(
        out, frame, failed if failed is not None else pd.DataFrame(), failed_csv,
        per_series, series_csv_path(out) if per_series is not None else None,
    )
