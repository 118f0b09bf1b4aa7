"""``ich info``: aligned table, JSON, and bad files reported without stopping the others."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ich.cli import main


def test_table(write_ct, head_values, capsys):
    path = write_ct("ID_abc.dcm", head_values, WindowCenter=["00036", "00036"])
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert len({line.index(" : ") for line in lines}) == 1  # aligned
    table = {k.strip(): v for k, v in (line.split(" : ", 1) for line in lines)}
    assert table["File"] == str(path)
    assert table["Rows × Columns"] == "64 × 48"
    assert table["Window Center"] == "36"
    assert table["Pixel Representation"] == "1 (signed)"
    assert table["Transfer Syntax"] == "Explicit VR Little Endian (1.2.840.10008.1.2.1)"
    assert table["12-bit wrap fix applied"] == "no"
    assert table["HU min"] == "-1000" and float(table["HU max"]) < 1500


def test_json_and_wrap_fix(write_ct, capsys):
    stored = np.full((40, 40), 3096, dtype=np.uint16)  # -1000 HU with the RSNA wrap fault
    path = write_ct("wrap.dcm", stored, bits_stored=12, pixel_representation=0, intercept=1.0)
    assert main(["info", "--json", str(path)]) == 0
    (info,) = json.loads(capsys.readouterr().out)
    assert info["wrap_fixed"] is True and info["header_rescale_intercept"] == 1.0
    assert info["hu_min"] == info["hu_max"] == -1000.0
    assert info["image_orientation_patient"] == [1, 0, 0, 0, 1, 0]
    assert info["transfer_syntax"] == "Explicit VR Little Endian"


def test_bad_file_reported_and_others_shown(write_ct, head_values, tmp_path, capsys):
    good = write_ct("good.dcm", head_values)
    bad = tmp_path / "bad.dcm"
    bad.write_text("not dicom at all\n" * 20)
    assert main(["info", "--json", str(bad), str(good)]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(f"ich info: error: {bad}: not a DICOM file")
    assert [d["path"] for d in json.loads(captured.out)] == [str(good)]


def test_several_files_as_tables(write_ct, head_values, tmp_path, capsys):
    a, b = write_ct("a.dcm", head_values), write_ct("b.dcm", head_values)
    assert main(["info", str(a), str(tmp_path / "missing.dcm"), str(b)]) == 1
    captured = capsys.readouterr()
    assert captured.out.count("File ") == 2 and "\n\n" in captured.out
    assert "missing.dcm: file not found" in captured.err


def test_needs_a_file(capsys):
    with pytest.raises(SystemExit):
        main(["info"])


@pytest.mark.real
def test_real_file(rsna_sample, capsys):
    path = next((rsna_sample / "stage_2_train").glob("*.dcm"))
    assert main(["info", "--json", str(path)]) == 0
    (info,) = json.loads(capsys.readouterr().out)
    assert info["sop_instance_uid"] == path.stem and info["modality"] == "CT"
    assert info["hu_min"] < -900 < 0 < info["hu_max"]
