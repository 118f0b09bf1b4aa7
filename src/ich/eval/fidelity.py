"""Explanation fidelity on the phantom: is the heatmap where the blood is?

Why the phantom: its lesion masks are exact, so two standard checks of a saliency map can be
scored per subtype without an annotator: the share of heatmap energy inside the lesion mask,
and the pointing game (the hottest pixel lies on the lesion, within a small tolerance; Zhang et
al., "Top-down neural attention by excitation backprop", 2016). A centred Gaussian, which knows
nothing about the slice, is scored in the same run: a heatmap that does not beat it explains
nothing. Phantom results are for demonstration only.

The phantom draws masks of the five RSNA subtypes (``any`` is their union): a run's label is
scored when it is one of those six names; any other name (a user's ``hemorrhage``) has no mask
that means the same thing, so it is skipped and :func:`unmapped_labels` says so.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from html import escape
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from ich.atomic import atomic_write_text
from ich.dicom.io import read_slice
from ich.labels import LABELS, SUBTYPES

#: heatmap(hu, label, neighbours) -> float32 (H, W) in [0, 1], as ``Predictor.heatmap``.
HeatmapFn = Callable[[np.ndarray, str, Sequence[np.ndarray] | None], np.ndarray]
#: Pointing-game tolerance as a fraction of the image side (15 px of 512 in the literature).
TOLERANCE_FRAC = 15 / 512


@dataclass(frozen=True)
class LabelFidelity:
    """Scores of one label over its slices (mean over slices; rates in [0, 1])."""

    label: str
    n_slices: int
    energy_in_mask: float
    energy_in_mask_baseline: float
    pointing_hit_rate: float
    pointing_hit_rate_baseline: float
    empty_maps: int = 0  # slices whose heatmap was all zero (nothing explained: scored as 0)


def centred_gaussian(shape: tuple[int, int], sigma_frac: float = 1 / 6) -> np.ndarray:
    """The baseline map: a Gaussian at the image centre, σ = ``sigma_frac`` of the side."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    sigma = sigma_frac * max(h, w)
    g = np.exp(-(((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2) / (2 * sigma**2)))
    return (g / g.max()).astype(np.float32)


def energy_in_mask(heat: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's total (non-negative) energy that lies inside ``mask``."""
    h = np.clip(np.asarray(heat, np.float64), 0, None)
    total = h.sum()
    return float((h * (mask > 0)).sum() / total) if total > 0 else 0.0


def pointing_hit(heat: np.ndarray, mask: np.ndarray, tolerance_px: int) -> bool:
    """Whether the hottest pixel lies on the mask grown by ``tolerance_px``."""
    m: np.ndarray = (mask > 0).astype(np.uint8)
    if tolerance_px > 0:
        k = 2 * tolerance_px + 1
        m = np.asarray(cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))))
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return bool(m[y, x])


def unmapped_labels(labels: Sequence[str]) -> list[str]:
    """The run's labels without a phantom mask to score them against (not RSNA names)."""
    return [name for name in labels if name not in LABELS]


def _neighbours(images: pd.DataFrame, image_id: str, offsets: Sequence[int],
                read: Callable[[str], np.ndarray]) -> list[np.ndarray]:
    """HU images at ``offsets`` along the slice's series (clamped at the ends)."""
    row = images.loc[image_id]
    series = images[images["series_instance_uid"] == row["series_instance_uid"]]
    order = series.sort_values("slice_index").index.tolist()
    k = order.index(image_id)
    return [read(order[min(max(k + o, 0), len(order) - 1)]) for o in offsets]


