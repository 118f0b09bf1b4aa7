"""``explore_folder``: scan a DICOM folder (and its labels) and write the exploration report.

This is the first thing to run on new data: it shows what is in the folder (patients, studies,
series, header variants, unreadable files and why), what the pixels look like in HU, and how
each hemorrhage subtype looks in each window, before any preprocessing choice is made.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from ich.atomic import atomic_write_text
from ich.explore.page import write_page
from ich.explore.result import ExploreData, ExploreSummary
from ich.explore.scan import (
    HU_EDGES,
    list_dicom_files,
    parallel_map,
    scan_headers,
    scan_pixels,
    stable_key,
)
from ich.labels import LABELS, read_labels

#: Thumbnails per category in the image grids.
EXAMPLES_PER_CATEGORY = 6


def default_workers() -> int:
    """Processes for scanning: all cores but not more than 8 (file systems saturate)."""
    return max(1, min(8, os.cpu_count() or 1))


def _join_labels(ok: pd.DataFrame, labels: pd.DataFrame | None) -> pd.DataFrame:
    """Label columns on the readable files (NaN where a file has no label row)."""
    if labels is None:
        return ok.assign(**{label: np.nan for label in LABELS})
    return ok.join(labels.astype(float), on="image_id")


def _pick_examples(
    ok: pd.DataFrame, label_names: tuple[str, ...], n: int = EXAMPLES_PER_CATEGORY
) -> dict[str, list[str]]:
    """Paths of grid examples per category, picked by a hash of the image id (deterministic).

    With labels: each label but ``any`` (slices positive for it; ``any`` too when it is the
    only one) and negatives (every label 0); without labels (empty ``label_names``): a sample
    of slices. Examples are spread over series where possible, so one large
    series does not fill a whole row.
    """
    keyed = ok.assign(_key=ok["image_id"].map(stable_key)).sort_values("_key")
    cats: dict[str, pd.DataFrame] = {}
    if label_names:
        for name in [n for n in label_names if n != "any"] or list(label_names):
            cats[name] = keyed[keyed[name] == 1]
        cats["negative"] = keyed[(keyed[list(label_names)] == 0).all(axis=1)]
    else:
        cats["sample"] = keyed
    out: dict[str, list[str]] = {}
    for cat, frame in cats.items():
        first = frame.drop_duplicates("series_instance_uid")["path"].tolist()[:n]
        rest = [p for p in frame["path"].tolist() if p not in set(first)]
        out[cat] = (first + rest)[:n]
    return out


def _sample_pixels(
    ok: pd.DataFrame, picks: dict[str, list[str]], sample: int, workers: int, progress: bool
) -> tuple[np.ndarray, int, list[tuple[str, str]], dict[str, np.ndarray]]:
    """Read the histogram sample and the grid examples; return counts, thumbnails, failures."""
    hist_paths = (
        ok.assign(_key=ok["image_id"].map(stable_key)).sort_values("_key")["path"].head(sample)
    )
    want_hist = set(hist_paths)
    want_thumb = {p for paths in picks.values() for p in paths}
    tasks = [(p, p in want_hist, p in want_thumb) for p in sorted(want_hist | want_thumb)]
    hist = np.zeros(len(HU_EDGES) - 1, dtype=np.int64)
    n_hist = 0
    failures: list[tuple[str, str]] = []
    thumbs: dict[str, np.ndarray] = {}
    for res in parallel_map(scan_pixels, tasks, workers, "pixels", progress):
        if res["error"]:
            failures.append((res["path"], res["error"]))
            continue
        if "hist" in res:
            hist += res["hist"]
            n_hist += 1
        if "thumb" in res:
            thumbs[res["path"]] = res["thumb"]
    return hist, n_hist, failures, thumbs


def collect(
    dicom_dir: Path,
    labels_csv: Path | None = None,
    sample: int = 200,
    workers: int | None = None,
    progress: bool = True,
) -> ExploreData:
    """Scan headers of every file and pixels of a bounded sample (see module docstring)."""
    workers = default_workers() if workers is None else max(1, workers)
    files = list_dicom_files(dicom_dir)
    headers = scan_headers(files, workers, progress)
    labels = read_labels(labels_csv) if labels_csv is not None else None
    if headers.empty:
        headers = pd.DataFrame(columns=["path", "image_id", "status", "error"])
    ok = _join_labels(headers[headers["status"] == "ok"].copy(), labels)
    names = tuple(str(c) for c in labels.columns) if labels is not None else ()
    labelled = bool(names) and bool(ok[names[0]].notna().any())
    picks = _pick_examples(ok, names if labelled else ()) if len(ok) else {}
    hist, n_hist, px_fail, thumbs = _sample_pixels(ok, picks, sample, workers, progress)
    ids = dict(zip(ok["path"], ok["image_id"], strict=True))
    examples = {
        cat: [(ids[p], thumbs[p]) for p in paths if p in thumbs] for cat, paths in picks.items()
    }
    notes = []
    if not files:
        notes.append(
            f"No DICOM files (*.dcm, *.dicom or files without a suffix) under {dicom_dir}."
        )
    elif labels is not None and not labelled:
        notes.append("No file in the folder has a row in the label CSV (image ids differ).")
    return ExploreData(
        dicom_dir=dicom_dir,
        headers=headers,
        labels=labels,
        labels_path=labels_csv,
        hu_hist=hist,
        n_hist=n_hist,
        pixel_failures=px_fail,
        examples=examples,
        notes=notes,
    )


def summarize(data: ExploreData, out: Path) -> ExploreSummary:
    """Counts for the summary card, the CLI and ``summary.json``."""
    h = data.headers
    ok = h[h["status"] == "ok"]
    failed = h[h["status"] != "ok"]
    labelled = 0
    if data.labels is not None and len(ok):
        labelled = int(ok["image_id"].isin(data.labels.index).sum())
    return ExploreSummary(
        out=str(out),
        index_html=str(out / "index.html"),
        n_files=len(h),
        n_ok=len(ok),
        n_failed=len(failed),
        n_patients=int(ok["patient_id"].nunique()) if len(ok) else 0,
        n_studies=int(ok["study_instance_uid"].nunique()) if len(ok) else 0,
        n_series=int(ok["series_instance_uid"].nunique()) if len(ok) else 0,
        n_labelled=labelled,
        n_pixel_sampled=data.n_hist,
        n_pixel_failed=len(data.pixel_failures),
        failures={str(k): int(v) for k, v in failed["error"].value_counts().items()},
    )


def explore_folder(
    dicom_dir: Path,
    out: Path,
    labels_csv: Path | None = None,
    sample: int = 200,
    workers: int | None = None,
    progress: bool = True,
) -> ExploreSummary:
    """Write ``out/index.html`` (+ PNGs, ``headers.csv``, ``summary.json``) for a DICOM folder.

    Args:
        dicom_dir: Folder of DICOM files (searched recursively; e.g. Kaggle's stage_2_train).
        out: Output folder, created if needed.
        labels_csv: Kaggle long-format label CSV; enables label counts and per-subtype grids.
        sample: Slices whose pixels are read for the HU histogram (memory stays bounded).
        workers: Processes for scanning (default: cores, at most 8).
        progress: Show tqdm bars on stderr.

    Returns:
        The counts written to ``summary.json``. Bad files are counted and listed, never fatal.
    """
    dicom_dir, out = Path(dicom_dir), Path(out)
    data = collect(dicom_dir, labels_csv, sample, workers, progress)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(data, out)
    atomic_write_text(out / "headers.csv", data.headers.to_csv(index=False))
    write_page(data, summary, out)
    atomic_write_text(out / "summary.json", json.dumps(asdict(summary), indent=2))
    return summary
