"""Evaluation plots as PNG files: ROC, precision-recall, reliability, training curves, confusion.

matplotlib with the Agg backend (no display needed on servers). Every function takes (N, L)
arrays whose columns are a run's ``labels`` (default the six of :data:`ich.labels.LABELS`),
writes one PNG atomically and returns its path, so a report can be rebuilt piece by piece and
never links a half-written image.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ich.atomic import atomic_write_bytes
from ich.eval.metrics import reliability_bins
from ich.labels import LABELS

#: One colour per label, the same in every plot of a report.
LABEL_COLORS: dict[str, str] = {
    "any": "#1b1b1b",
    "epidural": "#1f77b4",
    "intraparenchymal": "#d62728",
    "intraventricular": "#2ca02c",
    "subarachnoid": "#9467bd",
    "subdural": "#ff7f0e",
}
#: Colours for labels of other label sets (a user's ``hemorrhage``, ...), in turn.
OTHER_COLORS: tuple[str, ...] = ("#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")


def label_color(name: str, k: int = 0) -> str:
    """The colour of label ``name`` (the ``k``-th of its run) in every plot."""
    return LABEL_COLORS.get(name, OTHER_COLORS[k % len(OTHER_COLORS)])


def save_figure(fig: Figure, path: Path, dpi: int = 110) -> Path:
    """Render ``fig`` to PNG in memory, write it atomically and close the figure."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return atomic_write_bytes(Path(path), buf.getvalue())


def _two_classes(t: np.ndarray) -> bool:
    return 0 < int(t.sum()) < t.size


def _columns(y: np.ndarray, p: np.ndarray, labels: Sequence[str]) -> list[tuple[str, str]]:
    """(name, colour) per column; refuses arrays whose width is not the label count."""
    if y.ndim != 2 or y.shape != p.shape or y.shape[1] != len(labels):
        raise ValueError(f"y and p must both be (N, {len(labels)}) for labels {list(labels)}; "
                         f"got {y.shape}, {p.shape}")
    return [(name, label_color(name, k)) for k, name in enumerate(labels)]


def plot_roc(
    y: np.ndarray, p: np.ndarray, path: Path, title: str = "ROC curves",
    labels: Sequence[str] = LABELS,
) -> Path:
    """ROC curves of the run's labels on one axes, AUC in the legend (n/a: one class only)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    ax.plot([0, 1], [0, 1], ls="--", color="#aaaaaa", lw=1, label="chance")
    for j, (name, color) in enumerate(_columns(y, p, labels)):
        t, s = y[:, j], p[:, j]
        if not _two_classes(t):
            ax.plot([], [], color=color, label=f"{name} (AUC n/a: one class)")
            continue
        fpr, tpr, _ = roc_curve(t, s)
        auc = roc_auc_score(t, s)
        lw = 2.4 if name == "any" or len(labels) == 1 else 1.6  # the headline curve
        ax.plot(fpr, tpr, color=color, lw=lw, label=f"{name} (AUC {auc:.3f})")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="False positive rate (1 − specificity)",
        ylabel="True positive rate (sensitivity)",
        title=title,
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8.5)
    return save_figure(fig, path)


def plot_pr(
    y: np.ndarray, p: np.ndarray, path: Path, title: str = "Precision-recall",
    labels: Sequence[str] = LABELS,
) -> Path:
    """Precision-recall curves of the run's labels, average precision and prevalence in the
    legend."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    for j, (name, color) in enumerate(_columns(y, p, labels)):
        t, s = y[:, j], p[:, j]
        if not _two_classes(t):
            ax.plot([], [], color=color, label=f"{name} (AP n/a: one class)")
            continue
        prec, rec, _ = precision_recall_curve(t, s)
        ap = average_precision_score(t, s)
        lw = 2.4 if name == "any" or len(labels) == 1 else 1.6  # the headline curve
        label = f"{name} (AP {ap:.3f}, prev. {t.mean():.3f})"
        ax.step(rec, prec, where="post", color=color, lw=lw, label=label)
    ax.set(
        xlim=(0, 1), ylim=(0, 1.02), xlabel="Recall (sensitivity)", ylabel="Precision", title=title
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8.5)
    return save_figure(fig, path)


def plot_reliability(
    y: np.ndarray, p: np.ndarray, path: Path, title: str = "Reliability",
    labels: Sequence[str] = LABELS,
) -> Path:
    """Reliability diagram: observed frequency vs mean predicted probability (10 bins).

    Points on the diagonal are calibrated; marker area grows with the number of rows in a bin,
    so sparse, noisy bins are visibly less important.
    """
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    ax.plot([0, 1], [0, 1], ls="--", color="#aaaaaa", lw=1, label="perfect calibration")
    for j, (name, color) in enumerate(_columns(y, p, labels)):
        bins = reliability_bins(y[:, j], p[:, j])
        if not bins["count"]:
            continue
        sizes = 12 + 80 * np.sqrt(np.asarray(bins["count"]) / max(bins["count"]))
        ax.plot(bins["mean_pred"], bins["frac_pos"], color=color, lw=1.2, alpha=0.8)
        ax.scatter(
            bins["mean_pred"],
            bins["frac_pos"],
            s=sizes,
            color=color,
            label=name,
            alpha=0.85,
            edgecolors="white",
            linewidths=0.5,
        )
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1),
        xlabel="Mean predicted probability (per bin)",
        ylabel="Observed frequency of the label",
        title=title,
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8.5)
    return save_figure(fig, path)


