"""Each hemorrhage subtype sits where its definition says."""

from __future__ import annotations

import numpy as np
import pytest

from ich.phantom.anatomy import make_grid, render_anatomy, sample_anatomy
from ich.phantom.lesions import Lesion, sample_lesions

SIZE = 128


@pytest.fixture(scope="module")
def scene():  # type: ignore[no-untyped-def]
    anat = sample_anatomy(np.random.default_rng(4))
    grid = make_grid(SIZE, 250.0 / SIZE, anat, (0.0, -8.0), 0.1)
    t = 0.5
    return grid, anat, render_anatomy(grid, anat, t), t * anat.height


def _skull_touch(mask: np.ndarray, sa) -> bool:  # type: ignore[no-untyped-def]
    """Whether the mask reaches the inner table (within two pixels of it)."""
    return bool((sa.depth_in[mask] < 2 * 250.0 / SIZE).any())


def test_epidural_is_a_lens_against_the_inner_table(scene) -> None:  # type: ignore[no-untyped-def]
    grid, _, sa, z = scene
    lesion = Lesion("epidural", z, 15.0, 0.0, 0.4, 14.0, 70.0)
    mask = lesion.mask(grid, sa, z)
    assert mask is not None and mask.sum() > 20
    assert _skull_touch(mask, sa) and sa.brain[mask].all()
    thick_mid = sa.depth_in[mask & (np.abs(grid.theta) < 0.05)].max()
    thick_edge = sa.depth_in[mask & (np.abs(np.abs(grid.theta) - 0.34) < 0.03)].max()
    assert thick_mid > 1.3 * thick_edge  # biconvex: thickest in the middle
    assert lesion.mask(grid, sa, z + 20.0) is None


def test_subdural_is_a_long_crescent(scene) -> None:  # type: ignore[no-untyped-def]
    grid, _, sa, z = scene
    lesion = Lesion("subdural", z, 40.0, np.pi, 1.2, 6.0, 70.0)
    mask = lesion.mask(grid, sa, z)
    assert mask is not None and _skull_touch(mask, sa)
    assert sa.depth_in[mask].max() <= 6.5
    spread = np.ptp(grid.theta[mask & (np.abs(grid.theta) > 2)])  # wraps around pi
    assert spread > 0.5
    assert lesion.mask(grid, sa, z + 30.0) is not None  # spans many slices


def test_intraparenchymal_is_inside_the_brain(scene) -> None:  # type: ignore[no-untyped-def]
    grid, _, sa, z = scene
    lesion = Lesion("intraparenchymal", z, 12.0, 0.0, np.pi, 10.0, 70.0,
                    (20.0, 10.0, 1.0, 0.0, 0.0))
    mask = lesion.mask(grid, sa, z)
    assert mask is not None and mask.sum() > 10
    assert sa.brain[mask].all() and not _skull_touch(mask, sa)
    rim = lesion.rim(grid, sa, z)
    assert rim is not None and rim.sum() > mask.sum()


def test_intraventricular_layers_in_the_dependent_ventricles(scene) -> None:  # type: ignore[no-untyped-def]
    grid, _, sa, z = scene
    assert sa.ventricles.sum() > 10
    mask = Lesion("intraventricular", z, 12.0, 0.0, np.pi, 0.0, 70.0, (0.4,)).mask(grid, sa, z)
    assert mask is not None and 0 < mask.sum() < sa.ventricles.sum()
    assert sa.ventricles[mask].all()
    assert grid.y_mm[mask].mean() > grid.y_mm[sa.ventricles].mean()  # posterior: supine


def test_subarachnoid_follows_sulci_and_fissures(scene) -> None:  # type: ignore[no-untyped-def]
    grid, _, sa, z = scene
    mask = Lesion("subarachnoid", z, 20.0, 1.0, 1.0, 0.0, 70.0).mask(grid, sa, z)
    assert mask is not None and mask.sum() > 5
    assert sa.sulcal_csf[mask].all() and not sa.ventricles[mask].any()


def test_convexity_subarachnoid_spares_the_centre(scene) -> None:  # type: ignore[no-untyped-def]
    grid, anat, _, _ = scene
    t = 0.3  # the level of the Sylvian fissures and basal cisterns
    sa, z = render_anatomy(grid, anat, t), t * anat.height
    both = Lesion("subarachnoid", z, 20.0, 1.0, 0.6, 0.0, 70.0, (1.0,)).mask(grid, sa, z)
    convexity = Lesion("subarachnoid", z, 20.0, 1.0, 0.6, 0.0, 70.0, (0.0,)).mask(grid, sa, z)
    assert both is not None and convexity is not None and convexity.sum() > 5
    assert (convexity & ~both).sum() == 0
    # What the convexity bleed leaves out is blood in the fissures near the centre...
    extra = both & ~convexity
    assert extra.any() and (grid.rho[extra] < 0.5 * sa.brain_radius[extra]).all()
    # ...and all its own blood lies in the sulci of its sector.
    off = np.abs((grid.theta[convexity] - 1.0 + np.pi) % (2 * np.pi) - np.pi)
    assert (off < 0.6).all() and sa.sulcal_csf[convexity].all()


def test_sample_lesions_is_deterministic_and_often_empty() -> None:
    draws = [sample_lesions(np.random.default_rng(i), 160.0) for i in range(200)]
    again = [sample_lesions(np.random.default_rng(i), 160.0) for i in range(200)]
    assert draws == again
    empty = sum(not d for d in draws)
    assert 0.4 * 200 < empty < 0.85 * 200
    lesions = [x for d in draws for x in d]
    # Acute blood is 50-90 HU; only subdurals may be chronic (hypodense) or mixed.
    assert all(50 <= x.hu <= 90 for x in lesions if x.subtype != "subdural")
    subdurals = [x for x in lesions if x.subtype == "subdural"]
    assert all(0 <= x.hu <= 90 for x in subdurals)
    assert any(x.hu < 26 for x in subdurals) and any(x.hu >= 50 for x in subdurals)
    assert all(50 <= x.layer_hu <= 95 for x in lesions if x.layer)
