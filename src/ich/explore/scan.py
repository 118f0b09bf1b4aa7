"""Scan a DICOM folder for the exploration report: every header, a sample of pixels.

Headers are read for every file in a process pool (small dicts come back, so memory grows only
with the number of files, by a few hundred bytes each). Pixel data are read for a bounded,
deterministic sample only: HU histograms come back as fixed-bin counts and image-grid examples
as small thumbnails, so a 750k-file folder costs the same pixel memory as a 100-file one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from tqdm import tqdm

from ich.dicom.io import read_meta, read_slice
from ich.dicom.series import IOP_COLUMNS, IPP_COLUMNS, flatten_meta
from ich.dicom.windowing import needs_wrap_fix
from ich.errors import IchError

#: HU histogram bins: 10 HU wide from air to dense bone (outside values go to the end bins).
HU_EDGES = np.arange(-1100.0, 3110.0, 10.0)
#: Side of the thumbnails kept for image grids (pixels).
THUMB = 160
#: File suffixes taken as DICOM (plus files without a suffix, as some PACS exports have).
DICOM_SUFFIXES = (".dcm", ".dicom", ".dcm.gz", "")

T = TypeVar("T")
R = TypeVar("R")


def list_dicom_files(folder: Path) -> list[Path]:
    """All candidate DICOM files under ``folder`` (recursive, hidden files skipped), sorted."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.startswith("."):
                continue
            suffix = Path(name).suffix.lower()
            if suffix in DICOM_SUFFIXES:
                out.append(Path(root) / name)
    return sorted(out)


def stable_key(text: str) -> str:
    """A hash used to pick examples deterministically but without file-name order bias."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def scan_header(path: Path) -> dict[str, Any]:
    """One row of the header table: status "ok"/"error", reason, and the fields we count."""
    row: dict[str, Any] = {"path": str(path), "image_id": path.name.split(".")[0]}
    try:
        meta = read_meta(path)
    except IchError as exc:  # one bad file never stops a scan of thousands
        return {**row, "status": "error", "error": str(getattr(exc, "reason", exc))}
    except OSError as exc:  # but a bug (TypeError, ...) does: it is not a file's fault
        return {**row, "status": "error", "error": f"{type(exc).__name__}: {exc}"}
    d = meta.to_dict()
    keep = (
        "sop_instance_uid",
        "patient_id",
        "study_instance_uid",
        "series_instance_uid",
        "modality",
        "rows",
        "columns",
        "bits_allocated",
        "bits_stored",
        "pixel_representation",
        "photometric_interpretation",
        "rescale_slope",
        "rescale_intercept",
        "window_center",
        "window_width",
        "transfer_syntax_uid",
        "slice_thickness",
    )
    row.update({k: d[k] for k in keep})
    row["pixel_spacing"] = str(d["pixel_spacing"]) if d["pixel_spacing"] else ""
    # The file's own intercept is the header variant; read_meta already applied the wrap fix.
    if d.get("header_rescale_intercept") is not None:
        row["rescale_intercept"] = d["header_rescale_intercept"]
    row["wrap_fault"] = bool(d.get("wrap_fixed")) or needs_wrap_fix(
        meta.bits_stored, meta.pixel_representation, row["rescale_intercept"]
    )
    row["window_multivalued"] = meta.window_center_vm > 1
    # Geometry, so the report can order series and find slices at the same position.
    flat = flatten_meta(meta)
    row.update({c: flat[c] for c in (*IPP_COLUMNS, *IOP_COLUMNS)})
    row["instance_number"] = flat["instance_number"]
    row.update(status="ok", error="")
    return row


def _thumbnail(hu: np.ndarray, size: int = THUMB) -> np.ndarray:
    """Downscale HU to ``size`` on the long side (area interpolation keeps thin bleeds visible)."""
    import cv2

    h, w = hu.shape
    scale = size / max(h, w)
    if scale >= 1:
        return hu.astype(np.float32)
    dst = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(cv2.resize(hu, dst, interpolation=cv2.INTER_AREA), dtype=np.float32)


def scan_pixels(task: tuple[str, bool, bool]) -> dict[str, Any]:
    """Read one sampled slice: HU histogram counts and/or a thumbnail, or the error."""
    path, want_hist, want_thumb = task
    try:
        sl = read_slice(path)
    except IchError as exc:
        return {"path": path, "error": str(getattr(exc, "reason", exc))}
    except OSError as exc:
        return {"path": path, "error": f"{type(exc).__name__}: {exc}"}
    out: dict[str, Any] = {"path": path, "error": ""}
    if want_hist:
        clipped = np.clip(sl.hu, HU_EDGES[0], HU_EDGES[-1] - 1e-3)
        out["hist"] = np.histogram(clipped, bins=HU_EDGES)[0].astype(np.int64)
        out["wrap_fixed"] = sl.meta.wrap_fixed
    if want_thumb:
        out["thumb"] = _thumbnail(sl.hu)
    return out


def parallel_map(
    fn: Callable[[T], R], items: Sequence[T], workers: int, desc: str, progress: bool = True
) -> Iterator[R]:
    """Map in a process pool (in order) with a tqdm bar; ``workers <= 1`` runs inline."""
    bar = tqdm(
        total=len(items),
        desc=desc,
        unit="file",
        disable=None if progress else True,
        dynamic_ncols=True,
    )
    results: Iterable[R]
    if workers <= 1 or len(items) < 2 * max(workers, 1):
        results = map(fn, items)
        for r in results:
            bar.update(1)
            yield r
    else:
        chunk = max(1, min(256, len(items) // (workers * 8)))
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for r in pool.map(fn, items, chunksize=chunk):
                bar.update(1)
                yield r
    bar.close()


def _compact(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows -> DataFrame with repeated strings as categories (a few bytes per row, not ~1 kB)."""
    df = pd.DataFrame(rows)
    for col in df.columns:
        if df[col].dtype == object and col not in ("path", "image_id", "sop_instance_uid"):
            df[col] = df[col].astype("category")
    return df


def scan_headers(
    files: Sequence[Path], workers: int, progress: bool = True, batch: int = 20_000
) -> pd.DataFrame:
    """Header table of every file (one row each, failures included with their reason).

    Rows are compacted to a DataFrame every ``batch`` files so that dicts for the whole
    folder (750k files in RSNA stage 2) never sit in memory at once.
    """
    parts: list[pd.DataFrame] = []
    rows: list[dict[str, Any]] = []
    for row in parallel_map(scan_header, list(files), workers, "headers", progress):
        rows.append(row)
        if len(rows) >= batch:
            parts.append(_compact(rows))
            rows = []
    if rows or not parts:
        parts.append(_compact(rows))
    df = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    for col in ("status", "error"):
        if col not in df.columns:
            df[col] = ""
    for col in df.columns:  # categories of different batches differ; plain values for use
        if isinstance(df[col].dtype, pd.CategoricalDtype):
            df[col] = df[col].astype(object)
    return df
