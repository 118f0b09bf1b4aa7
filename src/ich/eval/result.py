"""What :func:`ich.eval.evaluate.evaluate_run` returns: :class:`Evaluation`, typed.

Why a type: the command line, the demo and the tests read the result; a frozen dataclass says
which fields exist. :meth:`Evaluation.to_json` rebuilds ``metrics.json`` exactly (same keys, same
order), so files written before and after this type are interchangeable. The per-label tables
of each level stay JSON objects (``levels``): they are what ``metrics.json`` and the report
show, key for key, and :mod:`ich.eval.metrics` documents them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

#: A JSON object as written to ``metrics.json`` (NaN already replaced by None).
JsonObject = dict[str, Any]

METRICS_FORMAT = "ich-metrics/1"


@dataclass(frozen=True)
class Headline:
    """The numbers a reader wants first for one model on one level (None: undefined).

    ``auc`` is the AUC of the evaluation's :attr:`Evaluation.headline_label`; ``auc_any``
    that of ``any`` (None for a run without an ``any`` label).
    """

    weighted_log_loss: float | None
    ratio_to_base_rate: float | None
    auc_any: float | None
    auc: float | None = None


@dataclass(frozen=True)
class Evaluation:
    """A scored run: what ``metrics.json`` holds, plus where the HTML report was written.

    Attributes:
        source: Where the predictions came from, in words.
        threshold: Decision threshold of sensitivity/specificity/precision/accuracy.
        labels: The run's label names, in the order of every per-label array.
        models: Scored models (``slice_model``, ``sequence_model``), besides ``base_rate``.
        n_slices: Labelled slices scored.
        n_unlabelled_slices_skipped: Rows without every label (counted, not scored).
        n_studies: Studies scored at study level.
        study_key: Column that groups slices into studies.
        baseline_source: Level -> where the base-rate prevalences came from.
        headline: Level -> model -> :class:`Headline`.
        levels: Level -> model -> metrics table (per-label AUC, intervals, log losses...).
        figures: Figure key -> file name relative to the output folder.
        headline_label: The label whose AUC the headline shows (``any``, the label of a
            one-label run, or ``mean``: the mean over the labels).
        overlap: What the training-overlap check found, when it ran.
        data: The cache the predictions come from, when given.
        folds: Per-fold slice-level scores of a fold set's out-of-fold predictions
            (:func:`ich.eval.folds.per_fold_scores`); None for one run.
        report: The HTML report written next to ``metrics.json`` (None until written).
    """

    source: str
    threshold: float
    labels: tuple[str, ...]
    models: tuple[str, ...]
    n_slices: int
    n_unlabelled_slices_skipped: int
    n_studies: int
    study_key: str
    baseline_source: dict[str, str]
    headline: dict[str, dict[str, Headline]]
    levels: dict[str, dict[str, JsonObject]]
    figures: dict[str, str]
    headline_label: str = "any"
    overlap: JsonObject | None = None
    data: str | None = None
    folds: list[JsonObject] | None = None
    report: Path | None = None

    def to_json(self) -> JsonObject:
        """The ``metrics.json`` object (the report path is not part of it)."""
        out: JsonObject = {
            "format": METRICS_FORMAT,
            "source": self.source,
            "threshold": self.threshold,
            "labels": list(self.labels),
            "headline_label": self.headline_label,
            "models": list(self.models),
            "n_slices": self.n_slices,
            "n_unlabelled_slices_skipped": self.n_unlabelled_slices_skipped,
            "n_studies": self.n_studies,
            "study_key": self.study_key,
            "baseline_source": dict(self.baseline_source),
            "headline": {level: {name: asdict(h) for name, h in by_model.items()}
                         for level, by_model in self.headline.items()},
            "levels": self.levels,
            "figures": dict(self.figures),
        }
        if self.overlap is not None:
            out["overlap"] = self.overlap
        if self.data is not None:
            out["data"] = self.data
        if self.folds:
            out["folds"] = self.folds
        return out

    @classmethod
    def from_json(cls, obj: JsonObject, report: Path | None = None) -> Evaluation:
        """Read a ``metrics.json`` object back (e.g. from an earlier evaluation)."""
        return cls(
            source=str(obj["source"]),
            threshold=float(obj["threshold"]),
            labels=tuple(obj["labels"]),
            models=tuple(obj["models"]),
            n_slices=int(obj["n_slices"]),
            n_unlabelled_slices_skipped=int(obj["n_unlabelled_slices_skipped"]),
            n_studies=int(obj["n_studies"]),
            study_key=str(obj["study_key"]),
            baseline_source=dict(obj["baseline_source"]),
            headline={level: {name: Headline(**h) for name, h in by_model.items()}
                      for level, by_model in obj["headline"].items()},
            levels=obj["levels"],
            figures=dict(obj["figures"]),
            headline_label=str(obj.get("headline_label", "any")),  # older files: the six
            overlap=obj.get("overlap"),
            data=obj.get("data"),
            folds=obj.get("folds"),
            report=report,
        )
