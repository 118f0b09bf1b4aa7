"""Normal hyperdense structures of the phantom head: what a reader must learn to ignore.

A model that only ever sees skull and blood as bright learns "bright = blood" and calls
hemorrhage on every real scan. Real heads hold many normal dense structures (DESIGN.md "Phantom
v2"): the falx and tentorium (calcified plaques in older heads), the dural venous sinuses,
choroid plexus, pineal and basal-ganglia calcifications, dural plaques and the large arteries.
They are painted here, after the brain, and returned as one ``dense`` mask so that lesions are
never drawn over them (masks stay exact).
"""

from __future__ import annotations

import numpy as np

from ich.phantom.grid import STRUCTURES, Anatomy, StudyGrid, Window, clip_box
from ich.phantom.structures import VENTRICLE_V


class Canvas:
    """The slice being painted, its structure label map and the mask of dense structures."""

    def __init__(self, hu: np.ndarray, labels: np.ndarray) -> None:
        self.hu, self.labels = hu, labels
        self.dense = np.zeros(hu.shape, dtype=bool)

    def put(self, name: str, w: Window, mask: np.ndarray, value: float) -> None:
        """Paint structure ``name`` with ``value`` under ``mask`` (inside window ``w``)."""
        self.hu[w][mask] = value
        self.labels[w][mask] = STRUCTURES.index(name)
        self.dense[w] |= mask


def _midline(grid: StudyGrid, w: Window, shift: float) -> np.ndarray:
    """Distance-like coordinate from the (possibly shifted, bowed) midline inside ``w``."""
    u = grid.u[w]
    if shift:
        u = u - np.float32(shift) * np.exp(-((grid.v[w] / 45.0) ** 2))
    return u


def _dura(c: Canvas, grid: StudyGrid, anat: Anatomy, t: float,
          brain: np.ndarray, depth_in: np.ndarray, shift: float, radius: float) -> None:
    """Falx (with calcified plaques), tentorium and the dural venous sinuses."""
    half = max(0.5, 0.5 * grid.spacing)
    w = grid.box(0.0, 0.0, 9.0 + abs(shift), radius + 5.0)  # midline strip: falx and sinuses
    u, v, inside, depth = _midline(grid, w, shift), grid.v[w], brain[w], depth_in[w]
    mid = np.abs(u) < half
    if t > 0.62:
        c.put("falx", w, mid & inside, anat.falx_hu)
    elif t > 0.3:
        c.put("falx", w, mid & inside & ((v < -0.5 * radius) | (v > 0.55 * radius)),
             anat.falx_hu)
    for v0, tp, value in anat.plaques:  # calcified falx plaques in older heads
        if t > 0.3 and abs(t - tp) < 0.025:
            plaque = (np.abs(u) < max(1.2, grid.spacing)) & (np.abs(v - v0) < 4.0) & inside
            c.put("falx_calcification", w, plaque, value)
    if t > 0.3:  # superior sagittal sinus: a triangle at the midline under the inner table
        tri = (depth < 7.0) & (np.abs(u) < 0.6 * (7.0 - depth) + half) & inside
        back = tri & (v > 0)
        c.put("venous_sinus", w, back | (tri & (t > 0.55)), anat.sinus_hu)
    if 0.26 <= t <= 0.36:  # straight sinus
        c.put("venous_sinus", w, (np.abs(u) < max(1.2, 0.6 * grid.spacing)) & (v > 0.5 * radius)
             & (v < 0.85 * radius)
             & (depth > 2.0) & inside, anat.sinus_hu)
    if not 0.05 <= t <= 0.3:
        return
    w = grid.box(0.0, 0.5 * radius, radius + 5.0, 0.5 * radius + 5.0)  # posterior half
    u, v, inside, depth = grid.u[w], grid.v[w], brain[w], depth_in[w]
    if 0.2 <= t <= 0.3:  # tentorium: a thin V along the roof of the posterior fossa
        line = v - (-4.0 + 0.55 * np.abs(u) + 30.0 * (t / 0.28) ** 2)
        c.put("tentorium", w, (np.abs(line) < max(0.8, 0.6 * grid.spacing)) & (np.abs(u) < 45.0)
             & inside, anat.falx_hu)
    if 0.14 <= t <= 0.25:  # transverse sinuses along the posterior inner table
        c.put("venous_sinus", w, (depth < 5.0) & (v > 0.25 * radius) & (np.abs(u) > 6.0) & inside,
             anat.sinus_hu)
    if 0.05 <= t < 0.14:  # sigmoid sinuses, in front of the mastoids
        for side in (-1.0, 1.0):
            ring = np.zeros(u.shape, dtype=bool)  # a 4.5 mm disc: only its box is evaluated
            near = clip_box(w, grid.window(side * 36.0, 30.0, 5.0), grid.u.shape)
            ring[near] = np.hypot(u[near] - side * 36.0, v[near] - 30.0) < 4.5
            c.put("venous_sinus", w, ring & inside, anat.sinus_hu)


