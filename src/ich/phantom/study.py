"""Render one phantom study: anatomy + lesions + noise per slice, written as DICOM and masks.

Runs in a worker process when ``generate_cohort(workers > 1)``: it takes a picklable
:class:`StudyPlan`, writes its files, and returns one :class:`SliceRecord` per slice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ich.atomic import atomic_write_bytes
from ich.labels import SUBTYPES
from ich.phantom.anatomy import (
    Anatomy,
    StudyGrid,
    make_grid,
    paint_headrest,
    render_anatomy,
    sample_anatomy,
)
from ich.phantom.dicom_writer import SliceHeader, Storage, write_slice
from ich.phantom.files import masks_npz_bytes
from ich.phantom.lesions import Lesion, sample_lesions

#: Smallest blood area (mm²) that makes a slice positive; smaller cuts are not drawn at all,
#: so labels and masks always agree.
MIN_BLOOD_AREA_MM2 = 6.0
#: Fraction of slices of a 12-bit study that carry the RSNA wrap fault (~2 % of all files).
WRAP_FAULT_RATE = 0.04


@dataclass(frozen=True)
class StudyPlan:
    """Everything decided about a study before rendering (picklable for worker processes)."""

    index: int
    seed: int
    patient_index: int
    patient_id: str
    study_instance_uid: str
    series_instance_uid: str
    image_ids: tuple[str, ...]
    size: int
    scale: float
    bleed: bool


@dataclass(frozen=True)
class SliceRecord:
    """One written slice: identifiers, position in the series and its six labels."""

    image_id: str
    patient_id: str
    study_instance_uid: str
    series_instance_uid: str
    slice_index: int
    labels: tuple[int, ...]
    wrap_fault: bool


@dataclass(frozen=True)
class _Scan:
    """Per-study acquisition choices (scanner, storage, geometry)."""

    storage: Storage
    explicit_vr: bool
    multi_window: bool
    noise: float
    tilt: float
    z_start: float
    t_range: tuple[float, float]
    instance_order: str


def _sample_scan(rng: np.random.Generator) -> _Scan:
    """Scanner-like choices: half the studies 12-bit/Implicit VR, half 16-bit/Explicit VR."""
    twelve = bool(rng.random() < 0.5)
    order = str(rng.choice(["ascending", "descending", "shuffled"], p=[0.7, 0.2, 0.1]))
    return _Scan(
        storage="uint12" if twelve else "int16",
        explicit_vr=not twelve,
        multi_window=twelve,
        noise=float(rng.uniform(5.0, 6.0)),
        tilt=float(rng.uniform(0.05, 0.3)) if rng.random() < 0.4 else 0.0,
        z_start=float(rng.uniform(-60.0, 160.0)),
        t_range=(float(rng.uniform(0.0, 0.05)), float(rng.uniform(0.95, 1.0))),
        instance_order=order,
    )


def _noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian noise with std ``sigma`` and a grain of about a millimetre, as CT noise has.

    White noise is smoothed by repeated 3x3 box filters, more passes for larger images, so the
    grain keeps roughly its physical size instead of shrinking to single pixels at 512 px.
    """
    out = rng.standard_normal(shape, dtype=np.float32)
    for _ in range(1 + int(shape[0] > 128) + int(shape[0] > 256)):
        out = out + np.roll(out, 1, axis=0) + np.roll(out, -1, axis=0)
        out = out + np.roll(out, 1, axis=1) + np.roll(out, -1, axis=1)
    out *= np.float32(sigma / max(float(out.std()), 1e-6))
    return out


def _instance_numbers(rng: np.random.Generator, n: int, order: str) -> np.ndarray:
    """(0020,0013) Instance Number per slice index: not always in position order."""
    if order == "descending":
        return np.arange(n, 0, -1)
    if order == "shuffled":
        return rng.permutation(n) + 1
    return np.arange(1, n + 1)