def explanation_fidelity(
    heatmap: HeatmapFn, cohort: Path, offsets: Sequence[int] = (0,),
    max_slices: int = 20, tolerance_frac: float = TOLERANCE_FRAC,
    labels: Sequence[str] = LABELS,
) -> list[LabelFidelity]:
    """Score ``heatmap`` against the phantom's lesion masks, per label, with the baseline.

    An all-zero heatmap (Grad-CAM of a barely trained model can be) scores 0 on both measures
    and is counted in ``empty_maps``.

    Args:
        heatmap: The explanation to score (``Predictor.heatmap``).
        cohort: A phantom cohort folder (``images/``, ``masks/``, ``patients.csv``).
        offsets: Neighbour offsets the model stacks (``Predictor.offsets``).
        max_slices: Most slices scored per label (the first by image id: deterministic).
        tolerance_frac: Pointing-game tolerance as a fraction of the image side.
        labels: The run's labels (``Predictor.labels``); those without a phantom mask
            (:func:`unmapped_labels`) are skipped.
    """
    cohort = Path(cohort)
    images = pd.read_csv(cohort / "patients.csv").set_index("image_id")
    cache: dict[str, np.ndarray] = {}

    def read(image_id: str) -> np.ndarray:
        if image_id not in cache:
            cache[image_id] = read_slice(cohort / "images" / f"{image_id}.dcm").hu
        return cache[image_id]

    masks = {p.stem: p for p in sorted((cohort / "masks").glob("*.npz"))}
    out = []
    for label in (name for name in labels if name in LABELS):
        rows: list[tuple[float, float, bool, bool]] = []
        empty = 0
        for image_id, path in masks.items():
            if len(rows) >= max_slices:
                break
            with np.load(path) as z:
                parts = [z[k] for k in (SUBTYPES if label == "any" else (label,)) if k in z]
            mask = np.any(np.stack(parts), axis=0) if parts else None
            if mask is None or not mask.any():
                continue
            hu = read(image_id)
            heat = np.asarray(heatmap(hu, label, _neighbours(images, image_id, offsets, read)))
            empty += int(not np.any(heat > 0))
            base = centred_gaussian(hu.shape[:2])
            tol = max(1, round(tolerance_frac * max(hu.shape[:2])))
            rows.append((energy_in_mask(heat, mask), energy_in_mask(base, mask),
                         pointing_hit(heat, mask, tol), pointing_hit(base, mask, tol)))
        if rows:
            a = np.asarray(rows, dtype=np.float64)
            e, e_base, hit, hit_base = (round(float(v), 4) for v in a.mean(axis=0))
            out.append(LabelFidelity(label, len(rows), e, e_base, hit, hit_base, empty))
    return out


def fidelity_html(rows: list[LabelFidelity], skipped: Sequence[str] = ()) -> str:
    """An HTML section for the evaluation report (``skipped``: labels without a mask)."""
    cells = "".join(
        f"<tr><td>{escape(r.label)}</td><td>{r.n_slices}</td><td>{r.energy_in_mask:.3f}</td>"
        f"<td>{r.energy_in_mask_baseline:.3f}</td><td>{r.pointing_hit_rate:.2f}</td>"
        f"<td>{r.pointing_hit_rate_baseline:.2f}</td><td>{r.empty_maps}</td></tr>" for r in rows)
    return ("<h2>Explanation fidelity (phantom masks)</h2><p>Grad-CAM of the slice model against "
            "the exact lesion masks of a phantom cohort: share of heatmap energy inside the "
            "mask and pointing-game hit rate, next to a centred Gaussian that ignores the image. "
            "Phantom results are for demonstration only.</p><table><tr><th>label</th>"
            "<th>slices</th><th>energy in mask</th><th>baseline</th><th>pointing hits</th>"
            f"<th>baseline</th><th>empty maps</th></tr>{cells}</table>"
            + (f"<p>Not scored (no phantom mask for these labels): "
               f"{escape(', '.join(skipped))}.</p>" if skipped else ""))


def add_to_report(
    rows: list[LabelFidelity], cohort: Path, out_dir: Path, skipped: Sequence[str] = ()
) -> None:
    """Add fidelity ``rows`` (scored on ``cohort``) to the metrics.json and report.html in
    ``out_dir``; the caller scores them with :func:`explanation_fidelity` (this layer loads no
    model); ``skipped`` lists the run's labels that could not be scored."""
    metrics_path = Path(out_dir) / "metrics.json"
    metrics: dict[str, Any] = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    metrics["explanation_fidelity"] = {"cohort": Path(cohort).name,
                                       "labels": [asdict(r) for r in rows],
                                       "skipped_labels": list(skipped)}
    atomic_write_text(metrics_path, json.dumps(metrics, indent=1))
    report = Path(out_dir) / "report.html"
    if report.exists():
        text = report.read_text(encoding="utf-8")
        cut = text.rfind("<footer>") if "<footer>" in text else text.rfind("</body>")
        atomic_write_text(report, text[:cut] + fidelity_html(rows, skipped) + text[cut:])
