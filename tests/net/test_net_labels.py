"""The DICOM node follows the run's labels: finding codes for any label, SRs for a one-label and
a three-label run, key-image text, per-label thresholds, and one node end to end."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from net_helpers import tool, wait_for

from ich.errors import LabelsError
from ich.labels import LABELS
from ich.net import codes
from ich.net.sc import probability_lines, render_key_image
from ich.net.sr import TriageResult, build_sr

THREE = ("intraparenchymal", "epidural", "subarachnoid")


def test_finding_code_for_any_label() -> None:
    for label in LABELS:  # the pinned table, unchanged
        assert codes.finding_code(label) is codes.FINDING_CODES[label]
    own = codes.finding_code("hemorrhage").code
    assert (own.value, own.scheme_designator, own.meaning) == ("hemorrhage", "99ICH",
                                                               "hemorrhage")
    with pytest.raises(LabelsError):
        codes.finding_code("not a label")
    # Code Value is SH (16 characters): long names that share a prefix still differ.
    a, b = (codes.finding_code(f"chronicsubdural{n}").code for n in ("left", "right"))
    assert len(a.value) <= 16 and len(b.value) <= 16 and a.value != b.value
    assert a.meaning == "chronicsubduralleft"


def _findings(sr: pydicom.Dataset) -> dict[str, str]:
    """Finding meaning -> present/absent meaning, read from the SR's content tree."""
    out: dict[str, str] = {}

    def walk(items: Any) -> None:
        for item in items:
            if item.ValueType == "CODE" and str(
                    item.ConceptNameCodeSequence[0].CodeValue) != "121071":  # not "Finding"
                value = item.ConceptCodeSequence[0]
                if value.CodeValue in (codes.PRESENT.value, codes.ABSENT.value):
                    name = item.ConceptNameCodeSequence[0]
                    out[f"{name.CodeValue}^{name.CodingSchemeDesignator}"] = str(value.CodeMeaning)
            walk(getattr(item, "ContentSequence", []))

    walk(sr.ContentSequence)
    return out


def _texts(sr: pydicom.Dataset) -> list[str]:
    """Every TEXT value of the SR's content tree (comments, algorithm parameters)."""
    out: list[str] = []

    def walk(items: Any) -> None:
        for item in items:
            if item.ValueType == "TEXT":
                out.append(str(item.TextValue))
            walk(getattr(item, "ContentSequence", []))

    walk(sr.ContentSequence)
    return out


@pytest.mark.parametrize("labels, probs, thresholds, expected", [
    (("hemorrhage",), [0.7], {}, {"hemorrhage^99ICH": "Present"}),
    (THREE, [0.3, 0.2, 0.6], {"epidural": 0.1, "subarachnoid": 0.9}, {
        "274100004^SCT": "Absent", "EDH^99ICH": "Present", "21454007^SCT": "Absent"}),
])
def test_sr_carries_exactly_the_runs_findings(
    ct_study: list[Path], tmp_path: Path, labels: tuple[str, ...], probs: list[float],
    thresholds: dict[str, float], expected: dict[str, str],
) -> None:
    import highdicom as hd

    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in ct_study]
    result = TriageResult(np.array(probs), 0.5, {label: [headers[2]] for label in labels},
                          provenance="test", labels=labels, thresholds=thresholds)
    path = tmp_path / "sr.dcm"
    build_sr(headers, result, [], "ICH", pydicom.uid.generate_uid()).save_as(
        path, enforce_file_format=True)
    back = pydicom.dcmread(path)
    assert _findings(back) == expected
    groups = hd.sr.srread(path).content.get_image_measurement_groups()
    assert sorted(float(g.get_measurements()[0].value) for g in groups) == sorted(probs)
    out = subprocess.run([tool("dciodvfy"), str(path)], capture_output=True, text=True)
    assert [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("Error")] == []
    dump = subprocess.run([tool("dsrdump"), "+Pc", str(path)], capture_output=True,
                          text=True).stdout
    assert result.thresholds_text() in _texts(back)  # the operating thresholds, per label
    if labels == ("hemorrhage",):
        assert '(hemorrhage,99ICH,"hemorrhage")=(52101004,SCT,"Present")' in dump


def test_triage_result_checks_its_columns() -> None:
    with pytest.raises(ValueError, match="2 probabilities for 1 labels"):
        TriageResult(np.array([0.1, 0.2]), 0.5, {}, labels=("hemorrhage",))
    three = TriageResult(np.array([0.1, 0.2, 0.3]), 0.5, {}, labels=THREE,
                         thresholds={"epidural": 0.25})
    assert three.thresholds_text() == ("operating thresholds intraparenchymal 0.5, "
                                       "epidural 0.25, subarachnoid 0.5")
    assert TriageResult(np.zeros(6), 0.4, {}).thresholds_text() == "operating threshold 0.4"


def test_key_image_text_lists_the_runs_labels() -> None:
    assert probability_lines(("hemorrhage",), np.array([0.42])) == ["hemorrhage 0.42"]
    assert probability_lines(THREE, np.array([0.1, 0.2, 0.3])) == [
        "intra 0.10  epidu 0.20  subar 0.30"]
    assert len(probability_lines(LABELS, np.zeros(6))) == 2
    hu = np.full((64, 64), 30.0, np.float32)
    one = render_key_image(hu, None, np.array([0.9]), "t", labels=("hemorrhage",))
    six = render_key_image(hu, None, np.zeros(6), "t")
    assert one.shape == six.shape == (512, 512, 3)
    assert not np.array_equal(one, six)  # one text line against two
    with pytest.raises(ValueError):
        render_key_image(hu, None, np.zeros(6), "t", labels=("hemorrhage",))


@pytest.mark.net
def test_node_triages_with_a_one_label_run(make_node: Any, ct_study: list[Path]) -> None:
    """storescu → node with a one-label run → SR with the single local finding, key images
    titled by it, the study in the worklist keyed by ``hemorrhage``."""
    from web_helpers import FakePredictor

    from ich.web import views

    predictor = FakePredictor(labels=("hemorrhage",))
    predictor.thresholds = {"hemorrhage": 1e-6}  # type: ignore[attr-defined]
    node = make_node(predictor=predictor, key_images=1)
    subprocess.run([tool("storescu"), "-aec", "ICH", "127.0.0.1", str(node.port),
                    *map(str, ct_study)], check=True, capture_output=True, timeout=120)
    wait_for(lambda: node.store.query(
        "SELECT 1 FROM node_studies WHERE status='done'"), 60, "study triaged")
    row = node.store.query("SELECT sr_path FROM node_studies")[0]
    sr = pydicom.dcmread(row["sr_path"])
    assert _findings(sr) == {"hemorrhage^99ICH": "Present"}  # at the run's threshold 1e-6
    texts = _texts(sr)
    assert any("RESEARCH USE ONLY" in t for t in texts)
    assert "operating threshold 1e-06" in texts
    listed = views.list_studies(node.store)
    assert len(listed) == 1 and list(listed[0]["probabilities"]) == ["hemorrhage"]
    assert predictor.heat_calls >= 1  # the key image's heatmap asked for "hemorrhage"
    sc_files = list(Path(row["sr_path"]).parent.glob("sc_*.dcm"))
    assert len(sc_files) == 1
    assert pydicom.dcmread(sc_files[0]).BurnedInAnnotation == "YES"
