"""Optimizers, parameter groups, schedules and freezing change the trajectory as specified."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ich.config import OptimConfig, load_config
from ich.errors import ConfigError
from ich.eval.recipe import describe_optim
from ich.train.optim import (
    Scheduler,
    build_optimizer,
    build_scheduler,
    param_groups,
    set_backbone_trainable,
)


class Tiny(nn.Module):
    """A 'backbone' (linear + BatchNorm) and a linear 'head', no dropout."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
        self.classifier = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(x))


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(8, 3, generator=g), (torch.rand(8, 2, generator=g) > 0.5).float()


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.binary_cross_entropy_with_logits(model(x), y)


def _cfg(**kw: object) -> OptimConfig:
    return OptimConfig(**kw)  # type: ignore[arg-type]


def test_groups_no_decay_on_norm_and_bias() -> None:
    groups = {g["name"]: g for g in param_groups(Tiny(), _cfg(weight_decay=0.1))}
    assert set(groups) == {"backbone", "backbone_no_decay", "head", "head_no_decay"}
    assert all(p.ndim == 2 for p in groups["backbone"]["params"] + groups["head"]["params"])
    assert len(groups["backbone_no_decay"]["params"]) == 3  # linear bias, BN weight, BN bias
    assert groups["head_no_decay"]["weight_decay"] == 0.0
    assert groups["head"]["weight_decay"] == 0.1
    both = param_groups(Tiny(), _cfg(weight_decay=0.1, decay_norm_bias=True))
    assert {g["name"] for g in both} == {"backbone", "head"}
    assert all(g["weight_decay"] == 0.1 for g in both)


def test_weight_decay_skips_norm_and_bias() -> None:
    # With zero gradients, AdamW changes a parameter only through its weight decay.
    model = Tiny()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = build_optimizer(model, _cfg(name="adamw", lr=0.1, weight_decay=0.5))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for name, p in model.named_parameters():
        if p.ndim <= 1:
            assert torch.equal(p, before[name]), name
        else:
            assert torch.allclose(p, before[name] * (1 - 0.1 * 0.5)), name


def test_sgd_nesterov_matches_hand_computed_steps() -> None:
    lr, mu, wd = 0.1, 0.9, 0.01
    model = Tiny()
    opt = build_optimizer(
        model, _cfg(name="sgd", lr=lr, momentum=mu, nesterov=True, weight_decay=wd)
    )
    x, y = _batch()
    w = model.classifier.weight
    buf = None
    for _ in range(2):
        opt.zero_grad()
        _loss(model, x, y).backward()
        assert w.grad is not None
        g = w.grad.detach() + wd * w.detach()  # L2 decay added to the gradient
        buf = g.clone() if buf is None else mu * buf + g
        expected = w.detach() - lr * (g + mu * buf)  # Nesterov: step along g + mu * buf
        opt.step()
        assert torch.allclose(w.detach(), expected, atol=1e-7)


def test_adam_1e5_matches_torch() -> None:
    ours, ref = Tiny(), Tiny()
    opt = build_optimizer(ours, _cfg(name="adam", lr=1e-5, weight_decay=0.0))
    torch_opt = torch.optim.Adam(ref.parameters(), lr=1e-5)
    assert isinstance(opt, torch.optim.Adam) and not isinstance(opt, torch.optim.AdamW)
    x, y = _batch()
    for _ in range(3):
        for m, o in ((ours, opt), (ref, torch_opt)):
            o.zero_grad()
            _loss(m, x, y).backward()
            o.step()
    for a, b in zip(ours.parameters(), ref.parameters(), strict=True):
        assert torch.allclose(a, b, atol=0, rtol=0)
    assert not torch.equal(ours.classifier.weight, Tiny().classifier.weight)


