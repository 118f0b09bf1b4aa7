"""Skull base and posterior fossa of the phantom (slices below t = 0.3), and the face and upper
neck below it (t < 0), where many real series start.

What makes the lowest slices of a real head CT hard: orbits (globes, lenses, retro-orbital fat),
air-filled paranasal sinuses and mastoid cells with thin bone septa, dense petrous bones and
clivus, the sella, and a posterior fossa whose cerebellum, brainstem and fourth ventricle sit
between them. HU follow DESIGN.md "Phantom v2". Midline structures are placed in head-frame mm
(``u`` left-right, ``v`` posterior positive); the orbits hang off the front of the cranial
outline (``-front``). Each structure is drawn inside its own pixel window (speed).
"""

from __future__ import annotations

import numpy as np

from ich.phantom.grid import STRUCTURES, Anatomy, StudyGrid, Window

GLOBE_HU, LENS_HU, ORBIT_FAT_HU = 10.0, 105.0, -100.0
MUSCLE_HU, CSF_HU, PONS_HU, AIR_HU = 45.0, 7.0, 32.0, -1000.0


def _ell(grid: StudyGrid, w: Window, uc: float, vc: float, au: float, av: float) -> np.ndarray:
    # The same operations as ((u - uc) / au) ** 2 + ((v - vc) / av) ** 2 < 1, in place.
    a = grid.u[w] - np.float32(uc)
    a /= np.float32(au)
    a *= a
    b = grid.v[w] - np.float32(vc)
    b /= np.float32(av)
    b *= b
    a += b
    return a < 1.0


def _cells(grid: StudyGrid, w: Window, period: float) -> np.ndarray:
    """Air cells: True in the air, False on the thin bony septa between cells."""
    a = np.sin(grid.u[w] * (2 * np.pi / period) + 0.7)
    b = np.sin(grid.v[w] * (2 * np.pi / period * 1.3))
    return (np.abs(a) > 0.22) & (np.abs(b) > 0.22)


class _Painter:
    """Paints into ``hu`` and records which pixels are no longer brain."""

    def __init__(self, hu: np.ndarray, labels: np.ndarray, grid: StudyGrid, cavity: np.ndarray
                 ) -> None:
        self.hu, self.labels, self.grid, self.cavity = hu, labels, grid, cavity
        self.excluded = np.zeros_like(cavity)

    def put(self, name: str, w: Window, mask: np.ndarray, value: float,
            in_head: bool = False) -> None:
        """Paint ``name`` under ``mask`` inside the cavity (``in_head``: anywhere in the head)."""
        mask = mask & (self.hu[w] > -900.0 if in_head else self.cavity[w])
        self.hu[w][mask] = value
        self.labels[w][mask] = STRUCTURES.index(name)
        self.excluded[w] |= mask


def _orbits(p: _Painter, t: float, front: float, ru: float, spacing: float) -> None:
    """Globes with lenses in retro-orbital fat, ethmoid cells between them (t < 0.17)."""
    g = np.sqrt(max(1.0 - ((t - 0.075) / 0.09) ** 2, 0.0))
    vg = -front + 6.0  # the globes bulge forward of the bony orbit
    for side in (-1.0, 1.0):
        uo = side * min(0.45 * ru, 33.0)
        w = p.grid.window(uo, vg + 12.0, 34.0)
        fat = _ell(p.grid, w, uo - side * 3.0, vg + 12.0, 14.0, 25.0)
        wall = _ell(p.grid, w, uo - side * 3.0, vg + 12.0, 15.2, 26.2) & ~fat
        p.put("bone", w, wall, 700.0)
        p.put("orbital_fat", w, fat, ORBIT_FAT_HU)
        nerve = np.abs(p.grid.u[w] - uo + side * 0.35 * (p.grid.v[w] - vg)) < max(1.6, spacing)
        p.put("optic_nerve", w, fat & nerve & (p.grid.v[w] > vg), MUSCLE_HU - 10.0)
        if g > 0.2:
            p.put("globe", w, _ell(p.grid, w, uo, vg, 11.5 * g, 11.5 * g), GLOBE_HU, in_head=True)
            if abs(t - 0.075) < 0.025:
                p.put("lens", w, _ell(p.grid, w, uo, vg - 8.5 * g, 4.5, max(1.8, spacing)), LENS_HU,
                      in_head=True)
    w = p.grid.window(0.0, vg + 10.0, 26.0)  # ethmoid cells and nasal septum between orbits
    box = (np.abs(p.grid.u[w]) < 0.45 * ru - 16.0) & (np.abs(p.grid.v[w] - vg - 10.0) < 22.0)
    p.put("bone", w, box, 600.0)
    septum = np.abs(p.grid.u[w]) <= max(1.0, spacing)
    p.put("air_cells", w, box & _cells(p.grid, w, 4.5) & ~septum, AIR_HU)
    # In front of the middle cranial fossa: orbital walls and temporal muscle, not brain. The
    # greater wings of the sphenoid run from the lateral orbit back toward the sphenoid sinus.
    w = p.grid.window(0.0, -front + 14.0, ru + 10.0)
    au = np.abs(p.grid.u[w])
    wing = vg + 26.0 - 18.0 * np.clip((au - 14.0) / max(ru - 14.0, 1.0), 0.0, 1.0)
    face = p.grid.v[w] < wing
    # zygoma, orbital walls and sphenoid wings: mostly bone, with the temporal muscle laterally
    rest = face & ~p.excluded[w]
    p.put("bone", w, rest & (au < 0.8 * ru), 650.0)
    p.put("muscle", w, rest & (au >= 0.8 * ru), MUSCLE_HU)
    p.put("bone", w, (p.grid.v[w] >= wing) & (p.grid.v[w] < wing + max(4.0, 2 * spacing))
          & (au > 12.0), 900.0)


