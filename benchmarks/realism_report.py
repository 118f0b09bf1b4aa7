"""Realism report: the phantom next to real head CT, in numbers and one figure.

Compares synthetic slices with the real RSNA sample (``--real``, default
``../shared/data/rsna-sample`` beside the repository) on what a model sees:

- HU histograms inside the head (-100..200 HU, the range the windows look at), with the
  fraction of head pixels per density class (fat, CSF, brain, blood-like, calcium, bone);
- the noise power spectrum (NPS) of brain-only 32 x 32 patches, radially averaged, in
  cycles/mm, with the patches' standard deviation (noise plus grey/white texture);
- per-structure HU of the phantom (mean, std, 5th/95th percentile on the final, noisy image,
  through the generator's own label map), and intensity classes for both.

Writes ``realism.png`` and ``realism.json`` into ``--out``. The real images are only read, never
copied. Usage::

    python benchmarks/realism_report.py --out benchmarks/out/realism [--real DIR] [--studies 6]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ich.dicom.io import read_slice
from ich.phantom import generate_cohort
from ich.phantom.anatomy import label_map, render_anatomy
from ich.phantom.grid import STRUCTURES
from ich.phantom.study import StudyPlan, _render_slice, _scene

REPO = Path(__file__).resolve().parents[1]
BINS = np.arange(-100.0, 202.0, 2.0)
CLASSES = {"fat": (-200, -30), "csf": (-5, 15), "brain": (15, 45), "blood_like": (50, 90),
           "calcium": (100, 400), "bone": (400, 4000)}
PATCH = 32


def _head(hu: np.ndarray) -> np.ndarray:
    """Pixels of the head: above -300 HU, ignoring the thin headrest (largest rows only)."""
    head = hu > -300
    rows = head.sum(axis=1)
    return head & (rows > 0.15 * hu.shape[1])[:, None]


def _read(folder: Path) -> list[np.ndarray]:
    return [read_slice(p).hu.astype(np.float32) for p in sorted(folder.glob("*.dcm"))]


def _histogram(images: list[np.ndarray]) -> tuple[np.ndarray, dict[str, float]]:
    values = np.concatenate([hu[_head(hu)] for hu in images])
    hist, _ = np.histogram(values, BINS, density=True)
    fractions = {k: float(np.mean((values >= lo) & (values < hi))) for k, (lo, hi)
                 in CLASSES.items()}
    return hist, fractions


def _nps(images: list[np.ndarray], spacing: float) -> dict[str, object]:
    """Radially averaged NPS over brain-only patches (every pixel 10-60 HU)."""
    spectra, stds = [], []
    for hu in images:
        n = hu.shape[0] // PATCH
        for i in range(n):
            for j in range(n):
                patch = hu[i * PATCH:(i + 1) * PATCH, j * PATCH:(j + 1) * PATCH]
                if patch.min() < 10 or patch.max() > 60:
                    continue
                patch = patch - patch.mean()
                stds.append(float(patch.std()))
                spectra.append(np.abs(np.fft.fft2(patch)) ** 2 * spacing**2 / PATCH**2)
    if not spectra:
        return {"patches": 0}
    nps = np.fft.fftshift(np.mean(spectra, axis=0))
    freq = np.fft.fftshift(np.fft.fftfreq(PATCH, d=spacing))
    radius = np.hypot(*np.meshgrid(freq, freq))
    edges = np.linspace(0, float(radius.max()) / np.sqrt(2), 12)
    which = np.digitize(radius.ravel(), edges)
    radial = [float(nps.ravel()[which == k].mean()) for k in range(1, len(edges))]
    centres = 0.5 * (edges[1:] + edges[:-1])
    peak = float(centres[int(np.argmax(radial))])
    return {"patches": len(stds), "patch_std_median": float(np.median(stds)),
            "freq_per_mm": centres.tolist(), "nps": radial, "peak_freq_per_mm": peak}


def _structures(studies: int, size: int, seed: int) -> dict[str, dict[str, float]]:
    """Per-structure HU on final phantom images (no lesions, so the label map still fits)."""
    values: dict[str, list[np.ndarray]] = {}
    for index in range(studies):
        plan = StudyPlan(index, seed, index, "p", "s", "s", (), size, 1.0, False)
        rng = np.random.default_rng([seed, 5, index])
        scene, _ = _scene(plan, rng)
        scene = type(scene)(scene.grid, scene.anat, [], None, scene.acq, scene.noise_bank)
        for t in np.linspace(0.03, 0.97, 16):
            labels = label_map(render_anatomy(scene.grid, scene.anat, float(t)), scene.anat)
            hu, _ = _render_slice(scene, float(t), rng, False)
            inside_fov = hu > -4000  # outside the reconstruction circle is stored as minimum
            for k in np.unique(labels):
                values.setdefault(STRUCTURES[k], []).append(hu[(labels == k) & inside_fov])
    table = {}
    for name, parts in values.items():
        v = np.concatenate(parts)
        table[name] = {"mean": float(v.mean()), "std": float(v.std()),
                       "p5": float(np.percentile(v, 5)), "p95": float(np.percentile(v, 95)),
                       "pixels": int(v.size)}
    return table


def _figure(out: Path, result: dict, hist: dict[str, np.ndarray]) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), dpi=90)
    centres = 0.5 * (BINS[1:] + BINS[:-1])
    for name, h in hist.items():
        axes[0].plot(centres, h, label=name)
    axes[0].set(title="HU inside the head", xlabel="HU", ylabel="density")
    for name in ("real", "phantom"):
        nps = result[name]["nps"]
        if nps.get("patches"):
            axes[1].semilogy(nps["freq_per_mm"], nps["nps"],
                             label=f"{name} (patch std {nps['patch_std_median']:.1f} HU)")
    axes[1].set(title="noise power spectrum, brain patches", xlabel="cycles/mm",
                ylabel="HU² mm²")
    x = np.arange(len(CLASSES))
    for k, name in enumerate(("real", "phantom")):
        fr = result[name]["class_fractions"]
        axes[2].bar(x + 0.4 * k, [fr[c] for c in CLASSES], width=0.4, label=name)
    axes[2].set_xticks(x + 0.2, list(CLASSES), rotation=20)
    axes[2].set(title="fraction of head pixels per class")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.suptitle("Phantom (synthetic, for demonstration only) vs real RSNA head CT")
    fig.tight_layout()
    fig.savefig(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    default_real = os.environ.get("ICH_RSNA_SAMPLE", REPO.parent / "shared/data/rsna-sample")
    parser.add_argument("--real", type=Path, default=Path(default_real))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/out/realism")
    parser.add_argument("--studies", type=int, default=6)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    real = _read(args.real / "stage_2_train") + _read(args.real / "stage_2_test")
    if not real:
        parser.error(f"no real DICOM slices under {args.real} (stage_2_train/, stage_2_test/)")
    with tempfile.TemporaryDirectory() as tmp:
        generate_cohort(Path(tmp), studies=args.studies, seed=args.seed, size=args.size)
        phantom = _read(Path(tmp) / "images")
    result: dict = {}
    hist = {}
    for name, images in (("real", real), ("phantom", phantom)):
        h, fractions = _histogram(images)
        hist[name] = h
        result[name] = {"slices": len(images), "class_fractions": fractions,
                        "nps": _nps(images, 250.0 / images[0].shape[0])}
    result["histogram_l1_distance"] = float(np.abs(hist["real"] - hist["phantom"]).sum() * 2.0)
    result["phantom_structures"] = _structures(min(args.studies, 4), args.size, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "realism.json").write_text(json.dumps(result, indent=2) + "\n")
    _figure(args.out / "realism.png", result, hist)
    print(json.dumps({k: result[k] for k in ("histogram_l1_distance",)}, indent=2))
    for name in ("real", "phantom"):
        nps = result[name]["nps"]
        print(name, {k: round(v, 3) for k, v in result[name]["class_fractions"].items()},
              "patch std", round(nps.get("patch_std_median", float("nan")), 2),
              "NPS peak", nps.get("peak_freq_per_mm"))
    print(f"wrote {args.out / 'realism.png'} and {args.out / 'realism.json'}")


if __name__ == "__main__":
    main()