def test_backbone_lr_mult_and_scheduler_sets_every_group() -> None:
    model = Tiny()
    cfg = _cfg(lr=0.01, backbone_lr_mult=0.1, schedule="constant", warmup_frac=0.0)
    opt = build_optimizer(model, cfg)
    lr = build_scheduler(cfg, total_steps=10, steps_per_epoch=5).apply(opt, 3)
    assert lr == pytest.approx(0.01)
    by_name = {g["name"]: g["lr"] for g in opt.param_groups}
    assert by_name["backbone"] == pytest.approx(0.001)
    assert by_name["head"] == pytest.approx(0.01)


def _lrs(cfg: OptimConfig, total: int, spe: int) -> list[float]:
    sched = Scheduler(cfg, total, spe)
    return [cfg.lr * sched.factor(s) for s in range(total)]


@pytest.mark.parametrize("warmup", [0.0, 0.2])
def test_step_schedule_formula(warmup: float) -> None:
    cfg = _cfg(lr=0.1, schedule="step", step_epochs=2, gamma=0.5, warmup_frac=warmup)
    spe, total = 5, 30
    warm = round(warmup * total)
    for s, lr in enumerate(_lrs(cfg, total, spe)):
        ramp = (s + 1) / (warm + 1) if s < warm else 1.0
        assert lr == pytest.approx(0.1 * ramp * 0.5 ** ((s // spe) // 2)), s


@pytest.mark.parametrize("warmup", [0.0, 0.1])
def test_exponential_schedule_formula(warmup: float) -> None:
    # The Keras ResNet50 report: 0.8 per epoch.
    cfg = _cfg(lr=1e-3, schedule="exponential", gamma=0.8, warmup_frac=warmup)
    spe, total = 4, 40
    warm = round(warmup * total)
    lrs = _lrs(cfg, total, spe)
    for s, lr in enumerate(lrs):
        ramp = (s + 1) / (warm + 1) if s < warm else 1.0
        assert lr == pytest.approx(1e-3 * ramp * 0.8 ** (s // spe)), s
    assert lrs[-1] == pytest.approx(1e-3 * 0.8**9)


def test_constant_and_cosine_unchanged_through_scheduler() -> None:
    cfg = _cfg(lr=0.2, schedule="cosine", warmup_frac=0.0, min_lr_frac=0.0)
    lrs = _lrs(cfg, 101, 10)
    assert lrs[0] == pytest.approx(0.2) and lrs[50] == pytest.approx(0.1)
    assert lrs[100] == pytest.approx(0.0, abs=1e-12)
    cfg = _cfg(lr=0.2, schedule="constant", warmup_frac=0.1)
    lrs = _lrs(cfg, 20, 10)
    assert lrs[0] == pytest.approx(0.2 / 3) and lrs[2:] == pytest.approx([0.2] * 18)


def test_plateau_reduces_after_patience_and_floors() -> None:
    cfg = _cfg(
        lr=1.0, schedule="plateau", plateau_patience=2, plateau_factor=0.5,
        warmup_frac=0.0, min_lr_frac=0.2,
    )
    sched = Scheduler(cfg, total_steps=100, steps_per_epoch=10)
    factors = []
    for val in (1.0, 0.9, 0.95, 0.92, 0.91, 0.93, 0.8, 0.85, 0.86, 0.87, 0.88, 0.89, 0.9):
        sched.epoch_end(val)
        factors.append(sched.factor(50))
    # new best at 0.9; two bad epochs -> 0.5; two more -> 0.25; 0.8 is a new best; then
    # 0.25 * 0.5 = 0.125 is floored at min_lr_frac 0.2 and stays there.
    assert factors == pytest.approx(
        [1, 1, 1, 0.5, 0.5, 0.25, 0.25, 0.25, 0.2, 0.2, 0.2, 0.2, 0.2]
    )
    assert not sched.epoch_end(None)


def test_plateau_warmup_and_resume_state() -> None:
    cfg = _cfg(lr=1.0, schedule="plateau", plateau_patience=1, plateau_factor=0.1,
               warmup_frac=0.1, min_lr_frac=0.0)
    vals = [1.0, 1.1, 0.5, 0.6, 0.7]
    full = Scheduler(cfg, 50, 10)
    lrs_full = []
    for epoch in range(5):
        lrs_full += [full.factor(s) for s in range(epoch * 10, epoch * 10 + 10)]
        full.epoch_end(vals[epoch])
    assert lrs_full[0] == pytest.approx(1 / 6)  # warmup ramp applies to plateau too
    lrs = []
    first = Scheduler(cfg, 50, 10)
    for epoch in range(2):
        lrs += [first.factor(s) for s in range(epoch * 10, epoch * 10 + 10)]
        first.epoch_end(vals[epoch])
    saved = first.state_dict()
    second = Scheduler(cfg, 50, 10)
    second.load_state_dict(saved)
    for epoch in range(2, 5):
        lrs += [second.factor(s) for s in range(epoch * 10, epoch * 10 + 10)]
        second.epoch_end(vals[epoch])
    assert lrs == lrs_full
    assert lrs_full[-1] == pytest.approx(0.01)


def test_freeze_backbone_then_unfreeze() -> None:
    model = Tiny()
    cfg = _cfg(name="sgd", lr=0.1, momentum=0.0, backbone_lr_mult=0.1, weight_decay=0.0)
    opt = build_optimizer(model, cfg)
    x, y = _batch()
    frozen = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head = model.classifier.weight.detach().clone()
    model.train()
    assert set_backbone_trainable(model, False)
    assert not model.backbone.training  # BatchNorm statistics frozen too
    opt.zero_grad(set_to_none=True)
    _loss(model, x, y).backward()
    opt.step()
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, frozen[k]), k  # weights and running stats untouched
    assert not torch.equal(model.classifier.weight, head)
    model.train()
    set_backbone_trainable(model, True)
    lin = model.backbone[0]
    assert isinstance(lin, nn.Linear)
    w0 = lin.weight.detach().clone()
    opt.zero_grad(set_to_none=True)
    _loss(model, x, y).backward()
    grad = lin.weight.grad
    assert grad is not None
    opt.step()
    # plain SGD: the step is exactly lr * backbone_lr_mult * grad
    assert torch.allclose(lin.weight, w0 - 0.1 * 0.1 * grad, atol=1e-8)
    assert not set_backbone_trainable(nn.Linear(2, 2), False)


def test_accumulation_equals_one_large_batch() -> None:
    x, y = torch.randn(12, 3), (torch.rand(12, 2) > 0.5).float()
    big, small = nn.Linear(3, 2), nn.Linear(3, 2)
    small.load_state_dict(big.state_dict())
    _loss(big, x, y).backward()
    k = 3
    for xs, ys in zip(x.chunk(k), y.chunk(k), strict=True):
        (_loss(small, xs, ys) / k).backward()  # what the loop does with train.accumulate=k
    for a, b in zip(big.parameters(), small.parameters(), strict=True):
        assert a.grad is not None and b.grad is not None
        assert torch.allclose(a.grad, b.grad, atol=1e-6)


def test_config_validation_and_describe() -> None:
    cfg = load_config(
        None, ["optim.name=sgd", "optim.nesterov=true", "optim.schedule=exponential",
               "optim.gamma=0.8"]
    )
    text = describe_optim(cfg.optim)
    assert "sgd" in text and "nesterov" in text and "x0.8 per epoch" in text
    with pytest.raises(ConfigError, match="nesterov"):
        load_config(None, ["optim.nesterov=true"])  # adamw has no Nesterov
    with pytest.raises(ConfigError, match=r"optim\.schedule"):
        load_config(None, ["optim.schedule=linear"])
    with pytest.raises(ConfigError, match=r"optim\.betas"):
        load_config(None, ["optim.betas=[0.9, 0.99]"])  # unknown keys stay errors
    with pytest.raises(ConfigError, match="accumulate"):
        load_config(None, ["train.accumulate=0"])
    assert math.isclose(load_config("default").optim.lr, 5e-4)
