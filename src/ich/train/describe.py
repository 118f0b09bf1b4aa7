"""The ModelSpec of a run's models, built from its configuration and cache.

Every model file a run writes carries one of these (see :mod:`ich.models.spec`): the same
windows, offsets, input size, crop and normalisation the model was trained with.
"""

from __future__ import annotations

from typing import Any

from ich import __version__
from ich.config import RunConfig, config_to_dict
from ich.data.cache import SliceCache
from ich.data.datasets import ChannelSpec
from ich.dicom.windowing import resolve_windows
from ich.models.slice_cnn import SliceModel
from ich.models.spec import ModelSpec, Provenance, SequenceArch, SliceArch, config_hash


def channel_spec(cfg: RunConfig) -> ChannelSpec:
    """The configured channels (windows x neighbour offsets)."""
    return ChannelSpec(windows=tuple(cfg.data.windows), offsets=tuple(cfg.data.offsets))


def provenance(cfg: RunConfig) -> Provenance:
    """Training data, configuration hash and version of this run."""
    import json

    config = config_to_dict(cfg)
    return Provenance(
        training_data=str(cfg.provenance or ""),
        config_hash=config_hash(config),
        ich_version=__version__,
        config_json=json.dumps(config, sort_keys=True, default=str),
    )


def _inputs(cfg: RunConfig, cache: SliceCache) -> dict[str, Any]:
    """What both stages' specs share: labels (the cache's, from its label file), how the input
    is made, provenance."""
    windows = resolve_windows(tuple(cfg.data.windows))
    return {
        "labels": tuple(cache.label_names),
        "windows": tuple((w.name, float(w.center), float(w.width)) for w in windows),
        "offsets": tuple(int(o) for o in cfg.data.offsets),
        "input_size": int(cfg.data.input_size),
        "preprocess": cache.spec,
        "provenance": provenance(cfg),
    }


def slice_spec(cfg: RunConfig, cache: SliceCache, model: SliceModel) -> ModelSpec:
    """The spec of this run's slice CNN (``model`` gives its architecture and normalisation)."""
    mean, std = model.normalisation
    return ModelSpec(
        kind="slice",
        mean=mean,
        std=std,
        slice_arch=SliceArch(model.backbone_name, model.in_chans, float(model.dropout.p)),
        **_inputs(cfg, cache),
    )


def sequence_spec(cfg: RunConfig, cache: SliceCache, in_dim: int) -> ModelSpec:
    """The spec of this run's study sequence model over ``in_dim`` features per slice."""
    s = cfg.sequence
    return ModelSpec(
        kind="sequence",
        sequence_arch=SequenceArch(
            in_dim=in_dim, kind=s.kind, hidden=s.hidden, layers=s.layers, dropout=s.dropout,
            features=s.features, tta_flip=s.tta_flip,
        ),
        **_inputs(cfg, cache),
    )
