"""Hemorrhage of the five RSNA subtypes as 3-D shapes, cut into per-slice masks.

Each lesion lives in the head frame of :mod:`ich.phantom.anatomy` and along the study's height
``z`` (mm from the skull base), so it extends over neighbouring slices with a plausible shape:
a lens against the inner table beside a fracture (epidural), a long crescent that may be acute,
chronic (hypodense) or mixed (subdural), blood in sulci, Sylvian fissures and basal cisterns
(subarachnoid), a rounded blob with an edema rim (intraparenchymal) and a fluid level in the
dependent occipital horns (intraventricular). Large bleeds show a hematocrit level and push the
midline away (mass effect); some lesions are small enough to show on one or two slices only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ich.phantom.anatomy import SliceAnatomy, StudyGrid

#: Per-study probability of a bleed and, given one, of each subtype; extents are in units of the
#: head height. Calibrated so per-slice rates land near RSNA stage 2 (DESIGN.md).
BLEED_PROBABILITY = 0.44
SUBTYPE_PROBABILITY: dict[str, float] = {
    "epidural": 0.09,
    "intraparenchymal": 0.57,
    "intraventricular": 0.42,
    "subarachnoid": 0.52,
    "subdural": 0.34,
}
#: Share of sulcal subarachnoid bleeds that also fill the cisterns and fissures near the centre;
#: the others are convexity blood alone (common after trauma), which a model must then learn to
#: see by itself rather than beside the cisternal blood it usually comes with.
CENTRAL_SAH = 0.5
#: The RSNA per-slice rate of "any" (14.4 %) that the numbers above reproduce.
RSNA_ANY_RATE = 0.144


def bleeding_studies(rng: np.random.Generator, studies: int, scale: float) -> np.ndarray:
    """Which studies bleed: as close to the expected count as possible, in random order.

    Drawing each study independently makes the rate of a 20-study cohort swing widely; fixing the
    count (rounded at random to keep the expectation) keeps small cohorts near the target.
    """
    expected = min(BLEED_PROBABILITY * scale, 1.0) * studies
    count = int(expected) + int(rng.random() < expected - int(expected))
    flags = np.zeros(studies, dtype=bool)
    flags[rng.permutation(studies)[:count]] = True
    return flags


def _wrap(angle: np.ndarray | float) -> np.ndarray:
    """Angle difference wrapped to [-pi, pi)."""
    return np.asarray((np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi)


@dataclass(frozen=True)
class Lesion:
    """One hemorrhage: its subtype, where it sits, and how dense it is.

    Attributes:
        subtype: one of ``ich.labels.SUBTYPES``.
        z0, half_z: centre and half extent along the study height (mm).
        theta0, half_theta: centre and half span of the polar angle (head frame, rad).
        size: subtype-specific size (mm): maximal thickness, or in-plane radius.
        hu: mean density of the blood (50-90 HU when acute, 0-25 when chronic).
        extra: subtype-specific parameters (centre of a blob, fill fraction...).
        layer: fraction of the lesion (from the dependent side) that settles as a denser
            hematocrit layer; 0 for none.
        layer_hu: density of that layer.
        mass: midline shift (mm) the lesion causes at its largest cut.
        fracture: an epidural bleed beside a skull fracture.
    """

    subtype: str
    z0: float
    half_z: float
    theta0: float
    half_theta: float
    size: float
    hu: float
    extra: tuple[float, ...] = ()
    layer: float = 0.0
    layer_hu: float = 0.0
    mass: float = 0.0
    fracture: bool = False

    def shift(self, z: float) -> float:
        """Midline shift (mm, + toward +u) this lesion causes on the slice at height ``z``."""
        dz = (z - self.z0) / self.half_z
        if not self.mass or abs(dz) >= 1.0:
            return 0.0
        side = self.extra[0] if self.subtype == "intraparenchymal" else np.cos(self.theta0)
        return float(-np.sign(side) * self.mass * np.sqrt(1.0 - dz**2))

    def paint(self, hu: np.ndarray, mask: np.ndarray, grid: StudyGrid) -> None:
        """Write the blood's HU under ``mask``, with a dependent hematocrit layer if any."""
        hu[mask] = self.hu
        if self.layer > 0:
            y = grid.y_mm[mask]
            level = y.max() - self.layer * (y.max() - y.min())
            dependent = mask & (grid.y_mm >= np.float32(level))
            hu[dependent] = self.layer_hu

    def mask(self, grid: StudyGrid, anat: SliceAnatomy, z: float) -> np.ndarray | None:
        """Boolean (H, W) mask of this lesion on the slice at height ``z``, or None."""
        dz = (z - self.z0) / self.half_z
        if abs(dz) >= 1.0:
            return None
        if self.subtype in ("epidural", "subdural"):
            return self._extra_axial(grid, anat, dz)
        if self.subtype == "intraparenchymal":
            return self._blob(grid, anat, dz, 1.0)
        if self.subtype == "intraventricular":
            return self._layering(grid, anat)
        return self._sulcal(grid, anat)

    def _extra_axial(self, grid: StudyGrid, anat: SliceAnatomy, dz: float) -> np.ndarray:
        """Lens (epidural) or crescent (subdural) against the inner table."""
        # Only the band under the inner table can hold it (thick <= max(size, 1.2 px)):
        # the angular profile is computed there alone, not over the whole frame.
        reach = max(self.size, 1.2 * grid.spacing) * 1.001 + 0.01
        band = np.flatnonzero(anat.brain.ravel() & (anat.depth_in.ravel() < reach))
        du = np.abs(_wrap(grid.theta.ravel()[band] - self.theta0)) / self.half_theta
        if self.subtype == "epidural":  # biconvex: thickness falls off like an ellipse
            thick = self.size * np.sqrt(np.clip(1.0 - du**2 - dz**2, 0.0, None))
        else:  # crescent: nearly constant thickness, tapered ends
            thick = self.size * np.clip(1.0 - du**4 - dz**4, 0.0, None) ** 0.5
        thick = np.where(thick > 0, np.maximum(thick, 1.2 * grid.spacing), 0.0)
        out = np.zeros(grid.u.shape, dtype=bool)
        out.reshape(-1)[band[anat.depth_in.ravel()[band] < thick]] = True
        return out

    def _blob(self, grid: StudyGrid, anat: SliceAnatomy, dz: float, grow: float) -> np.ndarray:
        """Rounded, slightly irregular blob inside the brain (``grow`` > 1 gives the rim)."""
        uc, vc, aspect, p1, p2 = self.extra
        scale = np.sqrt(1.0 - dz**2) * self.size * grow
        w = grid.window(uc, vc, 1.3 * scale * max(aspect, 1.0) + grid.spacing)
        du, dv = grid.u[w] - np.float32(uc), (grid.v[w] - np.float32(vc)) / np.float32(aspect)
        angle = np.arctan2(dv, du)
        bumpy = scale * (1.0 + 0.15 * np.cos(2 * angle + p1) + 0.1 * np.cos(3 * angle + p2))
        out = np.zeros(grid.u.shape, dtype=bool)
        out[w] = np.hypot(du, dv) < np.maximum(bumpy, 0.6 * grid.spacing)
        return out & anat.deep & ~anat.ventricles

    def rim(self, grid: StudyGrid, anat: SliceAnatomy, z: float) -> np.ndarray | None:
        """Edema around an intraparenchymal bleed (darker than white matter), or None."""
        dz = (z - self.z0) / self.half_z
        if self.subtype != "intraparenchymal" or abs(dz) >= 1.0:
            return None
        return self._blob(grid, anat, dz, 1.45)

    def _layering(self, grid: StudyGrid, anat: SliceAnatomy) -> np.ndarray:
        """Blood in the dependent (posterior: the patient lies supine) part of the ventricles."""
        (fill,) = self.extra
        vents = anat.ventricles
        rows = np.flatnonzero(vents.any(axis=1))
        if rows.size == 0:
            return vents
        y = grid.y_mm[rows, 0]
        level = y.max() - fill * (y.max() - y.min() + grid.spacing)
        return vents & (grid.y_mm >= np.float32(level))

    def _sulcal(self, grid: StudyGrid, anat: SliceAnatomy) -> np.ndarray:
        """Blood in the sulci, fissures and cisterns of a sector of the brain.

        ``half_theta`` 0 keeps it to the basal cisterns and Sylvian fissures near the centre;
        a convexity bleed (``extra`` = ``(0.0,)``) fills the sulci of its sector only.
        """
        # Evaluated on the sulcal CSF pixels only (a few per cent of the frame).
        csf = np.flatnonzero(anat.sulcal_csf)
        central = self.half_theta == 0.0 or not self.extra or self.extra[0] > 0.0
        keep = np.zeros(csf.size, dtype=bool)
        if central:  # cisterns and fissures near the centre
            keep = grid.rho.ravel()[csf] < 0.45 * anat.brain_radius.ravel()[csf]
        if self.half_theta != 0.0:
            keep |= np.abs(_wrap(grid.theta.ravel()[csf] - self.theta0)) < self.half_theta
        out = np.zeros(grid.u.shape, dtype=bool)
        out.reshape(-1)[csf[keep]] = True
        return out


