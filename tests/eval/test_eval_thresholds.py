"""Per-label thresholds on out-of-fold predictions, and 0/1 submissions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ich.errors import CheckpointError
from ich.eval.thresholds import (
    binary_submission,
    choose_thresholds,
    load_thresholds,
    sensitivity_threshold,
    thresholds_from_oof,
    youden_threshold,
)


def test_youden_and_target_sensitivity_exact_cases() -> None:
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    # cut at 0.7: sens 3/4, spec 4/4 -> J 0.75; at 0.4: sens 1, spec 3/4 -> J 0.75 (tie: higher)
    assert youden_threshold(y, p) == pytest.approx(0.7)
    assert sensitivity_threshold(y, p, 1.0) == pytest.approx(0.4)
    assert sensitivity_threshold(y, p, 0.75) == pytest.approx(0.7)
    assert sensitivity_threshold(y, p, 0.5) == pytest.approx(0.8)


def test_choose_thresholds_reports_rates_and_falls_back_without_positives() -> None:
    y = np.array([[0, 0], [0, 0], [1, 0], [1, 0]], dtype=float)
    p = np.array([[0.1, 0.3], [0.2, 0.2], [0.8, 0.1], [0.9, 0.4]])
    out = choose_thresholds(y, p, ("a", "b"), "sensitivity", 0.95)
    assert out["a"]["threshold"] == pytest.approx(0.8)
    assert out["a"]["sensitivity"] == 1.0 and out["a"]["specificity"] == 1.0
    assert out["b"]["threshold"] == 0.5 and "no positives" in out["b"]["note"]


def test_thresholds_from_oof_and_binary_rows(tmp_path: Path) -> None:
    labels = ("any", "subdural")
    oof = pd.DataFrame({"image_id": ["ID_a", "ID_b", "ID_c", "ID_d"],
                        "any": [0, 1, 0, 1], "subdural": [0, 1, 0, 0],
                        "q_any": [0.2, 0.6, 0.1, 0.7], "q_subdural": [0.1, 0.5, 0.2, 0.3],
                        "p_any": [0.9, 0.1, 0.9, 0.1], "p_subdural": [0.9, 0.1, 0.9, 0.1]})
    with pytest.raises(CheckpointError, match="no oof_predictions"):
        thresholds_from_oof(tmp_path, labels)
    oof.to_parquet(tmp_path / "oof_predictions.parquet")
    path = thresholds_from_oof(tmp_path, labels)
    data = json.loads(path.read_text())
    assert data["method"] == "youden" and data["source"].startswith("oof_predictions.parquet (q_")
    cuts = load_thresholds(tmp_path)
    assert cuts == {"any": pytest.approx(0.6), "subdural": pytest.approx(0.5)}
    sub = pd.DataFrame({"ID": ["ID_x_any", "ID_x_subdural", "ID_y_any", "ID_y_subdural"],
                        "Label": [0.6, 0.49, 0.59, 0.9]})
    out = binary_submission(sub, cuts)
    assert out["ID"].tolist() == sub["ID"].tolist() and out["Label"].tolist() == [1, 0, 0, 1]
    with pytest.raises(CheckpointError, match=r"no thresholds\.json"):
        load_thresholds(tmp_path / "nope")
