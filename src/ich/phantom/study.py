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
from ich.phantom.acquisition import (
    Acquisition,
    beam_hardening,
    motion_blur,
    noise_field,
    partial_volume,
    point_spread,
    sample_acquisition,
)
from ich.phantom.anatomy import (
    Anatomy,
    make_grid,
    obliquity,
    paint_headrest,
    render_anatomy,
    sample_anatomy,
)
from ich.phantom.dicom_writer import SliceHeader, Storage, write_slice
from ich.phantom.extracranial import ScalpLesion, paint_scalp, sample_scalp
from ich.phantom.files import masks_npz_bytes
from ich.phantom.grid import StudyGrid, flat_view
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
    """Per-study storage and geometry choices (the image-side ones are in ``Acquisition``)."""

    storage: Storage
    explicit_vr: bool
    multi_window: bool
    tilt: float
    z_start: float
    t_range: tuple[float, float]
    instance_order: str


def _sample_scan(rng: np.random.Generator) -> _Scan:
    """Scanner-like choices: half the studies 12-bit/Implicit VR, half 16-bit/Explicit VR.

    40 % of the studies use a gantry tilt of 3-25 degrees, which shows in (0020,0037) Image
    Orientation (Patient) and moves (0020,0032) Image Position (Patient) along y.
    """
    twelve = bool(rng.random() < 0.5)
    order = str(rng.choice(["ascending", "descending", "shuffled"], p=[0.7, 0.2, 0.1]))
    return _Scan(
        storage="uint12" if twelve else "int16",
        explicit_vr=not twelve,
        multi_window=twelve,
        tilt=float(np.radians(rng.uniform(3.0, 25.0))) if rng.random() < 0.4 else 0.0,
        z_start=float(rng.uniform(-60.0, 160.0)),
        # Real series often start in the face or upper neck and end in a tangential cut
        # through the skull cap, or above the head (air and the headrest only): no brain, no
        # bleed, yet bright normal structures or nothing at all.
        t_range=(float(rng.uniform(-0.12, 0.05)), float(rng.uniform(0.95, 1.1))),
        instance_order=order,
    )


def _instance_numbers(rng: np.random.Generator, n: int, order: str) -> np.ndarray:
    """(0020,0013) Instance Number per slice index: not always in position order."""
    if order == "descending":
        return np.arange(n, 0, -1)
    if order == "shuffled":
        return rng.permutation(n) + 1
    return np.arange(1, n + 1)


@dataclass(frozen=True)
class _Scene:
    """What a study's slices share: patient, coordinates, lesions and scanner."""

    grid: StudyGrid
    anat: Anatomy
    lesions: list[Lesion]
    scalp: ScalpLesion | None
    acq: Acquisition
    noise_bank: list[np.ndarray]


def _mass_effect(scene: _Scene, z: float) -> tuple[float, np.ndarray | None]:
    """Midline shift (mm) on the slice at ``z`` and the pixels whose sulci are effaced."""
    shift = sum(lesion.shift(z) for lesion in scene.lesions)
    if abs(shift) < 1.0:
        return 0.0, None
    return shift, (scene.grid.u * np.float32(-np.sign(shift))) > 0  # the lesion's side


def _fracture(hu: np.ndarray, scene: _Scene, lesion: Lesion, depth_in: np.ndarray) -> None:
    """A thin lucent line through the skull beside an epidural bleed."""
    grid = scene.grid
    angle = np.abs((grid.theta - lesion.theta0 - 0.12 + np.pi) % (2 * np.pi) - np.pi)
    line = (angle * grid.rho < max(0.6, 0.8 * grid.spacing)) & (depth_in < 0.0)
    hu[line & (depth_in > -(scene.anat.skull * 1.6)) & (hu > 300)] = 40.0


def _add_rolled(hu: np.ndarray, field: np.ndarray, shift: tuple[int, int], negate: bool
                ) -> None:
    """``hu += ±np.roll(field, shift, axis=(0, 1))`` without building the rolled copy.

    The four blocks of the rolled field are added in place; adding ``-x`` and subtracting
    ``x`` round the same, so the result is bit-identical to the one-liner.
    """
    op = np.subtract if negate else np.add
    size_r, size_c = field.shape
    r, c = shift[0] % size_r, shift[1] % size_c
    for dst_r, src_r in ((slice(r, None), slice(0, size_r - r)),
                         (slice(0, r), slice(size_r - r, None))):
        for dst_c, src_c in ((slice(c, None), slice(0, size_c - c)),
                             (slice(0, c), slice(size_c - c, None))):
            block = hu[dst_r, dst_c]
            op(block, field[src_r, src_c], out=block)


