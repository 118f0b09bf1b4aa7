"""The catalog of a preprocessing cache: one row per input file, as a Parquet table.

Columns (see also ``docs`` in ``ich.data.cache``):

* ``image_id`` (file stem, e.g. ``ID_000039fa0``), ``path`` (absolute), ``status`` (``"ok"`` or
  ``"error"``), ``error`` (reason and tag, ``""`` when ok), ``error_kind`` (exception class name);
* every :class:`~ich.dicom.io.SliceMeta` field, flattened by :func:`ich.dicom.series.flatten_meta`
  (``image_position_patient_0..2``, ``image_orientation_patient_0..5``, ``pixel_spacing_0..1``);
  integer fields are nullable ``Int64``, float fields and ``instance_number`` ``float64`` (NaN
  when absent);
* ``slice_index``, ``z``, ``z_spacing``, ``n_slices``, ``ordered_by`` from
  :func:`ich.dicom.series.order_catalog` (``-1``/NaN/``""`` on error rows);
* one column per label, named as in the label file (the six :data:`ich.labels.LABELS` when
  there is none; float32, NaN when unlabelled); ``cache.json`` lists them as ``label_names``;
* ``chunk`` and ``row``: where the image lives (``chunks/<chunk>.npy[row]``; ``-1`` on errors).

Rows are built as plain dicts per file (cheap) and written as one Arrow table per chunk, so no
pandas work is done on the hot path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ich.atomic import atomic_path
from ich.dicom.io import SliceMeta
from ich.dicom.series import TUPLE_FIELDS, flatten_meta, order_catalog
from ich.errors import CacheError
from ich.labels import (
    LABELS,
    labels_digest,
    read_labels,
    strip_extension,
)

#: Columns every row has besides the SliceMeta fields.
BASE_COLUMNS: tuple[str, ...] = (
    "image_id", "path", "status", "error", "error_kind", "chunk", "row",
)
#: Columns added by the series ordering.
ORDER_COLUMNS: tuple[str, ...] = ("slice_index", "z", "z_spacing", "n_slices", "ordered_by")


def _meta_dtypes() -> dict[str, str]:
    """dtype of each flattened SliceMeta column, derived from the dataclass annotations."""
    out: dict[str, str] = {}
    for f in fields(SliceMeta):
        kind = str(f.type)
        if f.name == "path":  # already a base column
            continue
        if f.name in TUPLE_FIELDS:
            out.update({f"{f.name}_{i}": "float64" for i in range(TUPLE_FIELDS[f.name])})
        elif kind.startswith("str"):
            out[f.name] = "str"
        elif kind.startswith("bool"):
            out[f.name] = "bool"
        elif kind.startswith("int") and f.name != "instance_number":
            out[f.name] = "Int64"
        else:
            out[f.name] = "float64"
    return out


META_DTYPES: dict[str, str] = _meta_dtypes()


def list_dicom_files(root: Path, all_files: bool = False) -> list[Path]:
    """Every regular file under ``root`` (recursive) ending in ``.dcm``, or every file.

    Sorted by relative path, so that chunk k is the same files on every run and machine
    (what makes resuming and ``--shard`` work). Hidden files are skipped with ``all_files``.
    """
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            if all_files and name.startswith("."):
                continue
            if not all_files and not name.lower().endswith(".dcm"):
                continue
            path = Path(dirpath) / name
            if path.is_file():
                found.append(path)
    found.sort(key=lambda p: p.relative_to(root).as_posix())
    return found


def skipped_files(root: Path, all_files: bool = False) -> list[Path]:
    """The files :func:`list_dicom_files` leaves out (not ``*.dcm``, or hidden), sorted.

    Why: a folder of ``.DCM`` exports without the usual name, or of PNGs, must not look like an
    empty (or smaller) data set without a word; commands report these.
    """
    out = []
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            taken = not name.startswith(".") if all_files else name.lower().endswith(".dcm")
            if not taken and (Path(dirpath) / name).is_file():
                out.append(Path(dirpath) / name)
    return sorted(out)


def describe_skipped(skipped: list[Path], root: Path, all_files: bool = False) -> str:
    """One line about skipped files: how many, a few names, how to take them."""
    names = ", ".join(p.relative_to(root).as_posix() for p in skipped[:3])
    more = ", ..." if len(skipped) > 3 else ""
    hint = "" if all_files else " (not *.dcm; --all-files reads every file)"
    return f"skipped {len(skipped)} file(s){hint}: {names}{more}"


def duplicate_positions(catalog: pd.DataFrame, tol_mm: float = 0.01) -> pd.DataFrame:
    """Series holding two slices at the same position along the normal.

    Returns:
        One row per such series: ``series_instance_uid``, ``duplicates`` (slices at the same
        z as the previous one) and ``example`` (an image id of a duplicate).
    """
    ok = catalog[(catalog["status"] == "ok") & (catalog["ordered_by"] != "instance_number")]
    rows = []
    for uid, group in ok.groupby("series_instance_uid", sort=True):
        g = group.sort_values("z")
        dup = np.abs(np.diff(g["z"].to_numpy(dtype=np.float64))) < tol_mm
        if dup.any():
            example = str(g["image_id"].iloc[int(np.flatnonzero(dup)[0]) + 1])
            rows.append({"series_instance_uid": uid, "duplicates": int(dup.sum()),
                         "example": example})
    return pd.DataFrame(rows, columns=["series_instance_uid", "duplicates", "example"])


def image_id_of(path: Path) -> str:
    """The image id of a file: its name without ``.dcm`` (Kaggle's ``ID_<hex>``)."""
    name = path.name
    return name[:-4] if name.lower().endswith(".dcm") else name


def ok_row(path: Path, meta: SliceMeta, chunk: int, row: int) -> dict[str, Any]:
    """Catalog row of a slice that was read and cached."""
    out = flatten_meta(meta)
    out.update(image_id=image_id_of(path), path=str(path), status="ok", error="", error_kind="")
    out.update(chunk=chunk, row=row)
    return out


def error_row(path: Path, reason: str, kind: str, meta: SliceMeta | None) -> dict[str, Any]:
    """Catalog row of a file that failed; header fields kept when the header was readable."""
    out: dict[str, Any] = flatten_meta(meta) if meta is not None else {}
    out.update(image_id=image_id_of(path), path=str(path), status="error", error=reason)
    out.update(error_kind=kind, chunk=-1, row=-1)
    return out


def _arrow_type(dtype: str) -> pa.DataType:
    return {"str": pa.string(), "bool": pa.bool_(), "Int64": pa.int64()}.get(dtype, pa.float64())


#: Column -> Arrow type of the chunk tables (base columns, then the SliceMeta columns).
CHUNK_SCHEMA: pa.Schema = pa.schema(
    [(name, pa.int64() if name in ("chunk", "row") else pa.string()) for name in BASE_COLUMNS]
    + [(name, _arrow_type(dtype)) for name, dtype in META_DTYPES.items()]
)
#: What a missing value becomes, by Arrow type (None: a null, NaN/<NA> in the catalog).
_MISSING = {pa.string(): "", pa.bool_(): False}


def write_rows(rows: list[dict[str, Any]], path: Path) -> None:
    """Write one chunk's catalog rows as a Parquet table with :data:`CHUNK_SCHEMA`.

    Why Arrow rather than a DataFrame: building and converting a DataFrame per chunk cost
    ~45 µs per slice, a tenth of the preprocessing; the dtypes pandas needs (nullable
    ``Int64``) are set once for the whole catalog by :func:`frame_dtypes`.
    """
    columns = []
    for column in CHUNK_SCHEMA:
        missing = _MISSING.get(column.type)
        values = [row.get(column.name, missing) for row in rows]
        if missing is not None:
            values = [missing if v is None else v for v in values]
        columns.append(pa.array(values, type=column.type))
    pq.write_table(pa.Table.from_arrays(columns, schema=CHUNK_SCHEMA), path)


def frame_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    """The catalog dtypes (see the module docstring) on a frame read from chunk tables."""
    for col, dtype in META_DTYPES.items():
        if dtype == "Int64":
            frame[col] = frame[col].astype("Int64")
    return frame


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write a table to ``path`` through a temporary file in the same folder and a rename."""
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def _add_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Series order columns for ok rows; -1 / NaN / "" on error rows."""
    ok = frame["status"] == "ok"
    ordered = order_catalog(frame[ok])
    out = frame.copy()
    out["slice_index"] = np.int64(-1)
    out["n_slices"] = np.int64(0)
    out["z"] = np.nan
    out["z_spacing"] = np.nan
    out["ordered_by"] = ""
    for col in ORDER_COLUMNS:
        out.loc[ok, col] = ordered[col].to_numpy()
    out["slice_index"] = out["slice_index"].astype(np.int64)
    out["n_slices"] = out["n_slices"].astype(np.int64)
    return out


def _add_labels(frame: pd.DataFrame, labels: Path | pd.DataFrame | None) -> pd.DataFrame:
    """Label columns (float32; NaN for images absent from the labels, or with none).

    ``labels`` is a label CSV or a table already validated by :func:`ich.labels.read_labels`;
    its columns (the six RSNA labels, a subset or the user's own) become the catalog's label
    columns. Without labels the catalog gets the six RSNA columns, all NaN.

    Raises:
        CacheError: A label named like a catalog column (``path``, ``z``, ...).
    """
    out = frame
    if labels is None:
        for name in LABELS:
            out[name] = np.float32(np.nan)
        return out
    wide = (labels if isinstance(labels, pd.DataFrame) else read_labels(labels)).astype(np.float32)
    clash = [name for name in wide.columns if name in out.columns]
    if clash:
        raise CacheError(f"label column(s) {clash} have the name of a catalog column: rename them")
    joined = wide.reindex([strip_extension(i) for i in out["image_id"]])
    for name in wide.columns:
        out[name] = joined[name].to_numpy(dtype=np.float32)
    return out


def assemble_catalog(
    tables: Iterator[pd.DataFrame], labels_csv: Path | pd.DataFrame | None,
    patients: pd.Series | None = None,
) -> pd.DataFrame:
    """Merge chunk tables into the final catalog: series order, labels, sorted rows.

    Ok rows come first, ordered by (study, series, slice_index) — the order of the cache index
    of :class:`~ich.data.cache.SliceCache`; failed files follow, by path. ``patients`` (image id
    -> patient, from the label file) replaces the ``patient_id`` of the images it names.
    """
    frame = frame_dtypes(pd.concat(list(tables), ignore_index=True))
    if patients is not None:
        given = frame["image_id"].map(strip_extension).map(patients)
        frame["patient_id"] = given.fillna(frame["patient_id"]).astype(frame["patient_id"].dtype)
    frame = _add_labels(_add_order(frame), labels_csv)
    frame["_bad"] = frame["status"] != "ok"
    frame = frame.sort_values(
        ["_bad", "study_instance_uid", "series_instance_uid", "slice_index", "path"], kind="stable"
    )
    return frame.drop(columns="_bad").reset_index(drop=True)


def check_cache_labels(
    out: Path,
    labels: pd.DataFrame | None,
    labels_csv: str | Path | None,
    relabel: bool,
    spec_key: str | None = None,
) -> bool:
    """Refuse to change the labels of a finished cache silently; True when they change.

    Why: runs, folds and reports made from a cache assume its labels; a rerun of ``ich prepare``
    with another (or no) ``--labels`` would otherwise relabel it without a word.
    """
    path = out / "cache.json"
    if not path.is_file():
        return False
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if "labels_digest" not in old:  # made before label digests were recorded
        return False
    if spec_key is not None and old.get("spec_key") != spec_key:
        return False  # other settings: the folder is refused or rebuilt whole (--force)
    new = labels_digest(labels) if labels is not None else None
    if new == old["labels_digest"]:
        return False
    if not relabel:
        before = f"labels from {old.get('labels_csv')}" if old["labels_digest"] else "no labels"
        now = f"--labels {labels_csv} differs" if labels is not None else "no --labels was given"
        raise CacheError(
            f"{out} was built with {before} and {now}; pass --relabel to replace the catalog's "
            "labels (runs trained on the old labels keep theirs), or choose another --out"
        )
    return True