def _midline_base(p: _Painter, a: Anatomy, t: float, spacing: float) -> None:
    """Sphenoid sinus, clivus, sella and dorsum sellae (t < 0.27)."""
    grid = p.grid
    if 0.02 <= t <= 0.2:
        w = grid.window(0.0, -30.0, 18.0)
        outer = _ell(grid, w, 0.0, -30.0, 14.0, 11.0)
        air = _ell(grid, w, 0.0, -30.0, 12.0, 9.0) & (np.abs(grid.u[w]) > max(0.8, spacing))
        p.put("bone", w, outer, 900.0)
        p.put("air_cells", w, air, AIR_HU)
    if t <= 0.19:  # clivus (basiocciput), dense like the petrous bone
        w = grid.window(0.0, -13.0, 12.0)
        p.put("petrous_clivus", w, _ell(grid, w, 0.0, -13.0, 8.0, 6.5), a.petrous_hu)
    if 0.19 < t <= 0.27:  # sella: pituitary fossa ringed by the dorsum and clinoids
        w = grid.window(0.0, -16.0, 12.0)
        ring = _ell(grid, w, 0.0, -16.0, 8.0, 7.0)
        pit = _ell(grid, w, 0.0, -16.0, 6.0, 5.0)
        p.put("bone", w, ring & ~pit, 800.0)
        p.put("pituitary", w, pit, 40.0)


def _petrous(p: _Painter, a: Anatomy, t: float, spacing: float, f: float) -> None:
    """Petrous ridges running postero-laterally, mastoid air cells at their ends."""
    grid = p.grid
    for side in (-1.0, 1.0):
        w = grid.window(side * 30.0, 18.0, 30.0)
        au, v = side * grid.u[w], grid.v[w]
        along = (au - 8.0) * 0.8 + (v + 2.0) * 0.6
        across = -(au - 8.0) * 0.6 + (v + 2.0) * 0.8
        width = np.maximum((1.5 + 6.0 * f) * (0.5 + 0.02 * along), spacing)
        ridge = (np.abs(across) < width) & (along > 0) & (along < 42.0)
        p.put("petrous_clivus", w, ridge, a.petrous_hu)
        if t <= 0.15:
            mastoid = ((au - 44.0) / 9.0) ** 2 + ((v - 20.0) / 10.0) ** 2 < 1.0
            p.put("bone", w, mastoid, 700.0)
            p.put("air_cells", w, mastoid & _cells(grid, w, 3.5), AIR_HU)


