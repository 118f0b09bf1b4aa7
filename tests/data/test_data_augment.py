"""Augmentation: config round trip, BatchAugment exactness / determinism / eval no-op, v2 path."""

from __future__ import annotations

import pytest
import torch

from ich.data.augment import (
    AugmentConfig,
    BatchAugment,
    build_sample_transform,
    make_batch_augment,
    prepare_batch,
    random_affine_matrices,
)
from ich.errors import ConfigError

OFF = {"hflip_p": 0.0, "affine_p": 0.0, "crop_p": 0.0, "blur_p": 0.0, "contrast_p": 0.0,
       "noise_std": 0.0}


def _images(b: int = 4, c: int = 3, s: int = 32) -> torch.Tensor:
    return torch.rand(b, c, s, s, generator=torch.Generator().manual_seed(0))


def test_config_roundtrip_and_validation() -> None:
    cfg = AugmentConfig(rotate_deg=5.0, scale=(0.8, 1.2))
    d = cfg.to_dict()
    assert d["scale"] == [0.8, 1.2]
    assert AugmentConfig.from_dict(d) == cfg
    with pytest.raises(ConfigError, match="unknown augment keys"):
        AugmentConfig.from_dict({"hflip": 0.5})
    with pytest.raises(ConfigError, match="probability"):
        AugmentConfig(hflip_p=1.5)
    with pytest.raises(ConfigError):
        AugmentConfig(mode="gpu")  # type: ignore[arg-type]


def test_everything_off_is_identity_and_flip_is_exact() -> None:
    x = _images()
    assert torch.allclose(BatchAugment(AugmentConfig(**OFF), seed=0)(x), x, atol=1e-6)
    flipped = BatchAugment(AugmentConfig(**{**OFF, "hflip_p": 1.0}), seed=0)(x)
    assert torch.allclose(flipped, x.flip(-1), atol=1e-6)


def test_affine_matrices_identity_when_off() -> None:
    theta = random_affine_matrices(AugmentConfig(**OFF), 3, torch.Generator().manual_seed(0))
    assert torch.allclose(theta, torch.tensor([[1.0, 0, 0], [0, 1, 0]]).expand(3, 2, 3))


def test_train_changes_eval_does_not_and_seed_repeats() -> None:
    x = _images()
    aug = BatchAugment(AugmentConfig(), seed=1)
    out = aug(x)
    assert out.shape == x.shape and out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not torch.allclose(out, x)
    assert torch.equal(BatchAugment(AugmentConfig(), seed=1)(x), out)
    assert not torch.equal(BatchAugment(AugmentConfig(), seed=2)(x), out)
    assert torch.equal(aug.eval()(x), x)
    assert make_batch_augment(None) is None
    assert make_batch_augment(AugmentConfig(enabled=False)) is None
    assert make_batch_augment(AugmentConfig(mode="sample")) is None


def test_blur_keeps_constant_images_constant() -> None:
    x = torch.full((2, 3, 16, 16), 0.4)
    out = BatchAugment(AugmentConfig(**{**OFF, "blur_p": 1.0}), seed=0)(x)
    assert torch.allclose(out, x, atol=1e-5)
    noisy = _images(2, 3, 16)
    assert not torch.allclose(BatchAugment(AugmentConfig(**{**OFF, "blur_p": 1.0}), seed=0)(noisy),
                              noisy)


def test_prepare_batch_converts_uint8() -> None:
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3)
    out = prepare_batch(x, "cpu")
    assert out.dtype == torch.float32 and out.flatten().tolist() == pytest.approx([0, 0.2, 1])
    aug = BatchAugment(AugmentConfig(**OFF), seed=0)
    assert torch.allclose(prepare_batch(x, "cpu", aug), out)


def test_sample_transform_any_channel_count() -> None:
    torch.manual_seed(0)
    t = build_sample_transform(AugmentConfig(), size=32)
    x = _images(1, 9)[0]
    out = t(x)
    assert out.shape == (9, 32, 32)
    assert not torch.allclose(out, x)
