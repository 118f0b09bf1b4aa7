"""Per-slice 2D CNN: any timm backbone, any number of input channels, six logits.

Stage 1 of the RSNA 2019 winners' recipe: a 2D CNN looks at one slice (as several windows and/or
its neighbours s-1, s, s+1 stacked as channels) and predicts the six labels. Its pooled features
(:meth:`SliceModel.embed`) are the input of the study-level sequence model (stage 2).

The backbone is built by timm with ``num_classes=0`` (it returns pooled features) and the
classifier is our own ``nn.Linear(embed_dim, 6)``, so every backbone exposes the same ``embed`` /
``head`` split and checkpoints look the same whatever the backbone.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any, Literal

import timm
import torch
from torch import nn

from ich.errors import CheckpointError, ConfigError
from ich.labels import LABELS
from ich.models.pretrained import is_lukemelas_layout, lukemelas_to_timm, resolve_weights

log = logging.getLogger(__name__)

InitSource = Literal["scratch", "timm", "file"]


def check_backbone(name: str) -> None:
    """Fail early, with suggestions, when timm does not know a backbone name.

    A typo in ``--backbone`` would otherwise surface as a long timm traceback after the data
    was loaded; close matches make the fix obvious (``efficientnetb0`` -> ``efficientnet_b0``).

    Raises:
        ConfigError: When ``name`` (without a ``.pretrained_tag``) is not a timm model.
    """
    if timm.is_model(name.split(".")[0]):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
    raise ConfigError(f"unknown backbone {name!r}{hint}")


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Find the state dict inside what a weights file holds (plain, ich checkpoint, Lightning)."""
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: no state dict of tensors found in the weights file")
    return obj


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read weights from a ``.pth``/``.pt``/``.bin`` (torch) or ``.safetensors`` file on the CPU.

    Raises:
        CheckpointError: When the file is missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as exc:  # torch/safetensors raise many types for a bad file
        raise CheckpointError(f"{path}: cannot read weights ({exc})") from exc
    return _unwrap_state_dict(obj, path)


