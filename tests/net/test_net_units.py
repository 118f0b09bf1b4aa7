"""Units of the DICOM node without sockets: peers, codes, selection, stability, outbox, SR."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
from net_helpers import conformant_copies, tool

from ich.errors import ConfigError
from ich.labels import LABELS
from ich.net import codes
from ich.net.outbox import Outbox, backoff, enqueue
from ich.net.peers import Peer, parse_peer
from ich.net.selection import SelectionRules, select_series
from ich.net.sr import RESEARCH_NOTICE, TriageResult, build_sr, with_type2
from ich.net.state import Instance, NodeState
from ich.web.store import Store


def test_parse_peer() -> None:
    assert parse_peer("PACS@10.0.0.5:104") == Peer("PACS", "10.0.0.5", 104)
    assert parse_peer("A@[::1]:11112") == Peer("A", "::1", 11112)
    for bad in ("PACS10.0.0.5:104", "PACS@host", "WAYTOOLONGAETITLE17@h:1", "P@h:70000"):
        with pytest.raises(ConfigError):
            parse_peer(bad)


def test_code_table_is_pinned() -> None:
    """The codes written into every SR; a change here must be a deliberate, verified one."""
    table = {k: (v.code.value, v.code.scheme_designator) for k, v in codes.FINDING_CODES.items()}
    assert table == {
        "any": ("1386000", "SCT"),
        "epidural": ("EDH", "99ICH"),
        "intraparenchymal": ("274100004", "SCT"),
        "intraventricular": ("IVH", "99ICH"),
        "subarachnoid": ("21454007", "SCT"),
        "subdural": ("SDH", "99ICH"),
    }
    assert tuple(codes.FINDING_CODES) == LABELS
    assert (codes.PRESENT.value, codes.ABSENT.value) == ("52101004", "272519000")
    assert (codes.PROBABILITY.value, codes.PROBABILITY.scheme_designator) == ("122157", "DCM")
    assert (codes.CT_HEAD_PROCEDURE.value, codes.CT_HEAD_PROCEDURE.scheme_designator) == (
        "24725-4", "LN")


def _headers(files: list[Path]) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in files]


def test_selection_accepts_phantom_and_explains_rejections(ct_study: list[Path]) -> None:
    headers = _headers(ct_study)
    assert select_series(headers, SelectionRules()).eligible
    scouts = [with_type2(h) for h in headers]
    for h in scouts:
        h.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    d = select_series(scouts, SelectionRules())
    assert not d.eligible and "localizer" in d.reasons[0]
    few = select_series(headers[:5], SelectionRules())
    assert any("only 5 slices" in r for r in few.reasons)
    tilted = [with_type2(h) for h in headers]
    for h in tilted:  # rows along x, columns along z: a coronal stack
        h.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    assert any("not axial" in r for r in select_series(tilted, SelectionRules()).reasons)
    gap = [h for i, h in enumerate(headers) if i not in (8, 9, 10)]
    assert any("slices are missing" in r for r in select_series(gap, SelectionRules()).reasons)


def test_selection_rules_from_yaml(tmp_path: Path) -> None:
    good = tmp_path / "rules.yaml"
    good.write_text("min_slices: 40\nslice_thickness_mm: [1, 3]\n")
    rules = SelectionRules.from_yaml(good)
    assert rules.min_slices == 40 and rules.slice_thickness_mm == (1.0, 3.0)
    bad = tmp_path / "bad.yaml"
    bad.write_text("min_slice: 3\n")
    with pytest.raises(ConfigError, match="unknown selection rule"):
        SelectionRules.from_yaml(bad)


def _state(tmp_path: Path) -> NodeState:
    return NodeState(Store(tmp_path / "data"))


def test_stability_waits_for_release_and_quiet_time(tmp_path: Path) -> None:
    st = _state(tmp_path)
    a = st.open_association("SCANNER")
    st.add_instance(Instance("1.1", "9.9", "8.8", "c", "ab"), a, "SCANNER")
    later = time.time() + 100
    assert st.ready_studies(10, now=later) == []  # association still open
    st.end_association(a, "released")
    assert st.ready_studies(10, now=time.time()) == []  # not quiet long enough
    assert st.ready_studies(10, now=later) == ["9.9"]
    mark = st.start_triage("9.9")
    assert mark is not None and st.start_triage("9.9") is None  # claimed once


def test_aborted_association_waits_for_retry_and_restart_recovers(tmp_path: Path) -> None:
    st = _state(tmp_path)
    a = st.open_association("SCANNER")
    st.add_instance(Instance("1.1", "9.9", "8.8", "c", "ab"), a, "SCANNER")
    st.end_association(a, "aborted")
    assert st.ready_studies(0, now=time.time() + 100) == []
    b = st.open_association("SCANNER")  # the sender retries, then releases
    st.add_instance(Instance("1.1", "9.9", "8.8", "c", "ab"), b, "SCANNER")
    st.end_association(b, "released")
    assert st.ready_studies(0, now=time.time() + 100) == ["9.9"]
    assert len(st.instances("9.9")) == 1  # re-sent instance superseded, not duplicated
    st.start_triage("9.9")
    c = st.open_association("SCANNER")  # killed mid-association and mid-triage
    assert st.recover() == (1, 1)
    assert st.study_row("9.9")["status"] == "receiving"  # type: ignore[index]
    del c


def test_outbox_retries_with_backoff_until_delivered(tmp_path: Path) -> None:
    st = _state(tmp_path)
    up = {"ok": False}
    calls: list[int] = []

    def sender(target: str, paths: list[str]) -> dict[str, str | None]:
        calls.append(len(paths))
        return {p: (None if up["ok"] else "peer down") for p in paths}

    with st.store.tx() as db:
        enqueue(db, "9.9", "s1", [("1", "c", "/x/a.dcm"), ("2", "c", "/x/b.dcm")],
                ["dimse:DEST@127.0.0.1:1", "stow:http://127.0.0.1:1/dicom-web"])
    box = Outbox(st, "ICH", senders={"dimse": sender, "stow": sender})
    assert box.send_due() == 4
    rows = st.store.query("SELECT status, attempts, next_try, error FROM node_outbox")
    assert all(r["status"] == "pending" and r["error"] for r in rows)
    assert box.send_due() == 0  # backing off
    up["ok"] = True
    assert box.send_due(now=time.time() + backoff(1) + 1) == 4
    assert {r["status"] for r in st.store.query("SELECT status FROM node_outbox")} == {"sent"}
    assert backoff(1) < backoff(3) <= 300 and backoff(40) == 300
    assert st.store.sends("s1")[0]["status"] == "sent"


def _rsna_like(ct_study: list[Path], tmp_path: Path) -> list[pydicom.Dataset]:
    """Headers without the Type 2 attributes RSNA files lack."""
    out = []
    for ds in _headers(ct_study):
        for kw in ("PatientName", "StudyDate", "StudyTime", "ReferringPhysicianName",
                   "AccessionNumber", "StudyID"):
            if kw in ds:
                delattr(ds, kw)
        out.append(ds)
    return out


def test_sr_reads_back_and_passes_dciodvfy(ct_study: list[Path], tmp_path: Path) -> None:
    import highdicom as hd

    headers = _rsna_like(ct_study, tmp_path)
    probs = np.array([0.8, 0.1, 0.7, 0.2, 0.3, 0.05])
    result = TriageResult(probs, 0.5, {label: [headers[3]] for label in LABELS},
                          provenance="backbone: test; training_data: phantom")
    sr = build_sr(headers, result, ["series 2 'Scout' (2 images): a localizer image"], "ICH",
                  pydicom.uid.generate_uid())
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    back = hd.sr.srread(path)
    assert back.StudyInstanceUID == headers[0].StudyInstanceUID
    assert back.PatientID == headers[0].PatientID and back.PatientName == ""
    assert back.CompletionFlag == "COMPLETE" and back.VerificationFlag == "UNVERIFIED"
    groups = back.content.get_planar_roi_measurement_groups() + \
        back.content.get_image_measurement_groups()
    assert len(groups) == 6
    values = sorted(float(g.get_measurements()[0].value) for g in groups)
    assert values == sorted(probs.round(6).tolist())
    comments = [str(i.TextValue) for i in back.ContentSequence
                if i.ConceptNameCodeSequence[0].CodeValue == codes.COMMENT.value]
    assert RESEARCH_NOTICE in comments[0]
    assert any("Not analysed" in c and "localizer" in c for c in comments)
    dciodvfy = tool("dciodvfy")
    out = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True)
    errors = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("Error")]
    assert errors == []
    dump = subprocess.run([tool("dsrdump"), "+Pc", str(path)], capture_output=True, text=True)
    assert "(1386000,SCT,\"Intracranial hemorrhage (disorder)\")=(52101004,SCT,\"Present\")" \
        in dump.stdout
    assert "(21454007,SCT,\"Subarachnoid hemorrhage\")=(272519000,SCT,\"Absent\")" in dump.stdout


def test_conformant_copies_fix_rsna_uids(phantom_studies: list[list[Path]],
                                         tmp_path: Path) -> None:
    src = phantom_studies[0][:2]
    assert str(pydicom.dcmread(src[0]).StudyInstanceUID).startswith("ID_")
    copies = conformant_copies(src, tmp_path)
    ds = pydicom.dcmread(copies[0])
    assert ds.StudyInstanceUID.is_valid and "SOPClassUID" in ds


def test_release_reported_after_connection_close_still_counts(tmp_path: Path) -> None:
    st = _state(tmp_path)
    a = st.open_association("CT0")
    st.add_instance(Instance("1.1", "7.7", "8.8", "c", "ab"), a, "CT0")
    st.end_association(a, "closed")  # socket thread first: not complete yet
    assert st.ready_studies(0, now=time.time() + 100) == []
    st.end_association(a, "released")  # then the association thread's release
    assert st.ready_studies(0, now=time.time() + 100) == ["7.7"]
    b = st.open_association("CT1")
    st.add_instance(Instance("2.1", "6.6", "8.8", "d", "cd"), b, "CT1")
    st.end_association(b, "aborted")  # a real A-ABORT is final
    st.end_association(b, "released")
    assert st.ready_studies(0, now=time.time() + 100) == ["7.7"]
