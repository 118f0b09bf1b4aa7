"""Phantom v2: the normal structures, artefacts and lesion forms of real head CT.

HU are checked through the generator's own structure label map (before noise), so each
assertion names the structure and the range DESIGN.md "Phantom v2" gives for it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pydicom
import pytest

from ich.phantom import generate_cohort
from ich.phantom.acquisition import noise_field, sample_acquisition
from ich.phantom.anatomy import label_map, make_grid, render_anatomy, sample_anatomy
from ich.phantom.extracranial import ScalpLesion
from ich.phantom.grid import STRUCTURES
from ich.phantom.lesions import Lesion, sample_lesions
from ich.phantom.structures import cisterns, fissure_half_width
from ich.phantom.study import StudyPlan, _render_slice, _scene

SIZE = 192

#: (low, high) HU of each structure before noise (DESIGN.md "Phantom v2").
RANGES = {
    "grey_matter": (35, 42), "deep_grey": (33, 42), "white_matter": (22, 30),
    "ventricle": (0, 15), "cistern": (0, 15), "cerebellum": (30, 42), "brainstem": (28, 36),
    "globe": (5, 15), "lens": (90, 120), "orbital_fat": (-120, -80),
    "petrous_clivus": (1000, 2000), "air_cells": (-1000, -900), "falx": (40, 70),
    "tentorium": (40, 70), "venous_sinus": (40, 65), "artery": (40, 50),
    "choroid_calcification": (100, 400), "pineal_calcification": (60, 500),
    "pallidus_calcification": (80, 300), "falx_calcification": (200, 1000),
    "skull": (600, 1600), "scalp": (-70, 50),
}


@pytest.fixture(scope="module")
def old_head():  # type: ignore[no-untyped-def]
    """An older patient's head with every calcification present."""
    anat = sample_anatomy(np.random.default_rng(21))
    anat = dataclasses.replace(anat, choroid_hu=250.0, pineal_hu=300.0, pallidus_hu=150.0,
                               plaques=((30.0, 0.5, 600.0),))
    return anat, make_grid(SIZE, 240.0 / SIZE, anat, (0.0, -8.0), 0.1)


def test_every_structure_has_its_hu(old_head) -> None:  # type: ignore[no-untyped-def]
    anat, grid = old_head
    seen: set[str] = set()
    for t in np.linspace(0.02, 0.98, 50):
        sa = render_anatomy(grid, anat, float(t))
        labels = label_map(sa, anat)
        for name, (low, high) in RANGES.items():
            values = sa.hu[labels == STRUCTURES.index(name)]
            if values.size:
                seen.add(name)
                assert low <= values.min() and values.max() <= high, (name, t)
    assert seen == set(RANGES), set(RANGES) - seen


def test_skull_base_and_posterior_fossa_levels(old_head) -> None:  # type: ignore[no-untyped-def]
    anat, grid = old_head
    low = render_anatomy(grid, anat, 0.08)
    names = {STRUCTURES[i] for i in np.unique(label_map(low, anat))}
    assert {"globe", "orbital_fat", "air_cells", "petrous_clivus", "cerebellum",
            "brainstem"} <= names
    assert low.posterior_fossa.any() and not (low.posterior_fossa & ~low.brain).any()
    high = render_anatomy(grid, anat, 0.7)
    assert not high.posterior_fossa.any()
    assert "globe" not in {STRUCTURES[i] for i in np.unique(high.labels)}


def test_face_and_neck_below_the_skull_base_and_a_skull_cap_hold_no_brain(
    old_head,  # type: ignore[no-untyped-def]
) -> None:
    """Real series start in the face or neck and end in the skull cap: bright normal
    structures (mandible, teeth, vertebra, sinus walls) where no bleed can be."""
    anat, grid = old_head
    for t in (-0.11, -0.06, -0.02):
        sa = render_anatomy(grid, anat, t)
        names = {STRUCTURES[i] for i in np.unique(label_map(sa, anat))}
        assert not sa.brain.any() and not sa.deep.any(), t  # lesions need brain
        assert {"bone", "muscle"} <= names, (t, names)
        assert (sa.hu > 600).sum() > (sa.hu > 600).size * 0.02
    assert (render_anatomy(grid, anat, -0.11).hu >= 1300).any()  # mandible cortex
    assert (render_anatomy(grid, anat, -0.02).hu <= -900).any()  # maxillary sinus air
    cap = render_anatomy(grid, anat, 1.005)
    assert not cap.brain.any() and (cap.hu > 300).any()
    above = render_anatomy(grid, anat, 1.08)  # series that end above the head: air only
    assert not above.brain.any() and (above.hu > -900).sum() < 0.05 * above.hu.size


