"""Domain check: how far a series lies from the data the model was trained on.

A model answers every input, even one unlike anything it saw; on such input its probabilities
mean nothing (a phantom-trained model calls hemorrhage on most real scans). Each series gets a
feature vector of

* intensity statistics inside the head (:func:`intensity_features`: head and bone fraction,
  soft-tissue HU quantiles, noise level), from the preprocessed HU images, and
* the slice CNN's embeddings, averaged over the series and projected on their first principal
  components (fitted on the training series),

standardised with the training series' mean and spread. Its squared Mahalanobis distance to
the training series (Ledoit-Wolf shrunk covariance: few series, many features) is the
distance. The threshold is the 95th percentile of distances of *held-out* training-domain
series: the validation fold scored by the final fit plus the training series scored by
cross-fitted models (each series scored by a fit that did not see it), so about 5 % of new
series from the training domain are flagged. ``domain_score = distance / threshold``: above 1
means outside the training data, and scores of several runs can be averaged.

The fitted model is plain numbers in ``RUN/domain.json`` (no pickle).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ich.atomic import atomic_write_text
from ich.errors import CheckpointError

#: File of a run's fitted domain model.
DOMAIN_FILE = "domain.json"

#: Names of :func:`intensity_features`, in order.
INTENSITY_FEATURES = (
    "head_fraction",
    "bone_fraction",
    "fat_fraction",
    "soft_p05",
    "soft_p50",
    "soft_p95",
    "soft_iqr",
    "noise_hu",
)


def intensity_features(images: np.ndarray) -> np.ndarray:
    """Intensity statistics of one series inside the head: (T, S, S) HU -> (8,) float64.

    Head = pixels above -300 HU (air is -1000). Soft tissue = head pixels in [-20, 120] HU
    (brain, CSF, blood, scalp). Noise = robust σ of horizontal neighbour differences where both
    pixels are in the brain range [0, 80] (MAD x 1.4826 / sqrt 2).
    """
    hu = np.asarray(images, dtype=np.float32)
    head = hu > -300
    n_head = max(int(head.sum()), 1)
    inside = hu[head]
    soft = inside[(inside >= -20) & (inside <= 120)]
    if soft.size == 0:
        soft = np.zeros(1, np.float32)
    p05, p25, p50, p75, p95 = np.percentile(soft, [5, 25, 50, 75, 95])
    left, right = hu[..., :-1], hu[..., 1:]
    both = (left >= 0) & (left <= 80) & (right >= 0) & (right <= 80)
    diff = (right - left)[both]
    mad = float(np.median(np.abs(diff - np.median(diff)))) if diff.size else 0.0
    noise = mad * 1.4826 / np.sqrt(2)
    return np.array(
        [
            n_head / head.size,
            float((inside > 300).sum()) / n_head,
            float(((inside > -200) & (inside < -20)).sum()) / n_head,
            p05,
            p50,
            p95,
            p75 - p25,
            noise,
        ],
        dtype=np.float64,
    )


@dataclass
class DomainModel:
    """Standardisation, embedding projection, location/precision and threshold of the fit.

    Attributes:
        intensity_mean, intensity_std: (8,) of the training series' intensity features.
        emb_mean: (D,) mean of the training series' mean embeddings.
        components: (k, D) principal axes of those embeddings.
        proj_std: (k,) spread of the training series along each axis.
        precision: (8 + k, 8 + k) inverse shrunk covariance of the standardised features.
        threshold: Distance above which a series is outside the domain (NaN until calibrated).
        n_train: Training series in the fit.
        info: How the threshold was made (quantile, held-out counts, flagged fraction).
    """

    intensity_mean: np.ndarray
    intensity_std: np.ndarray
    emb_mean: np.ndarray
    components: np.ndarray
    proj_std: np.ndarray
    precision: np.ndarray
    threshold: float = float("nan")
    n_train: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def features(self, intensity: np.ndarray, embedding: np.ndarray) -> np.ndarray:
        """Standardised features (N, 8 + k) from intensity (N, 8) and mean embeddings (N, D)."""
        a = (np.atleast_2d(intensity) - self.intensity_mean) / self.intensity_std
        b = (np.atleast_2d(embedding) - self.emb_mean) @ self.components.T / self.proj_std
        return np.concatenate([a, b], axis=1)

    def distance(self, intensity: np.ndarray, embedding: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance (N,) to the training series (their mean is 0)."""
        z = self.features(intensity, embedding)
        return np.einsum("ni,ij,nj->n", z, self.precision, z)

    def score(self, intensity: np.ndarray, embedding: np.ndarray) -> np.ndarray:
        """``distance / threshold`` (N,): > 1 is outside the training domain."""
        if not np.isfinite(self.threshold) or self.threshold <= 0:
            raise CheckpointError("domain model has no calibrated threshold")
        return self.distance(intensity, embedding) / self.threshold

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready numbers."""
        return {
            k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DomainModel:
        """Inverse of :meth:`to_dict`."""
        arrays = ("intensity_mean", "intensity_std", "emb_mean", "components", "proj_std",
                  "precision")
        values: dict[str, Any] = {
            k: np.asarray(data[k], dtype=np.float64) if k in arrays else data[k] for k in data
        }
        return cls(**values)

    def save(self, path: str | Path) -> Path:
        """Write as JSON, atomically."""
        return atomic_write_text(Path(path), json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> DomainModel:
        """Read :meth:`save`'s file.

        Raises:
            CheckpointError: The file is missing or not a domain model, naming the file.
        """
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{path}: cannot read the domain model ({exc})") from exc


def fit_domain(intensity: np.ndarray, embedding: np.ndarray, k: int = 8) -> DomainModel:
    """Fit on training series: intensity (N, 8) and mean embeddings (N, D); no threshold yet.

    Raises:
        ValueError: Fewer than 3 series (no spread to measure).
    """
    from sklearn.covariance import LedoitWolf

    x = np.atleast_2d(np.asarray(intensity, dtype=np.float64))
    e = np.atleast_2d(np.asarray(embedding, dtype=np.float64))
    if len(x) < 3 or len(x) != len(e):
        raise ValueError(f"need >= 3 series with both feature kinds, got {len(x)} and {len(e)}")
    i_mean, i_std = x.mean(axis=0), x.std(axis=0)
    i_std = np.where(i_std > 1e-9, i_std, 1.0)  # a constant feature: deviations still count
    e_mean = e.mean(axis=0)
    _, sv, vt = np.linalg.svd(e - e_mean, full_matrices=False)
    k = max(1, min(k, len(x) - 2, vt.shape[0]))
    comps = vt[:k]
    proj_std = sv[:k] / np.sqrt(len(x))
    proj_std = np.where(proj_std > 1e-9, proj_std, 1.0)
    model = DomainModel(i_mean, i_std, e_mean, comps, proj_std, np.eye(len(i_mean) + k))
    z = model.features(x, e)
    model.precision = LedoitWolf(assume_centered=True).fit(z).precision_
    model.n_train = len(x)
    return model


def fit_calibrated(
    intensity: np.ndarray,
    embedding: np.ndarray,
    train: np.ndarray,
    quantile: float = 0.95,
    k: int = 8,
    folds: int = 5,
    seed: int = 0,
) -> DomainModel:
    """Fit on the ``train`` rows and set the threshold on held-out training-domain series.

    Held-out distances: every non-``train`` row scored by the final fit, and every ``train``
    row scored by a fit on the other training rows (``folds``-fold cross-fit). The threshold
    is their ``quantile``: about ``1 - quantile`` of new in-domain series are flagged.

    Args:
        intensity: (N, 8) per series.
        embedding: (N, D) per series.
        train: (N,) bool, the series the model trained on; the others are held out.
    """
    x, e = np.asarray(intensity, np.float64), np.asarray(embedding, np.float64)
    train = np.asarray(train, dtype=bool)
    model = fit_domain(x[train], e[train], k)
    held = [model.distance(x[~train], e[~train])]
    rows = np.flatnonzero(train)
    part = np.random.default_rng(seed).permutation(len(rows)) % max(2, min(folds, len(rows)))
    for f in np.unique(part):
        out, rest = rows[part == f], rows[part != f]
        if len(rest) >= 3:
            held.append(fit_domain(x[rest], e[rest], k).distance(x[out], e[out]))
    dist = np.concatenate(held)
    model.threshold = float(np.quantile(dist, quantile))
    model.info = {
        "quantile": quantile,
        "held_out_series": len(dist),
        "validation_series": int((~train).sum()),
        "flagged_validation": (
            float((held[0] > model.threshold).mean()) if (~train).any() else None
        ),
        "features": [*INTENSITY_FEATURES, *(f"emb_pc{i}" for i in range(len(model.proj_std)))],
    }
    return model


def series_inputs(
    images: Sequence[np.ndarray] | np.ndarray, embeddings: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One series' (8,) intensity features and (D,) mean embedding (from (T, D))."""
    return intensity_features(np.asarray(images)), np.asarray(embeddings, np.float64).mean(axis=0)


