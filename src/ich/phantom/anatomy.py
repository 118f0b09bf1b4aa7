"""Head anatomy of the phantom in Hounsfield units, one axial slice at a time.

The head is described in a per-study *head frame*: ``u`` (left-right, mm) and ``v`` (anterior
negative, posterior positive, mm), centred on the head and rotated by the patient's in-plane
tilt. Every boundary is a radius as a function of the polar angle, scaled by a profile along
``t`` (0 = skull base, 1 = vertex), so a slice is a handful of vectorised comparisons against
arrays computed once per study. That is what keeps generation fast at 512 px.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ich.phantom.structures import cisterns, grow, skull_base, ventricles

#: Mean Hounsfield units of the tissues (DESIGN.md "The phantom").
AIR_HU = -1000.0
CSF_HU = 7.0
SULCUS_HU = 12.0  # thin sulci are partly volume-averaged with the cortex
SKIN_HU = 40.0
FAT_HU = 30.0  # galea and thin fat, volume-averaged
HEADREST_HU = 300.0
FALX_HU = 45.0  # the dural fold in the interhemispheric fissure is slightly dense


@dataclass(frozen=True)
class Anatomy:
    """Patient-level anatomy: stays the same across a patient's studies."""

    semi_u: float  # mm, half width of the head at its widest slice
    semi_v: float  # mm, half length (anterior-posterior)
    egg: float  # posterior widening of the outline
    scalp: float  # mm
    skull: float  # mm, 5-8
    table_hu: float  # inner/outer table
    diploe_hu: float
    grey_hu: float
    white_hu: float
    ventricle_scale: float  # >1: atrophy, larger ventricles and sulci
    sulci: int  # number of sulci around the brain
    phases: tuple[float, ...]  # harmonics that make outline and sulci irregular
    height: float  # mm, skull base to vertex


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw one patient's anatomy (adult head sizes)."""
    return Anatomy(
        semi_u=float(rng.uniform(72, 82)),
        semi_v=float(rng.uniform(92, 104)),
        egg=float(rng.uniform(0.0, 0.05)),
        scalp=float(rng.uniform(2.5, 4.5)),
        skull=float(rng.uniform(5.0, 8.0)),
        table_hu=float(rng.uniform(1250, 1500)),
        diploe_hu=float(rng.uniform(700, 900)),
        grey_hu=float(rng.uniform(36, 40)),
        white_hu=float(rng.uniform(26, 30)),
        ventricle_scale=float(rng.uniform(0.8, 1.5)),
        sulci=int(rng.integers(22, 32)),
        phases=tuple(float(x) for x in rng.uniform(0, 2 * np.pi, 8)),
        height=float(rng.uniform(150, 175)),
    )


def head_profile(t: float) -> float:
    """Relative head radius at height ``t`` (0 skull base .. 1 vertex).

    Widest at t = 0.4 (the level of the lateral ventricles); the vault above is a dome that
    narrows quickly toward the vertex, as on real series.
    """
    if t <= 0.4:
        return float(np.sqrt(max(1.0 - ((0.4 - t) / 0.75) ** 2, 0.0)))
    u = min((t - 0.4) / 0.62, 1.0)
    return float(max(1.0 - u**1.6, 0.0) ** 0.625)


def _profile_slope(t: float) -> float:
    """d(profile)/dt, used to thicken the skull where the slice cuts it obliquely."""
    eps = 1e-3
    return (head_profile(min(t + eps, 1.0)) - head_profile(max(t - eps, 0.0))) / (2 * eps)


@dataclass
class StudyGrid:
    """Pixel coordinates of one study, computed once and shared by all its slices.

    Attributes:
        spacing: mm per pixel ((0028,0030) Pixel Spacing, square pixels).
        y_mm: scanner y (posterior positive) per pixel; gravity points along +y (supine).
        u, v: head-frame coordinates (mm) per pixel.
        rho, theta: polar coordinates in the head frame.
        outline: outer head radius (mm) at the pixel's angle on the widest slice.
        sulcus_mm: distance (mm) to the nearest sulcus axis, measured along the circle.
        sulcus_depth: depth (mm) of the sulcus nearest to the pixel.
        fov: pixels inside the scanner's circular reconstruction field.
        headrest: the headrest shell (fixed in the scanner frame, not in the head frame).
        core: bounding box of the central 60 mm, where the deep structures are drawn (speed).
    """

    spacing: float
    y_mm: np.ndarray
    u: np.ndarray
    v: np.ndarray
    rho: np.ndarray
    theta: np.ndarray
    outline: np.ndarray
    sulcus_mm: np.ndarray
    sulcus_depth: np.ndarray
    fov: np.ndarray
    headrest: np.ndarray
    core: tuple[slice, slice]


