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

#: Mean Hounsfield units of the tissues (DESIGN.md "The phantom").
AIR_HU = -1000.0
CSF_HU = 8.0
SCALP_HU = 40.0


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
    sulcus_phase: tuple[float, ...]  # harmonics that make the sulcal pattern irregular
    height: float  # mm, skull base to vertex


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw one patient's anatomy (adult head sizes)."""
    return Anatomy(
        semi_u=float(rng.uniform(66, 76)),
        semi_v=float(rng.uniform(84, 96)),
        egg=float(rng.uniform(0.0, 0.05)),
        scalp=float(rng.uniform(3.0, 6.0)),
        skull=float(rng.uniform(5.0, 8.0)),
        table_hu=float(rng.uniform(1250, 1500)),
        diploe_hu=float(rng.uniform(700, 900)),
        grey_hu=float(rng.uniform(36, 40)),
        white_hu=float(rng.uniform(26, 30)),
        ventricle_scale=float(rng.uniform(0.8, 1.5)),
        sulci=int(rng.integers(26, 38)),
        sulcus_phase=tuple(float(x) for x in rng.uniform(0, 2 * np.pi, 6)),
        height=float(rng.uniform(150, 175)),
    )


def head_profile(t: float) -> float:
    """Relative head radius at height ``t`` (0 skull base .. 1 vertex): widest near t=0.4."""
    return float(np.sqrt(max(1.0 - ((t - 0.4) / 0.63) ** 2, 0.0)))


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
        outline: outer head radius (mm) per pixel's angle at the widest slice.
        sulcus_dist: angular distance (mm at unit radius... scaled by rho) to the nearest sulcus.
        fov: pixels inside the scanner's circular reconstruction field.
    """

    spacing: float
    y_mm: np.ndarray
    u: np.ndarray
    v: np.ndarray
    rho: np.ndarray
    theta: np.ndarray
    outline: np.ndarray
    sulcus_phase: np.ndarray
    fov: np.ndarray
    headrest_y: float


def make_grid(size: int, spacing: float, anatomy: Anatomy, center: tuple[float, float],
              angle: float) -> StudyGrid:
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
    bumps = 0.02 * np.cos(3 * theta + anatomy.sulcus_phase[0])
    outline *= 1.0 + anatomy.egg * np.sin(theta) + bumps
    k = anatomy.sulci
    ph = anatomy.sulcus_phase
    phase = k * theta + 2.5 * np.sin(theta * 2 + ph[1]) + 1.5 * np.sin(theta * 5 + ph[2])
    phase += 0.8 * np.sin(theta * 9 + ph[3])
    wrapped = np.abs((phase + np.pi) % (2 * np.pi) - np.pi)  # 0 on a sulcus axis
    sulcus_phase = (wrapped / k).astype(np.float32)  # radians to the nearest sulcus
    fov = (x_mm**2 + y_mm**2) <= (size * spacing / 2) ** 2
    # The headrest sits just below the head's most posterior point, fixed in the scanner.
    posterior = center[1] + b * (1 + anatomy.egg) + 4.0
    return StudyGrid(spacing, y_mm, u, v, rho, theta.astype(np.float32),
                     outline.astype(np.float32), sulcus_phase, fov, float(posterior))


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
    """

    hu: np.ndarray
    depth_in: np.ndarray
    brain: np.ndarray
    ventricles: np.ndarray
    sulcal_csf: np.ndarray
    brain_radius: np.ndarray


def _skull(grid: StudyGrid, anat: Anatomy, depth: np.ndarray, t: float, hu: np.ndarray,
           scale: float) -> float:
    """Paint scalp and skull into ``hu``; returns the apparent skull thickness (mm)."""
    # Near the vertex the slice cuts the skull obliquely: it looks thicker there.
    oblique = float(np.sqrt(1.0 + (_profile_slope(t) * anat.semi_u / anat.height) ** 2))
    skull = min(anat.skull * oblique, 30.0, 0.9 * anat.semi_u * scale)
    scalp = anat.scalp
    head = depth >= 0
    hu[head] = SCALP_HU
    bone = head & (depth >= scalp) & (depth < scalp + skull)
    frac = np.abs(2.0 * (depth[bone] - scalp) / skull - 1.0)  # 1 at tables, 0 mid diploe
    hu[bone] = anat.diploe_hu + (anat.table_hu - anat.diploe_hu) * frac**0.7
    return skull


