"""Render docs/images/phantom_vs_real.png: real RSNA slices (top) next to phantom slices (bottom).

Usage::

    python docs/make_phantom_figure.py [--rsna ../shared/data/rsna-sample] [--out docs/images/...]

Real slices are picked among hemorrhage-positive ones of the RSNA sample (brain window 40/80);
phantom slices with comparable subtypes come from a freshly generated cohort. The real images
only ever appear downscaled in this figure: they are never copied into the repository.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ich.dicom.io import read_slice
from ich.dicom.windowing import apply_window
from ich.labels import SUBTYPES, read_labels
from ich.phantom import generate_cohort

REPO = Path(__file__).resolve().parents[1]
WANTED = ("subdural", "intraparenchymal", "intraventricular", "subarachnoid")
SHORT = {"epidural": "EDH", "intraparenchymal": "IPH", "intraventricular": "IVH",
         "subarachnoid": "SAH", "subdural": "SDH"}


def _pick(wide: pd.DataFrame, available: set[str], taken: set[str], subtype: str) -> str | None:
    """The first image with ``subtype`` (fewest other subtypes first) not yet used."""
    rows = wide[(wide[subtype] == 1) & wide.index.isin(available) & ~wide.index.isin(taken)]
    if rows.empty:
        return None
    order = rows[list(SUBTYPES)].sum(axis=1).sort_values(kind="stable")
    return str(order.index[len(order) // 2])


def _title(wide: pd.DataFrame, image_id: str) -> str:
    present = [SHORT[s] for s in SUBTYPES if wide.loc[image_id, s] == 1]
    return " + ".join(present) if present else "no hemorrhage"


def _panels(folder: Path, wide: pd.DataFrame, seed_ids: set[str]) -> list[tuple[np.ndarray, str]]:
    available = {p.stem for p in folder.glob("ID_*.dcm")} & set(wide.index) | seed_ids
    taken: set[str] = set()
    out = []
    for subtype in WANTED:
        image_id = _pick(wide, available, taken, subtype)
        if image_id is None:
            continue
        taken.add(image_id)
        hu = read_slice(folder / f"{image_id}.dcm").hu
        out.append((apply_window(hu, 40, 80), _title(wide, image_id)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rsna", type=Path, default=REPO.parent / "shared/data/rsna-sample")
    parser.add_argument("--out", type=Path, default=REPO / "docs/images/phantom_vs_real.png")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    real_wide = read_labels(args.rsna / "stage_2_train.csv")
    real = _panels(args.rsna / "stage_2_train", real_wide, set())
    with tempfile.TemporaryDirectory() as tmp:
        generate_cohort(Path(tmp), studies=12, seed=args.seed, size=512, prevalence=0.5)
        wide = read_labels(Path(tmp) / "labels.csv")
        phantom = _panels(Path(tmp) / "images", wide, set())
    fig, axes = plt.subplots(2, 4, figsize=(12, 6.4), dpi=80)
    for row, (panels, name) in enumerate(((real, "real RSNA"), (phantom, "phantom"))):
        for col in range(4):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(panels):
                image, title = panels[col]
                ax.imshow(image, cmap="gray", vmin=0, vmax=1)
                ax.set_title(f"{name}: {title}", fontsize=9)
    fig.suptitle("Real RSNA slices (top) vs synthetic phantom (bottom), brain window 40/80\n"
                 "EDH epidural, IPH intraparenchymal, IVH intraventricular, SAH subarachnoid, "
                 "SDH subdural", fontsize=10)
    fig.tight_layout(h_pad=1.5)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
