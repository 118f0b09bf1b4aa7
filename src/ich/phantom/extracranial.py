"""Findings outside the skull that are NOT intracranial hemorrhage: scalp hematoma and swelling.

Trauma patients often carry a subgaleal (scalp) hematoma, 50-80 HU like acute blood, or soft
tissue swelling, 20-50 HU. A reader ignores them for the ICH labels, so the phantom draws them
outside the skull and never puts them into a mask or a label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ich.phantom.grid import StudyGrid


@dataclass(frozen=True)
class ScalpLesion:
    """A lens of blood or edema on the outer surface of the head.

    Attributes:
        theta0, half_theta: centre and half span of the polar angle (head frame, rad).
        z0, half_z: centre and half extent along the study height (mm).
        thickness: mm at the centre.
        hu: 50-80 for a hematoma, 20-50 for swelling.
    """

    theta0: float
    half_theta: float
    z0: float
    half_z: float
    thickness: float
    hu: float


def sample_scalp(rng: np.random.Generator, height: float, trauma: bool) -> ScalpLesion | None:
    """A scalp lesion in 8 % of studies, 35 % of those with an intracranial bleed."""
    if rng.random() >= (0.35 if trauma else 0.08):
        return None
    hematoma = rng.random() < 0.6
    return ScalpLesion(
        theta0=float(rng.uniform(-np.pi, np.pi)),
        half_theta=float(rng.uniform(0.25, 0.6)),
        z0=height * float(rng.uniform(0.35, 0.9)),
        half_z=float(rng.uniform(15, 35)),
        thickness=float(rng.uniform(4, 14)),
        hu=float(rng.uniform(50, 80) if hematoma else rng.uniform(22, 45)),
    )


def paint_scalp(hu: np.ndarray, grid: StudyGrid, lesion: ScalpLesion | None, z: float,
                depth: np.ndarray) -> np.ndarray | None:
    """Paint ``lesion`` on the slice at height ``z``; return where it was drawn (or None).

    Args:
        hu: Slice (modified in place); only air pixels are painted.
        grid: Study coordinates.
        lesion: The study's scalp lesion, if any.
        z: Height of the slice (mm from the skull base).
        depth: mm inward from the scalp surface (negative outside the head).
    """
    if lesion is None or abs(z - lesion.z0) >= lesion.half_z:
        return None
    dz = (z - lesion.z0) / lesion.half_z
    dt = np.abs((grid.theta - lesion.theta0 + np.pi) % (2 * np.pi) - np.pi) / lesion.half_theta
    thick = lesion.thickness * np.sqrt(np.clip(1.0 - dt**2 - dz**2, 0.0, None))
    out = (depth < 0) & (-depth < thick) & (hu < -900)
    hu[out] = lesion.hu
    return out
