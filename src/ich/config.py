"""Typed run configuration: dataclasses, YAML files and ``a.b=value`` overrides.

The dataclass defaults are the packaged recipe (``configs/default.yaml`` holds the same values,
checked by a test), so ``ich train`` without ``--config`` and library code agree.

The configuration is the single source of truth of a run: library code receives a
:class:`RunConfig`, never an argparse namespace, and the resolved configuration is saved into
every run folder (``RUN/config.yaml``) and every checkpoint so that a run can be reproduced and
a checkpoint describes itself. Unknown keys and wrongly typed values are errors that name the
key and the file, because a silently ignored typo (``optim.lr_max=...``) wastes a day of GPU.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from ich.atomic import atomic_write_text
from ich.data.augment import AugmentConfig
from ich.dicom.windowing import DEFAULT_WINDOWS
from ich.errors import ConfigError

__all__ = [
    "AugmentConfig",
    "DataConfig",
    "DecisionConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "RunConfig",
    "SequenceConfig",
    "TrainConfig",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "packaged_config",
    "save_config",
]


@dataclass
class DataConfig:
    """What the slice model sees and how slices are split.

    ``fold`` is the validation fold; ``-1`` trains on every fold (no validation, the last
    epoch is also the "best" one, and no out-of-fold predictions are written).
    ``subsample``: train and validate on a patient-stratified subset (a fraction in (0, 1) or a
    number of patients), for quick prototyping. ``undersample_negatives``: the fraction of the
    negative training slices kept (validation untouched). Both are reported in
    ``RUN/sampling.json``.
    """

    cache: str = ""
    windows: tuple[str, ...] = tuple(DEFAULT_WINDOWS)
    offsets: tuple[int, ...] = (0,)
    input_size: int = 256
    folds: int = 5
    fold: int = 0
    fold_seed: int = 42
    oversample: bool = False
    oversample_positive: float = 2.0
    oversample_rare: float = 4.0
    subsample: float | None = None
    undersample_negatives: float | None = None


@dataclass
class ModelConfig:
    """Slice CNN: a timm backbone by name; ``weights`` is a local file of backbone weights."""

    backbone: str = "efficientnet_b0"
    pretrained: bool = True
    weights: str | None = None
    drop_rate: float = 0.2


@dataclass
class OptimConfig:
    """Optimizer and learning-rate schedule of the slice CNN (stage 1).

    The three recipes of the founding documents come from config alone:
    SGD + Nesterov 0.9 (``name: sgd, momentum: 0.9, nesterov: true``, the Behold.ai
    challenge's ResNet50), Adam at 1e-5 for fine-tuning (``name: adam, lr: 1.0e-5``, its
    InceptionV3) and a rate decayed by 0.8 per epoch (``schedule: exponential, gamma: 0.8``, the
    Keras ResNet50 report). The learning rate is set at every optimizer step from a pure
    function of the step (:mod:`ich.train.schedule`), so ``--resume`` continues the curve
    exactly; only ``plateau`` has extra state, saved with ``slice_last``.

    Attributes:
        name: ``adamw`` (default; decoupled weight decay, Loshchilov & Hutter), ``adam`` (weight
            decay as an L2 term added to the gradient, as torch's Adam defines it; Adam 1e-5 is
            the InceptionV3 fine-tuning recipe) or ``sgd`` (L2 weight decay; with ``momentum``
            and ``nesterov``: SGD + Nesterov 0.9 is the Behold.ai challenge's ResNet50).
        lr: Peak learning rate (after warmup) of the head; the backbone gets
            ``lr * backbone_lr_mult``.
        weight_decay: Weight decay, applied as the chosen optimizer defines it, to weights only.
        momentum: SGD momentum (ignored by Adam/AdamW), e.g. 0.9.
        nesterov: Nesterov momentum for SGD (needs ``momentum > 0``).
        decay_norm_bias: Also decay normalisation weights and biases (off: decaying them
            shrinks BatchNorm scales and biases for no regularisation benefit).
        backbone_lr_mult: Discriminative learning rate: the pretrained backbone learns at this
            fraction of ``lr`` (e.g. 0.1) while the new head learns at ``lr``.
        schedule: ``cosine`` (warmup + cosine to ``min_lr_frac``, default), ``onecycle``
            (Smith's one-cycle), ``step`` (times ``gamma`` every ``step_epochs`` epochs),
            ``exponential`` (times ``gamma`` every epoch: 0.8 in the Keras ResNet50 report),
            ``plateau`` (times ``plateau_factor`` when the validation weighted log loss has
            not improved for ``plateau_patience`` epochs, like Keras' ReduceLROnPlateau; with
            ``data.fold=-1`` there is no validation and it stays constant) or ``constant``.
            Every schedule starts with the linear warmup (one-cycle has its own).
        warmup_frac: Fraction of all steps spent in linear warmup (0 for none).
        min_lr_frac: Final multiplier of ``cosine``/``onecycle``; the floor of ``plateau``.
        step_epochs: Epochs between two drops of the ``step`` schedule.
        gamma: Decay of ``step`` (per drop) and ``exponential`` (per epoch, e.g. 0.8).
        plateau_patience: Epochs without improvement before ``plateau`` reduces.
        plateau_factor: Multiplier applied at each ``plateau`` reduction (e.g. 0.1).
        grad_clip: Clip the gradient norm to this value (null: no clipping).
    """

    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = 5e-4
    weight_decay: float = 1e-4
    momentum: float = 0.9
    nesterov: bool = False
    decay_norm_bias: bool = False
    backbone_lr_mult: float = 1.0
    schedule: Literal["cosine", "onecycle", "step", "exponential", "plateau", "constant"] = (
        "cosine"
    )
    warmup_frac: float = 0.05
    min_lr_frac: float = 0.01
    step_epochs: int = 3
    gamma: float = 0.1
    plateau_patience: int = 2
    plateau_factor: float = 0.1
    grad_clip: float | None = 1.0

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.weight_decay < 0 or self.momentum < 0:
            raise ValueError("lr must be > 0, weight_decay and momentum >= 0")
        if self.nesterov and (self.name != "sgd" or self.momentum <= 0):
            raise ValueError("nesterov needs name=sgd and momentum > 0")
        if self.backbone_lr_mult < 0 or not 0 < self.gamma <= 1:
            raise ValueError("backbone_lr_mult must be >= 0 and gamma in (0, 1]")
        if self.step_epochs < 1 or self.plateau_patience < 0 or not 0 < self.plateau_factor <= 1:
            raise ValueError("step_epochs >= 1, plateau_patience >= 0, plateau_factor in (0, 1]")


@dataclass
class LossConfig:
    """Training loss of both stages (the evaluation metric stays the RSNA weighted log loss).

    Attributes:
        name: ``bce`` (default): binary cross-entropy weighted per label like the RSNA metric,
            so the training loss is the competition's score; ``focal``: focal loss
            (Lin et al. 2017, ``(1 - p_t) ** gamma`` times the BCE), which down-weights easy
            negatives, with the same per-label weights.
        gamma: Focal loss focusing parameter (2 in the paper; 0 gives the BCE).
        smoothing: Label smoothing: targets become ``y * (1 - s) + s / 2`` (0 = off).
        label_weights: One weight per label in the run's label order (``any`` first); null
            means the metric's weights (``any`` = 2, each subtype 1).
    """

    name: Literal["bce", "focal"] = "bce"
    gamma: float = 2.0
    smoothing: float = 0.0
    label_weights: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.gamma < 0 or not 0 <= self.smoothing < 1:
            raise ValueError("loss.gamma must be >= 0 and loss.smoothing in [0, 1)")
        if self.label_weights is not None and (
            not self.label_weights or min(self.label_weights) < 0 or sum(self.label_weights) <= 0
        ):
            raise ValueError("loss.label_weights must be non-negative with a positive sum")


@dataclass
class TrainConfig:
    """The stage-1 loop: epochs, batch, workers, precision, stopping, logging.

    Attributes:
        early_stopping_patience: Stop after this many epochs without a better validation
            weighted log loss (null: run every epoch); ``slice_best`` keeps the best one.
        max_steps_per_epoch: Cap on optimizer steps per epoch (quick trials; null = all).
        freeze_epochs: Transfer learning as the seeds do it: train only the new head on a
            frozen backbone (feature extraction, BatchNorm statistics frozen too) for this many
            epochs, then unfreeze and fine-tune everything, the backbone at
            ``optim.backbone_lr_mult`` times the learning rate (0 = train all from the start).
        ema_decay: Keep an exponential moving average of the weights,
            ``ema = decay * ema + (1 - decay) * weights`` after every optimizer step (e.g.
            0.999); validation, ``slice_best`` and everything downstream use the averaged
            weights (null = off).
        accumulate: Gradient accumulation: one optimizer step per this many batches of
            ``batch_size`` (an effective batch of ``accumulate * batch_size`` on a small GPU).
            BatchNorm still sees ``batch_size`` samples at a time.
    """

    epochs: int = 10
    batch_size: int = 64
    workers: int = 4
    amp: bool = True
    early_stopping_patience: int | None = 3
    seed: int = 42
    device: str = "auto"
    log_every: int = 50
    max_steps_per_epoch: int | None = None
    deterministic: bool = True
    stages: tuple[str, ...] = ("slice", "sequence")
    freeze_epochs: int = 0
    ema_decay: float | None = None
    accumulate: int = 1

    def __post_init__(self) -> None:
        if self.freeze_epochs < 0 or self.accumulate < 1:
            raise ValueError("train.freeze_epochs must be >= 0 and train.accumulate >= 1")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError("train.ema_decay must be in (0, 1), e.g. 0.999, or null")


@dataclass
class SequenceConfig:
    """Stage 2: the study sequence model over ordered slice embeddings.

    ``feature_noise``: Gaussian noise added to the inputs while training, in units of each
    feature's spread over the training slices (0 = none). A single run's sequence model learns
    from embeddings of slices its own CNN trained on, cleaner than new scans will give.
    ``temperature_scaling``: after training, fit one temperature that divides the model's logits
    on the validation fold (:mod:`ich.train.calibrate`) and keep it in the model file. For the
    same reason as the noise, the model is overconfident on patients it did not train on.
    ``features``: what the model reads per slice: the CNN's embedding and logits (the RSNA
    recipe), or its logits alone, which cannot be extrapolated from on scans unlike the
    training data (the phantom-trained demo: see ``demo.yaml``).
    ``members``: train this many sequence models (seeds ``train.seed``, ``+1``, ...) and keep
    the average of their logits in the one model file: a single stage-2 model depends on its
    seed as much as on the data (:class:`ich.models.sequence.SequenceEnsemble`).
    """

    kind: Literal["gru", "lstm", "transformer"] = "gru"
    hidden: int = 128
    layers: int = 2
    dropout: float = 0.2
    epochs: int = 20
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"
    warmup_frac: float = 0.05
    min_lr_frac: float = 0.01
    grad_clip: float | None = 1.0
    batch_size: int = 16
    tta_flip: bool = True
    max_len: int | None = 64
    study_loss_weight: float = 0.5
    feature_noise: float = 0.0
    temperature_scaling: bool = True
    features: Literal["embedding+logits", "logits"] = "embedding+logits"
    patience: int | None = 6
    embed_batch_size: int = 64
    members: int = 1

    def __post_init__(self) -> None:
        if self.feature_noise < 0:
            raise ValueError("sequence.feature_noise must be >= 0 (0 = no noise)")
        if self.members < 1:
            raise ValueError("sequence.members must be >= 1")


@dataclass
class DecisionConfig:
    """Per-label thresholds chosen on out-of-fold predictions after training
    (``RUN/thresholds.json``, used by ``ich predict --binary``): Youden's J, or the highest
    threshold reaching ``target_sensitivity``."""

    method: Literal["youden", "sensitivity"] = "youden"
    target_sensitivity: float = 0.95


@dataclass
class RunConfig:
    """Everything a run needs, one section per concern.

    ``provenance`` says in words what the training data are (e.g. "synthetic phantom cohort");
    reports and the web app show it next to every result.
    """

    provenance: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sequence: SequenceConfig = field(default_factory=SequenceConfig)
    decision: DecisionConfig = field(default_factory=DecisionConfig)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert lists to tuples, ints to floats."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    bad = ConfigError(f"{source}: {key}: expected {_type_name(tp)}, got {value!r}")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key, source)
            except ConfigError:
                continue
        raise bad
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{source}: {key}: expected one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list | tuple):
            raise bad
        return tuple(_coerce(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key, source)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    raise ConfigError(f"{source}: {key}: unsupported field type {tp}")  # pragma: no cover


def _build(cls: Any, values: Any, prefix: str, source: str) -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys."""
    where = prefix or "top level"
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: {where}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        key = f"{prefix}.{unknown[0]}" if prefix else str(unknown[0])
        raise ConfigError(f"{source}: unknown key {key!r} (known: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], key, source)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {where}: {exc}") from exc


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples become lists) suitable for YAML, JSON and checkpoints."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return typing.cast(dict[str, Any], plain(dataclasses.asdict(cfg)))