def test_atrophy_widens_ventricles_and_sulci(old_head) -> None:  # type: ignore[no-untyped-def]
    anat, grid = old_head
    young = dataclasses.replace(anat, ventricle_scale=0.75)
    old = dataclasses.replace(anat, ventricle_scale=1.5)
    for t in (0.5, 0.8):
        a, b = render_anatomy(grid, young, t), render_anatomy(grid, old, t)
        assert b.ventricles.sum() >= a.ventricles.sum()
        assert b.sulcal_csf.sum() > 1.2 * a.sulcal_csf.sum()


def test_the_convexity_subarachnoid_space_widens_with_atrophy(
    old_head,  # type: ignore[no-untyped-def]
) -> None:
    """In an old head, CSF lies between the inner table and the cortex (where convexity
    subarachnoid blood goes, as a thin layer under the bone); in a young one, sulci only."""
    anat, grid = old_head
    for scale, low, high in ((0.75, 0.0, 0.3), (1.5, 0.9, 1.0)):
        sa = render_anatomy(grid, dataclasses.replace(anat, ventricle_scale=scale), 0.7)
        band = sa.brain & (sa.depth_in >= 0.8) & (sa.depth_in < 1.5)  # mm under the table
        assert band.sum() > 50
        assert low <= sa.sulcal_csf[band].mean() <= high, scale


def test_fissures_open_into_csf_with_atrophy(old_head) -> None:  # type: ignore[no-untyped-def]
    anat, grid = old_head
    t = 0.4  # Sylvian fissures and the ends of the interhemispheric fissure
    young = render_anatomy(grid, dataclasses.replace(anat, ventricle_scale=0.8), t)
    old = render_anatomy(grid, dataclasses.replace(anat, ventricle_scale=1.5), t)
    assert fissure_half_width(1.5) > 3 * fissure_half_width(0.8)

    def sylvian(sa, on, scale: float) -> np.ndarray:  # type: ignore[no-untyped-def]
        where = cisterns(on.u, on.v, t, sa.brain_radius, scale, on.spacing)
        return where & sa.sulcal_csf & ~sa.ventricles

    # The young patient's thin fissures are volume-averaged with the cortex; the old one's are
    # wide CSF bands, darker than any brain tissue.
    young_fissure, old_fissure = sylvian(young, grid, 0.8), sylvian(old, grid, 1.5)
    assert old_fissure.sum() > 1.5 * young_fissure.sum()
    assert np.median(young.hu[young_fissure]) >= 15.0
    assert np.median(old.hu[old_fissure]) <= 10.0
    # On a coarse grid (64 px) the young fissure is drawn a pixel wide, still not CSF.
    coarse = make_grid(64, 240.0 / 64, anat, (0.0, -8.0), 0.1)
    young_64 = render_anatomy(coarse, dataclasses.replace(anat, ventricle_scale=0.8), t)
    assert np.median(young_64.hu[sylvian(young_64, coarse, 0.8)]) >= 15.0


def test_noise_level_and_kernel_texture() -> None:
    rng = np.random.default_rng(0)
    acq = sample_acquisition(rng)
    soft = noise_field(rng, 128, 0.5, dataclasses.replace(acq, sigma=4.0, cutoff=0.25))
    sharp = noise_field(rng, 128, 0.5, dataclasses.replace(acq, sigma=4.0, cutoff=0.8))
    assert soft.std() == pytest.approx(4.0, rel=1e-3) and sharp.std() == pytest.approx(4.0, 1e-3)

    def lag1(x: np.ndarray) -> float:
        return float(np.corrcoef(x[:, :-1].ravel(), x[:, 1:].ravel())[0, 1])

    assert lag1(soft) > 0.5 > lag1(sharp)  # soft kernels: blotchy; sharp: fine grain
    draws = [sample_acquisition(np.random.default_rng(i)) for i in range(300)]
    assert all(3.0 <= a.sigma <= 6.0 * 1.4 and a.fossa_gain > 1.0 for a in draws)
    assert {5.0, 0.625} <= {a.thickness for a in draws}
    assert any(a.motion != (0.0, 0.0) for a in draws)


