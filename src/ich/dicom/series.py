"""Group slices into series and order them along the slice normal.

File names and (0020,0013) Instance Number do not give the anatomical order of a CT series; the
geometry does. The position of a slice along the stack is
``z = ImagePositionPatient · n`` with ``n = row cosines × column cosines`` taken from
(0020,0037) Image Orientation (Patient). Sorting by ``z`` gives inferior → superior for an axial
head series. Where the geometry is missing, slices fall back to Instance Number order and the
series carries an issue saying so (never silent).

Two flavours share the same rules:

* :func:`order_series` works on :class:`~ich.dicom.io.SliceMeta` objects (inference, ``ich info``).
* :func:`order_catalog` works on a catalog DataFrame (the preprocessing cache, 750k rows), fully
  vectorised with pandas.

Flattened column names (:func:`flatten_meta`, used by the catalog): every
:class:`~ich.dicom.io.SliceMeta` field keeps its name, except the tuple fields, which become one
float column per item, ``<name>_<i>`` (NaN when the attribute is absent):

* ``image_position_patient_0``, ``_1``, ``_2`` — (0020,0032) x, y, z in mm;
* ``image_orientation_patient_0`` … ``_5`` — (0020,0037) row cosines (0–2), column cosines (3–5);
* ``pixel_spacing_0``, ``_1`` — (0028,0030) row spacing, column spacing in mm.

``instance_number`` and ``slice_thickness`` stay single columns (float, NaN when absent in a
catalog). :func:`order_catalog` adds ``slice_index`` (0..n-1 along the normal within a series),
``z`` (mm), ``z_spacing`` (mm to the previous slice; the first slice gets the second's),
``n_slices`` and ``ordered_by`` (``"position"`` or ``"instance_number"``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from ich.dicom.io import SliceMeta

#: SliceMeta fields holding tuples, and their lengths (flattened to ``<name>_<i>`` columns).
TUPLE_FIELDS: dict[str, int] = {
    "image_position_patient": 3,
    "image_orientation_patient": 6,
    "pixel_spacing": 2,
}
IPP_COLUMNS: tuple[str, ...] = tuple(f"image_position_patient_{i}" for i in range(3))
IOP_COLUMNS: tuple[str, ...] = tuple(f"image_orientation_patient_{i}" for i in range(6))

#: A spacing above this multiple of the series' median spacing is reported as a gap.
GAP_FACTOR = 1.5
#: Positions closer than this (mm) along the normal count as duplicates.
DUPLICATE_TOL_MM = 0.01
#: Orientation cosines differing by more than this count as a different orientation.
ORIENTATION_TOL = 1e-3


def slice_normal(image_orientation_patient: Sequence[float] | np.ndarray) -> np.ndarray:
    """Unit normal of the image plane: row cosines × column cosines.

    Args:
        image_orientation_patient: The six (0020,0037) Image Orientation (Patient) values.

    Returns:
        float64 (3,) unit vector (the cross product, normalised so that slightly
        non-orthonormal headers still give positions in mm).
    """
    iop = np.asarray(image_orientation_patient, dtype=np.float64).reshape(6)
    normal = np.cross(iop[:3], iop[3:])
    norm = float(np.linalg.norm(normal))
    return normal / norm if norm > 0 else normal


def flatten_meta(meta: SliceMeta) -> dict[str, Any]:
    """A flat dict of a slice's metadata for a table row: tuple fields become ``<name>_<i>``.

    Why: Parquet catalogs and vectorised ordering need one scalar per column; the names are
    defined once here (see the module docstring) so the catalog and :func:`order_catalog` agree.
    """
    out: dict[str, Any] = {}
    plan = _SLICE_META_PLAN if type(meta) is SliceMeta else _flat_plan(type(meta))
    for name, columns in plan:
        value = getattr(meta, name)
        if not columns:
            out[name] = value
        elif value is None:
            for column in columns:
                out[column] = float("nan")
        else:
            for i, column in enumerate(columns):
                out[column] = float(value[i])
    return out


def _flat_plan(cls: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(field name, its ``<name>_<i>`` columns or ()) per field of a dataclass.

    Why: ``dataclasses.fields`` and the column f-strings cost more than the copy itself, and
    ``ich prepare`` flattens one SliceMeta per slice.
    """
    return tuple(
        (f.name, tuple(f"{f.name}_{i}" for i in range(TUPLE_FIELDS[f.name]))
         if f.name in TUPLE_FIELDS else ())
        for f in fields(cls)
    )


