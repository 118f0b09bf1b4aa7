"""Render docs/alt_phantom.png: the independent phantom (top) next to ich's phantom (bottom).

Usage::

    python docs/make_alt_phantom_figure.py [--out docs/alt_phantom.png] [--seed 0]

Both cohorts are generated here (6 studies, 256 px) and one bleeding study of each is shown at
the skull base, the ventricles, its most labelled slice and near the vertex, in the brain window
40/80, with the slice's labels. The independent phantom (``benchmarks/alt_phantom.py``) is
written from the same public description by other code, to check how a model generalises.
Both are synthetic: models trained on a phantom are for demonstration only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pydicom

from ich.atomic import atomic_path
from ich.dicom.windowing import apply_window
from ich.labels import SUBTYPES, read_labels
from ich.phantom import generate_cohort

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from alt_phantom import generate  # noqa: E402

SHORT = {"epidural": "EDH", "intraparenchymal": "IPH", "intraventricular": "IVH",
         "subarachnoid": "SAH", "subdural": "SDH"}


def _ordered(images: Path, ids: list[str]) -> list[str]:
    """Image ids ordered along the slice normal (ImagePositionPatient)."""
    keyed = []
    for image_id in ids:
        ds = pydicom.dcmread(images / f"{image_id}.dcm", stop_before_pixels=True)
        iop = np.asarray(ds.ImageOrientationPatient, float)
        keyed.append((float(np.dot(ds.ImagePositionPatient, np.cross(iop[:3], iop[3:]))),
                      image_id))
    return [i for _, i in sorted(keyed)]


def _pick(cohort: Path, wide: pd.DataFrame) -> list[tuple[str, str]]:
    """Four (image id, title) of the study with the most positive slices."""
    ids = [p.stem for p in (cohort / "images").glob("ID_*.dcm")]
    series = {}
    for image_id in ids:
        ds = pydicom.dcmread(cohort / "images" / f"{image_id}.dcm", stop_before_pixels=True)
        series.setdefault(str(ds.SeriesInstanceUID), []).append(image_id)
    best = max(series.values(), key=lambda s: int(wide.loc[s, "any"].sum()))
    order = _ordered(cohort / "images", best)
    n = len(order)
    most = max(order, key=lambda i: (int(wide.loc[i, list(SUBTYPES)].sum()), -abs(
        order.index(i) - n // 2)))
    chosen = [order[int(0.1 * n)], order[int(0.45 * n)], most, order[int(0.85 * n)]]
    titles = []
    for image_id in chosen:
        present = [SHORT[s] for s in SUBTYPES if wide.loc[image_id, s] == 1]
        titles.append(" + ".join(present) if present else "no hemorrhage")
    return list(zip(chosen, titles, strict=True))


def _hu(path: Path) -> np.ndarray:
    ds = pydicom.dcmread(path)
    return ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)


def main() -> None:
    """Generate both cohorts, pick the slices and draw the 2 x 4 grid."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "alt_phantom.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Invalid value for VR UI")  # RSNA-style ID_ UIDs
    with tempfile.TemporaryDirectory(prefix="alt-figure-") as tmp:
        alt, ich = Path(tmp) / "alt", Path(tmp) / "ich"
        generate(alt, studies=6, seed=args.seed, size=256)
        generate_cohort(ich, studies=6, seed=args.seed, size=256)
        rows = []
        for name, cohort in (("independent phantom", alt), ("ich phantom", ich)):
            wide = read_labels(cohort / "labels.csv")
            rows.append((name, cohort, _pick(cohort, wide)))
        fig, axes = plt.subplots(2, 4, figsize=(12, 6.8))
        for (name, cohort, picks), row_axes in zip(rows, axes, strict=True):
            for ax, (image_id, title) in zip(row_axes, picks, strict=True):
                ax.imshow(apply_window(_hu(cohort / "images" / f"{image_id}.dcm"), 40, 80),
                          cmap="gray", vmin=0, vmax=1)
                ax.set_title(f"{name}: {title}", fontsize=8)
                ax.axis("off")
        fig.suptitle("Synthetic phantoms, brain window 40/80 (demonstration only)", fontsize=10)
        fig.tight_layout(rect=(0, 0, 1, 0.96), h_pad=1.5)
        with atomic_path(args.out, suffix=".png") as out:
            fig.savefig(out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
