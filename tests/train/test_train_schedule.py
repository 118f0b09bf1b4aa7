"""Learning-rate schedules are pure functions of the step."""

from __future__ import annotations

import itertools

import pytest

from ich.train.schedule import lr_at, lr_factor


def test_cosine_warmup_peak_and_end() -> None:
    total = 100
    values = [
        lr_factor(s, total, "cosine", warmup_frac=0.1, min_lr_frac=0.01) for s in range(total)
    ]
    assert values[0] == pytest.approx(1 / 11)
    assert all(a < b for a, b in itertools.pairwise(values[:11]))  # rising during warmup
    assert values[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(values[10:]))  # then non-increasing
    assert values[-1] == pytest.approx(0.01)
    assert lr_at(10, total, 3e-4, "cosine", 0.1) == pytest.approx(3e-4)


def test_cosine_midpoint() -> None:
    # no warmup: half way through the decay the factor is the mean of 1 and min
    assert lr_factor(50, 101, "cosine", warmup_frac=0.0, min_lr_frac=0.0) == pytest.approx(0.5)


def test_onecycle_shape() -> None:
    total = 50
    values = [
        lr_factor(s, total, "onecycle", warmup_frac=0.3, min_lr_frac=0.04) for s in range(total)
    ]
    assert values[0] == pytest.approx(1 / 25)
    peak = max(range(total), key=values.__getitem__)
    assert peak == 15 and values[peak] == pytest.approx(1.0)
    assert values[-1] == pytest.approx(0.04 / 25)


def test_constant_and_clamping() -> None:
    assert lr_factor(5, 10, "constant", warmup_frac=0.0) == 1.0
    assert lr_factor(10_000, 10, "cosine", 0.0, 0.1) == pytest.approx(0.1)
    assert lr_factor(0, 0) == 1.0
    with pytest.raises(ValueError):
        lr_factor(1, 10, "linear", 0.0)  # type: ignore[arg-type]