def confusion_grid(n_labels: int) -> tuple[int, int]:
    """(rows, columns) of the confusion small multiples: up to three panels a row, so one
    label gets one panel and six get the usual 2 × 3."""
    cols = min(3, max(1, n_labels))
    return -(-max(1, n_labels) // cols), cols


def plot_confusion(
    y: np.ndarray, p: np.ndarray, path: Path, threshold: float = 0.5, title: str = "Confusion",
    labels: Sequence[str] = LABELS,
) -> Path:
    """Per-label 2×2 confusion matrices at ``threshold``, as small multiples (one per label).

    Cells show counts and the share of their true class (row %): the diagonal then reads as
    specificity and sensitivity, which rare labels would otherwise hide behind the negatives.
    """
    columns = _columns(y, p, labels)
    rows, cols = confusion_grid(len(columns))
    fig, axes = plt.subplots(rows, cols, figsize=(2.55 * cols, 2.6 * rows + 0.7), squeeze=False)
    for ax in axes.ravel()[len(columns):]:
        ax.set_visible(False)  # a 4- or 5-label run leaves empty cells in the last row
    for j, ((name, color), ax) in enumerate(zip(columns, axes.ravel(), strict=False)):
        t = y[:, j].astype(int)
        pred = (p[:, j] >= threshold).astype(int)
        cm = np.array([[np.sum((t == a) & (pred == b)) for b in (0, 1)] for a in (0, 1)])
        share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for a in (0, 1):
            for b in (0, 1):
                color = "white" if share[a, b] > 0.5 else "#1d2733"
                ax.text(
                    b,
                    a,
                    f"{cm[a, b]:,}\n{100 * share[a, b]:.1f}%",
                    ha="center",
                    va="center",
                    fontsize=9,
                    color=color,
                )
        ax.set_xticks([0, 1], ["pred 0", "pred 1"])
        ax.set_yticks([0, 1], ["true 0", "true 1"])
        ax.set_title(name, fontsize=10.5, color=color)
    fig.suptitle(f"{title}\n(threshold {threshold:g}; % of the true class)", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


def read_metrics_log(path: Path) -> list[dict[str, Any]]:
    """Records of a run's ``metrics.jsonl``; unreadable lines are skipped (a run may be live)."""
    records: list[dict[str, Any]] = []
    if not path.is_file():
        return records
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


def _smooth(values: np.ndarray, frac: float = 0.05) -> np.ndarray:
    """Centred moving average over ~5% of the points: per-step loss is too noisy to read."""
    k = max(1, int(len(values) * frac))
    if k <= 1:
        return values
    kernel = np.ones(k) / k
    padded = np.pad(values, (k // 2, k - 1 - k // 2), mode="edge")
    return np.convolve(padded, kernel, mode="valid")


def _curve_panels(records: list[dict[str, Any]], stage: str, axes: Sequence[Any]) -> bool:
    """Draw one stage's train loss (per step) and validation wll (per epoch); False if no data."""
    rows = [r for r in records if r.get("stage") == stage]
    train = [
        r for r in rows if r.get("split") == "train" and isinstance(r.get("loss"), (int, float))
    ]
    val = [
        r
        for r in rows
        if r.get("split") in ("val", "valid", "validation")
        and isinstance(r.get("wll"), (int, float))
    ]
    if not train and not val:
        return False
    ax_loss, ax_val = axes
    # Per-step records carry the learning rate; per-epoch means (same split) would double up.
    train = [r for r in train if "lr" in r] or train
    if train:
        x = np.array([r.get("step", i) for i, r in enumerate(train)], dtype=float)
        loss = np.array([r["loss"] for r in train], dtype=float)
        ax_loss.plot(x, loss, color="#9fb7cf", lw=0.8, label="per step")
        ax_loss.plot(x, _smooth(loss), color="#1f5f99", lw=2, label="smoothed")
        ax_loss.legend(fontsize=8)
    ax_loss.set(title=f"{stage}: training loss", xlabel="step", ylabel="weighted BCE loss")
    if val:
        x = np.array([r.get("epoch", i) for i, r in enumerate(val)], dtype=float)
        ax_val.plot(x, [r["wll"] for r in val], "o-", color="#d62728", lw=2, label="validation")
        ax_val.legend(fontsize=8)
    ax_val.set(title=f"{stage}: validation weighted log loss", xlabel="epoch", ylabel="wll")
    ax_val.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes:
        ax.grid(alpha=0.3)
    return True


def plot_training_curves(metrics_jsonl: Path, path: Path) -> Path | None:
    """Training curves of the "slice" and "sequence" stages; None when the log has neither."""
    records = read_metrics_log(Path(metrics_jsonl))
    stages = [s for s in ("slice", "sequence") if any(r.get("stage") == s for r in records)]
    if not stages:
        return None
    fig, axes = plt.subplots(len(stages), 2, figsize=(10.5, 3.8 * len(stages)), squeeze=False)
    drawn = [_curve_panels(records, stage, axes[i]) for i, stage in enumerate(stages)]
    if not any(drawn):
        plt.close(fig)
        return None
    fig.tight_layout()
    return save_figure(fig, path)
