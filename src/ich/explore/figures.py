"""Figures of the exploration report (matplotlib, Agg): counts, HU histogram, image grids.

Each function writes one PNG atomically (via :func:`ich.eval.plots.save_figure`) and returns
its path. Inputs are small aggregates computed by the scan, never whole images sets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from ich.dicom.windowing import WINDOWS, Window, apply_window
from ich.eval.plots import label_color, save_figure

_WINDOW_COLORS = {
    "brain": "#1f77b4",
    "subdural": "#d62728",
    "soft_tissue": "#2ca02c",
    "bone": "#7f7f7f",
}


def fig_slices_per_series(counts: np.ndarray, path: Path) -> Path:
    """Histogram of the number of slices in each series (integer bins)."""
    fig, ax = plt.subplots(figsize=(7.0, 2.8))
    counts = np.asarray(counts, dtype=int)
    lo, hi = int(counts.min()), int(counts.max())
    step = max(1, (hi - lo + 1) // 40)
    edges = [float(e) - 0.5 for e in range(lo, hi + step + 1, step)]
    ax.hist(counts, bins=edges, color="#1f5f99", edgecolor="white")
    ax.set(
        xlabel="slices in the series",
        ylabel="number of series",
        title=f"Slices per series (n = {counts.size:,} series; median {np.median(counts):g})",
    )
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)


def fig_hu_histogram(edges: np.ndarray, hist: np.ndarray, n_slices: int, path: Path) -> Path:
    """HU histogram of the sampled slices, log y-scale, with the display windows marked.

    The log scale keeps the small blood/brain peaks visible next to the huge air peak; the
    window bars (in a strip above, same HU axis) show which part of the range each window
    turns into grey levels, and the brain window is shaded on the histogram itself.
    """
    fig, (ax_w, ax) = plt.subplots(
        2, 1, figsize=(10, 5.2), sharex=True, gridspec_kw={"height_ratios": [1, 4]}
    )
    centers = (edges[:-1] + edges[1:]) / 2
    ax.fill_between(centers, np.maximum(hist, 0.5), 0.5, step="mid", color="#4a6f8a", alpha=0.85)
    ax.set_yscale("log")
    ax.set_xlim(edges[0], edges[-1])
    ax.set_ylim(bottom=0.5)
    for i, (name, w) in enumerate(WINDOWS.items()):
        lo, hi = w.center - w.width / 2, w.center + w.width / 2
        color = _WINDOW_COLORS.get(name, "k")
        y = len(WINDOWS) - 1 - i
        ax_w.plot([lo, hi], [y, y], color=color, lw=5, solid_capstyle="butt")
        ax_w.text(
            hi + 40,
            y,
            f"{name.replace('_', ' ')} {w.center:g}/{w.width:g}",
            va="center",
            fontsize=8.5,
            color=color,
        )
        if name in ("brain", "subdural"):
            ax.axvspan(lo, hi, color=color, alpha=0.12, lw=0)
    ax_w.set_ylim(-0.7, len(WINDOWS) - 0.3)
    ax_w.set_yticks([])
    ax_w.set_title(f"HU histogram of {n_slices:,} sampled slices, with display windows")
    for spine in ("left", "right", "top"):
        ax_w.spines[spine].set_visible(False)
    ax.set(
        xlabel="Hounsfield units (values beyond the axis are counted in the end bins)",
        ylabel="pixels (log scale)",
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def fig_label_counts(counts: Mapping[str, int], n_images: int, path: Path) -> Path:
    """Positive slices per label, with the share of labelled slices."""
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    names = list(counts)[::-1]
    values = [counts[n] for n in names]
    ax.barh(names, values, color=[label_color(n, k) for k, n in enumerate(names)])
    for i, v in enumerate(values):
        share = 100 * v / n_images if n_images else 0
        ax.text(v, i, f"  {v:,} ({share:.1f}%)", va="center", fontsize=9)
    ax.set_xlim(0, max(max(values), 1) * 1.3)
    ax.set(xlabel="positive slices", title=f"Label counts ({n_images:,} labelled slices)")
    ax.grid(alpha=0.3, axis="x")
    return save_figure(fig, path)


def fig_cooccurrence(matrix: np.ndarray, names: Sequence[str], path: Path) -> Path:
    """Co-occurrence heatmap: slices positive for both labels (diagonal = label count)."""
    fig, ax = plt.subplots(figsize=(6.8, 5.6))
    shown = np.log1p(matrix.astype(float))
    im = ax.imshow(shown, cmap="Blues")
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            color = "white" if shown[i, j] > 0.6 * max(shown.max(), 1e-9) else "#1d2733"
            ax.text(
                j, i, f"{int(matrix[i, j]):,}", ha="center", va="center", fontsize=9, color=color
            )
    ax.set_xticks(range(len(names)), list(names), rotation=35, ha="right")
    ax.set_yticks(range(len(names)), list(names))
    ax.set_title("Label co-occurrence (slices positive for both)")
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("log(1 + count)")
    return save_figure(fig, path)


def fig_image_grid(
    examples: Mapping[str, Sequence[tuple[str, np.ndarray]]],
    window: Window,
    path: Path,
    columns: int = 6,
) -> Path:
    """One row per category (subtype, negatives), up to ``columns`` thumbnails in one window.

    Args:
        examples: category -> [(image_id, HU thumbnail)], in the order to show.
        window: Display window applied to every thumbnail.
        path: Output PNG.
        columns: Thumbnails per row.
    """
    cats = list(examples)
    # Rows without examples become a thin strip with a note, not a row of blank squares.
    ratios = [1.0 if examples[c] else 0.18 for c in cats]
    fig, axes = plt.subplots(
        len(cats),
        columns,
        figsize=(1.9 * columns, 2.05 * sum(ratios) + 0.6),
        squeeze=False,
        gridspec_kw={"height_ratios": ratios},
    )
    for r, cat in enumerate(cats):
        items = list(examples[cat])[:columns]
        color = "#1d2733" if cat in ("negative", "sample") else label_color(cat, r)
        for c in range(columns):
            ax = axes[r][c]
            ax.set_axis_off()
            if c < len(items):
                image_id, thumb = items[c]
                ax.imshow(
                    apply_window(thumb, window.center, window.width),
                    cmap="gray",
                    vmin=0,
                    vmax=1,
                    interpolation="lanczos",
                )
                ax.set_axis_on()
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
                ax.set_xlabel(image_id, fontsize=7, color="#5b6b7c")
        if items:
            axes[r][0].set_ylabel(cat, fontsize=11, color=color, labelpad=8)
        else:
            note = axes[r][0].text(
                0.0,
                0.5,
                f"{cat}: no examples in this folder",
                fontsize=10,
                color=color,
                va="center",
                ha="left",
                transform=axes[r][0].transAxes,
            )
            note.set_in_layout(False)  # wider than its cell: must not shrink the whole grid
    fig.suptitle(
        f"{window.name.replace('_', ' ')} window ({window.center:g}/{window.width:g})", fontsize=13
    )
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)
