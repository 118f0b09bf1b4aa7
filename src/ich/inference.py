"""Predictor: load trained runs once, predict whole series (slice CNN + study sequence model).

Everything the models need to be fed correctly (windows, neighbour offsets, input size, crop
settings) is read from the checkpoints, never from constants, so a run trained with other
settings is fed exactly what it saw in training. Several runs form an ensemble: their
probabilities are averaged.

Test-time augmentation (``tta``, :mod:`ich.runs.tta`): 1 = none; 2 = + a left-right flip;
4 = + two shifted crops; 8 = + more crops and their flips. A run without a sequence model
averages the slice CNN's logits over the views. A run with one keeps its features as it was
trained (flip-averaged or not): the sequence model reads the series once per crop position,
forwards and in reverse (:func:`ich.models.sequence.read_both_ways`, whatever ``tta``), and those
outputs are averaged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ich.data.augment import prepare_batch
from ich.data.datasets import SeriesArrays, SliceDataset, collate_slices
from ich.data.preprocess import PreprocessSpec, preprocess_hu
from ich.dicom.io import SliceMeta
from ich.dicom.series import order_series
from ich.domain import series_inputs
from ich.errors import CheckpointError
from ich.explain import grad_cam_heatmap
from ich.models.sequence import StudyModel, read_both_ways
from ich.runs.embed import embed_batch, sequence_features
from ich.runs.load import Engine, Member, RunModels, load_member, member_weights
from ich.runs.provenance import MemberInfo, ModelProvenance
from ich.runs.tta import View, apply_view, tta_views

#: What a model trained by ``ich demo`` (or on any phantom cohort) may be used for.
PHANTOM_NOTE = "trained on a synthetic phantom cohort: for demonstration and testing only"


@dataclass
class SeriesPrediction:
    """Predictions for one series, in slice order along the normal.

    Attributes:
        order: (T,) indices into the caller's input lists, in slice order.
        z: (T,) slice positions along the normal, mm.
        slice_probs: (T, L) final per-slice probabilities (sequence-refined when the run has a
            sequence model), columns in the order of :attr:`Predictor.labels` (the run's).
        cnn_probs: (T, L) the slice CNN's own probabilities.
        study_probs: (L,) study-level probabilities.
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


def describe_training_data(provenance: str | Mapping[str, object]) -> str:
    """What a run was trained on, in words: the run's ``provenance`` (``ich demo`` says
    "synthetic phantom cohort ..."), with the phantom caveat added where it applies.

    Args:
        provenance: The text, or a run configuration mapping with a ``provenance`` key.
    """
    if isinstance(provenance, Mapping):
        provenance = str(provenance.get("provenance", "") or "")
    text = str(provenance or "") or "unknown data"
    if "phantom" in text.lower() or "synthetic" in text.lower():
        text += f" — {PHANTOM_NOTE}"
    return text


class Predictor:
    """Loaded once, predicts series after series (web app, ``ich predict``, ``ich evaluate``).

    An ensemble averages its members with their weights; a member is a run or a fold set
    (whose fold runs are averaged inside it first), so each RUN argument counts once.

    Args:
        runs: The ensemble's members, or loaded runs (each then a member of weight 1).
        device: Where the models run.
        tta: Number of test-time views (1, 2, 4 or 8), see the module docstring.
        batch_size: Slices per CNN forward pass.
    """

    def __init__(
        self,
        runs: Sequence[RunModels | Member],
        device: torch.device,
        tta: int = 1,
        batch_size: int = 32,
    ) -> None:
        if not runs:
            raise CheckpointError("no run given")
        tta_views(tta)  # ValueError unless one of TTA_CHOICES
        self.members = [m if isinstance(m, Member) else Member(m.run_dir, [m]) for m in runs]
        self.device, self.tta, self.batch_size = device, tta, batch_size
        label_sets = {tuple(r.spec.labels): r.run_dir for r in self.runs}
        if len(label_sets) > 1:
            # Averaging columns that mean different things would be silently wrong.
            raise CheckpointError(
                "the ensemble's runs predict different labels ("
                + "; ".join(f"{d}: {', '.join(ls)}" for ls, d in label_sets.items())
                + "): combine only runs trained on the same label set"
            )

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path | Sequence[str | Path],
        device: str = "cpu",
        tta: int = 1,
        engine: Engine = "auto",
        weights: Sequence[float] | None = None,
    ) -> Predictor:
        """Load one run folder or fold set, or several (a weighted ensemble).

        Args:
            run_dir: Run folder(s) or fold set(s); each counts once in the ensemble.
            device: Torch device name.
            tta: Test-time augmentation views (1, 2, 4 or 8).
            engine: How the slice CNN runs (see :func:`ich.runs.load.load_run`).
            weights: One positive weight per ``run_dir`` entry (default: equal).
        """
        paths = [run_dir] if isinstance(run_dir, (str, Path)) else list(run_dir)
        shares = member_weights(len(paths), weights)
        dev = torch.device(device)
        return cls([load_member(p, dev, engine, w) for p, w in zip(paths, shares, strict=True)],
                   dev, tta)

    def subset(self, members: Sequence[Member]) -> Predictor:
        """A predictor over some of this one's members (models shared, not reloaded)."""
        return Predictor(list(members), self.device, self.tta, self.batch_size)

    @property
    def runs(self) -> list[RunModels]:
        """Every loaded run, member after member (fold runs included)."""
        return [r for m in self.members for r in m.runs]

    @property
    def labels(self) -> tuple[str, ...]:
        """The output names of every run (they share them), in column order (its ModelSpec)."""
        return tuple(self.runs[0].spec.labels)

    @property
    def preprocess(self) -> PreprocessSpec:
        """The preprocessing of the first member (:meth:`preprocess_groups` lists them all)."""
        return self.members[0].preprocess

    def preprocess_groups(self) -> list[tuple[PreprocessSpec, list[Member]]]:
        """Members grouped by the crop of their preprocessing (crop, margin): each group can
        be served by one cache (sizes may differ: images are resized on load)."""
        groups: dict[tuple[bool, float, int], tuple[PreprocessSpec, list[Member]]] = {}
        for m in self.members:
            p = m.preprocess
            groups.setdefault((p.crop, p.margin, p.version), (p, []))[1].append(m)
        return list(groups.values())

    @property
    def offsets(self) -> tuple[int, ...]:
        """Neighbour offsets of the first run's slice CNN (the order :meth:`heatmap` wants)."""
        return tuple(self.runs[0].channels.offsets)

    @property
    def provenance(self) -> ModelProvenance:
        """What the models are and what they were trained on, for people reading results."""
        first = self.runs[0]
        data = [describe_training_data(r.training_data) for r in self.runs]
        return ModelProvenance(
            runs=tuple(str(r.run_dir) for r in self.runs),
            members=tuple(MemberInfo(str(m.path), len(m.runs), m.weight) for m in self.members),
            backbone=first.backbone,
            sequence_model=first.sequence_model is not None,
            training_data="; ".join(sorted(set(data))),
        )

    def _average(
        self, outs: Sequence[tuple[float, tuple[np.ndarray, np.ndarray, np.ndarray]]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Weighted mean of (weight, (cnn, final, study)) outputs."""
        total = sum(w for w, _ in outs)
        return tuple(
            np.sum([w * o[k] for w, o in outs], axis=0).astype(np.float32) / total
            for k in range(3)
        )

    @torch.no_grad()
    def _predict_member(
        self, member: Member, images: np.ndarray, z_spacing: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A member's prediction: its runs (a fold set's folds) averaged equally."""
        return self._predict_member_domain(member, images, z_spacing)[:3]

    @torch.no_grad()
    def _predict_member_domain(
        self, member: Member, images: np.ndarray, z_spacing: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """:meth:`_predict_member` plus the mean domain score of its runs (NaN: none)."""
        outs = [self._predict_run(run, images, z_spacing) for run in member.runs]
        cnn, final, study = self._average([(1.0, o[:3]) for o in outs])
        return cnn, final, study, _mean_finite([o[3] for o in outs])

    @torch.no_grad()
    def predict_preprocessed(
        self, images: np.ndarray, z_spacing: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predict one series already preprocessed and in slice order.

        Args:
            images: int16 (T, S, S) HU as made by ``preprocess_hu`` with the runs' spec.
            z_spacing: (T,) mm to the previous slice.

        Returns:
            cnn_probs (T, L), slice_probs (T, L), study_probs (L,), averaged over members.

        Raises:
            CheckpointError: The members were trained with different crops: one preprocessed
                array cannot feed them all (:meth:`predict_slices` preprocesses per member).
        """
        self._require_one_preprocessing()
        cnn, final, study, _ = self._predict_all(images, z_spacing)
        return cnn, final, study

    @torch.no_grad()
    def predict_with_domain(
        self, images: np.ndarray, z_spacing: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """:meth:`predict_preprocessed` plus the series' domain score (mean over the members
        that have a domain model; NaN when none has)."""
        self._require_one_preprocessing()
        return self._predict_all(images, z_spacing)

    def _require_one_preprocessing(self) -> None:
        """One preprocessed array can feed the members only when they share a spec."""
        groups = self.preprocess_groups()
        if len(groups) > 1:
            raise CheckpointError(
                "the ensemble's members were trained with different preprocessing ("
                + "; ".join(f"{[str(m.path) for m in ms]}: crop={p.crop}, margin={p.margin}"
                            for p, ms in groups)
                + "): one preprocessed series cannot feed them all; predict DICOM slices "
                "(each member preprocesses its own) or use runs with the same preprocessing"
            )

    def _predict_all(
        self, images: np.ndarray, z_spacing: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        outs = [self._predict_member_domain(m, images, z_spacing) for m in self.members]
        cnn, final, study = self._average(
            [(m.weight, o[:3]) for m, o in zip(self.members, outs, strict=True)]
        )
        return cnn, final, study, _mean_finite([o[3] for o in outs])

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
        views = tta_views(self.tta)
        if run.sequence_model is None:  # every view, flips included, averaged in logit space
            groups = [(v, False) for v in views]
        else:  # one feature set per crop position, made as in training
            groups = [(View(v.dy, v.dx), run.flip_features) for v in views if not v.flip]
        embs = [self._embed(run, ds, v, flip) for v, flip in groups]  # each ((T, D), (T, L))
        emb = np.mean([e for e, _ in embs], axis=0)
        logit = np.mean([lg for _, lg in embs], axis=0)
        cnn = _sigmoid(logit)
        domain = float("nan")
        if run.domain is not None:
            intensity, mean_emb = series_inputs(images, emb)
            domain = float(run.domain.score(intensity, mean_emb)[0])
        if run.sequence_model is None:
            return cnn, cnn, cnn.max(axis=0), domain
        slice_ls, study_ls = [], []
        for e, lg in embs:
            feats = sequence_features(e, lg, run.sequence_features)
            sl, st = self._sequence(run.sequence_model, feats, z_spacing)
            slice_ls.append(sl)
            study_ls.append(st)
        slice_l, study_l = np.mean(slice_ls, axis=0), np.mean(study_ls, axis=0)
        return cnn, _sigmoid(slice_l), _sigmoid(study_l), domain

    def _embed(
        self, run: RunModels, ds: SliceDataset, view: View, flip: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings (T, D) and logits (T, L) of every slice of ``ds`` seen through ``view``
        (averaged with the view's flip when ``flip``)."""
        embs, logits = [], []
        for start in range(0, len(ds), self.batch_size):
            ks = list(range(start, min(start + self.batch_size, len(ds))))
            x = prepare_batch(collate_slices(ds.__getitems__(ks))[0], self.device)  # (B, C, S, S)
            x = apply_view(x, view)
            if run.onnx is not None:
                e, lg = run.onnx.embed_batch(x.cpu().numpy(), flip)
            else:
                e_t, lg_t = embed_batch(run.slice_model, x, flip)
                e, lg = e_t.float().cpu().numpy(), lg_t.float().cpu().numpy()
            embs.append(e)
            logits.append(lg)
        return np.concatenate(embs), np.concatenate(logits)

    def _sequence(
        self, model: StudyModel, feats: np.ndarray, z_spacing: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        f = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32))[None].to(self.device)
        z = torch.from_numpy(np.ascontiguousarray(z_spacing, dtype=np.float32))[None].to(
            self.device
        )
        mask = torch.ones(f.shape[:2], dtype=torch.bool, device=self.device)
        slice_logits, study_logits = read_both_ways(model, f, z, mask)  # (1, T, L), (1, L)
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
        # Each member is fed what it was trained on: one preprocessing per distinct spec.
        images: dict[PreprocessSpec, np.ndarray] = {}
        outs, scores = [], []
        for member in self.members:
            spec = member.preprocess
            if spec not in images:
                images[spec] = np.stack([preprocess_hu(hus[i], spec) for i in order])
            *probs, score = self._predict_member_domain(member, images[spec], ordered.z_spacing)
            outs.append((member.weight, tuple(probs)))
            scores.append(score)
        cnn, final, study = self._average(outs)  # type: ignore[arg-type]
        domain = _mean_finite(scores)
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
            label: One of the run's :attr:`labels` (else an UnknownLabelError).
            neighbours: HU images for the run's neighbour offsets (same order as the offsets,
                the slice itself included); the slice is repeated when omitted.

        Returns:
            float32 (rows, columns) in [0, 1].
        """
        return grad_cam_heatmap(self.runs[0], hu, label, neighbours, self.device)


def _mean_finite(values: Sequence[float]) -> float:
    """Mean of the finite values, NaN when there is none."""
    finite = [float(v) for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))).astype(np.float32)