def _ventricles(grid: StudyGrid, anat: Anatomy, t: float) -> np.ndarray:
    """Ventricular system: lateral ventricles (bodies, horns), third and fourth ventricle."""
    u, v = grid.u, grid.v
    s = anat.ventricle_scale
    out = np.zeros(u.shape, dtype=bool)
    vc = -6.0
    if 0.36 <= t <= 0.68:
        level = np.sin(np.pi * (t - 0.36) / 0.32) ** 0.5
        half_len = 30.0 * (0.6 + 0.4 * level)
        width = 3.5 * s * (0.5 + 0.5 * level)
        dv = v - vc
        center_u = (3.0 + 1.5 * s) + 0.006 * dv**2 * (1.2 - level)
        lat = ((np.abs(u) - center_u) / width) ** 2 + (dv / half_len) ** 2 < 1.0
        if t < 0.47:  # frontal and occipital horns only: the middle is thalamus
            lat &= (dv < -10.0) | (dv > 12.0)
        out |= lat
    if 0.30 <= t <= 0.46:
        out |= (np.abs(u) < max(1.2 * s, grid.spacing * 0.6)) & (np.abs(v - vc + 2) < 9.0)
    if 0.10 <= t <= 0.24:
        out |= ((u / (5.5 * s)) ** 2 + ((v - 28.0) / (3.5 * s)) ** 2) < 1.0
    return out


def _cisterns(grid: StudyGrid, anat: Anatomy, t: float, brain_r: np.ndarray) -> np.ndarray:
    """Sylvian and interhemispheric fissures and basal cisterns (CSF outside the ventricles)."""
    u, v = grid.u, grid.v
    half = max(0.9 * anat.ventricle_scale, 0.55 * grid.spacing)
    out = np.zeros(u.shape, dtype=bool)
    near_mid = np.abs(u) < half
    if t > 0.58:
        out |= near_mid
    elif t > 0.3:
        out |= near_mid & ((v < -0.35 * brain_r) | (v > 0.5 * brain_r))
    if 0.22 <= t <= 0.34:  # basal cisterns: ring around the midbrain + suprasellar star
        ring = np.hypot(u, v - 6.0)
        out |= (ring > 11.0) & (ring < 11.0 + 2.5 * anat.ventricle_scale) & (v > -2.0)
        out |= ((u / 9.0) ** 2 + ((v + 12.0) / 5.0) ** 2) < 1.0
    if 0.28 <= t <= 0.5:  # Sylvian fissures running antero-laterally
        line = v - (-8.0 - 0.35 * (np.abs(u) - 18.0))
        out |= (np.abs(line) < half * 1.2) & (np.abs(u) > 18.0)
    return out


def render_anatomy(grid: StudyGrid, anat: Anatomy, t: float) -> SliceAnatomy:
    """Render the slice at height ``t`` (0 skull base .. 1 vertex) without lesions or noise."""
    scale = head_profile(t)
    hu = np.full(grid.u.shape, AIR_HU, dtype=np.float32)
    depth = grid.outline * np.float32(scale) - grid.rho  # mm inward from the scalp surface
    skull = _skull(grid, anat, depth, t, hu, scale)
    depth_in = depth - np.float32(anat.scalp + skull)
    brain = depth_in >= 0
    brain_r = np.maximum(grid.outline * np.float32(scale) - np.float32(anat.scalp + skull), 1.0)
    # Cortex: grey matter near the surface and around the sulci, white matter deeper.
    sulcus_mm = grid.sulcus_phase * grid.rho
    sulcus_w = max(0.6 * anat.ventricle_scale, 0.55 * grid.spacing)
    sulcus_depth = 6.0 + 6.0 * anat.ventricle_scale
    near_sulcus = (sulcus_mm < sulcus_w + 2.5) & (depth_in < sulcus_depth + 3)
    grey = brain & ((depth_in < 3.0) | near_sulcus)
    hu[brain] = anat.white_hu
    hu[grey] = anat.grey_hu
    if 0.33 <= t <= 0.5:  # basal ganglia and thalami: deep grey matter
        for side in (-1.0, 1.0):
            deep = ((grid.u - side * 14.0) / 8.0) ** 2 + ((grid.v + 2.0) / 14.0) ** 2 < 1.0
            hu[deep & brain] = anat.grey_hu - 2.0
    sulci = brain & (sulcus_mm < sulcus_w) & (depth_in < sulcus_depth)
    sulci |= brain & (depth_in < max(0.8, 0.5 * grid.spacing))  # thin CSF under the inner table
    sulci |= brain & _cisterns(grid, anat, t, brain_r)
    vents = brain & _ventricles(grid, anat, t) & (depth_in > 8.0)
    sulci &= ~vents
    hu[sulci] = CSF_HU
    hu[vents] = CSF_HU - 2.0
    return SliceAnatomy(hu, depth_in, brain, vents, sulci, brain_r)


def paint_headrest(hu: np.ndarray, grid: StudyGrid) -> None:
    """A curved plastic headrest (cradle) below the head, fixed in the scanner frame."""
    radius = 150.0
    center_y = grid.headrest_y - radius
    size = hu.shape[0]
    x = (np.arange(size, dtype=np.float32) - (size - 1) / 2)[None, :] * np.float32(grid.spacing)
    dist = np.hypot(x, grid.y_mm - np.float32(center_y)) - np.float32(radius)
    below = grid.y_mm > center_y
    wall = max(3.0, grid.spacing)
    shell = below & (dist > 0) & (dist < wall) & (np.abs(x) < 110.0)
    foam = below & (dist >= wall) & (dist < 14.0) & (np.abs(x) < 100.0)
    hu[foam & (hu < -900)] = -800.0
    hu[shell & (hu < -900)] = 250.0