def fit_run_domain(cache: Any, folds: np.ndarray, run_dir: Path, val_fold: int) -> Path | None:
    """Fit and calibrate a run's domain model from its saved slice embeddings.

    Training series = labelled series outside ``val_fold``; held out = the validation fold.
    Reads ``RUN/oof/slice_embeddings.npz`` (written by stage 2), writes ``RUN/domain.json``.
    Returns None (nothing written) when the run has no embeddings or too few series.
    """
    npz = Path(run_dir) / "oof" / "slice_embeddings.npz"
    if not npz.is_file():
        return None
    with np.load(npz, allow_pickle=False) as data:
        emb = data["embeddings"]
    rows = [(uid, np.asarray(idx)) for uid, idx in cache.series_index().items()]
    rows = [(u, i) for u, i in rows if not np.isnan(cache.labels[i]).any()]
    if len(rows) < 6:
        return None
    inputs = [series_inputs(cache.images(idx), emb[idx]) for _, idx in rows]
    train = np.array([int(folds[idx[0]]) != val_fold for _, idx in rows])
    model = fit_calibrated(
        np.stack([a for a, _ in inputs]), np.stack([b for _, b in inputs]), train
    )
    return model.save(Path(run_dir) / DOMAIN_FILE)


def load_run_domain(run_dir: str | Path) -> DomainModel | None:
    """A run's domain model, or None for runs trained before the domain check existed."""
    path = Path(run_dir) / DOMAIN_FILE
    return DomainModel.load(path) if path.is_file() else None