def _scene_with(seed: int, lesions: list[Lesion], scalp: ScalpLesion | None):  # type: ignore[no-untyped-def]
    plan = StudyPlan(0, seed, 0, "p", "s", "s", (), SIZE, 1.0, False)
    scene, _ = _scene(plan, np.random.default_rng(seed))
    return dataclasses.replace(scene, lesions=lesions, scalp=scalp)


def test_scalp_hematoma_is_outside_the_brain_and_never_labelled() -> None:
    scalp = ScalpLesion(theta0=0.0, half_theta=0.5, z0=80.0, half_z=30.0, thickness=10.0,
                        hu=70.0)
    with_it = _scene_with(3, [], scalp)
    without = _scene_with(3, [], None)
    t = 80.0 / with_it.anat.height
    hu, masks = _render_slice(with_it, t, np.random.default_rng(1), False)
    ref, _ = _render_slice(without, t, np.random.default_rng(1), False)
    assert masks == {}
    changed = np.abs(hu - ref) > 1.0
    sa = render_anatomy(with_it.grid, with_it.anat, t)
    assert changed.sum() > 20 and not (changed & sa.brain).any()
    assert 40 < np.median(hu[changed]) < 90


def test_mass_effect_shifts_the_midline_away_from_the_lesion() -> None:
    anat = sample_anatomy(np.random.default_rng(2))
    grid = make_grid(SIZE, 240.0 / SIZE, anat, (0.0, -8.0), 0.0)
    t = 0.5
    plain = render_anatomy(grid, anat, t)
    shifted = render_anatomy(grid, anat, t, shift=-6.0, effaced=grid.u > 0)
    move = grid.u[shifted.ventricles].mean() - grid.u[plain.ventricles].mean()
    assert -7.0 < move < -3.0
    assert shifted.sulcal_csf[grid.u > 20].sum() < 0.5 * plain.sulcal_csf[grid.u > 20].sum()
    big = Lesion("subdural", 80.0, 40.0, 0.0, 1.0, 12.0, 70.0, mass=6.0)  # on the +u side
    assert big.shift(80.0) == pytest.approx(-6.0) and big.shift(200.0) == 0.0


def test_lesion_forms_chronic_layered_fractured_small() -> None:
    chronic = Lesion("subdural", 90.0, 40.0, np.pi, 1.0, 9.0, 15.0)
    layered = Lesion("intraparenchymal", 90.0, 15.0, 0.0, np.pi, 14.0, 60.0,
                     (10.0, 0.0, 1.0, 0.0, 0.0), layer=0.4, layer_hu=78.0)
    edh = Lesion("epidural", 90.0, 15.0, 0.0, 0.4, 14.0, 75.0, fracture=True)
    scene = _scene_with(5, [chronic, layered, edh], None)
    t = 90.0 / scene.anat.height
    clean = dataclasses.replace(scene, noise_bank=[np.zeros_like(scene.noise_bank[0])])
    hu, masks = _render_slice(clean, t, np.random.default_rng(0), False)
    assert {"subdural", "intraparenchymal", "epidural"} == set(masks)
    sdh = hu[masks["subdural"]]
    assert np.median(sdh) < 30  # chronic: hypodense, still labelled subdural
    iph = masks["intraparenchymal"]
    dense = iph & (hu > 70)
    y = scene.grid.y_mm
    assert dense.any() and y[dense].mean() > y[iph & ~dense].mean()  # dependent: posterior
    near_edh = render_anatomy(scene.grid, scene.anat, t)
    skull = (near_edh.depth_in < 0) & (near_edh.hu > 300) & (np.abs(scene.grid.theta) < 0.3)
    assert (hu[skull] < 500).any()  # the fracture line through the bone beside the EDH
    draws = [x for i in range(300) for x in sample_lesions(np.random.default_rng(i), 160.0)]
    small = [x for x in draws if x.subtype == "intraparenchymal" and x.half_z <= 6.0]
    assert small and all(x.size <= 6.0 for x in small)
    assert any(x.subtype == "subarachnoid" and x.half_theta == 0.0 for x in draws)  # basal