def _subdural(rng: np.random.Generator, height: float, focus: float, theta: float,
              hu: float) -> Lesion:
    """Acute (60 %), chronic hypodense (22 %) or mixed with a dependent dense layer (18 %)."""
    z0 = height * float(np.clip(focus + rng.normal(0, 0.06), 0.35, 0.75))
    half_z = height * rng.uniform(0.14, 0.3)
    size = float(rng.uniform(4, 11))
    kind = rng.random()
    mass = 0.5 * size if size > 8 else 0.0
    if kind < 0.6:
        return Lesion("subdural", z0, half_z, theta, float(rng.uniform(0.6, 1.3)), size, hu,
                      mass=mass)
    if kind < 0.82:
        return Lesion("subdural", z0, half_z, theta, float(rng.uniform(0.7, 1.3)), size + 3,
                      float(rng.uniform(5, 25)), mass=mass + 2)
    return Lesion("subdural", z0, half_z, theta, float(rng.uniform(0.7, 1.3)), size + 2,
                  float(rng.uniform(22, 35)), layer=float(rng.uniform(0.3, 0.5)),
                  layer_hu=float(rng.uniform(55, 75)), mass=mass + 2)


def _intraparenchymal(rng: np.random.Generator, height: float, focus: float, theta: float,
                      hu: float) -> Lesion:
    """A blob; 30 % small (one or two slices), large ones with mass effect and a fluid level."""
    z0 = height * float(np.clip(focus + rng.normal(0, 0.05), 0.3, 0.8))
    small = rng.random() < 0.3
    radius = float(rng.uniform(3, 6) if small else rng.uniform(6, 22))
    reach = float(rng.uniform(0.15, 0.45)) * 55.0
    extra = (reach * np.cos(theta), reach * np.sin(theta), float(rng.uniform(0.7, 1.4)),
             float(rng.uniform(0, 6.3)), float(rng.uniform(0, 6.3)))
    half_z = float(rng.uniform(3, 6)) if small else max(radius * rng.uniform(1.0, 1.6), 8.0)
    layer = float(rng.uniform(0.3, 0.5)) if radius > 14 and rng.random() < 0.35 else 0.0
    return Lesion("intraparenchymal", z0, half_z, theta, np.pi, radius,
                  hu - 6 if layer else hu, extra, layer=layer, layer_hu=min(hu + 14, 95.0),
                  mass=0.3 * radius if radius > 14 else 0.0)