_SLICE_META_PLAN = _flat_plan(SliceMeta)  # computed once at import


@dataclass
class OrderedSeries:
    """One series, its slices in order along the normal, their positions and any problems.

    Attributes:
        study_instance_uid: (0020,000D) of the series' study.
        series_instance_uid: (0020,000E).
        patient_id: (0010,0020) of the first slice.
        metas: The slices, sorted by position along the slice normal.
        z: float64 (T,) position of each slice along the normal, mm.
        z_spacing: float64 (T,) distance to the previous slice, mm; the first slice gets the
            second's (a single slice gets its slice thickness, or 0).
        issues: Human-readable problems (duplicates, mixed orientation, gaps, missing geometry).
    """

    study_instance_uid: str
    series_instance_uid: str
    patient_id: str
    metas: list[SliceMeta]
    z: np.ndarray
    z_spacing: np.ndarray
    issues: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.metas)

    def neighbours(self, i: int, offsets: Sequence[int] = (-1, 0, 1)) -> list[int]:
        """Indices of slice ``i``'s neighbours at ``offsets``, clamped at the series ends."""
        last = len(self.metas) - 1
        return [min(max(i + o, 0), last) for o in offsets]


#: Alias kept for callers that speak of "series info".
SeriesInfo = OrderedSeries


def _spacing(z: np.ndarray, thickness: float | None) -> np.ndarray:
    """Per-slice spacing to the previous slice; the first gets the second's."""
    if len(z) < 2:
        return np.full(len(z), float(thickness or 0.0))
    d = np.diff(z)
    return np.concatenate([d[:1], d])


def _check_orientation(metas: Sequence[SliceMeta]) -> tuple[np.ndarray | None, list[str]]:
    """The series' normal (normalised mean of the slice normals) and an issue if orientations mix.

    The mean (not the first slice's normal) makes the result independent of input order and
    identical to :func:`order_catalog`'s.
    """
    if any(m.image_orientation_patient is None for m in metas):
        return None, []
    iop = np.array([m.image_orientation_patient for m in metas], dtype=np.float64)
    normals = np.array([slice_normal(row) for row in iop])
    mean = normals.mean(axis=0)
    norm = float(np.linalg.norm(mean))
    if norm == 0 or not np.all(np.linalg.norm(normals, axis=1) > 0):
        return None, ["ImageOrientationPatient gives no valid slice normal"]
    issues = []
    spread = float(np.max(iop.max(axis=0) - iop.min(axis=0)))
    if spread > ORIENTATION_TOL:
        n_distinct = len({tuple(np.round(row, 3)) for row in iop})
        issues.append(f"mixed orientations: {n_distinct} different ImageOrientationPatient "
                      f"values (cosines differ by up to {spread:.3g})")
    return mean / norm, issues


def slice_positions(metas: Sequence[SliceMeta], normal: np.ndarray | None = None) -> np.ndarray:
    """Positions (mm) of the slices of one series along the slice normal, in input order.

    Args:
        metas: Slices of one series, each with position and orientation.
        normal: The normal to project on; by default that of the first slice.

    Raises:
        ValueError: if a slice lacks (0020,0032) or (0020,0037).
    """
    if not metas:
        return np.zeros(0)
    missing = [m.path for m in metas if m.image_position_patient is None]
    if missing or (normal is None and metas[0].image_orientation_patient is None):
        raise ValueError(f"no ImagePositionPatient/ImageOrientationPatient for {missing[:3]}")
    if normal is None:
        normal = slice_normal(metas[0].image_orientation_patient)  # type: ignore[arg-type]
    ipp = np.array([m.image_position_patient for m in metas], dtype=np.float64)
    return np.asarray(ipp @ normal, dtype=np.float64)


