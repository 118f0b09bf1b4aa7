"""Runs with other label sets than the six RSNA labels: weights, metric and loss follow them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss

from ich.config import LossConfig
from ich.errors import LabelsError
from ich.eval.metrics import compute_metrics, weighted_log_loss
from ich.labels import LABEL_WEIGHTS, LABELS, label_weights
from ich.train.losses import build_loss

SUBSET = ("intraparenchymal", "epidural", "subarachnoid")


def test_any_weighs_twice_only_when_present() -> None:
    np.testing.assert_array_equal(label_weights(LABELS), LABEL_WEIGHTS)
    np.testing.assert_array_equal(label_weights(("hemorrhage",)), [1.0])
    np.testing.assert_array_equal(label_weights(SUBSET), [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(label_weights(("subdural", "any")), [1.0, 2.0])
    for bad in ((), ("any", "any")):
        with pytest.raises(LabelsError, match="non-empty and distinct"):
            label_weights(bad)


def _data(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(k)
    y = (rng.random((n, k)) < 0.3).astype(float)
    y[0], y[1] = 0, 1  # both classes in every column
    return y, rng.uniform(0.02, 0.98, (n, k))


def test_metric_on_a_subset_is_the_plain_mean_of_sklearn_log_losses() -> None:
    y, p = _data(50, 3)
    expected = np.mean([log_loss(y[:, j], p[:, j], labels=[0, 1]) for j in range(3)])
    assert weighted_log_loss(y, p, labels=SUBSET) == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="for labels"):
        weighted_log_loss(y, p)  # the six-label default refuses three columns


def test_metric_with_any_in_a_subset_weighs_it_twice() -> None:
    y, p = _data(40, 2)
    ll = [log_loss(y[:, j], p[:, j], labels=[0, 1]) for j in range(2)]
    got = weighted_log_loss(y, p, labels=("any", "subdural"))
    assert got == pytest.approx((2 * ll[0] + ll[1]) / 3, rel=1e-9)


def test_compute_metrics_reports_the_runs_own_labels() -> None:
    y, p = _data(30, 1)
    out = compute_metrics(y, p, labels=("hemorrhage",))
    assert list(out["labels"]) == ["hemorrhage"]
    assert out["weighted_log_loss"] == pytest.approx(out["labels"]["hemorrhage"]["log_loss"])


def test_loss_takes_the_runs_weights() -> None:
    logits = torch.tensor([[2.0], [-1.0]])
    y = torch.tensor([[1.0], [0.0]])
    loss = build_loss(LossConfig(), label_weights(("hemorrhage",)))(logits, y)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, y)
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(ValueError, match="label_weights has 6 values"):
        build_loss(LossConfig())(logits, y)  # six-label weights on a one-label model