def _sample_one(rng: np.random.Generator, subtype: str, height: float, focus: float) -> Lesion:
    """Draw one lesion of ``subtype`` near the height fraction ``focus``."""
    theta = float(rng.uniform(-np.pi, np.pi))
    hu = float(rng.uniform(62, 80))
    if subtype == "epidural":
        z0 = height * float(np.clip(focus + rng.normal(0, 0.05), 0.3, 0.75))
        theta = float(rng.choice([0.0, np.pi]) + rng.normal(0, 0.4))  # mostly temporal
        size = float(rng.uniform(9, 18))
        return Lesion(subtype, z0, height * rng.uniform(0.07, 0.12), theta,
                      float(rng.uniform(0.3, 0.5)), size, hu + 4,
                      mass=0.4 * size if size > 12 else 0.0, fracture=rng.random() < 0.8)
    if subtype == "subdural":
        return _subdural(rng, height, focus, theta, hu)
    if subtype == "intraparenchymal":
        return _intraparenchymal(rng, height, focus, theta, hu)
    if subtype == "intraventricular":
        z0 = height * float(rng.uniform(0.42, 0.58))
        fill = 1.0 if rng.random() < 0.25 else float(rng.uniform(0.25, 0.6))
        return Lesion(subtype, z0, height * rng.uniform(0.07, 0.14), 0.0, np.pi, 0.0, hu,
                      (fill,))
    if rng.random() < 0.35:  # basal cisterns and Sylvian fissures
        z0 = height * float(rng.uniform(0.2, 0.34))
        return Lesion(subtype, z0, height * rng.uniform(0.06, 0.12), 0.0, 0.0, 0.0, hu - 4)
    small = rng.random() < 0.2
    z0 = height * float(np.clip(focus + rng.normal(0, 0.05), 0.25, 0.75))
    half_z = float(rng.uniform(3, 6)) if small else height * rng.uniform(0.08, 0.18)
    half_theta = float(rng.uniform(0.5, 1.4))
    central = float(rng.random() < CENTRAL_SAH)  # else convexity blood only, as in trauma
    return Lesion(subtype, z0, half_z, theta, half_theta, 0.0, hu - 4, (central,))


def sample_lesions(rng: np.random.Generator, height: float, scale: float = 1.0,
                   bleed: bool | None = None) -> list[Lesion]:
    """Draw the hemorrhages of one study (often none, sometimes several subtypes together).

    Args:
        rng: The study's generator.
        height: Head height (mm), skull base to vertex.
        scale: Multiplies the bleed probability (``prevalence / 0.144``); above what a single
            probability can give, lesions are made to span more slices instead.
        bleed: Whether the study bleeds, when the cohort plan decided it (so that small cohorts
            get the expected share of positive studies); None draws it here.
    """
    p_bleed = BLEED_PROBABILITY * scale
    if bleed is None:
        bleed = bool(rng.random() < min(p_bleed, 1.0))
    if not bleed:
        return []
    stretch = max(1.0, p_bleed)
    focus = float(rng.uniform(0.35, 0.7))
    subtypes = [s for s, p in SUBTYPE_PROBABILITY.items() if rng.random() < p]
    if not subtypes:
        subtypes = [str(rng.choice(list(SUBTYPE_PROBABILITY)[1:]))]
    lesions = [_sample_one(rng, s, height, focus) for s in subtypes]
    if stretch > 1.0:
        lesions = [replace(x, half_z=x.half_z * stretch) for x in lesions]
    return lesions
