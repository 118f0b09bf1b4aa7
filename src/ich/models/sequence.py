"""Study-level sequence model over the ordered slices of a series (stage 2).

The winners' biggest single gain: a slice seen alone is ambiguous (a bright spot near the skull
base may be bone or blood), its neighbours are not. A bidirectional GRU/LSTM (or a small
transformer) reads the per-slice embeddings of the 2D CNN in slice order, with the spacing
between slices as an extra input, and predicts refined per-slice logits plus one study logit per
label.

Inputs per slice are ``[features (D), z feature (1)]``. ``features`` is whatever the training
stage extracted: the slice CNN's embedding, optionally concatenated with its six logits (then
``in_dim = D + 6``); the model treats it as an opaque vector, so both choices work.

Masks are prefix masks: real slices first, padding after (what
:func:`ich.data.datasets.collate_sequences` produces). Padded steps never influence real steps:
RNNs run on packed sequences, the transformer uses a key padding mask, pooling is masked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ich.errors import ConfigError
from ich.labels import LABELS

SequenceKind = Literal["gru", "lstm", "transformer"]

#: Typical RSNA slice spacing (mm); z features are log(spacing / this), so 5 mm -> 0.
Z_REFERENCE_MM = 5.0


def z_feature(z_spacing: torch.Tensor) -> torch.Tensor:
    """Normalise slice spacing (mm) to a small number: (B, T) -> (B, T, 1).

    A log keeps 0.6 mm thin slices and 10 mm gaps on one scale; clamping guards against zero or
    absurd spacings from broken headers.
    """
    z = torch.nan_to_num(z_spacing.float(), nan=Z_REFERENCE_MM).abs().clamp(0.1, 50.0)
    return torch.log(z / Z_REFERENCE_MM).unsqueeze(-1)


def lengths_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Real-step counts (B,) of a prefix mask (B, T); raises if a mask is not a prefix mask."""
    mask = mask.bool()
    lengths = mask.sum(dim=1)
    steps = torch.arange(mask.shape[1], device=mask.device)
    if not torch.equal(mask, steps.unsqueeze(0) < lengths.unsqueeze(1)):
        raise ValueError("mask must be a prefix mask (real steps first, then padding)")
    if int(lengths.min()) < 1:
        raise ValueError("every sequence needs at least one real step")
    return lengths


def sinusoidal_positions(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """Fixed sine/cosine position codes (T, dim) for the transformer (no length limit)."""
    pos = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim)
    )
    out = torch.zeros(length, dim, device=device)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]
    return out