class SliceModel(nn.Module):
    """A timm backbone with pooled features and a six-label linear head.

    Args:
        backbone: timm model name, e.g. ``"efficientnet_b0"``, ``"seresnext50_32x4d"``,
            ``"resnet10t"`` (tiny, for tests).
        in_chans: Input channels (windows x neighbour slices), e.g. 3 or 9.
        pretrained: Load timm's ImageNet weights (needs the Hugging Face hub); timm adapts the
            first convolution to ``in_chans``.
        weights: A local weights file (``.pth``/``.safetensors``): a timm backbone state dict, or
            a whole ``SliceModel`` state dict, or an ich checkpoint. Wins over ``pretrained``.
        drop_rate: Dropout on the embedding before the head (training only).
        mean: Per-channel input mean subtracted from the [0, 1] windows; default: the timm
            backbone's own (``pretrained_cfg``) when its weights are ImageNet's (``pretrained``
            or a timm ``weights`` file), else 0 (a scratch backbone learns from [0, 1]).
        std: Per-channel divisor, chosen the same way (1 from scratch).

    Attributes:
        embed_dim: Size D of :meth:`embed`'s output.
        init_source: Where the initial weights came from: ``"scratch"``, ``"timm"`` or ``"file"``.
        load_report: Missing / unexpected keys when ``weights`` was given (empty otherwise).
    """

    def __init__(
        self,
        backbone: str,
        in_chans: int,
        pretrained: bool = False,
        weights: str | Path | None = None,
        drop_rate: float = 0.0,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        num_labels: int = len(LABELS),
    ) -> None:
        super().__init__()
        check_backbone(backbone)
        if num_labels < 1:
            raise ConfigError(f"num_labels must be >= 1, got {num_labels}")
        if in_chans < 1:
            raise ConfigError(f"in_chans must be >= 1, got {in_chans}")
        self.backbone_name = backbone
        self.in_chans = in_chans
        self.load_report: dict[str, list[str]] = {}
        weights = resolve_weights(weights)  # "package:..." -> its file, or None (scratch)
        self.weights_from_ich = False
        use_timm = pretrained and weights is None
        self.backbone = self._create(backbone, in_chans, use_timm)
        # mobilenetv3 & co. have a conv head after pooling: its width is head_hidden_size.
        width: Any = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        self.embed_dim = int(width)
        self.dropout = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(self.embed_dim, num_labels)
        self.init_source: InitSource = "timm" if use_timm else "scratch"
        imagenet = use_timm
        if weights is not None:
            self.load_report = self.load_weights(weights)
            self.init_source = "file"
            imagenet = not self.weights_from_ich
        if weights is None and not use_timm:
            log.warning(
                "SliceModel(%s): no pretrained weights, training from scratch "
                "(use --pretrained or --weights PATH for ImageNet weights)",
                backbone,
            )
        auto_mean, auto_std = self._normalisation(imagenet)
        # (1, C, 1, 1) buffers, not saved in state dicts: the ModelSpec carries the values.
        self.register_buffer("input_mean", _per_channel(mean or auto_mean, in_chans), False)
        self.register_buffer("input_std", _per_channel(std or auto_std, in_chans), False)
        # Channels-last convolutions: 1.4-1.5x faster training steps and 1.2-1.35x faster
        # inference on the CPU (oneDNN; efficientnet_lite0 at 96-128 px, bench_layout.py), and
        # the layout tensor cores want under AMP. Weights loaded later keep it (``copy_``
        # keeps strides); model files store the default layout.
        self.backbone.to(memory_format=torch.channels_last)

    @staticmethod
    def _create(backbone: str, in_chans: int, pretrained: bool) -> nn.Module:
        """Build the timm backbone; turn hub/network failures into a clear CheckpointError."""
        if not pretrained:
            return timm.create_model(backbone, pretrained=False, num_classes=0, in_chans=in_chans)
        try:
            return timm.create_model(backbone, pretrained=True, num_classes=0, in_chans=in_chans)
        except Exception as exc:  # hub errors come as OSError, HTTPError, RuntimeError, ...
            raise CheckpointError(
                f"cannot load timm pretrained weights for {backbone!r} ({type(exc).__name__}: "
                f"{exc}); this machine may not reach the Hugging Face hub. Download the weights "
                "elsewhere and pass them with --weights PATH (.pth or .safetensors)"
            ) from exc

    def load_weights(self, path: str | Path) -> dict[str, list[str]]:
        """Load a local state dict into the backbone (and head, when the file has ours).

        Accepts a plain timm backbone state dict (its classifier is dropped: ImageNet's classes
        are not ours) or a ``SliceModel`` state dict (``backbone.*`` / ``classifier.*`` keys;
        its head is kept when it has this model's number of labels, else it starts fresh:
        fine-tuning an RSNA model on a one-label data set). A first
        convolution trained on another number of channels is adapted with timm's
        ``adapt_input_conv`` (RGB weights summed / repeated), so ImageNet weights work for 1 or 9
        channels.

        Returns:
            ``{"missing": [...], "unexpected": [...]}`` as reported by ``load_state_dict``.

        Raises:
            CheckpointError: When the file cannot be read or nothing in it matches the backbone.
        """
        state = read_state_dict(path)
        if is_lukemelas_layout(state):  # efficientnet_pytorch names (the Lite0 package)
            try:
                state = lukemelas_to_timm(state)
            except KeyError as exc:
                msg = f"{path}: cannot map efficientnet_pytorch keys ({exc})"
                raise CheckpointError(msg) from exc
        if any(k.startswith("backbone.") for k in state):
            head = {k: v for k, v in state.items() if k.startswith("classifier.")}
            prefix = "backbone."
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        else:
            head = {}
        from_ich = bool(head)
        cfg = getattr(self.backbone, "pretrained_cfg", {}) or {}
        state = self._drop_timm_classifier(state, cfg.get("classifier"))
        self._adapt_first_conv(state, cfg.get("first_conv"))
        try:
            result = self.backbone.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # shapes that do not fit this backbone
            first = str(exc).strip().splitlines()
            detail = next((ln.strip() for ln in first if "size mismatch" in ln), first[0])
            raise CheckpointError(
                f"{path}: weights do not fit backbone {self.backbone_name!r} with "
                f"{self.in_chans} input channel(s) ({detail})"
            ) from None
        own = set(self.backbone.state_dict())
        if not own & set(state):
            raise CheckpointError(f"{path}: no key matches backbone {self.backbone_name!r}")
        head = {k[len("classifier.") :]: v for k, v in head.items()}
        if head and head.get("weight", torch.empty(0)).shape == self.classifier.weight.shape:
            self.classifier.load_state_dict(head, strict=True)
        elif head:  # transfer to another label set: the backbone carries over, the head not
            log.info("%s: its head has %d outputs, this model %d: the head starts fresh",
                     path, len(head.get("weight", ())), self.classifier.out_features)
        report = {"missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys)}
        self.weights_from_ich = from_ich
        if report["missing"] or report["unexpected"]:
            log.warning(
                "%s: %d missing and %d unexpected keys (missing: %s; unexpected: %s)",
                path, len(report["missing"]), len(report["unexpected"]),
                report["missing"][:5], report["unexpected"][:5],
            )
        return report

    @staticmethod
    def _drop_timm_classifier(
        state: dict[str, torch.Tensor], classifier: str | tuple[str, ...] | None
    ) -> dict[str, torch.Tensor]:
        """Remove a timm classifier's weights (ImageNet's 1000 classes are not ours)."""
        names = (classifier,) if isinstance(classifier, str) else tuple(classifier or ())
        prefixes = tuple(f"{n}." for n in names)
        return {k: v for k, v in state.items() if not (prefixes and k.startswith(prefixes))}

    def _adapt_first_conv(self, state: dict[str, torch.Tensor], first_conv: str | None) -> None:
        """Adapt the first conv weight (O, C_file, k, k) in place to (O, in_chans, k, k)."""
        if not first_conv:
            return
        key = f"{first_conv}.weight"
        weight = state.get(key)
        if weight is not None and weight.ndim == 4 and weight.shape[1] != self.in_chans:
            from timm.models import adapt_input_conv

            state[key] = adapt_input_conv(self.in_chans, weight)

    def _normalisation(self, imagenet: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) per channel; timm adapts a 3-channel first conv by cycling the RGB
        weights, so channel ``c`` takes RGB value ``c % 3``."""
        if not imagenet:
            return (0.0,) * self.in_chans, (1.0,) * self.in_chans
        cfg = getattr(self.backbone, "pretrained_cfg", {}) or {}
        mean = tuple(cfg.get("mean") or (0.485, 0.456, 0.406))
        std = tuple(cfg.get("std") or (0.229, 0.224, 0.225))
        return (
            tuple(float(mean[c % len(mean)]) for c in range(self.in_chans)),
            tuple(float(std[c % len(std)]) for c in range(self.in_chans)),
        )

    @property
    def normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The (mean, std) per input channel this model applies (stored in its ModelSpec)."""
        mean, std = self._mean_std()
        return tuple(float(v) for v in mean.flatten()), tuple(float(v) for v in std.flatten())

    def _mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean, std = self.input_mean, self.input_std
        assert isinstance(mean, torch.Tensor) and isinstance(std, torch.Tensor)
        return mean, std

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled per-slice features: (B, C, H, W) in [0, 1] -> (B, D), the study model's input.

        The input is normalised here, so training, inference, Grad-CAM and ONNX export all
        apply the same mean/std.
        """
        mean, std = self._mean_std()
        x = (x - mean.to(x.dtype)) / std.to(x.dtype)
        out: torch.Tensor = self.backbone(x.contiguous(memory_format=torch.channels_last))
        return out

    def head(self, emb: torch.Tensor) -> torch.Tensor:
        """Logits from embeddings: (B, D) -> (B, K), one per label of the run, in its order."""
        out: torch.Tensor = self.classifier(self.dropout(emb))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, K) for a batch of slices (B, C, H, W)."""
        return self.head(self.embed(x))

    def model_args(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this architecture (for self-describing checkpoints).

        ``pretrained`` and ``weights`` are left out: a checkpoint carries its own weights.
        """
        return {
            "backbone": self.backbone_name,
            "in_chans": self.in_chans,
            "drop_rate": float(self.dropout.p),
            "num_labels": int(self.classifier.out_features),
        }


def _per_channel(values: tuple[float, ...], in_chans: int) -> torch.Tensor:
    if len(values) != in_chans:
        raise ConfigError(f"{len(values)} normalisation values for {in_chans} input channels")
    return torch.tensor(values, dtype=torch.float32).reshape(1, in_chans, 1, 1)


def build_slice_model(**kwargs: Any) -> SliceModel:
    """Build a :class:`SliceModel` from config values, checking the backbone name first.

    Args:
        **kwargs: The :class:`SliceModel` arguments (``backbone``, ``in_chans``, ...).

    Raises:
        ConfigError: Unknown backbone (with close matches) or missing arguments.
        CheckpointError: Pretrained or file weights that cannot be loaded.
    """
    if "backbone" not in kwargs or "in_chans" not in kwargs:
        raise ConfigError("build_slice_model needs backbone= and in_chans=")
    check_backbone(str(kwargs["backbone"]))
    return SliceModel(**kwargs)
