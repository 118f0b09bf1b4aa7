"""Pixel coordinates of one phantom study in the head frame, computed once per study, and the
patient's :class:`Anatomy` (here, not in :mod:`ich.phantom.anatomy`, so that the painters of
normal structures and of the skull base can name it without importing their caller).

The head frame has ``u`` (left-right, mm) and ``v`` (anterior negative, posterior positive, mm),
centred on the head and rotated by the patient's in-plane angle. Small structures are drawn in a
*window*: the pixel box that holds a disc of the head frame, so that a 3 mm calcification costs a
few hundred pixel operations instead of a full 512 x 512 pass. That is what keeps the phantom fast.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Window = tuple[slice, slice]

#: Names of the label map every rendered slice carries (index 0: not a named structure). The
#: realism report and the tests read structure HU through it, before noise.
STRUCTURES: tuple[str, ...] = (
    "other", "air", "scalp", "skull", "grey_matter", "white_matter", "deep_grey", "ventricle",
    "sulcal_csf", "cistern", "cerebellum", "brainstem", "bone", "petrous_clivus", "air_cells",
    "globe", "lens", "orbital_fat", "optic_nerve", "muscle", "pituitary", "falx", "tentorium",
    "venous_sinus", "falx_calcification", "choroid_calcification", "pineal_calcification",
    "pallidus_calcification", "dural_calcification", "artery",
)


@dataclass
class StudyGrid:
    """Pixel coordinates of one study, shared by all its slices.

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
        core: pixel box of the central 80 mm, where the deep structures are drawn (speed).
        center, angle: where the head frame sits in the scanner frame (mm, rad).
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
    core: Window
    center: tuple[float, float] = (0.0, 0.0)
    angle: float = 0.0
    outside: np.ndarray = field(init=False, repr=False)  # flat indices outside the FOV
    headrest_index: np.ndarray = field(init=False, repr=False)  # flat indices of the headrest
    centre_weight: np.ndarray = field(init=False, repr=False)  # exp(-(rho / 45 mm)^2) in core

    def __post_init__(self) -> None:
        self.outside = np.flatnonzero(~self.fov.ravel())
        self.headrest_index = np.flatnonzero(self.headrest.ravel())
        self.centre_weight = np.exp(-((self.rho[self.core] / 45.0) ** 2)).astype(np.float32)
    def window(self, uc: float, vc: float, radius: float) -> Window:
        """Pixel box covering the disc of ``radius`` mm around head-frame point (uc, vc)."""
        return self.box(uc, vc, radius, radius)

    def box(self, uc: float, vc: float, half_u: float, half_v: float) -> Window:
        """Pixel box covering the head-frame rectangle (uc ± half_u, vc ± half_v), rotated."""
        size = self.u.shape[0]
        cos, sin = np.cos(self.angle), np.sin(self.angle)
        x = self.center[0] + cos * uc - sin * vc
        y = self.center[1] + sin * uc + cos * vc
        col = x / self.spacing + (size - 1) / 2
        row = y / self.spacing + (size - 1) / 2
        rc = (abs(cos) * half_u + abs(sin) * half_v) / self.spacing + 1
        rr = (abs(sin) * half_u + abs(cos) * half_v) / self.spacing + 1
        r0, r1 = _within(row - rr, size), _within(np.ceil(row + rr) + 1, size)
        c0, c1 = _within(col - rc, size), _within(np.ceil(col + rc) + 1, size)
        return slice(r0, r1), slice(c0, c1)


def _within(value: float, size: int) -> int:
    """``int(np.clip(value, 0, size))`` without the cost of a ufunc call on a scalar."""
    return int(min(max(value, 0), size))


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
    age: float = 50.0  # years: drives atrophy and calcifications
    sinus_hu: float = 50.0  # dural venous sinuses (40-65; high with high hematocrit)
    falx_hu: float = 50.0  # falx and tentorium (40-70)
    petrous_hu: float = 1500.0  # petrous bone and clivus (1,000-2,000)
    choroid_hu: float = 0.0  # choroid plexus calcification in the atria, 0 = none
    pineal_hu: float = 0.0  # pineal calcification, 0 = none
    pallidus_hu: float = 0.0  # globus pallidus calcification (bilateral), 0 = none
    plaques: tuple[tuple[float, float, float], ...] = ()  # (v mm, t, HU) calcified falx plaques
    dural_plaque: tuple[float, float, float] = (0.0, 0.0, 0.0)  # (theta, t, HU), HU 0 = none


def clip_box(outer: Window, box: Window, shape: tuple[int, ...]) -> Window:
    """``box`` (absolute pixel slices) clipped to ``outer``, relative to ``outer``'s origin.

    For drawing a small structure inside arrays already cut to ``outer``: only the part of
    them that can hold it is evaluated.
    """
    out = []
    for o, b, n in zip(outer, box, shape, strict=True):
        o0, o1, _ = o.indices(n)
        b0, b1, _ = b.indices(n)
        start = min(max(b0, o0), o1) - o0
        out.append(slice(start, max(min(b1, o1) - o0, start)))
    return out[0], out[1]


def mask_box(mask: np.ndarray, margin: int = 0) -> Window | None:
    """Pixel box of a 2-D mask's True pixels, widened by ``margin`` on every side (slices
    clip at the image's edges); None for an empty mask.

    Why: work masked by a small structure only needs the box that holds it.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return (slice(max(int(rows[0]) - margin, 0), int(rows[-1]) + margin + 1),
            slice(max(int(cols[0]) - margin, 0), int(cols[-1]) + margin + 1))


def flat_view(image: np.ndarray) -> np.ndarray:
    """``image`` as a 1-D view, for writing through flat pixel indices.

    Raises:
        ValueError: ``image`` is not C-contiguous (a reshape would copy, and writes into the
            copy would be lost).
    """
    if not image.flags.c_contiguous:
        raise ValueError("flat writes need a C-contiguous image")
    return image.reshape(-1)