def _instance_numbers(metas: Sequence[SliceMeta]) -> np.ndarray:
    """float64 InstanceNumbers, missing ones last (inf), as :func:`order_catalog` has them."""
    return np.array([np.inf if m.instance_number is None else m.instance_number for m in metas],
                    dtype=np.float64)


def _thickness(metas: Sequence[SliceMeta]) -> float | None:
    values = [m.slice_thickness for m in metas if m.slice_thickness]
    return float(np.median(values)) if values else None


def _order_one(metas: list[SliceMeta]) -> OrderedSeries:
    """Order one series' slices and list its problems."""
    normal, issues = _check_orientation(metas)
    thickness = _thickness(metas)
    if normal is not None and all(m.image_position_patient is not None for m in metas):
        z_all = slice_positions(metas, normal)
        order = np.lexsort((_instance_numbers(metas), z_all))  # by z, ties by InstanceNumber
        z = z_all[order]
    else:
        issues.append("ImagePositionPatient/ImageOrientationPatient missing: ordered by "
                      "InstanceNumber, z estimated from SliceThickness")
        order = np.argsort(_instance_numbers(metas), kind="stable")
        z = np.arange(len(metas), dtype=np.float64) * (thickness or 1.0)
    ordered = [metas[i] for i in order]
    spacing = _spacing(z, thickness)
    n_dup = int(np.sum(np.abs(np.diff(z)) < DUPLICATE_TOL_MM)) if len(z) > 1 else 0
    if n_dup:
        issues.append(f"duplicate positions: {n_dup} slice(s) at the same z as their neighbour")
    uids = [m.sop_instance_uid for m in metas if m.sop_instance_uid]
    if len(set(uids)) < len(uids):
        issues.append(f"duplicate SOPInstanceUID: {len(uids) - len(set(uids))} repeated")
    if len(z) > 2:
        steps = np.diff(z)
        steps = steps[steps >= DUPLICATE_TOL_MM]
        median = float(np.median(steps)) if len(steps) else 0.0
        gaps = int(np.sum(steps > GAP_FACTOR * median)) if median > 0 else 0
        if gaps:
            issues.append(f"gaps: {gaps} spacing(s) > {GAP_FACTOR}× the median {median:.2f} mm")
    first = ordered[0]
    return OrderedSeries(
        study_instance_uid=first.study_instance_uid,
        series_instance_uid=first.series_instance_uid,
        patient_id=first.patient_id,
        metas=ordered,
        z=z,
        z_spacing=spacing,
        issues=issues,
    )


def order_series(metas: Sequence[SliceMeta]) -> list[OrderedSeries]:
    """Group slices by (study, series) and order each group along its slice normal.

    Args:
        metas: Slices from any number of studies and series, in any order.

    Returns:
        One :class:`OrderedSeries` per (StudyInstanceUID, SeriesInstanceUID), sorted by those
        UIDs so the result does not depend on input order.
    """
    groups: dict[tuple[str, str], list[SliceMeta]] = {}
    for m in metas:
        groups.setdefault((m.study_instance_uid, m.series_instance_uid), []).append(m)
    return [_order_one(groups[key]) for key in sorted(groups)]


