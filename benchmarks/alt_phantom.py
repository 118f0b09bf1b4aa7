"""A second, independent head-CT phantom: checks how the demo model generalises beyond ich's own.

It is written from the public description only (DESIGN.md "Phantom v2" values, issue 10 and
general CT knowledge) and shares no code with ``ich.phantom``, so that a model that learnt the
quirks of one generator is caught by the other. What differs on purpose:

* anatomy: the head outline is a superquadric with random Fourier harmonics, layered by depth
  along the ray from the centre (scalp, skull tables and diploe, brain), scaled along z by a
  dome profile; gyri come from an angular phase field; ventricles, nuclei and the brainstem are
  metaball fields along centre lines; the face (orbits, ethmoid and sphenoid air cells) and the
  posterior fossa (petrous wedges, mastoid cells, clivus, cerebellum, fourth ventricle) replace
  the front and back of the brain at the lowest levels;
* lesions: subdurals are cosine-tapered crescents and epidurals parabolic lenses in the depth
  coordinate (the brain is pushed inward by them, with midline shift), parenchymal bleeds are
  3-D metaball clusters with an edema band, intraventricular blood layers in the dependent part
  of the ventricles, subarachnoid blood fills sulci of a sector, the Sylvian fissures or the
  basal cisterns;
* noise: white noise through a Gaussian kernel of random width, scaled to a random sigma, more in
  the posterior fossa, plus a signal-dependent (Poisson-like) part, skull-base streaks, cupping
  and an inner-table rim; each slice averages two sub-slices (partial volume along z);
* headers: uint16 with intercept -1024 or int16 with intercept 0, 512 px at 0.4-0.55 mm (or
  the same field of view at ``--size``), 2.5-5 mm slices, gantry tilt, Instance Numbers
  (descending in some series), a padded reconstruction circle, real UIDs from the seed.

Labels: the six RSNA labels per slice (``any`` = max of the subtypes), ~40 % of studies with a
bleed, every subtype present once there are two bleeding studies. Output: the Kaggle layout,
``OUT/images/ID_<hex>.dcm`` and ``OUT/labels.csv`` (``ID,Label``), plus ``OUT/studies.csv``.
Synthetic data for measuring only; models trained on any phantom are for demonstration only.

    python benchmarks/alt_phantom.py OUT --studies 20 --seed 0 --size 256
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from alt_anatomy import SUBTYPES, Patient, draw_patient, render_slice
from alt_dicom import write_slice

LABELS = ("any", *SUBTYPES)

#: Smallest lesion area (mm^2) inside one slice that counts as a positive label.
MIN_AREA_MM2 = 4.0


def _subtype_plan(studies: int, rng: np.random.Generator, bleed_frac: float) -> list[list[str]]:
    """Which subtypes each study gets: every bleeding study at least one, every subtype appears
    when >= 2 studies bleed."""
    n_bleed = max(1, round(bleed_frac * studies)) if studies else 0
    which = rng.choice(studies, size=n_bleed, replace=False) if studies else np.zeros(0, int)
    plan: list[list[str]] = [[] for _ in range(studies)]
    order = list(rng.permutation(SUBTYPES))
    for k, kind in enumerate(order):  # spread the five subtypes over the bleeding studies
        plan[int(which[k % n_bleed])].append(str(kind))
    # Co-occurring extras with RSNA-like relative frequencies (epidural rare): in RSNA the
    # subtype rates add up to ~1.4x the "any" rate.
    weights = np.array([0.4, 4.8, 3.5, 4.8, 6.3])
    weights = weights / weights.sum()
    for i in which:
        n_extra = int(rng.choice([0, 1, 2], p=[0.25, 0.45, 0.3])) + (not plan[int(i)])
        extra = rng.choice(SUBTYPES, size=n_extra, replace=False, p=weights)
        plan[int(i)] = sorted(set(plan[int(i)]) | {str(e) for e in extra})
    return plan


def _slice_hex(rng: np.random.Generator, used: set[str]) -> str:
    """A fresh 9-digit hex identifier (RSNA style), unique in the cohort."""
    while True:
        h = f"{int(rng.integers(0, 16**9)):09x}"
        if h not in used:
            used.add(h)
            return h


def generate(out: Path, studies: int = 20, seed: int = 0, size: int = 256,
             bleed_frac: float = 0.4) -> pd.DataFrame:
    """Write a cohort and return one row per slice (file id, study, series, the six labels).

    Deterministic for ``(studies, seed, size, bleed_frac)``.
    """
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    root = np.random.default_rng([seed, 9127])
    plan = _subtype_plan(studies, root, bleed_frac)
    used: set[str] = set()
    rows: list[dict[str, object]] = []
    for i in range(studies):
        rng = np.random.default_rng([seed, i, 31])
        patient: Patient = draw_patient(rng, size, plan[i], seed, i)
        min_px = MIN_AREA_MM2 / patient.spacing**2
        for k, z in enumerate(patient.slice_z):
            hu, masks = render_slice(patient, float(z), rng, k)
            labels = {kind: int(masks[kind].sum() >= min_px) for kind in SUBTYPES}
            labels = {"any": max(labels.values()), **labels}
            image_id = "ID_" + _slice_hex(root, used)
            write_slice(images / f"{image_id}.dcm", patient, k, hu)
            rows.append({"image_id": image_id, "patient_id": patient.patient_id,
                         "study": patient.study_uid, "series": patient.series_uid,
                         "index": k, **labels})
    frame = pd.DataFrame(rows)
    long = frame.melt(id_vars=["image_id"], value_vars=list(LABELS), var_name="label")
    long["ID"] = long["image_id"] + "_" + long["label"]
    long = long.sample(frac=1.0, random_state=seed)  # Kaggle order is not by image
    long[["ID", "value"]].rename(columns={"value": "Label"}).to_csv(out / "labels.csv",
                                                                     index=False)
    frame.to_csv(out / "studies.csv", index=False)
    return frame


def summary(frame: pd.DataFrame) -> str:
    """Slice and study prevalence per label, one line each."""
    study_any = frame.groupby("study")["any"].max()
    lines = [f"{len(frame)} slices, {frame['study'].nunique()} studies, "
             f"{study_any.mean():.0%} of studies with a bleed"]
    lines += [f"  {n:<17} slices {frame[n].mean():6.1%}  ({int(frame[n].sum())})"
              for n in LABELS]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line: write a cohort and print its prevalence."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="cohort folder to write (images/, labels.csv)")
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256, help="pixels per side (512 = real)")
    parser.add_argument("--bleed-frac", type=float, default=0.4,
                        help="fraction of studies with a hemorrhage")
    args = parser.parse_args(argv)
    frame = generate(args.out, args.studies, args.seed, args.size, args.bleed_frac)
    print(summary(frame))


if __name__ == "__main__":
    main()
