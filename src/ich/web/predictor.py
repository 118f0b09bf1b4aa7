"""What the web application needs from a model, as a ``typing.Protocol``.

Why a Protocol: the server must not depend on how the model is built. ``ich.inference.Predictor``
satisfies it, and so does the small deterministic stand-in used by the tests.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ich.dicom.io import SliceMeta
from ich.runs.provenance import ModelProvenance

log = logging.getLogger("ich.web")
#: Operating threshold of a label the run has no chosen threshold for.
DEFAULT_THRESHOLD = 0.5


class SeriesPredictionLike(Protocol):
    """Result of ``predict_slices`` for one series.

    Attributes:
        order: (T,) indices into the input lists, in slice order along the normal.
        z: (T,) slice positions in mm, in that order.
        slice_probs: (T, L) final per-slice probabilities, columns in the predictor's
            ``labels`` order.
        cnn_probs: (T, L) slice-model probabilities before the sequence model.
        study_probs: (L,) probabilities for the whole series.
    """

    order: np.ndarray
    z: np.ndarray
    slice_probs: np.ndarray
    cnn_probs: np.ndarray
    study_probs: np.ndarray


@runtime_checkable
class PredictorLike(Protocol):
    """The model interface the server is written against (:class:`ich.inference.Predictor`)."""

    @property
    def provenance(self) -> ModelProvenance:
        """What the model is and what data it was trained on (shown on every page)."""
        ...

    @property
    def labels(self) -> tuple[str, ...]:
        """The run's output names, in column order (``ModelSpec.labels``): the six RSNA labels,
        a subset, or the run's own (e.g. ``("hemorrhage",)``)."""
        ...

    @property
    def offsets(self) -> tuple[int, ...]:
        """Slice offsets stacked as channels (e.g. (-1, 0, 1)); ``heatmap`` wants the
        neighbours in this order, the slice itself included."""
        ...

    def predict_slices(
        self, hus: list[np.ndarray], metas: list[SliceMeta]
    ) -> SeriesPredictionLike:
        """Predict one series given its HU slices (any order) and their headers."""
        ...

    def heatmap(
        self, hu: np.ndarray, label: str, neighbours: Sequence[np.ndarray] | None = None
    ) -> np.ndarray:
        """Float32 (H, W) map in [0, 1] of where the model looked for ``label`` (one of
        ``labels``)."""
        ...


def load_predictor(model_dir: Any, device: str = "cpu") -> PredictorLike:
    """Build the real predictor from a run folder (imported here so torch loads only when used)."""
    from ich.inference import Predictor  # type: ignore[import-not-found,unused-ignore]

    predictor: PredictorLike = Predictor.from_run(model_dir, device=device)
    return predictor


def triage_label(labels: Sequence[str]) -> str | None:
    """The label that ranks studies: ``any`` when the run predicts it, else None (then the
    maximum over the run's labels ranks them: a study is as suspicious as its likeliest
    finding)."""
    return "any" if "any" in labels else None


def triage_name(labels: Sequence[str]) -> str:
    """What the triage score is called: ``any``, the one label of a one-label run, or ``max``."""
    return triage_label(labels) or (labels[0] if len(labels) == 1 else "max")


def triage_score(probabilities: Mapping[str, float] | None) -> float | None:
    """The number a worklist sorts by: p(any), or the maximum over the labels without ``any``;
    None before results."""
    if not probabilities:
        return None
    key = triage_label(tuple(probabilities))
    return float(probabilities[key]) if key else float(max(probabilities.values()))


def run_thresholds(predictor: PredictorLike) -> dict[str, float]:
    """Per-label operating thresholds of the predictor's run(s), for the labels it has.

    A predictor may carry them itself (a ``thresholds`` mapping); otherwise they are read
    from each ensemble member's ``RUN/thresholds.json`` (chosen on out-of-fold predictions by
    ``ich train``) and averaged over the members that have one, as ``ich predict --binary``
    does. A label without a chosen threshold is left out (callers use
    :data:`DEFAULT_THRESHOLD`); a run without the file is logged once, never an error.
    """
    from ich.errors import CheckpointError
    from ich.eval.thresholds import load_thresholds

    try:
        own = getattr(predictor, "thresholds", None)
    except CheckpointError:  # a predictor whose run has no thresholds file
        own = None
    if isinstance(own, Mapping):
        return {k: float(v) for k, v in own.items() if k in predictor.labels}
    found: list[dict[str, float]] = []
    for member in predictor.provenance.members or ():
        try:
            found.append(load_thresholds(member.path))
        except CheckpointError as exc:
            log.info("no per-label thresholds for %s (%s): using %g", member.path,
                     type(exc).__name__, DEFAULT_THRESHOLD)
    out: dict[str, float] = {}
    for label in predictor.labels:
        values = [t[label] for t in found if label in t]
        if values:
            out[label] = sum(values) / len(values)
    return out
