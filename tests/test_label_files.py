"""Label files with other label sets than the six RSNA labels (one label, a subset)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ich.errors import LabelsError
from ich.labels import LABELS, read_labels, require_rsna_labels, write_submission


def _csv(tmp_path: Path, frame: pd.DataFrame) -> Path:
    path = tmp_path / "labels.csv"
    frame.to_csv(path, index=False)
    return path


def test_one_column_label_file_names_its_label(tmp_path: Path) -> None:
    frame = pd.DataFrame({"file": ["a.png", "b.png", "c"], "hemorrhage": [1, 0, 1]})
    wide = read_labels(_csv(tmp_path, frame))
    assert list(wide.columns) == ["hemorrhage"]
    assert wide["hemorrhage"].to_dict() == {"a": 1, "b": 0, "c": 1}
    frame.loc[1, "hemorrhage"] = 2
    with pytest.raises(LabelsError, match=r"labels.csv: b hemorrhage: value 2"):
        read_labels(_csv(tmp_path, frame))


def test_a_subset_of_the_rsna_labels_keeps_the_file_order(tmp_path: Path) -> None:
    subset = ["intraparenchymal", "epidural", "subarachnoid"]
    frame = pd.DataFrame({"ID": ["x", "y"], **{n: [0, 1] for n in subset}})
    wide = read_labels(_csv(tmp_path, frame))
    assert list(wide.columns) == subset and wide.loc["y"].tolist() == [1, 1, 1]


def test_bad_label_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(LabelsError, match="no label column"):
        read_labels(_csv(tmp_path, pd.DataFrame({"file": ["a"]})))
    frame = pd.DataFrame([["a", 0, 1]], columns=["file", "bleed", "bleed"])
    with pytest.raises(LabelsError, match="distinct, non-empty"):
        read_labels(_csv(tmp_path, frame))


def test_submission_with_the_runs_labels(tmp_path: Path) -> None:
    out = write_submission(["ID_a", "ID_b"], [[0.9], [0.0]], tmp_path / "s.csv",
                           labels=("hemorrhage",))
    sub = pd.read_csv(out)
    assert sub["ID"].tolist() == ["ID_a_hemorrhage", "ID_b_hemorrhage"]
    assert sub["Label"].tolist() == [0.9, 1e-6]
    with pytest.raises(ValueError, match=r"must be \(2, 6\)"):
        write_submission(["ID_a", "ID_b"], [[0.9], [0.0]], tmp_path / "t.csv")
    assert not (tmp_path / "t.csv").exists()


def test_the_cache_refuses_other_label_sets_clearly(tmp_path: Path) -> None:
    from ich.data.build import build_cache

    images = tmp_path / "images"
    images.mkdir()
    csv = _csv(tmp_path, pd.DataFrame({"file": ["a.dcm"], "hemorrhage": [1]}))
    with pytest.raises(LabelsError, match=r"labels.csv: labels \['hemorrhage'\].*six RSNA"):
        build_cache(images, tmp_path / "cache", labels_csv=csv, progress=False)
    assert not (tmp_path / "cache").exists()
    six = read_labels(_csv(tmp_path, pd.DataFrame({"file": ["a"], **{n: [0] for n in LABELS}})))
    require_rsna_labels(six, "six")  # the six pass


def test_serving_refuses_a_run_with_other_labels_clearly(
    tiny_run: Path, tiny_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import dataclasses
    import shutil

    from safetensors.torch import load_file

    from ich.cli import main
    from ich.errors import CheckpointError
    from ich.inference import Predictor
    from ich.runs.checkpoint import read_spec, save_model

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (slice_file,) = (run / "checkpoints").glob("slice_best*")
    spec = dataclasses.replace(read_spec(slice_file), labels=("hemorrhage",))
    save_model(slice_file, load_file(str(slice_file)), spec)
    # Inference, the web app and the DICOM node all load runs through ich.runs.load.
    with pytest.raises(CheckpointError, match=r"\['hemorrhage'\].*six-label runs only"):
        Predictor.from_run(run)
    out = tmp_path / "sub.csv"
    assert main(["predict", str(run), str(tiny_cache), "--out", str(out)]) != 0
    assert "six-label runs only" in capsys.readouterr().err
    assert not out.exists()


def test_explore_refuses_other_label_sets_clearly(tmp_path: Path) -> None:
    from ich.explore.core import collect

    (tmp_path / "images").mkdir()
    csv = _csv(tmp_path, pd.DataFrame({"file": ["a"], "hemorrhage": [1]}))
    with pytest.raises(LabelsError, match=r"labels \['hemorrhage'\]"):
        collect(tmp_path / "images", csv, workers=1, progress=False)