def _posterior_fossa(p: _Painter, a: Anatomy, t: float, vents: np.ndarray,
                     spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Cerebellum with folia, pons/medulla, prepontine cistern and basilar artery, 4th ventricle.

    Returns (posterior fossa mask, cistern CSF mask), full size.
    """
    grid = p.grid
    fossa = np.zeros_like(p.cavity)
    cistern = np.zeros_like(p.cavity)
    w = grid.box(0.0, 38.0, 65.0, 43.0)
    u, v = grid.u[w], grid.v[w]
    top = 1.0 - t / 0.28  # the tentorium closes the fossa toward t = 0.28
    inside = (v > -4.0 + 0.55 * np.abs(u) + 30.0 * (1.0 - top) ** 2) & p.cavity[w] & ~p.excluded[w]
    fossa[w] = inside
    hu, labels, ids = p.hu[w], p.labels[w], STRUCTURES.index
    # Folia: fine, faint white-matter leaves (barely visible at 5 mm, as on real scans).
    cereb = inside & ~vents[w]
    cu, cv = u[cereb], v[cereb]
    folia = np.cos(np.hypot(cu, cv - 20.0) * (2 * np.pi / 2.6) + 0.8 * np.sin(cu / 6.0)) > 0.8
    hu[cereb] = np.where(folia, np.float32(a.grey_hu - 4.0), np.float32(a.grey_hu - 1.0))
    labels[cereb] = ids("cerebellum")
    size = 1.0 if t > 0.1 else 0.7  # pons above, medulla below
    free = p.cavity[w] & ~p.excluded[w]
    stem = ((u / (14.0 * size)) ** 2 + ((v - 7.0) / (11.0 * size)) ** 2 < 1.0) & free
    pre = ((u / (17.0 * size)) ** 2 + ((v - 6.0) / (13.5 * size)) ** 2 < 1.0) & free
    pre &= ~stem & (v < 7.0)
    basilar = np.zeros_like(pre)  # inside the cistern only: hypot on its pixels alone
    basilar[pre] = np.hypot(u[pre], v[pre] + 5.0 * size) < max(1.8, spacing)
    pre &= ~basilar
    hu[pre], labels[pre] = CSF_HU, ids("cistern")
    stem &= ~vents[w]
    hu[stem], labels[stem] = PONS_HU, ids("brainstem")
    hu[basilar], labels[basilar] = 45.0, ids("artery")
    cistern[w] = pre
    if t < 0.12:  # cisterna magna behind the cerebellum
        magna = (u / 7.0) ** 2 + ((v - 0.9 * v[inside].max(initial=60.0)) / 6.0) ** 2 < 1.0
        magna &= inside
        hu[magna], labels[magna] = CSF_HU, ids("cistern")
        cistern[w] |= magna
    fossa[w] |= stem | basilar
    labels[vents[w] & inside] = ids("ventricle")
    return fossa, cistern


def _below_base(p: _Painter, a: Anatomy, t: float, front: float, ru: float) -> None:
    """Slices below the skull base (t < 0), where real series often start: face and upper neck.

    No brain is left: maxillary sinuses and the nasal cavity in front (air behind thin bony
    walls, turbinates), the mandible and teeth lower down, an upper cervical vertebra with the
    spinal canal behind, neck muscles with fat planes, and a few small dense fragments
    (styloid, hyoid, vessel calcification) where a patient's anatomy puts them. Everything
    bright here is normal: a model that reads bright as blood must learn otherwise.
    """
    grid, cavity = p.grid, p.cavity
    d = min(-t / 0.12, 1.0)  # 0 at the skull base .. 1 at the second vertebra
    w = grid.window(0.0, 0.0, max(front, a.semi_u, a.semi_v * (1.0 + a.egg)) + 4.0)  # all of it
    u, v = grid.u[w], grid.v[w]
    fat_planes = np.cos(u * 0.45 + 2.0 * np.sin(v * 0.21)) > 0.93
    p.put("muscle", w, np.ones_like(u, dtype=bool), MUSCLE_HU)
    p.put("other", w, fat_planes, -95.0)
    rng = np.random.default_rng([int(a.semi_u * 100), int(a.semi_v * 100), round(-t * 400)])
    if d < 0.75:  # maxillary sinuses beside the nasal cavity and its turbinates
        for side in (-1.0, 1.0):
            wall = _ell(grid, w, side * 0.3 * ru, -0.55 * front, 0.2 * ru + 2.0, 0.28 * front + 2.0)
            air = _ell(grid, w, side * 0.3 * ru, -0.55 * front, 0.2 * ru, 0.28 * front)
            p.put("bone", w, wall, 550.0)
            p.put("air_cells", w, air, AIR_HU)
        nasal = (np.abs(u) < 0.1 * ru + 3.0) & (v < -0.25 * front)
        p.put("air_cells", w, nasal, AIR_HU)
        turbinate = nasal & (np.cos(v * 0.6) > 0.55) & (np.abs(u) > 1.5)
        p.put("muscle", w, turbinate, 30.0)
        p.put("bone", w, nasal & (np.abs(u) <= max(1.0, grid.spacing)), 400.0)
    if d > 0.45:  # mandible (a U of dense cortex) with teeth, across the front of the face
        w2 = grid.window(0.0, -0.5 * front, max(front, ru) + 8.0)
        u2, v2 = grid.u[w2], grid.v[w2]
        r = np.hypot(u2, (v2 + 0.2 * front) * 1.2)
        arc = (r < 0.8 * ru) & (r > 0.8 * ru - 7.0) & (v2 < -0.2 * front)
        p.put("bone", w2, arc, 1400.0, in_head=True)
        if d < 0.85:
            teeth = arc & (np.cos(np.arctan2(u2, -v2) * 14.0) > 0.3)
            p.put("bone", w2, teeth, 2500.0, in_head=True)
    # Upper cervical vertebra: body and ring of cortex, marrow, spinal canal with the cord.
    vc = 0.15 * front + 4.0
    p.put("bone", w, _ell(grid, w, 0.0, vc, 13.0, 9.0), 850.0)
    p.put("other", w, _ell(grid, w, 0.0, vc, 11.0, 7.0), 240.0)
    ring = _ell(grid, w, 0.0, vc + 17.0, 15.0, 11.0)
    canal = _ell(grid, w, 0.0, vc + 17.0, 10.0, 8.0)
    p.put("bone", w, ring & ~canal, 700.0)
    p.put("cistern", w, canal, CSF_HU)
    p.put("brainstem", w, _ell(grid, w, 0.0, vc + 17.0, 5.0, 4.0), PONS_HU)
    for _ in range(int(rng.integers(0, 4))):  # small dense fragments, here or not
        uc, vc2 = rng.uniform(-0.6, 0.6) * ru, rng.uniform(-0.5, 0.6) * front
        p.put("bone", w, _ell(grid, w, uc, vc2, rng.uniform(1.5, 4.0), rng.uniform(1.5, 6.0)),
              float(rng.uniform(200.0, 900.0)))
    p.excluded |= cavity


def paint_skull_base(hu: np.ndarray, labels: np.ndarray, grid: StudyGrid, anat: Anatomy, t: float,
                     cavity: np.ndarray, front: float, vents: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paint the skull base into ``hu`` inside the cranial ``cavity`` (below t = 0.3).

    Args:
        hu: Slice to paint (modified in place).
        labels: Structure label map (indices into ``STRUCTURES``, modified in place).
        grid: Study coordinates.
        anat: The patient's anatomy (``ich.phantom.anatomy.Anatomy``).
        t: Height fraction.
        cavity: Pixels inside the inner table.
        front: Inner-table radius (mm) toward the front on this slice.
        vents: Ventricular CSF (kept as CSF inside the posterior fossa).

    Returns:
        (excluded, posterior_fossa, cistern): pixels that are no longer brain (bone, air,
        orbit, sinus), the cerebellum + brainstem, and basal-cistern CSF where SAH may go.
    """
    f = (0.3 - t) / 0.3
    spacing = grid.spacing
    p = _Painter(hu, labels, grid, cavity)
    ru = anat.semi_u * 0.8
    if t < 0.0:
        _below_base(p, anat, t, front, ru)
        return p.excluded, np.zeros_like(cavity), np.zeros_like(cavity)
    if t < 0.17:
        _orbits(p, t, front, ru, spacing)
    elif t < 0.3:  # orbital roofs: two domes of bone rising from the front, crista between
        roof = 8.0 + 32.0 * f
        w = grid.window(0.0, -front, front)
        bone = _ell(grid, w, -22.0, -front, 22.0, roof) | _ell(grid, w, 22.0, -front, 22.0, roof)
        bone |= (np.abs(grid.u[w]) < 2.0 + 2.0 * f) & (grid.v[w] < -front + 0.6 * roof)
        p.put("bone", w, bone, anat.table_hu)
    _midline_base(p, anat, t, spacing)
    if 0.03 <= t <= 0.24:
        _petrous(p, anat, t, spacing, f)
    fossa = np.zeros_like(cavity)
    cistern = np.zeros_like(cavity)
    if t < 0.28:
        fossa, cistern = _posterior_fossa(p, anat, t, vents, spacing)
    return p.excluded, fossa & ~p.excluded, cistern & ~p.excluded
