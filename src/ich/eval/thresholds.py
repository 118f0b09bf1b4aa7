"""Per-label decision thresholds chosen on out-of-fold predictions, stored with the run.

Why: a probability is not a decision. The challenge's binary task (and any triage list) needs
one cut-off per label, and the only honest place to choose it is on predictions for slices the
model did not train on (the run's validation fold, or every slice out of fold for a fold set).
Two rules: Youden's J (the ROC point farthest above the diagonal: sensitivity + specificity - 1
maximal) and a target sensitivity (the highest threshold that still finds, e.g., 95 % of the
positives, as a screening tool would want).

``RUN/thresholds.json``::

    {"method": "youden", "target_sensitivity": null, "source": "oof_predictions.parquet (q_)",
     "labels": {"any": {"threshold": 0.31, "sensitivity": 0.93, "specificity": 0.90,
                        "positives": 412, "negatives": 2188}, ...}}
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ich.atomic import atomic_write_text
from ich.errors import CheckpointError, ConfigError

THRESHOLDS_FILE = "thresholds.json"
Method = Literal["youden", "sensitivity"]
#: Used for a label the out-of-fold rows cannot calibrate (no positives or no negatives).
FALLBACK_THRESHOLD = 0.5


def _rates(y: np.ndarray, p: np.ndarray, threshold: float) -> tuple[float, float]:
    pred = p >= threshold
    pos, neg = y == 1, y == 0
    sens = float(pred[pos].mean()) if pos.any() else float("nan")
    spec = float((~pred[neg]).mean()) if neg.any() else float("nan")
    return sens, spec


def youden_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The threshold maximising sensitivity + specificity - 1 (ties: the highest threshold)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thr = roc_curve(y, p)
    j = tpr - fpr
    best = np.flatnonzero(j == j.max())
    # roc_curve's thresholds decrease; its first one is +inf (nothing predicted positive).
    return float(min(thr[best[0]], 1.0))


def sensitivity_threshold(y: np.ndarray, p: np.ndarray, target: float) -> float:
    """The highest threshold whose sensitivity is at least ``target``."""
    if not 0 < target <= 1:
        raise ConfigError(f"target sensitivity {target}: must be in (0, 1]")
    scores = np.sort(p[y == 1])[::-1]  # positives, most confident first
    need = int(np.ceil(target * len(scores) - 1e-9))
    return float(scores[max(need, 1) - 1])


def choose_thresholds(
    y: np.ndarray,
    p: np.ndarray,
    labels: Sequence[str],
    method: Method = "youden",
    target: float = 0.95,
) -> dict[str, dict[str, Any]]:
    """One threshold per label column of ``p`` (N, L) against binary ``y`` (N, L).

    Rows with a NaN label are left out; soft labels count as positive at >= 0.5.
    """
    out: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(labels):
        keep = np.isfinite(y[:, j]) & np.isfinite(p[:, j])
        yj, pj = (y[keep, j] >= 0.5).astype(np.int8), p[keep, j]
        n_pos, n_neg = int(yj.sum()), int(len(yj) - yj.sum())
        if n_pos == 0 or n_neg == 0:
            thr, note = FALLBACK_THRESHOLD, "no positives or no negatives out of fold: default 0.5"
        else:
            thr = (youden_threshold(yj, pj) if method == "youden"
                   else sensitivity_threshold(yj, pj, target))
            note = ""
        sens, spec = _rates(yj, pj, thr)
        out[name] = {"threshold": thr, "sensitivity": sens, "specificity": spec,
                     "positives": n_pos, "negatives": n_neg, **({"note": note} if note else {})}
    return out


def thresholds_from_oof(
    run_dir: str | Path, labels: Sequence[str] | None = None, method: Method = "youden",
    target: float = 0.95,
) -> Path:
    """Choose thresholds on ``RUN/oof_predictions.parquet`` and write ``RUN/thresholds.json``.

    The sequence model's probabilities (``q_*``) are used when present (what ``ich predict``
    writes), else the slice model's (``p_*``).

    Args:
        run_dir: The run folder.
        labels: The labels to choose thresholds for; default the run's own (its model spec,
            else the out-of-fold table's ``<label>``/``p_<label>`` columns).
        method: ``youden`` or ``sensitivity`` (at ``target``).
        target: The target sensitivity of the ``sensitivity`` method.

    Raises:
        CheckpointError: the run has no out-of-fold predictions (e.g. ``data.fold=-1``), or
            they lack a column of one of ``labels``.
    """
    from ich.eval.labelset import resolve_labels

    run_dir = Path(run_dir)
    path = run_dir / "oof_predictions.parquet"
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: no oof_predictions.parquet to choose thresholds on "
                              "(a run trained with data.fold=-1 has no validation fold)")
    oof = pd.read_parquet(path)
    labels = resolve_labels(run_dir, oof, labels)
    missing = [c for n in labels for c in (n, f"p_{n}") if c not in oof.columns]
    if missing:
        raise CheckpointError(f"{path}: no column(s) {missing} for the labels {list(labels)}")
    prefix = "q_" if all(f"q_{n}" in oof and oof[f"q_{n}"].notna().all() for n in labels) else "p_"
    y = oof[list(labels)].to_numpy(dtype=np.float64)
    p = oof[[f"{prefix}{n}" for n in labels]].to_numpy(dtype=np.float64)
    data = {
        "method": method,
        "target_sensitivity": target if method == "sensitivity" else None,
        "source": f"oof_predictions.parquet ({prefix}, {len(oof)} slices)",
        "labels": choose_thresholds(y, p, labels, method, target),
    }
    return atomic_write_text(run_dir / THRESHOLDS_FILE, json.dumps(data, indent=2))


def load_thresholds(run_dir: str | Path) -> dict[str, float]:
    """Label -> threshold of a run (or fold set), from ``RUN/thresholds.json``."""
    path = Path(run_dir) / THRESHOLDS_FILE
    try:
        data = json.loads(path.read_text())
        return {name: float(v["threshold"]) for name, v in data["labels"].items()}
    except FileNotFoundError:
        raise CheckpointError(f"{run_dir}: no {THRESHOLDS_FILE}; a run trained by this version "
                              "of `ich train` writes it from its out-of-fold predictions") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: unreadable thresholds ({exc})") from exc


def binary_submission(probabilities: pd.DataFrame, thresholds: dict[str, float]) -> pd.DataFrame:
    """Kaggle ``ID,Label`` rows with 0/1 decisions: ``Label >= threshold of the row's label``."""
    labels = probabilities["ID"].astype(str).str.rsplit("_", n=1).str[-1]
    missing = sorted(set(labels) - set(thresholds))
    if missing:
        raise CheckpointError(f"no threshold for label(s) {missing}")
    cut = labels.map(thresholds).to_numpy(dtype=np.float64)
    values = probabilities["Label"].to_numpy(dtype=np.float64)
    return pd.DataFrame({"ID": probabilities["ID"], "Label": (values >= cut).astype(np.int8)})