def _render_slice(scene: _Scene, t: float, rng: np.random.Generator, moving: bool
                  ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """HU image and subtype masks of the slice at height fraction ``t``."""
    grid, anat, acq = scene.grid, scene.anat, scene.acq
    z = t * anat.height
    shift, effaced = _mass_effect(scene, z)
    sa = render_anatomy(grid, anat, t, shift, effaced)
    hu = sa.hu
    min_px = max(2, round(MIN_BLOOD_AREA_MM2 / grid.spacing**2))
    masks: dict[str, np.ndarray] = {}
    blood = np.zeros(hu.shape, dtype=bool)  # edema never covers blood drawn before it
    for lesion in scene.lesions:
        mask = lesion.mask(grid, sa, z)
        if mask is None:
            continue
        mask = mask & ~sa.dense  # normal dense structures stay visible and unlabelled
        if int(mask.sum()) < min_px:
            continue
        rim = lesion.rim(grid, sa, z)
        if rim is not None:
            hu[rim & ~mask & ~blood & ~sa.sulcal_csf & ~sa.dense] = anat.white_hu - 10.0
        if lesion.fracture:
            _fracture(hu, scene, lesion, sa.depth_in)
        lesion.paint(hu, mask, grid)
        blood |= mask
        masks[lesion.subtype] = masks[lesion.subtype] | mask if lesion.subtype in masks else mask
    if scene.scalp is not None and abs(z - scene.scalp.z0) < scene.scalp.half_z:
        paint_scalp(hu, grid, scene.scalp, z, sa.depth_in + np.float32(anat.scalp + anat.skull))
    beam_hardening(hu, grid, t, sa.brain, sa.depth_in, acq)
    partial_volume(hu, sa.brain, sa.depth_in, t, obliquity(anat, t), acq)
    hu = point_spread(hu)
    paint_headrest(hu, grid)
    if moving:
        hu = motion_blur(hu, grid.spacing, rng)
    # Shifted copies of a few noise fields per study: as random-looking, far cheaper to draw.
    field = scene.noise_bank[int(rng.integers(len(scene.noise_bank)))]
    shift_px = (int(rng.integers(hu.shape[0])), int(rng.integers(hu.shape[1])))
    sign = np.float32(1.0 if rng.random() < 0.5 else -1.0)
    _add_rolled(hu, field, shift_px, negate=bool(sign < 0))
    if sa.posterior_fossa.any():  # the petrous bones starve the beam: noisier there
        index = np.flatnonzero(sa.posterior_fossa)
        size_r, size_c = field.shape
        rows, cols = np.divmod(index, size_c)
        noise = field[(rows - shift_px[0]) % size_r, (cols - shift_px[1]) % size_c]
        flat_view(hu)[index] += sign * np.float32(acq.fossa_gain - 1.0) * noise
    hu.reshape(-1)[grid.outside] = -5000.0  # outside the reconstruction circle: storage minimum
    return hu, masks


def _scene(plan: StudyPlan, rng: np.random.Generator) -> tuple[_Scene, _Scan]:
    """Draw the study: patient anatomy, head placement, field of view, lesions, scanner."""
    anat = sample_anatomy(np.random.default_rng([plan.seed, 1, plan.patient_index]))
    spacing = float(rng.uniform(210.0, 260.0)) / plan.size  # field of view 210-260 mm
    length = anat.semi_v * (1.03 + anat.egg)  # posterior half-length, the larger one
    center_x = float(rng.normal(0.0, 4.0))
    width = anat.semi_u * 1.1 + 15.0 + abs(center_x)  # room for a scalp hematoma beside it
    # The scanner's field of view fits the head, with air on either side.
    spacing = max(spacing, (2.0 * length + 24.0) / plan.size, (2.0 * width + 24.0) / plan.size)
    half = plan.size * spacing / 2.0  # room below the head for the headrest:
    center_y = float(np.clip(rng.normal(-10.0, 4.0), -half + length + 4, half - length - 16))
    center = (center_x, center_y)
    angle = float(np.clip(rng.normal(0, 0.1), -0.25, 0.25))
    grid = make_grid(plan.size, spacing, anat, center, angle, float(rng.uniform(6.0, 20.0)))
    scan = _sample_scan(rng)
    lesions = sample_lesions(rng, anat.height, plan.scale, plan.bleed)
    scalp = sample_scalp(rng, anat.height, bool(lesions))
    acq = sample_acquisition(rng)
    bank = [noise_field(rng, plan.size, spacing, acq) for _ in range(2)]
    return _Scene(grid, anat, lesions, scalp, acq, bank), scan


def render_study(plan: StudyPlan, out: Path) -> list[SliceRecord]:
    """Render and write every slice of one study; return their records in slice order."""
    rng = np.random.default_rng([plan.seed, 2, plan.index])
    scene, scan = _scene(plan, rng)
    anat, spacing = scene.anat, scene.grid.spacing
    n = len(plan.image_ids)
    t0, t1 = scan.t_range
    step = anat.height * (t1 - t0) / n
    instances = _instance_numbers(rng, n, scan.instance_order)
    half_fov = plan.size * spacing / 2
    normal = (0.0, float(np.sin(scan.tilt)), float(np.cos(scan.tilt)))
    records = []
    for k, image_id in enumerate(plan.image_ids):
        t = t0 + (k + 0.5) / n * (t1 - t0)
        moving = scene.acq.motion[0] <= t < scene.acq.motion[1]
        hu, masks = _render_slice(scene, t, rng, moving)
        wrap = scan.storage == "uint12" and bool(rng.random() < WRAP_FAULT_RATE)
        header = SliceHeader(
            sop_instance_uid=image_id, patient_id=plan.patient_id,
            study_instance_uid=plan.study_instance_uid,
            series_instance_uid=plan.series_instance_uid, instance_number=int(instances[k]),
            image_position_patient=(-half_fov, -half_fov + k * step * normal[1],
                                    scan.z_start + k * step * normal[2]),
            image_orientation_patient=(1.0, 0.0, 0.0, 0.0, normal[2], -normal[1]),
            pixel_spacing=spacing, slice_thickness=scene.acq.thickness,
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