def config_from_dict(values: dict[str, Any], source: str = "<dict>") -> RunConfig:
    """Rebuild a :class:`RunConfig` from :func:`config_to_dict` output (e.g. a checkpoint)."""
    return typing.cast(RunConfig, _build(RunConfig, values, "", source))


def _set_dotted(tree: dict[str, Any], override: str) -> None:
    key, sep, raw = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {override!r}: expected key=value, e.g. train.epochs=3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {override!r}: value is not valid YAML ({exc})") from exc
    if isinstance(value, dict) and not raw.lstrip().startswith("{"):
        # "provenance=data: v2" is text with a colon, not a YAML block mapping: an override
        # sets one key, and a mapping value must be written in flow style ({a: 1}).
        value = raw
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {override!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def packaged_config(name: str) -> Path:
    """Path of a config shipped with ich (``default`` or ``demo``)."""
    ref = resources.files("ich") / "configs" / f"{name}.yaml"
    with resources.as_file(ref) as path:
        if not path.is_file():
            raise ConfigError(f"no packaged config named {name!r}")
        return Path(path)


def load_config(path: Path | str | None = None, overrides: Sequence[str] = ()) -> RunConfig:
    """Resolve a run configuration: dataclass defaults, then the YAML file, then overrides.

    Args:
        path: YAML file, the name of a packaged config (``"demo"``, ``"default"``), or None
            for the dataclass defaults.
        overrides: ``section.key=value`` strings; values are parsed as YAML
            (``train.epochs=3``, ``data.windows=[brain,bone]``, ``model.weights=null``).

    Raises:
        ConfigError: unreadable file, unknown key, or a value of the wrong type; the message
            names the key and the file (or "override").
    """
    tree: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        if not p.exists() and str(path) in ("default", "demo"):
            p = packaged_config(str(path))
        source = str(p)
        try:
            loaded = yaml.safe_load(p.read_text())
        except OSError as exc:
            raise ConfigError(f"{p}: cannot read config ({exc.strerror})") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: invalid YAML ({exc})") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping of sections at top level")
        tree = loaded or {}
    cfg = _build(RunConfig, tree, "", source)
    if not overrides:
        return typing.cast(RunConfig, cfg)
    merged = config_to_dict(cfg)
    for item in overrides:
        _set_dotted(merged, item)
    label = f"{source} + overrides" if path is not None else "override"
    return typing.cast(RunConfig, _build(RunConfig, merged, "", label))


def save_config(cfg: RunConfig, run_dir: Path) -> Path:
    """Write the resolved configuration to ``run_dir/config.yaml`` atomically."""
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    return atomic_write_text(Path(run_dir) / "config.yaml", text)