def _calcifications(c: Canvas, grid: StudyGrid, anat: Anatomy, t: float,
                    brain: np.ndarray, depth_in: np.ndarray, shift: float) -> None:
    """Choroid plexus, pineal + habenula, globus pallidus and dural calcifications."""
    r = max(1.8, grid.spacing)
    if anat.choroid_hu and 0.42 <= t <= 0.52:  # atria of the lateral ventricles
        for side in (-1.0, 1.0):
            w = grid.window(side * 18.0, VENTRICLE_V + 27.0, 8.0)
            blob = (((grid.u[w] - side * 18.0) / 3.0) ** 2
                    + ((grid.v[w] - VENTRICLE_V - 27.0) / 4.5) ** 2 < 1.0)
            c.put("choroid_calcification", w, blob & brain[w], anat.choroid_hu)
    if anat.pineal_hu and 0.35 <= t <= 0.42:  # pineal behind the third ventricle
        w = grid.window(shift, 16.0, 8.0)
        u = _midline(grid, w, shift)
        dist = np.hypot(u, grid.v[w] - 16.0)
        c.put("pineal_calcification", w, (dist < r) & brain[w], anat.pineal_hu)
        habenula = (np.abs(dist - 4.0) < 0.6 * r) & (grid.v[w] < 13.5) & brain[w]
        c.put("pineal_calcification", w, habenula, 0.6 * anat.pineal_hu)
    if anat.pallidus_hu and 0.36 <= t <= 0.44:  # bilateral, symmetric
        for side in (-1.0, 1.0):
            uc = side * 17.0 + shift
            w = grid.window(uc, VENTRICLE_V + 3.0, 7.0)
            dist = ((grid.u[w] - uc) / 2.5) ** 2 + ((grid.v[w] - VENTRICLE_V - 3.0) / 4.0) ** 2
            c.put("pallidus_calcification", w, (dist < 1.0) & brain[w], anat.pallidus_hu)
    theta0, tp, value = anat.dural_plaque
    if value and abs(t - tp) < 0.02:
        near = np.abs((grid.theta - theta0 + np.pi) % (2 * np.pi) - np.pi) * grid.rho < 4.0
        whole = (slice(None), slice(None))
        c.put("dural_calcification", whole, near & brain & (depth_in < 1.5), value)


def paint_normal(hu: np.ndarray, labels: np.ndarray, grid: StudyGrid, anat: Anatomy, t: float,
                 brain: np.ndarray, depth_in: np.ndarray, shift: float, radius: float
                 ) -> np.ndarray:
    """Paint the normal dense structures of the slice at ``t``; return their mask.

    Args:
        hu: Slice (modified in place).
        labels: Structure label map (indices into ``STRUCTURES``, modified in place).
        grid: Study coordinates.
        anat: ``ich.phantom.anatomy.Anatomy`` of the patient.
        t: Height fraction (0 skull base .. 1 vertex).
        brain: Cranial cavity minus skull-base structures.
        depth_in: mm inward from the inner table.
        shift: Midline shift (mm) on this slice.
        radius: Inner-table half length (mm, anterior-posterior) on this slice.
    """
    c = Canvas(hu, labels)
    _dura(c, grid, anat, t, brain, depth_in, shift, radius)
    _calcifications(c, grid, anat, t, brain, depth_in, shift)
    if 0.28 <= t <= 0.34:  # middle cerebral arteries in the Sylvian fissures
        w = grid.window(0.0, -10.0, 36.0)
        au, v = np.abs(grid.u[w]), grid.v[w]
        line = v - (-6.0 - 0.45 * (au - 18.0) + 2.0 * np.sin(au / 4.0))
        mca = (np.abs(line) < max(1.0, 0.6 * grid.spacing)) & (au > 12.0) & (au < 30.0)
        c.put("artery", w, mca & brain[w], 45.0)
    return c.dense
