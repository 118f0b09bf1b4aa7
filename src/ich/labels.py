"""Label names and order, and the Kaggle long <-> wide label formats.

The RSNA 2019 files are "long": one row ``ID_<image>_<label>,<value>`` per slice and label. ich
works with "wide" tables internally: one row per image (index ``image_id`` = ``ID_<image>``),
one column per label: the six :data:`LABELS` in their order, or the labels a user's file names
(one ``hemorrhage`` column, a subset of the six), which then are the run's labels everywhere.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ich.atomic import atomic_path
from ich.errors import LabelsError

#: The six outputs, in the order used by every array, tensor, CSV and checkpoint of ich.
LABELS: tuple[str, ...] = (
    "any",
    "epidural",
    "intraparenchymal",
    "intraventricular",
    "subarachnoid",
    "subdural",
)
#: The five hemorrhage subtypes (``LABELS`` without ``any``).
SUBTYPES: tuple[str, ...] = LABELS[1:]
#: Weights of the RSNA 2019 metric: ``any`` counts twice.
LABEL_WEIGHTS: np.ndarray = np.array([2.0, 1.0, 1.0, 1.0, 1.0, 1.0])


def label_weights(labels: Sequence[str] = LABELS) -> np.ndarray:
    """Metric and loss weights of a run's labels: ``any`` counts twice (as in the RSNA 2019
    metric) only when the run has it; every other label counts once.

    A run trained on a label subset (one ``hemorrhage`` label, or three subtypes) must not get
    the six-label weights, which would not even have the right length.

    Raises:
        LabelsError: No label, or a label named twice.
    """
    names = check_label_names(labels)
    return np.array([2.0 if n == "any" else 1.0 for n in names])


#: What a label name may look like: it becomes a CSV column (``p_<label>``), the tail of a
#: Kaggle row id (``ID_<image>_<label>``, split at the last underscore) and a URL segment.
LABEL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")


def check_label_names(labels: Sequence[str], source: str = "labels") -> tuple[str, ...]:
    """Validate a run's or a file's label names and return them as a tuple.

    Raises:
        LabelsError: No label, a repeated name, or a name that is not letters and digits
            (an underscore would make ``ID_<image>_<label>`` ambiguous).
    """
    names = tuple(str(n) for n in labels)
    if not names or len(set(names)) != len(names):
        raise LabelsError(
            f"{source}: label names must be non-empty and distinct, got {list(names)}"
        )
    bad = [n for n in names if not LABEL_NAME.fullmatch(n)]
    if bad:
        raise LabelsError(
            f"{source}: label name(s) {bad} must be letters and digits, starting with a letter "
            "(they become CSV columns and the <label> of ID_<image>_<label>): rename the columns"
        )
    return names


#: Clip applied to submitted probabilities (the evaluation clips at 1e-7; 1e-6 is safer).
SUBMISSION_EPS = 1e-6


def split_long_id(long_id: str) -> tuple[str, str]:
    """Split ``ID_000039fa0_subdural`` into (``ID_000039fa0``, ``subdural``)."""
    image_id, sep, label = long_id.rpartition("_")
    if not sep or not image_id or not LABEL_NAME.fullmatch(label):
        raise LabelsError(f"{long_id!r} is not of the form ID_<image>_<label> (label: letters "
                          "and digits)")
    return image_id, label


#: File extensions stripped from image names in label CSVs (``a.png`` and ``a`` name one image).
IMAGE_EXTENSIONS: tuple[str, ...] = (".dcm", ".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: Columns that may name the image in a wide label CSV, in order of preference.
ID_COLUMNS: tuple[str, ...] = ("ID", "file", "image_id", "filename", "image", "path")
#: Columns that may name the image's patient in a wide label CSV (not labels: the grouping
#: that keeps one patient's images in one fold when the images themselves do not say it).
PATIENT_COLUMNS: tuple[str, ...] = ("patient_id", "PatientID", "patient")


def image_key(name: str) -> str:
    """The image id a label file's name column means: folders and extension dropped
    (``scans/a.png`` -> ``a``), as files are matched by their own name."""
    return strip_extension(name.replace("\\", "/").rsplit("/", 1)[-1])


def id_column(columns: Sequence[object]) -> str | None:
    """The column naming the image: the first of :data:`ID_COLUMNS`, matched case-blind."""
    by_lower = {str(c).lower(): str(c) for c in columns}
    return next((by_lower[c.lower()] for c in ID_COLUMNS if c.lower() in by_lower), None)


def strip_extension(name: str) -> str:
    """``ID_1.dcm`` / ``img.PNG`` -> ``ID_1`` / ``img``: label CSVs may name files either way."""
    lower = name.lower()
    for ext in IMAGE_EXTENSIONS:
        if lower.endswith(ext):
            return name[: -len(ext)]
    return name


def _read_csv(path: str | Path, **read_csv: Any) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, **read_csv)
    except Exception as exc:  # pandas raises many kinds; the file name is what matters
        raise LabelsError(f"{path}: cannot read CSV ({exc})") from exc
    # A leading pandas index column (``Unnamed: 0``) in some copies of the RSNA CSVs.
    return df.drop(columns=[c for c in df.columns if str(c).startswith("Unnamed:")])


def read_long_csv(path: str | Path) -> pd.DataFrame:
    """Read a Kaggle long-format CSV (``ID,Label``), tolerating a leading index column."""
    df = _read_csv(path)
    if "ID" not in df.columns or "Label" not in df.columns:
        raise LabelsError(f"{path}: expected columns ID,Label, found {list(df.columns)}")
    return df[["ID", "Label"]]


def _check_values(wide: pd.DataFrame, source: str, soft: bool) -> pd.DataFrame:
    """Values must be numbers in {0, 1} (or in [0, 1] when ``soft``); ``any`` must agree.

    Why strict: a 0.7 cast to an integer label is a silent 0, and a 2 or -1 (a "not read"
    code in some exports) would train the model on nonsense.
    """
    numeric = wide.apply(pd.to_numeric, errors="coerce")
    bad = numeric.isna() & wide.notna()
    if bad.any(axis=None):
        image, label = _first(bad)
        raise LabelsError(f"{source}: {image} {label}: value {wide.loc[image, label]!r} "
                          "is not a number")
    if numeric.isna().any(axis=None):
        image, label = _first(numeric.isna())
        raise LabelsError(f"{source}: {image} {label}: empty label value")
    values = numeric.to_numpy(dtype=np.float64)
    allowed = (values >= 0) & (values <= 1) if soft else (values == 0) | (values == 1)
    if not allowed.all():
        image, label = _first(pd.DataFrame(~allowed, index=wide.index, columns=wide.columns))
        what = "in [0, 1]" if soft else "0 or 1 (use --soft-labels for probabilities in [0, 1])"
        raise LabelsError(f"{source}: {image} {label}: value {numeric.loc[image, label]} is not "
                          f"{what}")
    if "any" in wide.columns and len(wide.columns) > 1:
        subtypes = values[:, [i for i, c in enumerate(wide.columns) if c != "any"]]
        any_col = values[:, list(wide.columns).index("any")]
        wrong = any_col + 1e-6 < subtypes.max(axis=1)
        if not soft:
            wrong |= any_col != subtypes.max(axis=1)
        if wrong.any():
            i = int(np.flatnonzero(wrong)[0])
            raise LabelsError(
                f"{source}: {int(wrong.sum())} image(s) whose 'any' disagrees with the subtypes "
                f"(any = 1 exactly when a subtype is 1), e.g. {wide.index[i]}: "
                f"{dict(zip(wide.columns, values[i].tolist(), strict=True))}"
            )
    return numeric.astype(np.float32 if soft else np.int8)


def _first(mask: pd.DataFrame) -> tuple[str, str]:
    row, col = np.argwhere(mask.to_numpy())[0]
    return str(mask.index[row]), str(mask.columns[col])


def long_to_wide(long: pd.DataFrame, source: str = "labels", soft: bool = False) -> pd.DataFrame:
    """Convert ``ID,Label`` rows to one row per image and one column per label.

    Duplicate rows (present in the RSNA stage-2 CSV) are dropped when they agree and rejected
    when they conflict. The labels are the six RSNA labels, or the user's own names (e.g.
    ``ID_<image>_hemorrhage`` rows); subsets of the six are written as wide tables. Images that
    lack one of the labels (e.g. a missing ``any`` row) are rejected, as are values outside
    {0, 1} (outside [0, 1] with ``soft``).

    Returns:
        int8 columns, or float32 with ``soft``.
    """
    parts = long["ID"].astype(str).str.rsplit("_", n=1, expand=True)
    ok = (parts[1].str.fullmatch(LABEL_NAME.pattern).fillna(False).astype(bool)
          if parts.shape[1] == 2 else pd.Series(False, index=long.index))
    if not ok.all():
        bad = long["ID"][~ok].iloc[0]
        raise LabelsError(f"{source}: ID {bad!r} is not of the form ID_<image>_<label>")
    names = label_names_of(list(dict.fromkeys(parts[1])), source)
    if set(names) <= set(LABELS):
        # Kaggle's long files carry the six labels: a missing one (a lost "any" row) is an
        # error, not a subset (subsets are written as wide tables).
        names = LABELS
    frame = pd.DataFrame({"image_id": parts[0], "label": parts[1], "value": long["Label"]})
    if frame["value"].isna().any():
        raise LabelsError(f"{source}: empty Label values")
    frame = frame.drop_duplicates()
    if frame.duplicated(["image_id", "label"]).any():
        dup = frame[frame.duplicated(["image_id", "label"])].iloc[0]
        raise LabelsError(f"{source}: conflicting values for {dup.image_id}_{dup.label}")
    wide = frame.pivot(index="image_id", columns="label", values="value")
    wide = wide.reindex(columns=list(names))
    missing = wide.isna().any(axis=1)
    if missing.any():
        n, example = int(missing.sum()), wide.index[missing][0]
        lacks = [name for name in names if pd.isna(wide.loc[example, name])]
        raise LabelsError(f"{source}: {n} image(s) lack some labels, e.g. {example} has no "
                          f"row for {', '.join(lacks)}")
    wide = _check_values(wide, source, soft)
    wide.columns.name = None
    wide.index.name = "image_id"
    return wide.sort_index()


def wide_from_table(df: pd.DataFrame, source: str = "labels", soft: bool = False) -> pd.DataFrame:
    """Validate a wide label table (one row per image: an id column, one column per label).

    The id column is the first of :data:`ID_COLUMNS` present (any case); names may carry a
    folder and an image extension (``.dcm``, ``.png``, ...), both dropped. The other columns
    (but a ``patient_id`` one, :data:`PATIENT_COLUMNS`) are the labels,
    0/1 each, named by the file: the six :data:`LABELS` (any order, returned in ``LABELS``
    order), a subset of them (e.g. three subtypes, file order), or the user's own names (e.g.
    one ``hemorrhage`` column). A mix of RSNA names and other names is refused as a likely typo.
    """
    id_col = id_column(list(df.columns))
    if id_col is None:
        raise LabelsError(f"{source}: no image column: expected one of {list(ID_COLUMNS)} "
                          f"(or the Kaggle long format ID,Label), found {list(df.columns)}")
    label_cols = [str(c) for c in df.columns if c != id_col and c not in PATIENT_COLUMNS]
    df = df.set_axis([str(c) for c in df.columns], axis=1)
    names = label_names_of(label_cols, source)
    ids = df[id_col].astype(str).map(image_key)
    if ids.duplicated().any():
        frame = df[list(names)].set_axis(ids.to_numpy(), axis=0)
        conflicting = frame.groupby(level=0).nunique().gt(1).any(axis=1)
        if conflicting.any():
            raise LabelsError(f"{source}: conflicting rows for {conflicting.index[conflicting][0]}")
        df = df[~ids.duplicated()]
        ids = ids[~ids.duplicated()]
    wide = df[list(names)].set_axis(pd.Index(ids.to_numpy(), name="image_id"), axis=0)
    wide = _check_values(wide, source, soft)
    wide.columns.name = None
    return wide.sort_index()


def read_patient_groups(path: str | Path) -> pd.Series | None:
    """The patient of each image from a wide label CSV's ``patient_id`` column, if it has one.

    Image folders (PNG exports) carry no patient: without this every image is its own
    patient, and slices of one patient could land in training and validation folds alike.

    Returns:
        image id (extension stripped) -> patient id, or None without a patient column.

    Raises:
        LabelsError: An image without a patient, or one image given two patients.
    """
    columns = list(_read_csv(path, nrows=0).columns)  # the header says if there is a patient
    id_col = id_column(columns)
    col = next((c for c in PATIENT_COLUMNS if c in columns), None)
    if id_col is None or col is None or "Label" in columns:
        return None
    df = _read_csv(path, usecols=[id_col, col])
    if df[col].isna().any() or (df[col].astype(str).str.strip() == "").any():
        example = df.loc[df[col].isna() | (df[col].astype(str).str.strip() == ""), id_col]
        raise LabelsError(f"{path}: {example.iloc[0]}: no {col} (every image needs a patient)")
    groups = pd.Series(df[col].astype(str).to_numpy(),
                       index=df[id_col].astype(str).map(image_key).to_numpy())
    two = groups.groupby(level=0).nunique() > 1
    if two.any():
        raise LabelsError(f"{path}: {two.index[two][0]} is given two patients")
    return groups[~groups.index.duplicated()]


def label_names_of(columns: Sequence[str], source: str = "labels") -> tuple[str, ...]:
    """The label set of a wide label file's label columns (see :func:`wide_from_table`).

    Raises:
        LabelsError: No label column, an empty, unnamed or repeated name, or RSNA names mixed
            with unknown ones (``any,bleed``: most likely a typo).
    """
    cols = [str(c) for c in columns]
    if not cols:
        raise LabelsError(f"{source}: no label column after the image column")
    bad = [c for c in cols if not c.strip() or c.startswith("Unnamed:")]
    # pandas renames a repeated column "x" to "x.1": a repeated name in the file.
    bad += [c for c in cols if c.rpartition(".")[2].isdigit() and c.rpartition(".")[0] in cols]
    if bad or len(set(cols)) != len(cols):
        raise LabelsError(f"{source}: label columns need distinct, non-empty names, got {cols}")
    check_label_names(cols, source)
    if set(cols) == set(LABELS):
        return LABELS
    unknown = [c for c in cols if c not in LABELS]
    if unknown and len(unknown) < len(cols):
        missing = [c for c in LABELS if c not in cols]
        raise LabelsError(
            f"{source}: label columns mix RSNA names ({', '.join(LABELS)}) with "
            f"unknown column(s) {unknown}; missing column(s) {missing}: use the six RSNA "
            "names, a subset of them, or only your own names"
        )
    return tuple(cols)


def read_labels(path: str | Path, soft: bool = False) -> pd.DataFrame:
    """Read and validate a label CSV into the wide form (index ``image_id``, one column per label).

    Two layouts are accepted: Kaggle's long ``ID,Label`` (``ID_<image>_<label>`` rows, the six
    ``LABELS``) and a wide table (``ID`` or ``file`` column, then one 0/1 column per label, the
    label names from the file: :func:`wide_from_table`). Every check runs here,
    before any image is read: columns, a row for every label of every image, values in {0, 1}
    (in [0, 1] with ``soft``), ``any`` consistent with the subtypes, no conflicting duplicates.

    Raises:
        LabelsError: naming the file and the first offending image / label.
    """
    df = _read_csv(path)
    if "Label" in df.columns and "ID" in df.columns:
        return long_to_wide(df[["ID", "Label"]], source=str(path), soft=soft)
    return wide_from_table(df, source=str(path), soft=soft)


def labels_digest(wide: pd.DataFrame) -> str:
    """A short hash of a validated wide label table (ids and values): tells label sets apart."""
    hashed = pd.util.hash_pandas_object(wide.astype(np.float64), index=True).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()[:16]


def match_files(wide: pd.DataFrame, image_ids: Sequence[str], source: str) -> tuple[int, int]:
    """Check that the label ids name the files; returns (labelled files, label rows unused).

    Raises:
        LabelsError: when no label id matches any file (wrong column, wrong names), with an
            example of each side so the mismatch can be seen.
    """
    ids = pd.Index([strip_extension(i) for i in image_ids])
    hit = ids.isin(wide.index)
    if len(ids) and not hit.any():
        raise LabelsError(
            f"{source}: none of the {len(wide)} labelled ids matches one of the {len(ids)} "
            f"files (e.g. label id {wide.index[0]!r}, file {ids[0]!r})"
        )
    return int(hit.sum()), int((~wide.index.isin(ids)).sum())


def wide_to_long(wide: pd.DataFrame, labels: Sequence[str] = LABELS) -> pd.DataFrame:
    """Convert a wide table (index image ids, one column per label) to Kaggle ``ID,Label``
    rows, ``labels`` in order (a run's own labels, default the six)."""
    missing = [name for name in labels if name not in wide.columns]
    if missing:
        raise LabelsError(f"wide table lacks label columns {missing}")
    values = wide[list(labels)].to_numpy()
    ids = [f"{image_id}_{label}" for image_id in wide.index for label in labels]
    return pd.DataFrame({"ID": ids, "Label": values.reshape(-1)})


def write_submission(
    image_ids: Sequence[str],
    probabilities: np.ndarray,
    path: str | Path,
    eps: float = SUBMISSION_EPS,
    labels: Sequence[str] = LABELS,
) -> Path:
    """Write a Kaggle submission (``ID,Label``, probabilities clipped to [eps, 1-eps]).

    The file is written to a temporary name beside ``path`` and renamed, so an interrupted run
    never leaves a half-written submission.

    Args:
        image_ids: ``ID_<image>`` per row of ``probabilities``.
        probabilities: (N, L) array in ``labels`` order.
        path: Output CSV.
        eps: Clip margin.
        labels: The run's label names (default the six RSNA labels).
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(labels) or probs.shape[0] != len(image_ids):
        raise ValueError(
            f"probabilities must be ({len(image_ids)}, {len(labels)}), got {probs.shape}"
        )
    if not np.isfinite(probs).all():
        raise ValueError("probabilities contain NaN or infinity")
    wide = pd.DataFrame(np.clip(probs, eps, 1 - eps), index=list(image_ids), columns=list(labels))
    path = Path(path)
    with atomic_path(path) as tmp:
        wide_to_long(wide, labels).to_csv(tmp, index=False, float_format="%.6f")
    return path
