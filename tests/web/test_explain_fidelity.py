"""Issue 11 point 7: explanation fidelity on the phantom's exact lesion masks."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from ich.eval.fidelity import (
    centred_gaussian,
    energy_in_mask,
    explanation_fidelity,
    pointing_hit,
)


def test_measures_on_hand_made_maps() -> None:
    mask = np.zeros((64, 64), np.uint8)
    mask[10:20, 40:50] = 1
    heat = np.zeros((64, 64), np.float32)
    heat[12, 45] = 1.0
    heat[50, 10] = 1.0
    assert energy_in_mask(heat, mask) == pytest.approx(0.5)
    assert pointing_hit(heat, mask, 0)  # first maximum (12, 45) is on the lesion
    off = heat.copy()
    off[50, 10] = 2.0  # the hottest pixel is now off the lesion
    assert not pointing_hit(off, mask, 0)
    near = np.zeros_like(heat)
    near[22, 45] = 1.0
    assert not pointing_hit(near, mask, 1) and pointing_hit(near, mask, 3)
    g = centred_gaussian((64, 80))
    assert g.shape == (64, 80) and g.max() == pytest.approx(1.0)
    assert np.unravel_index(np.argmax(g), g.shape) in {(31, 39), (31, 40), (32, 39), (32, 40)}


def test_an_oracle_map_beats_the_centred_gaussian_and_a_centre_map_does_not(
    tiny_cohort: Path,
) -> None:
    masks = {p.stem: p for p in (tiny_cohort / "masks").glob("*.npz")}
    from ich.dicom.io import read_slice

    by_pixels = {read_slice(tiny_cohort / "images" / f"{k}.dcm").hu.tobytes(): p
                 for k, p in masks.items()}

    def oracle(hu: np.ndarray, label: str, nb: Sequence[np.ndarray] | None) -> np.ndarray:
        assert nb is not None and len(nb) == 3 and nb[1] is hu
        with np.load(by_pixels[hu.tobytes()]) as z:
            keys = [k for k in z.files if label == "any" or k == label]
            return np.any(np.stack([z[k] for k in keys]), axis=0).astype(np.float32)

    rows = explanation_fidelity(oracle, tiny_cohort, offsets=(-1, 0, 1), max_slices=6)
    assert rows and rows[0].label == "any"
    for r in rows:
        assert r.energy_in_mask == pytest.approx(1.0) and r.pointing_hit_rate == 1.0, r
        assert r.energy_in_mask_baseline < 0.5 and r.empty_maps == 0
    blank = explanation_fidelity(lambda hu, label, nb: np.zeros(hu.shape, np.float32),
                                 tiny_cohort, max_slices=2)
    assert all(r.empty_maps == r.n_slices and r.energy_in_mask == 0.0 for r in blank)
    centre = explanation_fidelity(lambda hu, label, nb: centred_gaussian(hu.shape),
                                  tiny_cohort, max_slices=6)
    for r in centre:
        assert r.energy_in_mask == pytest.approx(r.energy_in_mask_baseline)
        assert r.pointing_hit_rate == r.pointing_hit_rate_baseline


@pytest.mark.slow
def test_ich_evaluate_fidelity_adds_the_table(tiny_run: Path, tiny_cohort: Path,
                                              tmp_path: Path) -> None:
    import shutil

    from ich.cli import main

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    assert main(["evaluate", str(run), "--fidelity", str(tiny_cohort),
                 "--fidelity-slices", "3"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    labels = metrics["explanation_fidelity"]["labels"]
    assert labels[0]["label"] == "any" and labels[0]["n_slices"] > 0
    assert 0.0 <= labels[0]["energy_in_mask"] <= 1.0
    assert "models" in metrics  # the evaluation itself is still there
    html = (run / "report.html").read_text()
    assert "Explanation fidelity" in html and "centred Gaussian" in html
