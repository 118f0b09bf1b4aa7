"""EMA of weights equals its formula after k steps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ich.train.ema import ModelEma


def test_ema_formula_after_k_steps() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    decay = 0.9
    ema = ModelEma(model, decay)
    expected = {k: v.detach().clone().double() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        model(torch.randn(4, 3)).pow(2).sum().backward()
        opt.step()
        ema.update(model)
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                expected[k] = decay * expected[k] + (1 - decay) * v.double()
            else:
                expected[k] = v.double()
    got = ema.state_dict()
    for k, v in expected.items():
        assert torch.allclose(got[k].double(), v, atol=1e-6), k
    assert not torch.allclose(got["0.weight"], model.state_dict()["0.weight"])
    assert int(got["1.num_batches_tracked"]) == 5
    assert not any(p.requires_grad for p in ema.module.parameters())
    restored = ModelEma(model, decay)
    restored.load_state_dict(got)
    assert torch.equal(restored.state_dict()["0.weight"], got["0.weight"])
    with pytest.raises(ValueError, match="decay"):
        ModelEma(model, 1.0)
