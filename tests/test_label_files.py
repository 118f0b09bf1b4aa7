"""Label files with other label sets than the six RSNA labels (one label, a subset)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from ich.errors import CacheError, LabelsError
from ich.labels import LABELS, read_labels, write_submission


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


def test_the_image_column_may_be_named_image_or_path_and_carry_folders(tmp_path: Path) -> None:
    frame = pd.DataFrame({"Image": ["scans/a.png", "scans\\b.PNG"], "hemorrhage": [1, 0]})
    wide = read_labels(_csv(tmp_path, frame))
    assert list(wide.columns) == ["hemorrhage"] and wide["hemorrhage"].to_dict() == {"a": 1, "b": 0}


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


def test_label_names_that_would_break_ids_or_the_catalog_are_refused(
    tmp_path: Path, tiny_cohort: Path
) -> None:
    from ich.data.build import build_cache

    with pytest.raises(LabelsError, match=r"\['ich_any'\] must be letters and digits"):
        read_labels(_csv(tmp_path, pd.DataFrame({"file": ["a"], "ich_any": [1]})))
    images = tiny_cohort / "images"
    first = sorted(images.glob("*.dcm"))[0]
    csv = _csv(tmp_path, pd.DataFrame({"file": [first.name], "status": [1]}))
    with pytest.raises(CacheError, match=r"\['status'\] have the name of a catalog column"):
        build_cache(images, tmp_path / "cache", labels_csv=csv, progress=False)


def test_long_format_with_a_label_of_its_own(tmp_path: Path) -> None:
    long = pd.DataFrame({"ID": ["ID_a_hemorrhage", "ID_b_hemorrhage"], "Label": [1, 0]})
    wide = read_labels(_csv(tmp_path, long))
    assert list(wide.columns) == ["hemorrhage"] and wide["hemorrhage"].tolist() == [1, 0]


def test_serving_refuses_a_run_whose_weights_do_not_fit_its_labels(
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
    save_model(slice_file, load_file(str(slice_file)), spec)  # six outputs, one label
    # Inference, the web app and the DICOM node all load runs through ich.runs.load.
    with pytest.raises(CheckpointError, match="weights do not fit"):
        Predictor.from_run(run)
    out = tmp_path / "sub.csv"
    assert main(["predict", str(run), str(tiny_cache), "--out", str(out)]) != 0
    assert "weights do not fit" in capsys.readouterr().err
    assert not out.exists()


def test_an_ensemble_of_runs_with_different_labels_is_refused(
    make_run, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    from ich.errors import CheckpointError
    from ich.inference import Predictor

    six = make_run(tmp_path / "six", LABELS, sequence=False)
    one = make_run(tmp_path / "one", ("hemorrhage",), sequence=False)
    assert Predictor.from_run(one, engine="torch").labels == ("hemorrhage",)
    with pytest.raises(CheckpointError, match="predict different labels"):
        Predictor.from_run([six, one], engine="torch")
