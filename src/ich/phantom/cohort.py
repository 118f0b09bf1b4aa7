"""Generate a synthetic head-CT cohort in the Kaggle RSNA 2019 layout, with exact masks.

Layout written under ``out``::

    images/ID_<9 hex>.dcm      one file per slice, flat, names unrelated to slice order
    labels.csv                 Kaggle long format ``ID,Label`` (``ID_<image>_<label>``)
    masks/ID_<9 hex>.npz       uint8 masks, one key per subtype, only for slices with blood
    patients.csv               image_id, patient_id, study/series UIDs, slice_index

Everything random is drawn from generators seeded by ``(seed, kind, index)``: the plan (patients,
identifiers, slice counts) from ``(seed, 0)``, each patient's anatomy from ``(seed, 1, patient)``
and each study from ``(seed, 2, study)``. Results therefore do not depend on ``workers`` or on
the order in which studies finish.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ich.atomic import atomic_write_bytes
from ich.errors import ConfigError
from ich.labels import LABELS
from ich.phantom.lesions import RSNA_ANY_RATE, bleeding_studies
from ich.phantom.memory import hold_freed_memory, keep_freed_memory
from ich.phantom.study import SliceRecord, StudyPlan, render_study

#: Fraction of patients with two studies (patients recur across studies, as in RSNA).
REPEAT_FRACTION = 0.15
#: Slices per study, inclusive bounds (DESIGN.md: 24-44, skull base to vertex).
MIN_SLICES, MAX_SLICES = 24, 44


@dataclass(frozen=True)
class CohortSummary:
    """What :func:`generate_cohort` wrote.

    Attributes:
        out: The cohort folder.
        studies, patients, slices: Counts.
        positives: Positive slices per label, in ``LABELS`` order.
        files: Files written (DICOM + masks + 2 CSVs).
        wrap_fault_files: DICOM files carrying the RSNA 12-bit wrap fault.
    """

    out: Path
    studies: int
    patients: int
    slices: int
    positives: dict[str, int] = field(default_factory=dict)
    files: int = 0
    wrap_fault_files: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        out = asdict(self)
        out["out"] = str(self.out)
        return out


def _hex_ids(rng: np.random.Generator, n: int, digits: int, taken: set[str]) -> list[str]:
    """``n`` new unique ``ID_<digits hex>`` strings (uniqueness checked against ``taken``)."""
    out: list[str] = []
    while len(out) < n:
        value = f"ID_{int(rng.integers(0, 16**digits)):0{digits}x}"
        if value not in taken:
            taken.add(value)
            out.append(value)
    return out


def plan_cohort(studies: int, seed: int, size: int, scale: float) -> list[StudyPlan]:
    """Decide patients, identifiers and slice counts for every study, before any rendering.

    About :data:`REPEAT_FRACTION` of the patients get two studies; the study order is shuffled
    so repeat studies are not adjacent.
    """
    rng = np.random.default_rng([seed, 0])
    n_patients = max(1, min(studies, round(studies / (1 + REPEAT_FRACTION))))
    repeats = rng.choice(n_patients, size=studies - n_patients, replace=False)
    owners = rng.permutation(np.concatenate([np.arange(n_patients), repeats]))
    taken: set[str] = set()
    patient_ids = _hex_ids(rng, n_patients, 8, taken)
    bleeds = bleeding_studies(rng, studies, scale)
    plans = []
    for index, owner in enumerate(owners):
        study_uid, series_uid = _hex_ids(rng, 2, 10, taken)
        n_slices = int(rng.integers(MIN_SLICES, MAX_SLICES + 1))
        plans.append(StudyPlan(
            index=index, seed=seed, patient_index=int(owner), patient_id=patient_ids[owner],
            study_instance_uid=study_uid, series_instance_uid=series_uid,
            image_ids=tuple(_hex_ids(rng, n_slices, 9, taken)), size=size, scale=scale,
            bleed=bool(bleeds[index]),
        ))
    return plans


def _write_csvs(out: Path, records: list[SliceRecord]) -> None:
    """``labels.csv`` (Kaggle long format) and ``patients.csv``, sorted by image id."""
    records = sorted(records, key=lambda r: r.image_id)
    labels = ["ID,Label"]
    for r in records:
        pairs = zip(LABELS, r.labels, strict=True)
        labels.extend(f"{r.image_id}_{name},{value}" for name, value in pairs)
    atomic_write_bytes(out / "labels.csv", ("\n".join(labels) + "\n").encode())
    rows = ["image_id,patient_id,study_instance_uid,series_instance_uid,slice_index"]
    rows.extend(
        f"{r.image_id},{r.patient_id},{r.study_instance_uid},{r.series_instance_uid},"
        f"{r.slice_index}"
        for r in records
    )
    atomic_write_bytes(out / "patients.csv", ("\n".join(rows) + "\n").encode())


def _results(plans: list[StudyPlan], out: Path, workers: int) -> Iterator[list[SliceRecord]]:
    """Render studies in order, in this process or in a process pool."""
    if workers <= 1:
        with keep_freed_memory():  # no page faults for every slice's temporaries (speed)
            for plan in plans:
                yield render_study(plan, out)
        return
    with ProcessPoolExecutor(max_workers=workers, initializer=hold_freed_memory) as pool:
        yield from pool.map(render_study, plans, [out] * len(plans), chunksize=1)


def _check_arguments(out: Path, studies: int, size: int, prevalence: float | None) -> None:
    if studies < 1:
        raise ConfigError(f"studies must be at least 1, got {studies}")
    if not 32 <= size <= 2048:
        raise ConfigError(f"size must be between 32 and 2048 pixels, got {size}")
    if prevalence is not None and not 0.0 <= prevalence <= 0.9:
        raise ConfigError(f"prevalence must be between 0 and 0.9, got {prevalence}")
    images = out / "images"
    if images.is_dir() and any(images.glob("*.dcm")):
        raise ConfigError(f"{images} already holds DICOM files; choose a new output folder")


def generate_cohort(
    out: Path,
    studies: int,
    seed: int,
    size: int = 512,
    prevalence: float | None = None,
    workers: int = 1,
    progress: bool = False,
) -> CohortSummary:
    """Write a synthetic head-CT cohort (DICOM + Kaggle labels + masks) to ``out``.

    Args:
        out: Output folder (created; must not already hold a cohort).
        studies: Number of studies (one axial series each).
        seed: Same seed and size give the same bytes.
        size: Rows = columns of every slice; pixel spacing scales so the field of view stays
            ~250 mm, like RSNA's 512 px at ~0.49 mm.
        prevalence: Per-slice rate of ``any``; None keeps the RSNA rates (14.4 %). Subtype rates
            scale by ``prevalence / 0.144``.
        workers: Processes; results are identical for any value.
        progress: Show a tqdm bar on stderr.

    Returns:
        Counts of what was written.
    """
    out = Path(out)
    _check_arguments(out, studies, size, prevalence)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    scale = 1.0 if prevalence is None else prevalence / RSNA_ANY_RATE
    plans = plan_cohort(studies, seed, size, scale)
    total = sum(len(p.image_ids) for p in plans)
    records: list[SliceRecord] = []
    with tqdm(total=total, unit="slice", desc="ich synth", disable=not progress) as bar:
        for study_records in _results(plans, out, workers):
            records.extend(study_records)
            bar.update(len(study_records))
    _write_csvs(out, records)
    counts = np.array([r.labels for r in records], dtype=np.int64).sum(axis=0)
    n_masks = sum(1 for r in records if r.labels[0])
    return CohortSummary(
        out=out,
        studies=studies,
        patients=len({p.patient_id for p in plans}),
        slices=len(records),
        positives={name: int(c) for name, c in zip(LABELS, counts, strict=True)},
        files=len(records) + n_masks + 2,
        wrap_fault_files=sum(r.wrap_fault for r in records),
    )


__all__ = ["CohortSummary", "generate_cohort", "plan_cohort"]
