"""SliceDataset / SequenceDataset: exact channels on a fake cache, labels, augmentation, seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ich.data.augment import AugmentConfig
from ich.data.datasets import (
    ChannelSpec,
    SliceDataset,
    collate_slices,
    oversample_weights,
)
from ich.data.loader import slice_loader
from ich.data.sequences import SequenceDataset, collate_sequences, reverse_spacing
from ich.dicom.windowing import apply_window
from ich.errors import ConfigError
from ich.labels import LABELS


class FakeCache:
    """Two series (3 and 2 slices); slice i is filled with HU value 10 * i."""

    def __init__(self, size: int = 8, labelled: bool = True) -> None:
        self.size = size
        self.catalog = pd.DataFrame({
            "series_instance_uid": ["A", "A", "A", "B", "B"],
            "patient_id": ["p1", "p1", "p1", "p2", "p2"],
            "slice_index": [0, 1, 2, 0, 1],
        })
        n = len(self.catalog)
        self._img = (np.arange(n, dtype=np.int16) * 10)[:, None, None] * np.ones(
            (1, size, size), np.int16
        )
        lab = np.zeros((n, 6), np.float32)
        lab[2] = [1, 0, 0, 0, 0, 1]  # subdural on slice 2
        self._labels = lab if labelled else np.full((n, 6), np.nan, np.float32)

    def image(self, i: int) -> np.ndarray:
        return self._img[i].copy()

    def images(self, idx: np.ndarray | list[int]) -> np.ndarray:
        return self._img[np.asarray(idx)].copy()

    @property
    def labels(self) -> np.ndarray:
        return self._labels

    def series_index(self) -> dict[str, np.ndarray]:
        return {"A": np.array([0, 1, 2]), "B": np.array([3, 4])}

    def neighbours(self, i: int, offsets: tuple[int, ...] = (-1, 0, 1)) -> list[int]:
        lo, hi = (0, 2) if i < 3 else (3, 4)
        return [min(max(i + o, lo), hi) for o in offsets]


def _expected(hu: float, window: str) -> float:
    from ich.dicom.windowing import WINDOWS

    w = WINDOWS[window]
    return float(apply_window(np.array([hu]), w.center, w.width)[0])


def test_three_windows_of_one_slice() -> None:
    ds = SliceDataset(FakeCache(), [1], ChannelSpec(), input_size=8)
    x, y, i = ds[0]
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32
    for c, name in enumerate(("brain", "subdural", "soft_tissue")):
        assert torch.allclose(x[c], torch.full((8, 8), _expected(10.0, name)))
    assert i == 1 and y.shape == (6,)


def test_neighbour_offsets_take_right_slices_and_clamp() -> None:
    cache = FakeCache()
    spec = ChannelSpec(("soft_tissue",), (-1, 0, 1))
    ds = SliceDataset(cache, [0, 1, 2, 3, 4], spec, input_size=8)
    for k in range(5):
        x, _, i = ds[k]
        expected = [_expected(10.0 * j, "soft_tissue") for j in cache.neighbours(i, (-1, 0, 1))]
        assert x[:, 0, 0].tolist() == pytest.approx(expected)
    # slice 3 opens series B: its s-1 is itself, not slice 2 of series A
    assert ds[3].x[0, 0, 0] == ds[3].x[1, 0, 0]


def test_windows_times_offsets_is_offset_major() -> None:
    spec = ChannelSpec(("brain", "soft_tissue"), (-1, 1))
    assert spec.n_channels == 4
    assert spec.channel_names() == ["brain@-1", "soft_tissue@-1", "brain@+1", "soft_tissue@+1"]
    x = SliceDataset(FakeCache(), [1], spec, input_size=8)[0].x
    want = [_expected(0, "brain"), _expected(0, "soft_tissue"),
            _expected(20, "brain"), _expected(20, "soft_tissue")]
    assert x[:, 3, 3].tolist() == pytest.approx(want)


def test_labels_in_label_order_and_nan_when_unlabelled() -> None:
    y = SliceDataset(FakeCache(), [2], ChannelSpec(), 8)[0].y
    assert y[LABELS.index("any")] == 1 and y[LABELS.index("subdural")] == 1
    assert y[LABELS.index("epidural")] == 0
    y2 = SliceDataset(FakeCache(labelled=False), [2], ChannelSpec(), 8)[0].y
    assert torch.isnan(y2).all()


def test_resize_only_when_sizes_differ() -> None:
    ds = SliceDataset(FakeCache(size=8), [1], ChannelSpec(), input_size=4)
    assert ds[0].x.shape == (3, 4, 4)


def test_window_jitter_changes_train_not_eval() -> None:
    cache = FakeCache()
    aug = AugmentConfig(window_center_hu=20.0, window_width_frac=0.3)
    train = SliceDataset(cache, [1], ChannelSpec(), 8, augment=aug)
    evals = SliceDataset(cache, [1], ChannelSpec(), 8, augment=None)
    torch.manual_seed(0)
    assert not torch.allclose(train[0].x, evals[0].x)
    assert torch.equal(evals[0].x, evals[0].x)


def test_sample_mode_uses_v2_pipeline() -> None:
    cache = FakeCache(size=16)
    cache._img = np.random.default_rng(0).integers(-50, 150, (5, 16, 16)).astype(np.int16)
    aug = AugmentConfig(mode="sample", hflip_p=1.0, affine_p=0.0, crop_p=0.0, blur_p=0.0,
                        contrast_p=0.0, noise_std=0.0, window_center_hu=0.0,
                        window_width_frac=0.0)
    x_aug = SliceDataset(cache, [1], ChannelSpec(), 16, augment=aug)[0].x
    x = SliceDataset(cache, [1], ChannelSpec(), 16)[0].x
    assert torch.allclose(x_aug, x.flip(-1))


def test_batched_fetch_equals_single_and_loader_is_deterministic() -> None:
    cache = FakeCache()
    ds = SliceDataset(cache, [0, 1, 2, 3, 4], ChannelSpec(("brain",), (-1, 0, 1)), 8)
    x, y, idx = collate_slices(ds.__getitems__([4, 0, 2]))
    assert x.shape == (3, 3, 8, 8) and idx.tolist() == [4, 0, 2]
    assert torch.equal(x[1], ds[0].x) and torch.equal(y[2], ds[2].y)
    aug = SliceDataset(cache, range(5), ChannelSpec(), 8, augment=AugmentConfig())

    def run(seed: int, workers: int) -> torch.Tensor:
        torch.manual_seed(seed)  # in-process loading draws from the global RNG
        return torch.cat([b[0] for b in slice_loader(aug, 2, True, workers, seed)])

    assert torch.equal(run(3, 0), run(3, 0))
    assert not torch.equal(run(3, 0), run(4, 0))
    assert torch.equal(run(3, 1), run(3, 1))  # worker RNG seeded from the loader generator
    # Every draw comes from (seed, epoch, sample): the worker count changes nothing.
    assert torch.equal(run(3, 0), run(3, 2))
    torch.manual_seed(99)  # nor does the global RNG
    assert torch.equal(run(3, 0), torch.cat([b[0] for b in slice_loader(aug, 2, True, 0, 3)]))


def test_persistent_loader_advances_epochs_and_set_epoch_replays_one() -> None:
    from ich.data.loader import epoch_loader

    aug = SliceDataset(FakeCache(), range(5), ChannelSpec(), 8, augment=AugmentConfig(), seed=1)
    loader, sampler = epoch_loader(aug, lambda e: np.arange(5), 5, workers=1, seed=0)
    first, second = (next(iter(loader))[0] for _ in range(2))
    assert not torch.equal(first, second)  # epoch 1 draws other jitter than epoch 0
    sampler.set_epoch(0)
    assert torch.equal(next(iter(loader))[0], first)
    assert loader.persistent_workers


def test_channel_spec_roundtrip_and_errors() -> None:
    spec = ChannelSpec(("brain", "600,2800"), (-1, 0, 1))
    assert ChannelSpec.from_dict(spec.to_dict()) == spec
    assert spec.window_triples()[1] == ["600,2800", 600.0, 2800.0]
    with pytest.raises(ConfigError):
        ChannelSpec(("nope",))
    with pytest.raises(ConfigError):
        ChannelSpec.from_dict({"windowz": ["brain"]})


def test_oversample_weights() -> None:
    y = np.zeros((4, 6), np.float32)
    y[1, 0] = 1
    y[2, [0, 1]] = 1  # epidural: rare
    w = oversample_weights(np.vstack([y, np.zeros((96, 6))]), positive=2.0, rare=3.0)
    assert w[:4].tolist() == [1.0, 2.0, 6.0, 1.0]


def test_reverse_spacing() -> None:
    # positions 0, 1, 3, 6 -> spacing to previous [1, 1, 2, 3]; reversed positions 6, 3, 1, 0
    assert reverse_spacing(np.array([1.0, 1, 2, 3])).tolist() == [3, 3, 2, 1]


def _seq_data() -> tuple[dict[str, np.ndarray], ...]:
    feats = {"a": np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 4), np.float32),
             "b": np.ones((3, 4), np.float32)}
    z = {"a": np.arange(1, 11, dtype=np.float32), "b": np.full(3, 5.0, np.float32)}
    labels = {"a": np.arange(10, dtype=np.float32)[:, None] * np.ones((1, 6), np.float32),
              "b": np.zeros((3, 6), np.float32)}
    return feats, z, labels


def test_sequence_eval_keeps_order_and_collate_pads() -> None:
    feats, z, labels = _seq_data()
    ds = SequenceDataset(feats, z, labels, ["a", "b"], train=False, max_len=4)
    batch = collate_sequences([ds[0], ds[1]])
    assert batch.features.shape == (2, 10, 4) and batch.labels.shape == (2, 10, 6)
    assert batch.mask.sum(1).tolist() == [10, 3]
    assert batch.positions[1].tolist() == [0, 1, 2] + [-1] * 7
    assert batch.series == ["a", "b"]


def test_sequence_train_crop_and_reversal_keep_alignment() -> None:
    feats, z, labels = _seq_data()
    ds = SequenceDataset(feats, z, labels, ["a"], train=True, max_len=4, reverse_p=0.5)
    torch.manual_seed(0)
    seen_reversed = False
    for _ in range(20):
        it = ds[0]
        assert len(it.features) == 4
        pos = it.positions.numpy()
        assert np.all(np.abs(np.diff(pos)) == 1)  # contiguous window
        assert np.allclose(it.features[:, 0].numpy(), pos)  # features follow their slice
        assert np.allclose(it.labels[:, 0].numpy(), pos)  # labels too
        seen_reversed |= bool(pos[0] > pos[-1])
    assert seen_reversed


def test_on_real_cache(tiny_cohort: Path, tmp_path: Path) -> None:
    from ich.data.build import build_cache
    from ich.data.cache import SliceCache
    from ich.data.preprocess import PreprocessSpec

    build_cache(tiny_cohort / "images", tmp_path / "cache", labels_csv=tiny_cohort / "labels.csv",
                spec=PreprocessSpec(size=64), workers=1, progress=False)
    cache = SliceCache(tmp_path / "cache")
    spec = ChannelSpec(("brain",), (-1, 0, 1))
    ds = SliceDataset(cache, np.arange(len(cache.catalog)), spec, input_size=32,
                      augment=AugmentConfig())
    x, y, _ = collate_slices(ds.__getitems__([0, 5, 9]))
    assert x.shape == (3, 3, 32, 32) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert torch.allclose(y, torch.from_numpy(cache.labels[[0, 5, 9]]), equal_nan=True)
    plain = SliceDataset(cache, np.arange(len(cache.catalog)), spec, input_size=64)
    for k in (0, 7, len(plain) - 1):
        nb = cache.neighbours(k, (-1, 0, 1))
        want = np.stack([apply_window(cache.image(j), 40.0, 80.0) for j in nb])
        assert np.allclose(plain[k].x.numpy(), want, atol=1e-6)


def test_uint8_batches_match_float_within_one_level() -> None:
    from ich.data.augment import prepare_batch

    cache = FakeCache()
    cache._img = np.random.default_rng(1).integers(-100, 300, (5, 8, 8)).astype(np.int16)
    spec = ChannelSpec(offsets=(-1, 0))
    f32 = SliceDataset(cache, range(5), spec, 8)
    u8 = SliceDataset(cache, range(5), spec, 8, dtype="uint8")
    xf = collate_slices(f32.__getitems__([0, 3, 4]))[0]
    xu = next(iter(slice_loader(u8, 3, False, 1, seed=0)))[0]  # built in a worker (shared mem)
    assert xu.dtype == torch.uint8
    assert torch.allclose(prepare_batch(xu, "cpu")[:1], xf[:1], atol=0.5 / 255 + 1e-6)
    with pytest.raises(ConfigError):
        SliceDataset(cache, [0], spec, 8, dtype="float16")  # type: ignore[arg-type]


@pytest.mark.timeout(60)
def test_workers_do_not_deadlock_after_parent_used_opencv_threads() -> None:
    # Regression: resizing OpenCV's thread pool in a forked worker hung forever.
    import cv2

    big = np.random.default_rng(0).random((1024, 1024), dtype=np.float32)
    cv2.resize(big, (512, 512), interpolation=cv2.INTER_AREA)  # starts the pool in the parent
    ds = SliceDataset(FakeCache(), range(5), ChannelSpec(), 8, augment=AugmentConfig())
    batches = list(slice_loader(ds, 2, True, 2, seed=0))
    assert sum(len(b[0]) for b in batches) == 5
