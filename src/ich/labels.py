"""Label names and order, and the Kaggle long <-> wide label formats.

The RSNA 2019 files are "long": one row ``ID_<image>_<label>,<value>`` per slice and label. ich
works with "wide" tables internally: one row per image (index ``image_id`` = ``ID_<image>``),
one column per label in :data:`LABELS` order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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
#: Clip applied to submitted probabilities (the evaluation clips at 1e-7; 1e-6 is safer).
SUBMISSION_EPS = 1e-6


def split_long_id(long_id: str) -> tuple[str, str]:
    """Split ``ID_000039fa0_subdural`` into (``ID_000039fa0``, ``subdural``)."""
    image_id, sep, label = long_id.rpartition("_")
    if not sep or label not in LABELS:
        raise LabelsError(f"{long_id!r} is not of the form ID_<image>_<label> with a known label")
    return image_id, label


def read_long_csv(path: str | Path) -> pd.DataFrame:
    """Read a Kaggle long-format CSV (``ID,Label``), tolerating a leading index column."""
    try:
        df = pd.read_csv(path)
    except Exception as exc:  # pandas raises many kinds; the file name is what matters
        raise LabelsError(f"{path}: cannot read CSV ({exc})") from exc
    if "ID" not in df.columns or "Label" not in df.columns:
        raise LabelsError(f"{path}: expected columns ID,Label, found {list(df.columns)}")
    return df[["ID", "Label"]]


def long_to_wide(long: pd.DataFrame, source: str = "labels") -> pd.DataFrame:
    """Convert ``ID,Label`` rows to one row per image and one int8 column per label.

    Duplicate rows (present in the RSNA stage-2 CSV) are dropped when they agree and rejected
    when they conflict. Images that lack any of the six labels are rejected.
    """
    parts = long["ID"].astype(str).str.rsplit("_", n=1, expand=True)
    if parts.shape[1] != 2 or not parts[1].isin(LABELS).all():
        bad = long["ID"][~parts[1].isin(LABELS)].iloc[0] if parts.shape[1] == 2 else long["ID"][0]
        raise LabelsError(f"{source}: ID {bad!r} is not of the form ID_<image>_<label>")
    frame = pd.DataFrame({"image_id": parts[0], "label": parts[1], "value": long["Label"]})
    if frame["value"].isna().any():
        raise LabelsError(f"{source}: empty Label values")
    frame = frame.drop_duplicates()
    if frame.duplicated(["image_id", "label"]).any():
        dup = frame[frame.duplicated(["image_id", "label"])].iloc[0]
        raise LabelsError(f"{source}: conflicting values for {dup.image_id}_{dup.label}")
    wide = frame.pivot(index="image_id", columns="label", values="value")
    missing = wide.isna().any(axis=1)
    if missing.any():
        n, example = int(missing.sum()), wide.index[missing][0]
        raise LabelsError(f"{source}: {n} image(s) lack some labels, e.g. {example}")
    wide = wide[list(LABELS)].astype(np.int8)
    wide.columns.name = None
    return wide.sort_index()


def read_labels(path: str | Path) -> pd.DataFrame:
    """Read a Kaggle label CSV into the wide form (index ``image_id``, columns ``LABELS``)."""
    return long_to_wide(read_long_csv(path), source=str(path))


def wide_to_long(wide: pd.DataFrame) -> pd.DataFrame:
    """Convert a wide table (index image ids, columns ``LABELS``) to Kaggle ``ID,Label`` rows."""
    missing = [name for name in LABELS if name not in wide.columns]
    if missing:
        raise LabelsError(f"wide table lacks label columns {missing}")
    values = wide[list(LABELS)].to_numpy()
    ids = [f"{image_id}_{label}" for image_id in wide.index for label in LABELS]
    return pd.DataFrame({"ID": ids, "Label": values.reshape(-1)})


def write_submission(
    image_ids: Sequence[str],
    probabilities: np.ndarray,
    path: str | Path,
    eps: float = SUBMISSION_EPS,
) -> Path:
    """Write a Kaggle submission (``ID,Label``, probabilities clipped to [eps, 1-eps]).

    The file is written to a temporary name beside ``path`` and renamed, so an interrupted run
    never leaves a half-written submission.

    Args:
        image_ids: ``ID_<image>`` per row of ``probabilities``.
        probabilities: (N, 6) array in :data:`LABELS` order.
        path: Output CSV.
        eps: Clip margin.
    """
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(LABELS) or probs.shape[0] != len(image_ids):
        raise ValueError(
            f"probabilities must be ({len(image_ids)}, {len(LABELS)}), got {probs.shape}"
        )
    if not np.isfinite(probs).all():
        raise ValueError("probabilities contain NaN or infinity")
    wide = pd.DataFrame(np.clip(probs, eps, 1 - eps), index=list(image_ids), columns=list(LABELS))
    path = Path(path)
    with atomic_path(path) as tmp:
        wide_to_long(wide).to_csv(tmp, index=False, float_format="%.6f")
    return path