class SequenceModel(nn.Module):
    """Bidirectional RNN or transformer over a series' slices -> slice and study logits.

    Args:
        in_dim: Size D of the per-slice feature vector (without the z feature, added here).
        kind: ``"gru"`` / ``"lstm"`` (bidirectional) or ``"transformer"`` (encoder).
        hidden: Width of the projection and of the per-slice representation.
        layers: RNN / transformer layers.
        dropout: Dropout after the projection and between layers.
        num_labels: Outputs per slice and per study (the run's labels).
        temperature: Divides every logit (calibration fitted after training; 1 while training).
    """

    def __init__(
        self,
        in_dim: int,
        kind: SequenceKind = "gru",
        hidden: int = 128,
        layers: int = 2,
        dropout: float = 0.2,
        num_labels: int = len(LABELS),
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        if kind not in ("gru", "lstm", "transformer"):
            raise ConfigError(f"unknown sequence model kind {kind!r}: gru, lstm or transformer")
        if hidden % 2:
            raise ConfigError(f"hidden must be even (two RNN directions), got {hidden}")
        if not temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        self.in_dim, self.kind, self.hidden = in_dim, kind, hidden
        self.layers, self.dropout_p, self.temperature = layers, dropout, temperature
        # (B, T, D+1) -> (B, T, H)
        self.proj = nn.Sequential(
            nn.Linear(in_dim + 1, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Dropout(dropout)
        )
        self.encoder: nn.Module
        if kind == "transformer":
            layer = nn.TransformerEncoderLayer(
                hidden, nhead=max(1, hidden // 32), dim_feedforward=2 * hidden,
                dropout=dropout, batch_first=True, norm_first=True,
            )
            self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        else:
            rnn = nn.GRU if kind == "gru" else nn.LSTM
            # Two directions of H/2 each: the output width stays H for the residual.
            self.encoder = rnn(
                hidden, hidden // 2, num_layers=layers, batch_first=True, bidirectional=True,
                dropout=dropout if layers > 1 else 0.0,
            )
        self.norm = nn.LayerNorm(hidden)
        self.num_labels = num_labels
        self.slice_head = nn.Linear(hidden, num_labels)
        self.study_head = nn.Linear(2 * hidden, num_labels)

    def model_args(self) -> dict[str, object]:
        """Keyword arguments that rebuild this architecture (for checkpoints)."""
        return {
            "in_dim": self.in_dim, "kind": self.kind, "hidden": self.hidden,
            "layers": self.layers, "dropout": self.dropout_p, "num_labels": self.num_labels,
            "temperature": self.temperature,
        }

    def _encode(self, h: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Contextualise (B, T, H) -> (B, T, H); padded steps never reach real ones."""
        if self.kind == "transformer":
            h = h + sinusoidal_positions(h.shape[1], self.hidden, h.device)
            out: torch.Tensor = self.encoder(h, src_key_padding_mask=~mask)
            return out
        packed = pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out_packed, _ = self.encoder(packed)
        out, _ = pad_packed_sequence(out_packed, batch_first=True, total_length=h.shape[1])
        return out

    def forward(
        self, feats: torch.Tensor, z_spacing: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Refine slice predictions and predict the study.

        Args:
            feats: Per-slice features (B, T, D), in slice order.
            z_spacing: Spacing to the previous slice in mm (B, T).
            mask: True for real slices (B, T), a prefix mask.

        Returns:
            ``slice_logits`` (B, T, 6), zero at padded steps, and ``study_logits`` (B, 6).
        """
        mask = mask.bool()
        lengths = lengths_from_mask(mask)
        m = mask.unsqueeze(-1)  # (B, T, 1)
        x = torch.cat([feats.float(), z_feature(z_spacing)], dim=-1)  # (B, T, D+1)
        h = self.proj(x.masked_fill(~m, 0.0))  # (B, T, H)
        # Residual: the head sees the slice's own projection plus its context.
        h = self.norm(h + self._encode(h, mask, lengths)).masked_fill(~m, 0.0)
        slice_logits = self.slice_head(h).masked_fill(~m, 0.0)  # (B, T, 6)
        mean = h.sum(dim=1) / lengths.unsqueeze(1).to(h.dtype)  # (B, H)
        peak = h.masked_fill(~m, float("-inf")).amax(dim=1)  # (B, H)
        study_logits = self.study_head(torch.cat([peak, mean], dim=-1))  # (B, 6)
        return slice_logits / self.temperature, study_logits / self.temperature


class SequenceEnsemble(nn.Module):
    """Sequence models trained alone (other seeds) whose logits are averaged.

    Why: stage 2 learns from a few dozen series and picks its epoch on a validation fold of a
    few patients, so one model depends on its seed as much as on the data (the demo's AUC on an
    independent phantom moved by 0.05 with the stage-2 seed alone); the average of a few is
    steadier and, on data unlike the training set, a little better than its average member.

    Args:
        members: The models, each at temperature 1.
        temperature: Divides the averaged logits (fitted on the validation fold).
    """

    def __init__(self, members: Sequence[SequenceModel], temperature: float = 1.0) -> None:
        super().__init__()
        if not members:
            raise ConfigError("a sequence ensemble needs at least one member")
        if not temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        self.members = nn.ModuleList(members)
        self.temperature = temperature

    def forward(
        self, feats: torch.Tensor, z_spacing: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The members' mean slice (B, T, 6) and study (B, 6) logits, over the temperature."""
        outs = [m(feats, z_spacing, mask) for m in self.members]
        slices = torch.stack([s for s, _ in outs]).mean(dim=0)
        study = torch.stack([s for _, s in outs]).mean(dim=0)
        return slices / self.temperature, study / self.temperature


#: What stage 2 runs at inference: one sequence model or an ensemble of them.
StudyModel = SequenceModel | SequenceEnsemble


def reverse_padded(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence's real steps along dim 1, padding stays at the end.

    Reversal test-time augmentation is ``reverse_padded(model(reverse_padded(...)))``
    (:func:`read_both_ways`, which also shifts the per-slice ``z_spacing``).

    Args:
        x: (B, T, ...) tensor.
        mask: (B, T) prefix mask.
    """
    lengths = lengths_from_mask(mask)
    steps = torch.arange(mask.shape[1], device=x.device).unsqueeze(0)  # (1, T)
    src = (lengths.unsqueeze(1) - 1 - steps).clamp(min=0)  # (B, T)
    src = torch.where(steps < lengths.unsqueeze(1), src, steps)
    index = src.view(*src.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return torch.gather(x, 1, index)


def read_both_ways(
    model: StudyModel, feats: torch.Tensor, z_spacing: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean slice (B, T, K) and study (B, K) logits of each series read forwards and in
    reverse.

    Why: stage 2 trains on series read either way (half are reversed: a head is scanned upwards
    or downwards), so the two readings are two views of one series, and their mean is steadier
    than either. It costs a second pass of a model that takes milliseconds, so every prediction
    and every validation score uses it, and the temperature is fitted on what inference returns.

    Args:
        feats: (B, T, F). z_spacing: (B, T), each slice's distance to the previous one (the
            first repeats the second's). mask: (B, T) prefix mask.
    """
    fwd_slices, fwd_study = model(feats, z_spacing, mask)
    # The padded form of ich.data.sequences.reverse_spacing (which training's reversals use):
    # reversed, slice t's previous is its old successor, and the first repeats the second's.
    rz = reverse_padded(z_spacing, mask)
    rev_slices, rev_study = model(
        reverse_padded(feats, mask), torch.cat([rz[:, :1], rz[:, :-1]], dim=1), mask
    )
    return (fwd_slices + reverse_padded(rev_slices, mask)) / 2, (fwd_study + rev_study) / 2