def _render_slice(
    grid: StudyGrid, anat: Anatomy, lesions: list[Lesion], t: float, rng: np.random.Generator,
    scan: _Scan, noise_bank: list[np.ndarray],
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """HU image and subtype masks of the slice at height fraction ``t``."""
    sa = render_anatomy(grid, anat, t)
    hu = sa.hu
    z = t * anat.height
    min_px = max(2, round(MIN_BLOOD_AREA_MM2 / grid.spacing**2))
    masks: dict[str, np.ndarray] = {}
    blood = np.zeros(hu.shape, dtype=bool)  # edema never covers blood drawn before it
    for lesion in lesions:
        mask = lesion.mask(grid, sa, z)
        if mask is None or int(mask.sum()) < min_px:
            continue
        rim = lesion.rim(grid, sa, z)
        if rim is not None:
            hu[rim & ~mask & ~blood & ~sa.sulcal_csf] = anat.white_hu - 10.0
        hu[mask] = lesion.hu
        blood |= mask
        masks[lesion.subtype] = masks[lesion.subtype] | mask if lesion.subtype in masks else mask
    paint_headrest(hu, grid)
    # Shifted copies of a few noise fields per study: as random-looking, far cheaper to draw.
    field = noise_bank[int(rng.integers(len(noise_bank)))]
    shift = (int(rng.integers(hu.shape[0])), int(rng.integers(hu.shape[1])))
    sign = np.float32(1.0 if rng.random() < 0.5 else -1.0)
    hu += sign * np.roll(field, shift, axis=(0, 1))
    hu[~grid.fov] = -5000.0  # outside the reconstruction circle: the storage's minimum
    return hu, masks


def render_study(plan: StudyPlan, out: Path) -> list[SliceRecord]:
    """Render and write every slice of one study; return their records in slice order."""
    anat = sample_anatomy(np.random.default_rng([plan.seed, 1, plan.patient_index]))
    rng = np.random.default_rng([plan.seed, 2, plan.index])
    spacing = 250.0 / plan.size * float(rng.uniform(0.92, 1.0))
    length = anat.semi_v * (1.03 + anat.egg)  # posterior half-length, the larger one
    spacing = max(spacing, (2.0 * length + 24.0) / plan.size)  # the scanner's FOV fits the head
    half = plan.size * spacing / 2.0  # room below the head for the headrest:
    center_y = float(np.clip(rng.normal(-10.0, 4.0), -half + length + 4, half - length - 16))
    center = (float(rng.normal(0.0, 4.0)), center_y)
    angle = float(np.clip(rng.normal(0, 0.1), -0.25, 0.25))
    grid = make_grid(plan.size, spacing, anat, center, angle, float(rng.uniform(6.0, 20.0)))
    scan = _sample_scan(rng)
    lesions = sample_lesions(rng, anat.height, plan.scale, plan.bleed)
    n = len(plan.image_ids)
    t0, t1 = scan.t_range
    step = anat.height * (t1 - t0) / n
    instances = _instance_numbers(rng, n, scan.instance_order)
    noise_bank = [_noise(rng, (plan.size, plan.size), scan.noise) for _ in range(3)]
    half_fov = plan.size * spacing / 2
    normal = (0.0, float(np.sin(scan.tilt)), float(np.cos(scan.tilt)))
    records = []
    for k, image_id in enumerate(plan.image_ids):
        t = t0 + (k + 0.5) / n * (t1 - t0)
        hu, masks = _render_slice(grid, anat, lesions, t, rng, scan, noise_bank)
        wrap = scan.storage == "uint12" and bool(rng.random() < WRAP_FAULT_RATE)
        header = SliceHeader(
            sop_instance_uid=image_id, patient_id=plan.patient_id,
            study_instance_uid=plan.study_instance_uid,
            series_instance_uid=plan.series_instance_uid, instance_number=int(instances[k]),
            image_position_patient=(-half_fov, -half_fov + k * step * normal[1],
                                    scan.z_start + k * step * normal[2]),
            image_orientation_patient=(1.0, 0.0, 0.0, 0.0, normal[2], -normal[1]),
            pixel_spacing=spacing, slice_thickness=round(step, 1),
            storage="uint12_wrap" if wrap else scan.storage,
            explicit_vr=scan.explicit_vr, multi_valued_window=scan.multi_window,
        )
        write_slice(out / "images" / f"{image_id}.dcm", hu, header)
        if masks:
            atomic_write_bytes(out / "masks" / f"{image_id}.npz", masks_npz_bytes(masks))
        present = [int(s in masks) for s in SUBTYPES]
        records.append(SliceRecord(image_id, plan.patient_id, plan.study_instance_uid,
                                   plan.series_instance_uid, k, (int(any(present)), *present),
                                   wrap))
    return records
