"""Image folders as data: 8-bit windowed and 16-bit HU PNG slices into the cache."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from ich.cli import main
from ich.data.cache import SliceCache
from ich.data.preprocess import PreprocessSpec, preprocess_hu
from ich.dicom.io import read_slice
from ich.labels import LABELS, read_labels


def _export(tiny_cohort: Path, out: Path, kind: str, n: int = 6) -> list[Path]:
    """Write the first ``n`` phantom slices as PNGs, the way image exports are made."""
    out.mkdir()
    dicoms = sorted((tiny_cohort / "images").glob("*.dcm"))[:n]
    for path in dicoms:
        hu = read_slice(path).hu
        if kind == "windowed8":  # brain window 40/80 -> level round((HU - lo) / (width / 255))
            step = np.float32(80 / 255)
            img = np.rint((np.clip(hu, 0, 80).astype(np.float32) - 0) / step).astype(np.uint8)
        else:
            img = np.clip(np.rint(hu) + 32768, 0, 65535).astype(np.uint16)
        assert cv2.imwrite(str(out / f"{path.stem}.png"), img)
    return dicoms


def _labels(tiny_cohort: Path, dicoms: list[Path], path: Path) -> Path:
    wide = read_labels(tiny_cohort / "labels.csv").loc[[p.stem for p in dicoms]]
    table = wide.reset_index().rename(columns={"image_id": "file"})
    table["file"] = table["file"] + ".png"
    table.to_csv(path, index=False)
    return path


def test_windowed_png_folder_matches_dicom_through_the_same_window(
    tiny_cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dicoms = _export(tiny_cohort, tmp_path / "png", "windowed8")
    (tmp_path / "png" / "notes.txt").write_text("x")
    labels = _labels(tiny_cohort, dicoms, tmp_path / "labels.csv")
    out = tmp_path / "cache"
    assert main(["prepare", str(tmp_path / "png"), "--images", "windowed8", "--labels",
                 str(labels), "--out", str(out), "--size", "32", "--workers", "1",
                 "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "files: 6 (6 ok, 0 failed)" in text and "labels: 6 of 6 files labelled" in text
    assert "skipped 1 file(s): notes.txt" in text
    cache = SliceCache(out)
    assert cache.spec.hu_range == (0.0, 80.0) and cache.has_labels
    assert cache.catalog["window_center"].eq(40).all()
    # What a model trained on this cache gets from the DICOM of the same slice at inference
    # (preprocess_hu with the cache's spec) is exactly the cached image.
    for i, image_id in enumerate(cache.catalog["image_id"]):
        dicom = tiny_cohort / "images" / f"{image_id}.dcm"
        np.testing.assert_array_equal(preprocess_hu(read_slice(dicom).hu, cache.spec),
                                      cache.image(i))
        assert cache.labels[i].tolist() == read_labels(labels).loc[image_id].tolist()
    centre = cache.image(0)[12:20, 12:20]  # inside the head: the window's HU only
    assert centre.min() >= 0 and centre.max() <= 80


def test_hu16_png_folder_keeps_full_hu_and_wrong_depth_is_recorded(
    tiny_cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dicoms = _export(tiny_cohort, tmp_path / "png", "hu16", n=3)
    cv2.imwrite(str(tmp_path / "png" / "eight_bit.png"), np.zeros((8, 8), np.uint8))
    out = tmp_path / "cache"
    assert main(["prepare", str(tmp_path / "png"), "--images", "hu16", "--out", str(out),
                 "--size", "32", "--workers", "1", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "files: 4 (3 ok, 1 failed)" in text and "ImageReadError: 1" in text
    assert "uint8 pixels, but --images hu16" in text
    cache = SliceCache(out)
    assert cache.spec.hu_range is None and cache.spec.key() == PreprocessSpec(size=32).key()
    for i, image_id in enumerate(cache.catalog["image_id"]):
        hu = np.rint(read_slice(tiny_cohort / "images" / f"{image_id}.dcm").hu)
        np.testing.assert_array_equal(preprocess_hu(hu, cache.spec), cache.image(i))
    assert sorted(cache.catalog["image_id"]) == sorted(p.stem for p in dicoms)
    assert main(["prepare", str(tmp_path / "png"), "--images", "hu16", "--out",
                 str(tmp_path / "strict"), "--size", "32", "--workers", "1", "--quiet",
                 "--strict"]) == 1
    assert "eight_bit.png" in capsys.readouterr().err


@pytest.mark.slow
def test_a_model_trained_on_windowed_images_windows_dicom_the_same_way(
    tiny_cohort: Path, tmp_path: Path, tiny_overrides: list[str]
) -> None:
    from ich.inference import Predictor

    dicoms = _export(tiny_cohort, tmp_path / "png", "windowed8", n=40)
    labels = _labels(tiny_cohort, dicoms, tmp_path / "labels.csv")
    cache = tmp_path / "cache"
    assert main(["prepare", str(tmp_path / "png"), "--images", "windowed8", "--labels",
                 str(labels), "--out", str(cache), "--size", "32", "--workers", "1",
                 "--quiet"]) == 0
    run = tmp_path / "run"
    assert main(["train", str(cache), "--out", str(run), *tiny_overrides,
                 "train.epochs=1"]) == 0
    predictor = Predictor.from_run(run)
    assert predictor.preprocess.hu_range == (0.0, 80.0)
    sub = tmp_path / "sub.csv"
    src = tmp_path / "dicom"
    src.mkdir()
    for path in dicoms[:4]:
        (src / path.name).write_bytes(path.read_bytes())
    assert main(["predict", str(run), str(src), "--out", str(sub), "--workers", "1"]) == 0
    assert len(pd.read_csv(sub)) == 4 * len(LABELS)


def test_a_patient_column_in_the_label_file_groups_images_into_patients(
    tiny_cohort: Path, tmp_path: Path
) -> None:
    from ich.data.folds import make_folds
    from ich.errors import LabelsError

    dicoms = _export(tiny_cohort, tmp_path / "png", "windowed8", n=12)
    table = pd.read_csv(_labels(tiny_cohort, dicoms, tmp_path / "labels.csv"))
    table.insert(1, "patient_id", [f"P{i // 4}" for i in range(len(table))])  # 3 patients
    table.to_csv(tmp_path / "labels.csv", index=False)
    out = tmp_path / "cache"
    assert main(["prepare", str(tmp_path / "png"), "--images", "windowed8", "--labels",
                 str(tmp_path / "labels.csv"), "--out", str(out), "--size", "32",
                 "--workers", "1", "--quiet"]) == 0
    cache = SliceCache(out)
    assert cache.label_names == LABELS  # patient_id is no label
    assert sorted(cache.catalog["patient_id"].unique()) == ["P0", "P1", "P2"]
    folds = make_folds(cache.catalog, k=3, seed=0).to_numpy()
    for patient in ("P0", "P1", "P2"):
        assert len(set(folds[cache.catalog["patient_id"] == patient])) == 1
    table.loc[2, "patient_id"] = None
    table.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(LabelsError, match="no patient_id"):
        from ich.labels import read_patient_groups

        read_patient_groups(tmp_path / "bad.csv")