def _sulcal_pattern(anat: Anatomy, theta: np.ndarray, rho: np.ndarray) -> tuple[np.ndarray, ...]:
    """Wavy, irregular sulci: distance (mm) to the nearest sulcus axis and its depth (mm)."""
    k, ph = anat.sulci, anat.phases
    phase = k * theta + 2.5 * np.sin(theta * 2 + ph[1]) + 1.5 * np.sin(theta * 5 + ph[2])
    phase += 0.9 * np.sin(rho / 5.0 + 3 * theta + ph[3])  # sulci bend as they go inward
    wrapped = np.abs((phase + np.pi) % (2 * np.pi) - np.pi)  # 0 on a sulcus axis
    index = np.floor((phase + np.pi) / (2 * np.pi))  # which sulcus: sets its depth
    depth = 12.0 + 5.0 * np.sin(index * 2.39996 + ph[4]) + 3.0 * np.sin(index * 0.7 + ph[5])
    depth *= 0.6 + 0.4 * anat.ventricle_scale
    return (wrapped / k * rho).astype(np.float32), depth.astype(np.float32)


def _headrest(x: np.ndarray, y: np.ndarray, bottom: float, spacing: float) -> np.ndarray:
    """A U-shaped cradle: a half circle below the head continued by straight sides."""
    radius = 100.0
    center_y = bottom - radius
    wall = max(2.5, 1.1 * spacing)
    dist = np.where(y > center_y, np.hypot(x, y - center_y), np.abs(x)) - radius
    return (dist > 0) & (dist < wall) & (y > center_y - 60.0)


def make_grid(size: int, spacing: float, anatomy: Anatomy, center: tuple[float, float],
              angle: float, headrest_gap: float = 12.0) -> StudyGrid:
    """Coordinates for a ``size`` × ``size`` study with the head at ``center`` (mm), rotated."""
    axis = (np.arange(size, dtype=np.float32) - (size - 1) / 2) * np.float32(spacing)
    x_mm, y_mm = np.meshgrid(axis, axis)  # (size, size) each; y down = posterior
    dx, dy = x_mm - np.float32(center[0]), y_mm - np.float32(center[1])
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    u = cos * dx + sin * dy
    v = -sin * dx + cos * dy
    rho = np.hypot(u, v)
    theta = np.arctan2(v, u)
    a, b = anatomy.semi_u, anatomy.semi_v
    outline = a * b / np.sqrt((b * np.cos(theta)) ** 2 + (a * np.sin(theta)) ** 2)
    bumps = 0.02 * np.cos(3 * theta + anatomy.phases[0])
    outline *= 1.0 + anatomy.egg * np.sin(theta) + bumps
    sulcus_mm, sulcus_depth = _sulcal_pattern(anatomy, theta, rho)
    fov = (x_mm**2 + y_mm**2) <= (size * spacing / 2) ** 2
    bottom = center[1] + b * (1 + anatomy.egg) + headrest_gap
    rows, cols = np.nonzero(rho < 60.0)
    core = (slice(None), slice(None))
    if rows.size:
        core = (slice(int(rows.min()), int(rows.max()) + 1),
                slice(int(cols.min()), int(cols.max()) + 1))
    return StudyGrid(spacing, y_mm, u, v, rho, theta.astype(np.float32),
                     outline.astype(np.float32), sulcus_mm, sulcus_depth, fov,
                     _headrest(x_mm, y_mm, bottom, spacing), core)


@dataclass
class SliceAnatomy:
    """One rendered slice: HU before lesions and noise, plus the maps lesions are placed with.

    Attributes:
        hu: float32 (H, W) Hounsfield units.
        depth_in: mm inward from the inner skull table (negative outside the cranial cavity).
        brain: cranial cavity (everything inside the inner table).
        ventricles: ventricular CSF.
        sulcal_csf: CSF in sulci, fissures and basal cisterns (where subarachnoid blood goes).
        brain_radius: mm, inner-table radius at the pixel's angle on this slice.
        deep: brain at least 3 mm from any bone (where a parenchymal bleed may sit).
    """

    hu: np.ndarray
    depth_in: np.ndarray
    brain: np.ndarray
    ventricles: np.ndarray
    sulcal_csf: np.ndarray
    brain_radius: np.ndarray
    deep: np.ndarray


