"""Losses: focal, label smoothing and per-label weights equal their formulas on hand cases."""

from __future__ import annotations

import math

import pytest
import torch

from ich.config import LossConfig, load_config
from ich.errors import ConfigError
from ich.eval.recipe import describe_loss
from ich.train.common import weighted_bce
from ich.train.losses import build_loss, elementwise_loss, smooth_targets


def _sig(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def test_focal_hand_case() -> None:
    logits = torch.tensor([[2.0, -1.0]], dtype=torch.float64)
    y = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    got = elementwise_loss(logits, y, "focal", gamma=2.0)
    for j, z in enumerate((2.0, -1.0)):
        p = _sig(z)
        assert float(got[0, j]) == pytest.approx((1 - p) ** 2 * -math.log(p), rel=1e-12)
    zero = torch.zeros(1, dtype=torch.float64)
    neg = elementwise_loss(zero + 0.5, zero, "focal", 3.0)
    p = _sig(0.5)
    assert float(neg[0]) == pytest.approx(p**3 * -math.log(1 - p), rel=1e-12)


def test_focal_gamma_zero_is_bce() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 6, generator=g)
    y = (torch.rand(16, 6, generator=g) > 0.7).float()
    focal0 = build_loss(LossConfig(name="focal", gamma=0.0))(logits, y)
    assert torch.allclose(focal0, weighted_bce(logits, y), atol=1e-7)
    focal2 = build_loss(LossConfig(name="focal", gamma=2.0))(logits, y)
    assert float(focal2) < float(focal0)  # easy examples are down-weighted


def test_label_smoothing_formula() -> None:
    y = torch.tensor([[0.0, 1.0]])
    assert torch.allclose(smooth_targets(y, 0.1), torch.tensor([[0.05, 0.95]]))
    logits = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
    cfg = LossConfig(smoothing=0.1, label_weights=(1.0, 1.0))
    got = float(build_loss(cfg)(logits, y.double()))
    want = 0.0
    for z, t in ((0.3, 0.05), (-0.2, 0.95)):
        p = _sig(z)
        want += -(t * math.log(p) + (1 - t) * math.log(1 - p)) / 2
    assert got == pytest.approx(want, rel=1e-12)


def test_per_label_weights() -> None:
    logits = torch.tensor([[0.0, 0.0], [2.0, -2.0]], dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    per = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
    mean = per.mean(0)
    got = build_loss(LossConfig(label_weights=(3.0, 1.0)))(logits, y)
    assert float(got) == pytest.approx(float((3 * mean[0] + mean[1]) / 4), rel=1e-12)
    with pytest.raises(ValueError, match="2 labels"):
        build_loss(LossConfig(label_weights=(1.0, 1.0, 1.0)))(logits, y)


def test_default_is_the_metric_weighted_bce() -> None:
    g = torch.Generator().manual_seed(3)
    logits, y = torch.randn(5, 6, generator=g), (torch.rand(5, 6, generator=g) > 0.5).float()
    per = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
    want = (per.mean(0) * torch.tensor([2.0, 1, 1, 1, 1, 1])).sum() / 7
    assert torch.allclose(build_loss(LossConfig())(logits, y), want, atol=1e-7)


def test_loss_config_from_overrides() -> None:
    cfg = load_config(None, ["loss.name=focal", "loss.gamma=1.5", "loss.smoothing=0.05"])
    assert describe_loss(cfg.loss) == (
        "focal (gamma 1.5), label smoothing 0.05, label weights of the metric"
    )
    with pytest.raises(ConfigError, match=r"loss\.name"):
        load_config(None, ["loss.name=mse"])
    with pytest.raises(ConfigError, match="smoothing"):
        load_config(None, ["loss.smoothing=1.5"])


def test_sequence_stage_uses_the_configured_loss() -> None:
    from ich.train.sequence_stage import sequence_loss

    g = torch.Generator().manual_seed(5)
    slice_logits, study_logits = torch.randn(2, 4, 6, generator=g), torch.randn(2, 6, generator=g)
    y = (torch.rand(2, 4, 6, generator=g) > 0.6).float()
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    default = sequence_loss(slice_logits, study_logits, y, mask, 0.5)
    focal0 = build_loss(LossConfig(name="focal", gamma=0.0))
    focal2 = build_loss(LossConfig(name="focal", gamma=2.0))
    same = sequence_loss(slice_logits, study_logits, y, mask, 0.5, focal0)
    assert torch.allclose(default, same, atol=1e-6)
    assert float(sequence_loss(slice_logits, study_logits, y, mask, 0.5, focal2)) < float(same)
