"""Predictor: load trained runs once, predict whole series (slice CNN + study sequence model).

Everything the models need to be fed correctly (windows, neighbour offsets, input size, crop
settings) is read from the checkpoints, never from constants, so a run trained with other
settings is fed exactly what it saw in training. Several runs form an ensemble: their
probabilities are averaged.

Test-time augmentation (``tta``): 1 = none; 2 = the slice CNN also sees each slice flipped
left-right (when the run did not already train its sequence model on flip-averaged
embeddings) and the sequence model also reads the series in reverse; the views are averaged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from ich.data.augment import prepare_batch
from ich.data.datasets import ChannelSpec, SliceDataset, collate_slices
from ich.data.preprocess import PreprocessSpec, preprocess_hu
from ich.data.sequences import reverse_spacing
from ich.dicom.io import SliceMeta
from ich.dicom.series import order_series
from ich.domain import DomainModel, load_run_domain, series_inputs
from ich.errors import CheckpointError
from ich.labels import LABELS
from ich.models.sequence import SequenceModel
from ich.models.slice_cnn import SliceModel
from ich.onnx_engine import OnnxSliceModel, onnx_available
from ich.train.checkpoint import load_checkpoint, load_sequence_model, load_slice_model
from ich.train.embeddings import embed_batch, sequence_features

#: How the slice CNN runs: PyTorch, ONNX Runtime, or ONNX Runtime when on the CPU and installed.
Engine = Literal["auto", "torch", "onnx"]

#: What a model trained by ``ich demo`` (or on any phantom cohort) may be used for.
PHANTOM_NOTE = "trained on a synthetic phantom cohort: for demonstration and testing only"


@dataclass
class SeriesPrediction:
    """Predictions for one series, in slice order along the normal.

    Attributes:
        order: (T,) indices into the caller's input lists, in slice order.
        z: (T,) slice positions along the normal, mm.
        slice_probs: (T, 6) final per-slice probabilities (sequence-refined when the run has a
            sequence model), columns in ``LABELS`` order.
        cnn_probs: (T, 6) the slice CNN's own probabilities.
        study_probs: (6,) study-level probabilities.
        issues: Problems found while ordering the series (gaps, duplicates, ...).
        domain_score: Distance of the series from the training data over the calibrated
            threshold (:mod:`ich.domain`); > 1: outside it. NaN when no run has a domain model.
        in_domain: ``domain_score <= 1``; None when unknown. Out of domain, the probabilities
            are unreliable and must be shown as such.
    """

    order: np.ndarray
    z: np.ndarray
    slice_probs: np.ndarray
    cnn_probs: np.ndarray
    study_probs: np.ndarray
    issues: list[str] = field(default_factory=list)
    domain_score: float = float("nan")
    in_domain: bool | None = None


class SeriesArrays:
    """One preprocessed series shaped like :class:`ich.data.cache.SliceCache`, so that
    :class:`SliceDataset` builds the model input (windows x neighbours) exactly as in training."""

    def __init__(self, images: np.ndarray) -> None:
        self._images = images  # (T, S, S) int16 HU
        self.size = int(images.shape[-1])
        self.catalog = pd.DataFrame({"series_instance_uid": ["series"] * len(images)})
        self.labels = np.full((len(images), len(LABELS)), np.nan, dtype=np.float32)

    def images(self, idx: np.ndarray | list[int]) -> np.ndarray:
        return self._images[np.asarray(idx, dtype=np.int64)]

    def series_index(self) -> dict[str, np.ndarray]:
        return {"series": np.arange(len(self._images))}


@dataclass
class RunModels:
    """The models of one run and how to feed them."""

    run_dir: Path
    slice_model: SliceModel
    sequence_model: SequenceModel | None
    channels: ChannelSpec
    input_size: int
    preprocess: PreprocessSpec
    flip_features: bool
    config: dict[str, Any]
    onnx: OnnxSliceModel | None = None
    domain: DomainModel | None = None


def _checkpoint(run_dir: Path, names: Sequence[str]) -> Path | None:
    for name in names:
        path = run_dir / "checkpoints" / name
        if path.is_file():
            return path
    return None


def load_run(run_dir: str | Path, device: torch.device, engine: Engine = "auto") -> RunModels:
    """Load a run folder's best slice model and (when present) its sequence model.

    ``engine`` runs the slice CNN with PyTorch (``"torch"``) or ONNX Runtime (``"onnx"``);
    ``"auto"`` takes ONNX Runtime on the CPU when it is installed.
    """
    run_dir = Path(run_dir)
    slice_path = _checkpoint(run_dir, ("slice_best.pt", "slice_last.pt"))
    if slice_path is None:
        raise CheckpointError(
            f"{run_dir}: no checkpoints/slice_best.pt; is this an `ich train` run?"
        )
    ckpt = load_checkpoint(slice_path)
    if list(ckpt["labels"]) != list(LABELS):
        raise CheckpointError(f"{slice_path}: label order {ckpt['labels']} differs from {LABELS}")
    channels = ChannelSpec.from_dict({"windows": ckpt["windows"], "offsets": ckpt["offsets"]})
    seq_path = _checkpoint(run_dir, ("sequence_best.pt",))
    seq_ckpt = load_checkpoint(seq_path) if seq_path is not None else None
    slice_model = load_slice_model(ckpt).to(device)
    use_onnx = engine == "onnx" or (engine == "auto" and device.type == "cpu" and onnx_available())
    onnx = (
        OnnxSliceModel(slice_model, channels.n_channels, int(ckpt["input_size"]))
        if use_onnx
        else None
    )
    return RunModels(
        run_dir=run_dir,
        slice_model=slice_model,
        sequence_model=load_sequence_model(seq_ckpt).to(device) if seq_ckpt else None,
        channels=channels,
        input_size=int(ckpt["input_size"]),
        preprocess=PreprocessSpec.from_dict(ckpt["preprocess"]),
        flip_features=bool(seq_ckpt.get("tta_flip", True)) if seq_ckpt else False,
        config=dict(ckpt.get("config", {})),
        onnx=onnx,
        domain=load_run_domain(run_dir),
    )


def describe_training_data(config: dict[str, Any]) -> str:
    """What a run was trained on, in words: the run's ``provenance`` (``ich demo`` says
    "synthetic phantom cohort ..."), with the phantom caveat added where it applies."""
    text = str(config.get("provenance", "") or "") or "unknown data"
    if "phantom" in text.lower() or "synthetic" in text.lower():
        text += f" — {PHANTOM_NOTE}"
    return text


class Predictor:
    """Loaded once, predicts series after series (web app, ``ich predict``, ``ich evaluate``).

    Args:
        runs: The loaded runs (an ensemble when several).
        device: Where the models run.
        tta: 1 (none) or 2 (flip + reversed-series views), see the module docstring.
        batch_size: Slices per CNN forward pass.
    """

    def __init__(
        self, runs: list[RunModels], device: torch.device, tta: int = 1, batch_size: int = 32
    ) -> None:
        if not runs:
            raise CheckpointError("no run given")
        if tta not in (1, 2):
            raise ValueError(f"tta must be 1 or 2, got {tta}")
        self.runs, self.device, self.tta, self.batch_size = runs, device, tta, batch_size

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path | Sequence[str | Path],
        device: str = "cpu",
        tta: int = 1,
        engine: Engine = "auto",
    ) -> Predictor:
        """Load one run folder, or several (averaged as an ensemble); see :func:`load_run`.

        A fold set (``ich train --all-folds``) stands for its k fold runs.
        """
        from ich.train.foldset import expand_runs

        dirs = expand_runs([run_dir] if isinstance(run_dir, (str, Path)) else list(run_dir))
        dev = torch.device(device)
        return cls([load_run(d, dev, engine) for d in dirs], dev, tta)

    @property
    def preprocess(self) -> PreprocessSpec:
        """The preprocessing of the first run (what :meth:`predict_slices` applies)."""
        return self.runs[0].preprocess

    @property
    def offsets(self) -> tuple[int, ...]:
        """Neighbour offsets of the first run's slice CNN (the order :meth:`heatmap` wants)."""
        return tuple(self.runs[0].channels.offsets)

    @property
    def provenance(self) -> dict[str, Any]:
        """What the models are and what they were trained on, for people reading results."""
        first = self.runs[0]
        data = [describe_training_data(r.config) for r in self.runs]
        return {
            "runs": [str(r.run_dir) for r in self.runs],
            "backbone": first.config.get("model", {}).get("backbone", "unknown"),
            "sequence_model": first.sequence_model is not None,
            "training_data": "; ".join(sorted(set(data))),
            "note": "Research use only — not for diagnosis.",
        }

    @torch.no_grad()
    def predict_preprocessed(
        self, images: np.ndarray, z_spacing: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predict one series already preprocessed and in slice order.

        Args:
            images: int16 (T, S, S) HU as made by ``preprocess_hu`` with the runs' spec.
            z_spacing: (T,) mm to the previous slice.

        Returns:
            cnn_probs (T, 6), slice_probs (T, 6), study_probs (6,), averaged over runs.
        """
        cnn, final, study, _ = self.predict_with_domain(images, z_spacing)
        return cnn, final, study

    @torch.no_grad()
    def predict_with_domain(
        self, images: np.ndarray, z_spacing: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """:meth:`predict_preprocessed` plus the series' domain score (mean over the runs
        that have a domain model; NaN when none has)."""
        outs = [self._predict_run(run, images, z_spacing) for run in self.runs]
        cnn = np.mean([o[0] for o in outs], axis=0)
        final = np.mean([o[1] for o in outs], axis=0)
        study = np.mean([o[2] for o in outs], axis=0)
        scores = [o[3] for o in outs if np.isfinite(o[3])]
        return cnn, final, study, float(np.mean(scores)) if scores else float("nan")

    def _predict_run(
        self, run: RunModels, images: np.ndarray, z_spacing: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        ds = SliceDataset(
            SeriesArrays(images),
            np.arange(len(images)),
            run.channels,
            run.input_size,
            None,
            "uint8",
        )
        flip = run.flip_features or (self.tta > 1 and run.sequence_model is None)
        embs, logits = [], []
        for start in range(0, len(ds), self.batch_size):
            ks = list(range(start, min(start + self.batch_size, len(ds))))
            x = prepare_batch(collate_slices(ds.__getitems__(ks))[0], self.device)  # (B, C, S, S)
            if run.onnx is not None:
                e, lg = run.onnx.embed_batch(x.numpy(), flip)
            else:
                e_t, lg_t = embed_batch(run.slice_model, x, flip)
                e, lg = e_t.float().cpu().numpy(), lg_t.float().cpu().numpy()
            embs.append(e)
            logits.append(lg)
        emb, logit = np.concatenate(embs), np.concatenate(logits)
        cnn = _sigmoid(logit)
        domain = float("nan")
        if run.domain is not None:
            intensity, mean_emb = series_inputs(images, emb)
            domain = float(run.domain.score(intensity, mean_emb)[0])
        if run.sequence_model is None:
            return cnn, cnn, cnn.max(axis=0), domain
        feats = sequence_features(emb, logit)
        slice_l, study_l = self._sequence(run.sequence_model, feats, z_spacing)
        if self.tta > 1:
            rs, rt = self._sequence(run.sequence_model, feats[::-1], reverse_spacing(z_spacing))
            slice_l, study_l = (slice_l + rs[::-1]) / 2, (study_l + rt) / 2
        return cnn, _sigmoid(slice_l), _sigmoid(study_l), domain

    def _sequence(
        self, model: SequenceModel, feats: np.ndarray, z_spacing: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        f = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))[None].to(self.device)
        z = torch.from_numpy(np.ascontiguousarray(z_spacing, dtype=np.float32))[None].to(
            self.device
        )
        mask = torch.ones(f.shape[:2], dtype=torch.bool, device=self.device)
        slice_logits, study_logits = model(f, z, mask)  # (1, T, 6), (1, 6)
        return slice_logits[0].float().cpu().numpy(), study_logits[0].float().cpu().numpy()

    def predict_slices(
        self, hus: Sequence[np.ndarray], metas: Sequence[SliceMeta]
    ) -> SeriesPrediction:
        """Order one series' slices along the normal, preprocess and predict them.

        Args:
            hus: HU images (rows, columns), one per slice, any order.
            metas: Their metadata (same order), all from one series.
        """
        if len(hus) != len(metas) or not hus:
            raise ValueError(f"need as many HU images as metas (got {len(hus)} and {len(metas)})")
        series = order_series(list(metas))
        if len(series) != 1:
            raise ValueError(f"predict_slices takes one series, got {len(series)}")
        ordered = series[0]
        position = {id(m): i for i, m in enumerate(metas)}
        order = np.array([position[id(m)] for m in ordered.metas], dtype=np.int64)
        images = np.stack([preprocess_hu(hus[i], self.preprocess) for i in order])
        cnn, final, study, domain = self.predict_with_domain(images, ordered.z_spacing)
        in_domain = bool(domain <= 1.0) if np.isfinite(domain) else None
        return SeriesPrediction(
            order, ordered.z, final, cnn, study, list(ordered.issues), domain, in_domain
        )

    def heatmap(
        self, hu: np.ndarray, label: str, neighbours: Sequence[np.ndarray] | None = None
    ) -> np.ndarray:
        """Grad-CAM of the first run's slice CNN for ``label``, at the input's resolution.

        Args:
            hu: The slice's HU image (rows, columns).
            label: One of ``LABELS``.
            neighbours: HU images for the run's neighbour offsets (same order as the offsets,
                the slice itself included); the slice is repeated when omitted.

        Returns:
            float32 (rows, columns) in [0, 1].
        """
        from ich.explain import grad_cam_heatmap

        return grad_cam_heatmap(self.runs[0], hu, label, neighbours, self.device)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))).astype(np.float32)