def _catalog_normals(df: pd.DataFrame, group: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) per-row series normal (normalised mean of the series' slice normals, as
    :func:`order_series` uses) and (N,) whether the row's own orientation is valid."""
    iop = df[list(IOP_COLUMNS)].to_numpy(dtype=np.float64)
    normals = np.cross(iop[:, :3], iop[:, 3:])
    norm = np.linalg.norm(normals, axis=1, keepdims=True)
    valid = np.isfinite(norm[:, 0]) & (norm[:, 0] > 0)
    normals = np.divide(normals, norm, out=np.full_like(normals, np.nan), where=norm > 0)
    mean = pd.DataFrame(normals).groupby(group).transform("mean").to_numpy()
    mnorm = np.linalg.norm(mean, axis=1, keepdims=True)
    return np.divide(mean, mnorm, out=np.full_like(mean, np.nan), where=mnorm > 0), valid


def order_catalog(df: pd.DataFrame) -> pd.DataFrame:
    """Vectorised :func:`order_series` for a catalog with flattened SliceMeta columns.

    Args:
        df: One row per slice with ``study_instance_uid``, ``series_instance_uid``,
            ``image_position_patient_0..2``, ``image_orientation_patient_0..5`` and
            ``instance_number`` (NaN where absent); ``slice_thickness`` is used if present.

    Returns:
        A copy in the input row order with ``slice_index``, ``z``, ``z_spacing``, ``n_slices``
        and ``ordered_by`` added. A series with any slice lacking geometry is ordered by
        InstanceNumber and its ``z`` estimated from SliceThickness (``ordered_by`` says so).
    """
    out = df.copy()
    n = len(out)
    if n == 0:
        for col, dtype in (("slice_index", "int64"), ("z", "float64"), ("z_spacing", "float64"),
                           ("n_slices", "int64"), ("ordered_by", "object")):
            out[col] = pd.Series(dtype=dtype)
        return out
    uid_cols = ["study_instance_uid", "series_instance_uid"]
    group = out[uid_cols].astype(str).groupby(uid_cols, sort=False).ngroup().to_numpy()
    ipp = out[list(IPP_COLUMNS)].to_numpy(dtype=np.float64)
    normals, valid = _catalog_normals(out, group)
    z_pos = np.einsum("ij,ij->i", ipp, normals)
    row_ok = valid & np.isfinite(z_pos)
    has_pos = pd.Series(row_ok).groupby(group).transform("all").to_numpy(dtype=bool)
    inst = pd.to_numeric(out["instance_number"], errors="coerce").to_numpy(dtype=np.float64)
    inst = np.where(np.isfinite(inst), inst, np.inf)
    key = np.where(has_pos, z_pos, inst)
    # Sort rows by (series, key, instance number, original row) -> rank within series.
    order = np.lexsort((np.arange(n), inst, key, group))
    g_sorted = group[order]
    starts = np.r_[True, g_sorted[1:] != g_sorted[:-1]]
    start_pos = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - start_pos
    counts = np.bincount(group)
    thick = (pd.to_numeric(out["slice_thickness"], errors="coerce").to_numpy(dtype=np.float64)
             if "slice_thickness" in out else np.full(n, np.nan))
    thick = np.where(thick > 0, thick, np.nan)  # 0 or negative thickness means unknown
    thick_g = pd.Series(thick).groupby(group).transform("median").to_numpy()
    z = np.where(has_pos, z_pos, rank * np.where(thick_g > 0, thick_g, 1.0))
    # Spacing in sorted order: diff to previous; series starts take the next slice's diff.
    zs = z[order]
    d = np.r_[np.nan, np.diff(zs)]
    d[starts] = np.nan
    nxt = np.r_[d[1:], np.nan]
    single = counts[g_sorted] == 1
    d = np.where(starts, np.where(single, np.nan_to_num(thick_g[order], nan=0.0), nxt), d)
    spacing = np.empty(n)
    spacing[order] = d
    out["slice_index"] = rank
    out["z"] = z
    out["z_spacing"] = spacing
    out["n_slices"] = counts[group].astype(np.int64)
    out["ordered_by"] = np.where(has_pos, "position", "instance_number").astype(object)
    return out
