"""Render docs/images/phantom_vs_real.png: real RSNA slices (top) next to phantom slices (bottom).

Usage::

    python docs/make_phantom_figure.py [--rsna ../shared/data/rsna-sample] [--out docs/images/...]

Columns: skull base, mid-brain and vertex of a series without hemorrhage, then two
hemorrhage-positive slices, all in the brain window 40/80, so the normal structures (orbits,
petrous bone, posterior fossa, falx, calcifications) are compared as well as the bleeds. The real
images only ever appear downscaled in this figure: they are never copied into the repository.
The phantom is synthetic: models trained on it are for demonstration only.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ich.dicom.io import read_meta, read_slice
from ich.dicom.windowing import apply_window
from ich.labels import SUBTYPES, read_labels
from ich.phantom import generate_cohort

REPO = Path(__file__).resolve().parents[1]
SHORT = {"epidural": "EDH", "intraparenchymal": "IPH", "intraventricular": "IVH",
         "subarachnoid": "SAH", "subdural": "SDH"}
LEVELS = (("skull base", 0.12), ("mid-brain", 0.5), ("vertex", 0.85))
BLEEDS = ("subdural", "intraparenchymal")


def _series(folder: Path) -> dict[str, list[str]]:
    """Image ids per series, ordered along the slice normal (ImagePositionPatient)."""
    rows = []
    for path in folder.glob("ID_*.dcm"):
        meta = read_meta(path)
        iop = np.asarray(meta.image_orientation_patient, dtype=float)
        position = float(np.dot(meta.image_position_patient, np.cross(iop[:3], iop[3:])))
        rows.append((meta.series_instance_uid, position, path.stem))
    table = pd.DataFrame(rows, columns=["series", "position", "image"]).sort_values("position")
    return {str(k): list(g["image"]) for k, g in table.groupby("series")}


def _title(wide: pd.DataFrame, image_id: str) -> str:
    present = [SHORT[s] for s in SUBTYPES if wide.loc[image_id, s] == 1]
    return " + ".join(present) if present else "no hemorrhage"


def _most_blood(masks: Path, image_ids: list[str], subtype: str) -> str:
    """The slice with the largest ``subtype`` mask (phantom), else the middle one (real)."""
    if not masks.is_dir():
        return str(image_ids[len(image_ids) // 2])

    def area(image_id: str) -> int:
        with np.load(masks / f"{image_id}.npz") as npz:
            return int(npz[subtype].sum())

    return max(image_ids, key=area)


def _panels(folder: Path, wide: pd.DataFrame) -> list[tuple[np.ndarray, str]]:
    """Three levels of the longest series without hemorrhage, then two bleeding slices."""
    series = _series(folder)
    clean = [ids for ids in series.values() if not wide.loc[ids, "any"].any()]
    normal = max(clean, key=len)
    picks = [(normal[round(f * (len(normal) - 1))], name) for name, f in LEVELS]
    taken = {p for p, _ in picks}
    for subtype in BLEEDS:
        rows = wide[(wide[subtype] == 1) & wide.index.isin(set().union(*series.values()))]
        rows = rows[~rows.index.isin(taken)]
        if not rows.empty:
            image_id = _most_blood(folder.parent / "masks", list(rows.index), subtype)
            taken.add(image_id)
            picks.append((image_id, _title(wide, image_id)))
    return [(apply_window(read_slice(folder / f"{i}.dcm").hu, 40, 80), t) for i, t in picks]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    default = os.environ.get("ICH_RSNA_SAMPLE", REPO.parent / "shared/data/rsna-sample")
    parser.add_argument("--rsna", type=Path, default=Path(default))
    parser.add_argument("--out", type=Path, default=REPO / "docs/images/phantom_vs_real.png")
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args()
    real_wide = read_labels(args.rsna / "stage_2_train.csv")
    real = _panels(args.rsna / "stage_2_train", real_wide)
    with tempfile.TemporaryDirectory() as tmp:
        generate_cohort(Path(tmp), studies=12, seed=args.seed, size=512)
        phantom = _panels(Path(tmp) / "images", read_labels(Path(tmp) / "labels.csv"))
    cols = max(len(real), len(phantom))
    fig, axes = plt.subplots(2, cols, figsize=(3.1 * cols, 6.6), dpi=80)
    for row, (panels, name) in enumerate(((real, "real RSNA"), (phantom, "phantom"))):
        for col in range(cols):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(panels):
                image, title = panels[col]
                ax.imshow(image, cmap="gray", vmin=0, vmax=1)
                ax.set_title(f"{name}: {title}", fontsize=9)
    fig.suptitle("Real RSNA slices (top) vs synthetic phantom (bottom, for demonstration only), "
                 "brain window 40/80\nEDH epidural, IPH intraparenchymal, IVH intraventricular, "
                 "SAH subarachnoid, SDH subdural", fontsize=10)
    fig.tight_layout(h_pad=1.5)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
