"""What a loaded model is and what it was trained on: :class:`ModelProvenance`.

Why a type: the predictor hands this to the web pages, the API and the DICOM outputs; a frozen
dataclass says which fields exist, and :meth:`ModelProvenance.to_json` is the one place that
decides what clients may see (run folders by name, never server paths).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RESEARCH_NOTE = "Research use only — not for diagnosis."


def _public(value: str) -> str:
    """A server path by its last component; other text unchanged."""
    return Path(value).name if Path(value).is_absolute() else value


@dataclass(frozen=True)
class MemberInfo:
    """One ensemble member: its model file or run folder, how many runs (folds), its weight."""

    path: str
    runs: int
    weight: float


@dataclass(frozen=True)
class ModelProvenance:
    """Provenance of the model(s) behind predictions, for people reading results.

    Attributes:
        training_data: What the models were trained on, in words (phantom runs say so).
        note: The research-use notice shown with every result.
        runs: Run folders of the models (``None``: not described, e.g. a test double).
        members: Ensemble members with their weights.
        backbone: The slice CNN's timm backbone name (of the first run).
        sequence_model: Whether a study-level sequence model refines the slice predictions.
    """

    training_data: str
    note: str = RESEARCH_NOTE
    runs: tuple[str, ...] | None = None
    members: tuple[MemberInfo, ...] | None = None
    backbone: str | None = None
    sequence_model: bool | None = None

    def to_json(self, public: bool = False) -> dict[str, object]:
        """The JSON object of the API (fields left ``None`` are omitted).

        Args:
            public: For clients: run folders, member paths and any absolute path by name only
                (server paths are not their business).
        """
        name = _public if public else str
        out: dict[str, object] = {}
        if self.runs is not None:
            out["runs"] = [Path(r).name if public else r for r in self.runs]
        if self.members is not None:
            out["members"] = [{"path": name(m.path), "runs": m.runs, "weight": m.weight}
                              for m in self.members]
        if self.backbone is not None:
            out["backbone"] = name(self.backbone)
        if self.sequence_model is not None:
            out["sequence_model"] = self.sequence_model
        out["training_data"] = name(self.training_data)
        out["note"] = name(self.note)
        return out

    def summary(self) -> str:
        """One line for DICOM outputs: backbone and training data (at most 1000 characters)."""
        parts = [f"backbone: {self.backbone}"] if self.backbone is not None else []
        parts.append(f"training_data: {self.training_data}")
        return "; ".join(parts)[:1000]