def _scalp_and_skull(anat: Anatomy, depth: np.ndarray, t: float, hu: np.ndarray,
                     scale: float) -> float:
    """Paint skin, fat and skull into ``hu``; return the apparent skull thickness (mm)."""
    # Near the vertex the slice cuts the skull obliquely: it looks thicker there.
    oblique = float(np.sqrt(1.0 + (_profile_slope(t) * anat.semi_u / anat.height) ** 2))
    skull = min(anat.skull * oblique, 25.0, 0.9 * anat.semi_u * scale)
    scalp = anat.scalp
    head = depth >= 0
    hu[head] = SKIN_HU
    hu[head & (depth > 1.0) & (depth < scalp - 1.0)] = FAT_HU
    bone = head & (depth >= scalp) & (depth < scalp + skull)
    frac = np.abs(2.0 * (depth[bone] - scalp) / skull - 1.0)  # 1 at the tables, 0 mid-diploe
    hu[bone] = anat.diploe_hu + (anat.table_hu - anat.diploe_hu) * frac**0.7
    return skull


def _cortex(grid: StudyGrid, anat: Anatomy, brain: np.ndarray, depth_in: np.ndarray,
            hu: np.ndarray, t: float) -> np.ndarray:
    """Grey matter along the surface and the sulci, white matter inside; returns sulcal CSF."""
    # Sulci look wider toward the vertex, where the slice cuts them along their length.
    width = (0.3 + 0.3 * anat.ventricle_scale) * (1.0 + 1.5 * max(t - 0.55, 0.0) / 0.45)
    width = max(width, 0.5 * grid.spacing)
    within = depth_in < grid.sulcus_depth
    hu[brain] = anat.white_hu
    near_sulcus = (grid.sulcus_mm < width + 2.0) & (depth_in < grid.sulcus_depth + 2.5)
    grey = brain & ((depth_in < 3.0) | near_sulcus)
    hu[grey] = anat.grey_hu
    sulci = brain & (grid.sulcus_mm < width) & within
    sulci |= brain & (depth_in < max(0.6, 0.5 * grid.spacing))  # thin CSF under the table
    return sulci


def render_anatomy(grid: StudyGrid, anat: Anatomy, t: float) -> SliceAnatomy:
    """Render the slice at height ``t`` (0 skull base .. 1 vertex) without lesions or noise."""
    scale = head_profile(t)
    hu = np.full(grid.u.shape, AIR_HU, dtype=np.float32)
    depth = grid.outline * np.float32(scale) - grid.rho  # mm inward from the scalp surface
    skull = _scalp_and_skull(anat, depth, t, hu, scale)
    depth_in = depth - np.float32(anat.scalp + skull)
    brain = depth_in >= 0
    brain_r = np.maximum(grid.outline * np.float32(scale) - np.float32(anat.scalp + skull), 1.0)
    sulci = _cortex(grid, anat, brain, depth_in, hu, t)
    core, cu, cv = grid.core, grid.u[grid.core], grid.v[grid.core]
    if 0.33 <= t <= 0.5:  # basal ganglia and thalami: deep grey matter
        for side in (-1.0, 1.0):
            deep = ((cu - side * 13.0) / 8.0) ** 2 + ((cv + 4.0) / 15.0) ** 2 < 1.0
            hu[core][deep & brain[core]] = anat.grey_hu - 3.0
    fissures = brain & cisterns(grid.u, grid.v, t, brain_r, anat.ventricle_scale, grid.spacing)
    vents = np.zeros_like(brain)
    vents[core] = ventricles(cu, cv, t, anat.ventricle_scale, grid.spacing)
    vents &= brain & (depth_in > 8.0)
    sulci = (sulci & ~vents) | (fissures & ~vents)
    hu[sulci] = SULCUS_HU
    hu[fissures & ~vents & (t < 0.36)] = CSF_HU  # the wide basal cisterns
    hu[fissures & (np.abs(grid.u) < 0.35 * grid.spacing)] = FALX_HU
    hu[vents] = CSF_HU
    if 0.35 <= t <= 0.42:  # calcified pineal gland: a bright dot behind the third ventricle
        hu[brain & (np.hypot(grid.u, grid.v - 16.0) < max(1.5, grid.spacing))] = 250.0
    if t < 0.3:
        bone, air = skull_base(grid.u, grid.v, t, brain_r, grid.spacing)
        hu[bone & brain] = anat.table_hu
        hu[air & brain] = AIR_HU
        brain &= ~(bone | air)
        sulci &= brain
        vents &= brain
        margin = grow(bone | air, int(np.ceil(3.0 / grid.spacing)))
        return SliceAnatomy(hu, depth_in, brain, vents, sulci, brain_r,
                            brain & (depth_in > 3.0) & ~margin)
    return SliceAnatomy(hu, depth_in, brain, vents, sulci, brain_r, brain & (depth_in > 3.0))


def paint_headrest(hu: np.ndarray, grid: StudyGrid) -> None:
    """The plastic headrest (cradle) below the head, where nothing else is."""
    hu[grid.headrest & (hu < -900)] = HEADREST_HU
