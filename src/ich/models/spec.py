"""ModelSpec: everything inference needs to rebuild and feed a trained model, as typed JSON.

Why: a model file must describe itself completely (like timm's ``PretrainedCfg``), so that the
server feeds a model exactly what it saw in training and never reads preprocessing from
constants or from a pickled training configuration. A spec is frozen, validated on load
(unknown keys are an error: a newer format or a typo) and stored as JSON next to the weights.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from ich.data.datasets import ChannelSpec
from ich.data.preprocess import PreprocessSpec
from ich.errors import CheckpointError, LabelsError
from ich.labels import check_label_names
from ich.models.sequence import SequenceKind

#: Format tag of the spec JSON; bumped when a field changes meaning.
SPEC_FORMAT = "ich-model-spec/1"

ModelKind = Literal["slice", "sequence"]


@dataclass(frozen=True)
class SliceArch:
    """Constructor arguments of :class:`ich.models.slice_cnn.SliceModel` (weights excluded)."""

    backbone: str
    in_chans: int
    drop_rate: float = 0.0


@dataclass(frozen=True)
class SequenceArch:
    """Constructor arguments of :class:`ich.models.sequence.SequenceModel` and how its
    per-slice features were made.

    Attributes:
        features: Name of the feature recipe (``ich.runs.embed.FEATURES``).
        tta_flip: The slice embeddings it trained on were averaged over a left-right flip.
        temperature: Divides its logits: fitted on the validation fold after training
            (``sequence.temperature_scaling``); 1 = none, and in files written before it.
        members: How many such models the file holds, their logits averaged
            (``sequence.members``, :class:`ich.models.sequence.SequenceEnsemble`); 1 = one.
    """

    in_dim: int
    kind: SequenceKind = "gru"
    hidden: int = 128
    layers: int = 2
    dropout: float = 0.2
    features: str = "embedding+logits"
    tta_flip: bool = True
    temperature: float = 1.0
    members: int = 1


@dataclass(frozen=True)
class Provenance:
    """Where a model came from, for the people reading its results.

    Attributes:
        training_data: What it was trained on, in words (``RunConfig.provenance``).
        config_hash: Short hash of the resolved run configuration.
        ich_version: The ich version that trained it.
        config_json: The resolved run configuration as JSON (for reproduction, never executed).
    """

    training_data: str = ""
    config_hash: str = ""
    ich_version: str = ""
    config_json: str = "{}"

    def config(self) -> dict[str, Any]:
        """The resolved run configuration, parsed (plain JSON types)."""
        data = json.loads(self.config_json or "{}")
        return data if isinstance(data, dict) else {}


def config_hash(config: dict[str, Any]) -> str:
    """Short stable hash of a plain configuration dict."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class ModelSpec:
    """How to rebuild one trained model and feed it.

    Attributes:
        kind: ``"slice"`` (the per-slice CNN) or ``"sequence"`` (the study model).
        labels: Output names in column order.
        windows: ``(name, center, width)`` HU windows, in channel order.
        offsets: Neighbour slice offsets stacked as channels (0 = the slice itself).
        input_size: Side of the square CNN input, pixels.
        preprocess: The cache's preprocessing (crop, size, margin) the model trained on.
        mean: Per-channel input mean subtracted after the [0, 1] window scaling (zeros for a
            backbone trained from scratch; a pretrained timm backbone's own values).
        std: Per-channel divisor after subtracting ``mean`` (ones from scratch).
        slice_arch: The slice CNN's architecture (``kind == "slice"``).
        sequence_arch: The sequence model's architecture (``kind == "sequence"``).
        provenance: Training data, configuration hash and version.
    """

    kind: ModelKind
    labels: tuple[str, ...]
    windows: tuple[tuple[str, float, float], ...]
    offsets: tuple[int, ...]
    input_size: int
    preprocess: PreprocessSpec
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    slice_arch: SliceArch | None = None
    sequence_arch: SequenceArch | None = None
    provenance: Provenance = field(default_factory=Provenance)

    def __post_init__(self) -> None:
        if self.kind == "slice" and self.slice_arch is None:
            raise CheckpointError("a slice ModelSpec needs slice_arch")
        if self.kind == "sequence" and self.sequence_arch is None:
            raise CheckpointError("a sequence ModelSpec needs sequence_arch")
        if len(self.mean) != len(self.std):
            raise CheckpointError(f"mean {self.mean} and std {self.std} differ in length")
        try:
            check_label_names(self.labels, "model spec")
        except LabelsError as exc:
            raise CheckpointError(str(exc)) from exc

    @property
    def channels(self) -> ChannelSpec:
        """The windows x offsets that form the CNN's input channels."""
        return ChannelSpec.from_dict(
            {"windows": [list(w) for w in self.windows], "offsets": list(self.offsets)}
        )

    def to_json(self) -> str:
        """The spec as JSON text (stable key order)."""
        return json.dumps({"format": SPEC_FORMAT, **asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, where: str = "<spec>") -> ModelSpec:
        """Parse and validate :meth:`to_json` output.

        Raises:
            CheckpointError: Not JSON, another format, unknown or missing keys; names ``where``.
        """
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise CheckpointError(f"{where}: model spec is not JSON ({exc})") from exc
        if not isinstance(data, dict) or data.pop("format", None) != SPEC_FORMAT:
            raise CheckpointError(f"{where}: not an {SPEC_FORMAT} model spec")
        try:
            spec = cls(
                kind=data.pop("kind"),
                labels=tuple(str(x) for x in data.pop("labels")),
                windows=tuple((str(n), float(c), float(w)) for n, c, w in data.pop("windows")),
                offsets=tuple(int(o) for o in data.pop("offsets")),
                input_size=int(data.pop("input_size")),
                preprocess=PreprocessSpec.from_dict(data.pop("preprocess")),
                mean=tuple(float(x) for x in data.pop("mean", ())),
                std=tuple(float(x) for x in data.pop("std", ())),
                slice_arch=_sub(SliceArch, data.pop("slice_arch", None)),
                sequence_arch=_sub(SequenceArch, data.pop("sequence_arch", None)),
                provenance=_sub(Provenance, data.pop("provenance", None)) or Provenance(),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{where}: incomplete or malformed model spec ({exc})") from exc
        if data:
            raise CheckpointError(f"{where}: unknown model spec keys {sorted(data)}")
        return spec


def _sub(cls: type[Any], data: dict[str, Any] | None) -> Any:
    """Build a nested spec dataclass, refusing unknown keys."""
    if data is None:
        return None
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys {unknown}")
    return cls(**data)
