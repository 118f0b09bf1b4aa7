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

from ich.phantom.grid import (
    STRUCTURES,
    Anatomy,
    StudyGrid,
    Window,
    clip_box,
    flat_view,
    mask_box,
)
from ich.phantom.normal import paint_normal
from ich.phantom.skullbase import paint_skull_base
from ich.phantom.structures import (
    cisterns,
    deep_grey,
    fissure_half_width,
    grow,
    midline_fissure,
    ventricles,
)

#: Mean Hounsfield units of the tissues (DESIGN.md "The phantom").
AIR_HU = -1000.0
CSF_HU = 7.0
SULCUS_HU = 17.0  # thin sulci are partly volume-averaged with the cortex
WIDE_FISSURE_MM = 1.2  # half width from which a fissure is CSF, not volume-averaged
SKIN_HU = 40.0
FAT_HU = -60.0  # subcutaneous fat of the scalp, volume-averaged with the galea
HEADREST_HU = 300.0


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw one patient's anatomy (adult head sizes; age sets atrophy and calcifications)."""
    age = float(rng.uniform(18, 92))
    old = (age - 18.0) / 74.0  # 0 young .. 1 old
    n_plaques = int(rng.integers(1, 4)) if rng.random() < 0.1 + 0.35 * old else 0
    return Anatomy(
        semi_u=float(rng.uniform(72, 82)),
        semi_v=float(rng.uniform(92, 104)),
        egg=float(rng.uniform(0.0, 0.05)),
        scalp=float(rng.uniform(2.5, 4.5)),
        skull=float(rng.uniform(5.0, 8.0)),
        table_hu=float(rng.uniform(1250, 1500)),
        diploe_hu=float(rng.uniform(700, 900)),
        grey_hu=float(rng.uniform(35, 41)),
        white_hu=float(rng.uniform(23, 30)),
        ventricle_scale=float(np.clip(0.75 + 0.65 * old + rng.normal(0, 0.12), 0.7, 1.6)),
        sulci=int(rng.integers(22, 32)),
        phases=tuple(float(x) for x in rng.uniform(0, 2 * np.pi, 8)),
        height=float(rng.uniform(150, 175)),
        age=age,
        sinus_hu=float(rng.uniform(40, 65)),
        falx_hu=float(rng.uniform(40, 70)),
        petrous_hu=float(rng.uniform(1000, 2000)),
        choroid_hu=float(rng.uniform(100, 400)) if rng.random() < 0.2 + 0.7 * old else 0.0,
        pineal_hu=float(rng.uniform(100, 450)) if rng.random() < 0.3 + 0.5 * old else 0.0,
        pallidus_hu=float(rng.uniform(80, 300)) if rng.random() < 0.03 + 0.12 * old else 0.0,
        plaques=tuple((float(rng.uniform(-60, 60)), float(rng.uniform(0.45, 0.85)),
                       float(rng.uniform(200, 900))) for _ in range(n_plaques)),
        dural_plaque=((float(rng.uniform(-np.pi, np.pi)), float(rng.uniform(0.4, 0.9)),
                       float(rng.uniform(200, 700))) if rng.random() < 0.08 else (0.0, 0.0, 0.0)),
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


def obliquity(anat: Anatomy, t: float) -> float:
    """1 / cos of the angle between the slice and the skull surface (1 mid-head, large at top)."""
    return float(np.sqrt(1.0 + (_profile_slope(t) * anat.semi_u / anat.height) ** 2))


def _profile_slope(t: float) -> float:
    """d(profile)/dt, used to thicken the skull where the slice cuts it obliquely."""
    eps = 1e-3
    return (head_profile(min(t + eps, 1.0)) - head_profile(max(t - eps, 0.0))) / (2 * eps)


def _sulcal_pattern(anat: Anatomy, theta: np.ndarray, rho: np.ndarray) -> tuple[np.ndarray, ...]:
    """Wavy, irregular sulci: distance (mm) to the nearest sulcus axis and its depth (mm)."""
    k, ph = anat.sulci, anat.phases
    phase = k * theta + 2.5 * np.sin(theta * 2 + ph[1]) + 1.5 * np.sin(theta * 5 + ph[2])
    phase += 0.9 * np.sin(rho / 5.0 + 3 * theta + ph[3])  # sulci bend as they go inward
    wrapped = np.abs((phase + np.pi) % (2 * np.pi) - np.pi)  # 0 on a sulcus axis
    index = np.floor((phase + np.pi) / (2 * np.pi))  # which sulcus: sets its depth
    # A few dozen sulci: their depths are computed once each and looked up per pixel.
    first = index.min()
    ids = np.arange(int(index.max() - first) + 1, dtype=index.dtype) + first
    depths = 12.0 + 5.0 * np.sin(ids * 2.39996 + ph[4]) + 3.0 * np.sin(ids * 0.7 + ph[5])
    depths *= 0.6 + 0.4 * anat.ventricle_scale
    depth = depths[(index - first).astype(np.intp)]
    return (wrapped / k * rho).astype(np.float32), depth.astype(np.float32)


def _headrest(x: np.ndarray, y: np.ndarray, bottom: float, spacing: float) -> np.ndarray:
    """A U-shaped cradle: a half circle below the head continued by straight sides."""
    radius = 100.0
    center_y = bottom - radius
    wall = max(2.5, 1.1 * spacing)
    out = np.zeros(y.shape, dtype=bool)
    rows = slice(int(np.argmax(y[:, 0] > center_y - 60.0)), None)  # y grows down the rows
    if not y[-1, 0] > center_y - 60.0:
        return out
    x, y = x[rows], y[rows]
    dist = np.where(y > center_y, np.hypot(x, y - center_y), np.abs(x)) - radius
    out[rows] = (dist > 0) & (dist < wall) & (y > center_y - 60.0)
    return out


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
    core = mask_box(rho < 80.0) or (slice(None), slice(None))
    return StudyGrid(spacing, y_mm, u, v, rho, theta.astype(np.float32),
                     outline.astype(np.float32), sulcus_mm, sulcus_depth, fov,
                     _headrest(x_mm, y_mm, bottom, spacing), core, center, angle)


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
        deep: brain at least 3 mm from any bone or dense structure (where a parenchymal bleed
            may sit).
        dense: normal hyperdense structures (calcifications, sinuses, falx, arteries): blood is
            never drawn over them, so masks stay exact.
        posterior_fossa: cerebellum and brainstem (noise is higher there).
        labels: uint8 structure label map of the painted structures (indices into
            ``ich.phantom.grid.STRUCTURES``); :func:`label_map` adds the basic tissues.
    """

    hu: np.ndarray
    depth_in: np.ndarray
    brain: np.ndarray
    ventricles: np.ndarray
    sulcal_csf: np.ndarray
    brain_radius: np.ndarray
    deep: np.ndarray
    dense: np.ndarray
    posterior_fossa: np.ndarray
    labels: np.ndarray


def _scalp_and_skull(anat: Anatomy, depth: np.ndarray, t: float, hu: np.ndarray,
                     scale: float) -> float:
    """Paint skin, fat and skull into ``hu``; return the apparent skull thickness (mm)."""
    # Near the vertex the slice cuts the skull obliquely: it looks thicker there.
    # Occipital and temporal bone thicken toward the skull base (the face below is no thicker).
    base = 1.0 + 1.2 * min(max(0.25 - t, 0.0) / 0.25, 1.0)
    skull = min(anat.skull * base * obliquity(anat, t), 25.0, 0.9 * anat.semi_u * scale)
    scalp = anat.scalp
    # Only the shell between the scalp surface and the inner table is painted here: the
    # cranial cavity inside it (depth >= scalp + skull) is all overwritten by _cortex.
    flat = depth.ravel()
    shell = np.flatnonzero((flat >= 0) & (flat < scalp + skull))
    d = flat[shell]
    out = flat_view(hu)
    out[shell] = SKIN_HU
    out[shell[(d > 1.0) & (d < scalp - 1.0)]] = FAT_HU
    in_bone = d >= scalp
    frac = np.abs(2.0 * (d[in_bone] - scalp) / skull - 1.0)  # 1 at the tables, 0 mid-diploe
    out[shell[in_bone]] = anat.diploe_hu + (anat.table_hu - anat.diploe_hu) * frac**0.7
    return skull


MUSCLE_HU = 55.0


def _muscles(grid: StudyGrid, anat: Anatomy, depth: np.ndarray, t: float, hu: np.ndarray) -> None:
    """Temporalis muscles on the sides of the lower vault and neck muscles behind the skull
    base, outside the scalp line (in place): soft tissue near 55 HU, as thick as 1-2 cm on real
    scans, that sits beside bone and is bright in the brain window.

    Only the thin ring just outside the scalp line can hold muscle or its skin, so the
    per-pixel thickness is computed there alone (about a twentieth of the frame).
    """
    side = float(min(max((0.45 - t) / 0.3, 0.0), 1.0))
    neck = float(min(max((0.15 - t) / 0.15, 0.0), 1.0))
    if side == 0.0 and neck == 0.0:
        return
    # lateral + posterior <= 1, so thick <= 2.5 * scalp * max(side, neck); a little slack
    # keeps float rounding inside the ring.
    reach = 2.5 * anat.scalp * max(side, neck) * 1.001 + 1.5 + 0.01
    flat = depth.ravel()
    ring = np.flatnonzero((flat < -0.5) & (flat > -reach))
    d = flat[ring]
    rho = np.maximum(grid.rho.ravel()[ring], 1.0)
    lateral = (grid.u.ravel()[ring] / rho) ** 2
    posterior = np.clip(grid.v.ravel()[ring] / rho, 0.0, 1.0) ** 2
    thick = np.float32(2.5 * anat.scalp) * (side * lateral + neck * posterior)
    out = flat_view(hu)
    out[ring[(d < -0.5) & (d > -thick)]] = MUSCLE_HU
    out[ring[(d <= -thick) & (d > -thick - 1.5) & (thick > 1.0)]] = SKIN_HU


def _cortex(grid: StudyGrid, anat: Anatomy, brain: np.ndarray, depth_in: np.ndarray,
            hu: np.ndarray, t: float, effaced: np.ndarray | None) -> np.ndarray:
    """Grey matter along the surface and the sulci, white matter inside; returns sulcal CSF.

    Sulci widen with age (atrophy) and look wider toward the vertex, where the slice cuts them
    along their length; next to a mass (``effaced``) they close. The subarachnoid space between
    the inner table and the cortex widens too, from 0.3 mm in the young to ~2 mm in atrophic
    heads: there convexity subarachnoid blood lies as a thin layer under the bone, and a model
    must tell it from a thin subdural and from the bright rim of beam hardening.
    """
    atrophy = max(anat.ventricle_scale - 0.75, 0.0)
    width = (0.15 + 1.1 * atrophy) * (1.0 + 1.5 * max(t - 0.55, 0.0) / 0.45)
    width = max(width, 0.45 * grid.spacing)
    out = np.zeros_like(brain)
    b = mask_box(brain)  # everything below is masked by ``brain``: its box is enough
    if b is None:
        return out
    brain, depth_in, hu = brain[b], depth_in[b], hu[b]
    sulcus_mm, sulcus_depth = grid.sulcus_mm[b], grid.sulcus_depth[b]
    within = depth_in < sulcus_depth
    hu[brain] = anat.white_hu
    near_sulcus = (sulcus_mm < width + 1.8) & (depth_in < sulcus_depth + 2.5)
    grey = brain & ((depth_in < 4.0) | near_sulcus)
    hu[grey] = anat.grey_hu
    sulci = brain & (sulcus_mm < width) & within
    sulci |= brain & (depth_in < max(0.3 + 2.0 * atrophy, 0.5 * grid.spacing))
    if effaced is not None:
        sulci &= ~effaced[b]
    out[b] = sulci
    return out


def deep_box(grid: StudyGrid, scale: float, shift: float) -> Window:
    """Pixel box that holds every ventricle and deep grey nucleus (speed: only it is drawn).

    They lie within |u| < 31 mm (after the midline ``shift``) and -38 < v < 33 mm for
    ventricle scales up to 1.6; the box adds margins and grows with larger scales.
    """
    grow_by = max(1.0, scale / 1.6)
    return grid.box(0.0, -2.5, 36.0 * grow_by + abs(shift) + 2.0 * grid.spacing,
                    40.0 * grow_by + 2.0 * grid.spacing)


def _deep_structures(grid: StudyGrid, anat: Anatomy, t: float, brain: np.ndarray,
                     depth_in: np.ndarray, brain_r: np.ndarray, hu: np.ndarray,
                     shift: float) -> tuple[np.ndarray, np.ndarray]:
    """Deep grey nuclei, fissures, cisterns and ventricles; returns (fissures, ventricles).

    ``shift`` (mm, + toward patient left) moves the midline structures as a mass would: most at
    the centre, fading toward the front and back, so the falx bows.
    """
    core, scale, sp = grid.core, anat.ventricle_scale, grid.spacing
    cu, cv = grid.u[core], grid.v[core]
    if shift:
        cu = cu - np.float32(shift) * np.exp(-((cv / 45.0) ** 2))
    inner = clip_box(core, deep_box(grid, scale, shift), grid.u.shape)
    iu, iv = cu[inner], cv[inner]
    hu[core][inner][deep_grey(iu, iv, t) & brain[core][inner]] = anat.grey_hu - 1.5
    fissures = np.zeros_like(brain)
    fissures[core] = cisterns(cu, cv, t, brain_r[core], scale, sp)
    if t > 0.3:
        strip = grid.box(0.0, 0.0, 8.0 + abs(shift), float(brain_r.max()) + 2.0)
        su, sv = grid.u[strip], grid.v[strip]
        if shift:
            su = su - np.float32(shift) * np.exp(-((sv / 45.0) ** 2))
        fissures[strip] |= midline_fissure(su, sv, t, brain_r[strip], scale, sp)
    fissures &= brain
    vents = np.zeros_like(brain)
    vents[core][inner] = ventricles(iu, iv, t, anat.ventricle_scale, grid.spacing)
    vents &= brain & (depth_in > 8.0)
    return fissures, vents


def render_anatomy(grid: StudyGrid, anat: Anatomy, t: float, shift: float = 0.0,
                   effaced: np.ndarray | None = None) -> SliceAnatomy:
    """Render the slice at height ``t`` (0 skull base .. 1 vertex) without lesions or noise.

    Args:
        grid: The study's coordinates.
        anat: The patient's anatomy.
        t: Height fraction of the slice.
        shift: Midline shift (mm) caused by a mass on this slice.
        effaced: Pixels whose sulci a mass has closed, or None.
    """
    scale = head_profile(t)
    hu = np.full(grid.u.shape, AIR_HU, dtype=np.float32)
    radius = grid.outline * np.float32(scale)  # scalp surface (mm) at each pixel's angle
    depth = radius - grid.rho  # mm inward from the scalp surface
    skull = _scalp_and_skull(anat, depth, t, hu, scale)
    _muscles(grid, anat, depth, t, hu)
    depth_in = depth - np.float32(anat.scalp + skull)
    brain = depth_in >= 0
    brain_r = radius - np.float32(anat.scalp + skull)
    np.maximum(brain_r, 1.0, out=brain_r)
    sulci = _cortex(grid, anat, brain, depth_in, hu, t, effaced)
    fissures, vents = _deep_structures(grid, anat, t, brain, depth_in, brain_r, hu, shift)
    not_vents = ~vents
    sulci = (sulci | fissures) & not_vents
    hu[sulci] = SULCUS_HU
    # The anatomical width decides the density, not the width drawn: a coarse grid draws a
    # young head's fissure a pixel wide but still volume-averaged, not CSF.
    if t < 0.36 or fissure_half_width(anat.ventricle_scale) >= WIDE_FISSURE_MM:
        hu[fissures & not_vents] = CSF_HU  # the basal cisterns, fissures opened by atrophy
    hu[vents] = CSF_HU
    excluded = np.zeros_like(brain)
    fossa = np.zeros_like(brain)
    front = anat.semi_v * scale - anat.scalp - skull
    labels = np.zeros(hu.shape, dtype=np.uint8)
    if t < 0.3:
        excluded, fossa, cistern = paint_skull_base(hu, labels, grid, anat, t, brain, front,
                                                    vents)
        brain &= ~excluded
        vents &= brain
        sulci = (sulci & brain & ~fossa) | cistern
    dense = paint_normal(hu, labels, grid, anat, t, brain, depth_in, shift, front)
    sulci &= ~dense
    vents &= ~dense
    deep = brain & (depth_in > 3.0) & ~fossa
    solid = excluded | (dense & (hu > 150))  # bone and calcifications: keep bleeds 3 mm away
    if solid.any():
        deep &= ~grow(solid, int(np.ceil(3.0 / grid.spacing)))
    return SliceAnatomy(hu, depth_in, brain, vents, sulci, brain_r, deep, dense, fossa, labels)


def label_map(sa: SliceAnatomy, anat: Anatomy) -> np.ndarray:
    """Full structure label map of a freshly rendered slice (before lesions, artefacts, noise).

    The basic tissues are recognised by their exact per-patient HU, which only they carry
    before noise; painted structures keep the labels they were painted with.
    """
    out = sa.labels.copy()
    free = out == 0
    hu, ids = sa.hu, STRUCTURES.index

    def put(name: str, mask: np.ndarray) -> None:
        out[free & mask] = ids(name)

    put("air", hu <= AIR_HU)
    outside = (sa.depth_in < 0) & (hu > AIR_HU)
    put("skull", outside & (hu >= anat.diploe_hu - 1.0))
    put("scalp", outside & (hu < anat.diploe_hu - 1.0))
    put("muscle", outside & (hu == np.float32(MUSCLE_HU)))
    put("ventricle", sa.ventricles)
    put("sulcal_csf", sa.sulcal_csf)
    put("deep_grey", sa.brain & (hu == np.float32(anat.grey_hu - 1.5)))
    put("grey_matter", sa.brain & (hu == np.float32(anat.grey_hu)))
    put("white_matter", sa.brain & (hu == np.float32(anat.white_hu)))
    return out


def paint_headrest(hu: np.ndarray, grid: StudyGrid) -> None:
    """The plastic headrest (cradle) below the head, where nothing else is."""
    if not hu.flags.c_contiguous:  # a flat view needs a contiguous image
        hu[grid.headrest & (hu < -900)] = HEADREST_HU
        return
    index = grid.headrest_index  # flat indices: a few per cent of the frame
    flat = hu.reshape(-1)
    flat[index[flat[index] < -900]] = HEADREST_HU