def test_tilt_thickness_and_spacing_show_in_the_headers(tmp_path: Path) -> None:
    generate_cohort(tmp_path, studies=5, seed=2, size=32)  # seed 2: tilted and upright series
    series: dict[str, list[pydicom.Dataset]] = {}
    for path in sorted((tmp_path / "images").glob("*.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    tilts = []
    for slices in series.values():
        iop = np.array([float(x) for x in slices[0].ImageOrientationPatient])
        assert np.allclose(iop[:3], [1, 0, 0]) and np.isclose(np.linalg.norm(iop[3:]), 1.0)
        tilts.append(np.degrees(np.arccos(iop[4])))
        normal = np.cross(iop[:3], iop[3:])
        ipp = np.array([[float(x) for x in ds.ImagePositionPatient] for ds in slices])
        steps = np.diff(ipp[np.argsort(ipp @ normal)], axis=0)
        assert np.allclose(np.cross(steps, normal), 0.0, atol=1e-3)  # stacked along the normal
    assert max(tilts) > 20.0 and max(tilts) <= 25.0 + 1e-3 and min(tilts) < 1e-3
    firsts = [slices[0] for slices in series.values()]
    thickness = {float(ds.SliceThickness) for ds in firsts}
    assert thickness <= {5.0, 3.0, 2.5, 1.25, 0.625} and len(thickness) >= 2
    fov = [float(ds.PixelSpacing[0]) * 32 for ds in firsts]
    assert min(fov) >= 200.0 and max(fov) <= 262.0 and np.ptp(fov) > 5.0


def test_posterior_fossa_is_noisier_and_crossed_by_the_hounsfield_bar() -> None:
    scene = _scene_with(8, [], None)
    scene = dataclasses.replace(scene, acq=dataclasses.replace(scene.acq, fossa_gain=1.6,
                                                               streak=25.0))
    quiet = dataclasses.replace(scene, noise_bank=[np.zeros_like(scene.noise_bank[0])] * 2)
    t = 0.12
    noisy, _ = _render_slice(scene, t, np.random.default_rng(4), False)
    clean, _ = _render_slice(quiet, t, np.random.default_rng(4), False)
    sa = render_anatomy(scene.grid, scene.anat, t)
    noise = noisy - clean
    supratentorial = sa.brain & ~sa.posterior_fossa
    assert noise[sa.posterior_fossa].std() > 1.3 * noise[supratentorial].std()
    stem = label_map(sa, scene.anat) == STRUCTURES.index("brainstem")
    assert np.median(clean[stem]) < np.median(sa.hu[stem]) - 5.0  # dark streaks across the pons


def test_a_bright_band_under_the_inner_table_fades_inward_as_on_real_scans() -> None:
    """Real RSNA slices: median 90-125 HU in the first mm under the inner table, 55-85 in the
    second, 30-65 in the third, then cortex. A phantom without that band teaches a model that
    any density there is a subdural."""
    scene = _scene_with(8, [], None)
    quiet = dataclasses.replace(scene, noise_bank=[np.zeros_like(scene.noise_bank[0])] * 2)
    t = 0.6
    hu, _ = _render_slice(quiet, t, np.random.default_rng(1), False)
    sa = render_anatomy(scene.grid, scene.anat, t)
    cortex = sa.brain & ~sa.sulcal_csf & ~sa.ventricles & ~sa.dense
    med = [float(np.median(hu[cortex & (sa.depth_in >= a) & (sa.depth_in < b)]))
           for a, b in ((0.0, 1.0), (1.0, 2.0), (2.0, 3.0), (6.0, 10.0))]
    assert med[0] > 60.0 and med[0] > med[1] > med[2] > med[3], med
    assert med[1] > 45.0 and med[3] < 45.0, med


def test_temporalis_and_neck_muscles_beside_the_lower_skull(
    old_head,  # type: ignore[no-untyped-def]
) -> None:
    anat, grid = old_head
    low, high = render_anatomy(grid, anat, 0.1), render_anatomy(grid, anat, 0.8)
    outside = ~low.brain & (low.depth_in < -anat.skull * 3)  # beyond the skull
    soft = outside & (low.hu > 45) & (low.hu < 65)
    lateral = np.abs(grid.u) > 0.8 * np.abs(grid.v)
    assert soft.sum() * grid.spacing**2 > 500.0  # mm^2 of muscle beside the skull base
    assert (soft & lateral).sum() > (soft & ~lateral).sum() * 0.5
    assert (~high.brain & (high.hu > 45) & (high.hu < 65)).sum() < soft.sum() / 4
    names = label_map(low, anat)
    assert (names[soft] == STRUCTURES.index("muscle")).all()
