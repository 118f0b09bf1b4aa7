"""Which evaluated patients and images a run was trained on.

Why: scoring a model on its own training patients gives numbers that look excellent and mean
nothing, and RSNA patients recur across studies, so a new cache can hold a training patient
under a new study. ``RUN/folds.csv`` lists every row of the training cache with its fold; a run
trained with ``data.fold = k`` learnt from every fold but k (``-1``: from all), and a fold set
(``foldset.json``) learnt from every row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ich.errors import CheckpointError

#: Patients (or images) named in a message before "...".
_SHOWN = 5


@dataclass(frozen=True)
class Overlap:
    """How much of an evaluation set the run saw in training.

    Attributes:
        known: False when the run folder does not record its training rows (no folds.csv).
        n_patients: Evaluated patients who were training patients.
        n_images: Evaluated images that were training images, or belong to those patients.
        n_eval_patients: Patients in the evaluation set.
        n_eval_images: Images in the evaluation set.
        examples: A few of the shared patient ids, for the message.
    """

    known: bool
    n_patients: int
    n_images: int
    n_eval_patients: int
    n_eval_images: int
    examples: tuple[str, ...] = ()

    @property
    def found(self) -> bool:
        """Whether any patient or image is shared."""
        return self.n_patients > 0 or self.n_images > 0

    def describe(self, run_dir: Path) -> str:
        """One sentence for the terminal and the report."""
        if not self.known:
            return (f"cannot check for overlap with the training set: {run_dir} has no folds.csv "
                    "listing its training rows")
        shown = ", ".join(self.examples) + (", ..." if self.n_patients > len(self.examples) else "")
        return (f"{self.n_patients:,} patients ({self.n_images:,} of {self.n_eval_images:,} "
                f"images) of the evaluation set are in the training set of {run_dir}"
                + (f" (e.g. {shown})" if shown else "")
                + ": their scores overstate how the model does on new patients")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for metrics.json."""
        out = asdict(self)
        out["examples"] = list(self.examples)
        return out


def _validation_fold(run_dir: Path) -> int | None:
    """The run's held-out fold (``data.fold``), or None when it trained on every fold."""
    if (run_dir / "foldset.json").is_file():
        return None  # every row was training data of some fold run
    path = run_dir / "config.yaml"
    try:
        cfg = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, yaml.YAMLError) as exc:
        raise CheckpointError(f"{path}: cannot read the run's configuration ({exc})") from exc
    data = cfg.get("data", {}) if isinstance(cfg, dict) else {}
    fold = data.get("fold", 0) if isinstance(data, dict) else 0
    return None if int(fold) < 0 else int(fold)


def training_rows(run_dir: Path) -> pd.DataFrame | None:
    """``image_id`` and ``patient_id`` of the rows the run trained on; None if not recorded."""
    path = Path(run_dir) / "folds.csv"
    if not path.is_file():
        return None
    try:
        folds = pd.read_csv(path, dtype={"image_id": str, "patient_id": str})
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read the run's folds ({exc})") from exc
    missing = {"image_id", "patient_id", "fold"} - set(folds.columns)
    if missing:
        raise CheckpointError(f"{path}: lacks the columns {sorted(missing)}")
    held_out = _validation_fold(Path(run_dir))
    if held_out is not None:
        folds = folds[folds["fold"] != held_out]
    return folds[["image_id", "patient_id"]]


def training_overlap(run_dir: Path, evaluated: pd.DataFrame) -> Overlap:
    """Compare an evaluation table (``image_id``, ``patient_id``) with the run's training rows.

    Args:
        run_dir: The run (or fold set) folder.
        evaluated: The cache catalog or predictions table to be scored.
    """
    images = evaluated["image_id"].astype(str)
    patients = evaluated["patient_id"].astype(str) if "patient_id" in evaluated else None
    n_eval_patients = 0 if patients is None else int(patients.nunique())
    seen = training_rows(Path(run_dir))
    if seen is None:
        return Overlap(False, 0, 0, n_eval_patients, len(images))
    shared_patients = (
        set() if patients is None
        else set(patients) & set(seen["patient_id"].dropna().astype(str)) - {""}
    )
    same_image = images.isin(set(seen["image_id"].astype(str)))
    same_patient = (patients.isin(shared_patients) if patients is not None
                    else pd.Series(False, index=images.index))
    examples = tuple(sorted(shared_patients)[:_SHOWN])
    return Overlap(True, len(shared_patients), int((same_image | same_patient).sum()),
                   n_eval_patients, len(images), examples)
