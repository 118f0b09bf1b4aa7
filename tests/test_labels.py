"""Label order, Kaggle long <-> wide conversion, submission writing, the RSNA metric."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss

import ich
from ich.errors import LabelsError
from ich.eval.metrics import per_label_log_loss, weighted_log_loss
from ich.labels import LABELS, long_to_wide, read_labels, wide_to_long, write_submission


def test_label_order_is_the_competition_order() -> None:
    assert ich.LABELS == (
        "any",
        "epidural",
        "intraparenchymal",
        "intraventricular",
        "subarachnoid",
        "subdural",
    )


def _long(rows: list[tuple[str, int]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["ID", "Label"])


def test_long_to_wide_tolerates_duplicates_and_index_column(tmp_path: Path) -> None:
    rows = [(f"ID_a_{lab}", int(lab in ("any", "subdural"))) for lab in LABELS]
    rows += [(f"ID_b_{lab}", 0) for lab in LABELS]
    csv = tmp_path / "labels.csv"
    # a leading pandas index column and every row duplicated, as in some RSNA copies
    frame = _long(rows + rows)
    frame.to_csv(csv, index=True)
    wide = read_labels(csv)
    assert list(wide.columns) == list(LABELS)
    assert list(wide.index) == ["ID_a", "ID_b"]
    assert wide.loc["ID_a"].tolist() == [1, 0, 0, 0, 0, 1]
    back = long_to_wide(wide_to_long(wide))
    pd.testing.assert_frame_equal(back, wide)


def test_conflicting_duplicates_and_missing_labels_are_errors() -> None:
    rows = [(f"ID_a_{lab}", 0) for lab in LABELS]
    with pytest.raises(LabelsError, match="conflicting"):
        long_to_wide(_long([*rows, ("ID_a_any", 1)]))
    with pytest.raises(LabelsError, match="lack some labels"):
        long_to_wide(_long([*rows[:-1], ("ID_b_any", 0)]))
    with pytest.raises(LabelsError, match="mix RSNA names"):  # a typo among the six
        long_to_wide(_long([*rows, ("ID_a_bleed", 1)]))
    for bad in ("ID_a_sub-dural", "nounderscore"):
        with pytest.raises(LabelsError, match="ID_<image>_<label>"):
            long_to_wide(_long([(bad, 1)]))


def test_submission_is_clipped_long_and_atomic(tmp_path: Path) -> None:
    probs = np.array([[0.0, 1.0, 0.5, 0.2, 0.1, 0.9]])
    out = write_submission(["ID_x"], probs, tmp_path / "sub.csv")
    sub = pd.read_csv(out)
    assert sub["ID"].tolist() == [f"ID_x_{lab}" for lab in LABELS]
    assert sub["Label"].min() == pytest.approx(1e-6)
    assert sub["Label"].max() == pytest.approx(1 - 1e-6)
    assert [p.name for p in tmp_path.iterdir()] == ["sub.csv"]
    with pytest.raises(ValueError, match="NaN"):
        write_submission(["ID_x"], probs * np.nan, tmp_path / "bad.csv")


def test_weighted_log_loss_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random((500, 6)) < 0.2).astype(float)
    y[:, 0] = y[:, 1:].max(axis=1)
    p = rng.random((500, 6))
    per = per_label_log_loss(y, p)
    expected = [log_loss(y[:, k], p[:, k], labels=[0, 1]) for k in range(6)]
    np.testing.assert_allclose(per, expected, rtol=1e-10)
    assert weighted_log_loss(y, p) == pytest.approx(
        np.average(expected, weights=[2, 1, 1, 1, 1, 1])
    )
    assert ich.weighted_log_loss(y, y) < 1e-5


def _csv(tmp_path: Path, frame: pd.DataFrame, name: str = "l.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def test_values_outside_zero_one_are_errors_not_truncated(tmp_path: Path) -> None:
    rows = [(f"ID_a_{lab}", 0.7 if lab in ("any", "subdural") else 0.0) for lab in LABELS]
    path = _csv(tmp_path, _long(rows))
    with pytest.raises(LabelsError, match=r"ID_a any: value 0.7 is not 0 or 1"):
        read_labels(path)
    soft = read_labels(path, soft=True)
    assert soft.loc["ID_a", "subdural"] == pytest.approx(0.7) and soft.dtypes.iloc[0] == np.float32
    rows2 = [(f"ID_a_{lab}", 2 if lab == "any" else 0) for lab in LABELS]
    with pytest.raises(LabelsError, match="is not in"):
        read_labels(_csv(tmp_path, _long(rows2)), soft=True)


def test_missing_any_rows_and_inconsistent_any_are_errors(tmp_path: Path) -> None:
    rows = [(f"ID_a_{lab}", 0) for lab in LABELS if lab != "any"]
    with pytest.raises(LabelsError, match="no row for any"):
        read_labels(_csv(tmp_path, _long(rows)))
    rows = [(f"ID_a_{lab}", int(lab == "subdural")) for lab in LABELS]
    with pytest.raises(LabelsError, match="'any' disagrees"):
        read_labels(_csv(tmp_path, _long(rows)))


def test_wide_format_with_file_column_and_extensions(tmp_path: Path) -> None:
    frame = pd.DataFrame({"file": ["ID_a.dcm", "b.png"], **{lab: [0, 0] for lab in LABELS}})
    frame.loc[0, ["any", "epidural"]] = 1
    wide = read_labels(_csv(tmp_path, frame))
    assert list(wide.index) == ["ID_a", "b"] and list(wide.columns) == list(LABELS)
    assert wide.loc["ID_a"].tolist() == [1, 1, 0, 0, 0, 0]
    # the same table in Kaggle's ID column and another column order
    frame2 = frame.rename(columns={"file": "ID"})[["ID", *reversed(LABELS)]]
    pd.testing.assert_frame_equal(read_labels(_csv(tmp_path, frame2)), wide)


def test_wrong_columns_are_named(tmp_path: Path) -> None:
    frame = pd.DataFrame({"ID": ["a"], "any": [0], "bleed": [0]})
    with pytest.raises(LabelsError, match=r"unknown column\(s\) \['bleed'\].*missing column"):
        read_labels(_csv(tmp_path, frame))
    with pytest.raises(LabelsError, match="no image column"):
        read_labels(_csv(tmp_path, pd.DataFrame({"name": ["a"], "any": [0]})))


def test_match_files_and_digest(tmp_path: Path) -> None:
    from ich.labels import labels_digest, match_files

    wide = long_to_wide(_long([(f"ID_{i}_{lab}", 0) for i in "ab" for lab in LABELS]))
    assert match_files(wide, ["ID_a.dcm", "ID_c"], "x") == (1, 1)
    with pytest.raises(LabelsError, match="none of the 2 labelled ids"):
        match_files(wide, ["ID_x", "ID_y"], "x")
    changed = wide.copy()
    changed.loc["ID_a", ["any", "subdural"]] = 1
    assert labels_digest(wide) == labels_digest(wide.copy())
    assert labels_digest(wide) != labels_digest(changed)
