"""End to end with real dcmtk peers on loopback: storescu → node → storescp (SR + key images),
compressed series, ineligible study, destination down then up, re-sent study, 10 at once."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

import pydicom
import pytest
from net_helpers import Proc, conformant_copies, free_port, recoded, tool, wait_for, wait_port

from ich.net.peers import parse_peer
from ich.web import views

pytestmark = [pytest.mark.net, pytest.mark.slow]


def storescu(port: int, files: list[Path], aet: str = "SENDER") -> None:
    subprocess.run([tool("storescu"), "-aec", "ICH", "-aet", aet, "127.0.0.1", str(port),
                    *map(str, files)], check=True, capture_output=True, timeout=120)


@pytest.fixture
def storescp(tmp_path: Path) -> Any:
    """A dcmtk storescp destination (AE DEST) on a free port; returns (peer, folder)."""
    port, out = free_port(), tmp_path / "received"
    out.mkdir()
    proc = Proc([tool("storescp"), "-aet", "DEST", "-od", str(out), str(port)], cwd=tmp_path)
    wait_port(port)
    yield parse_peer(f"DEST@127.0.0.1:{port}"), out
    proc.stop()


def _done(node: Any, n: int = 1) -> bool:
    rows = node.store.query("SELECT status FROM node_studies")
    return len(rows) >= n and all(r["status"] == "done" for r in rows)


def _errors(path: Path) -> list[str]:
    out = subprocess.run([tool("dciodvfy"), str(path)], capture_output=True, text=True)
    return [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("Error")]


def test_storescu_to_node_to_storescp(make_node: Any, storescp: Any, ct_study: list[Path],
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ich")
    dest, received = storescp
    node = make_node(destinations=[dest])
    subprocess.run([tool("echoscu"), "-aec", "ICH", "127.0.0.1", str(node.port)], check=True)
    storescu(node.port, ct_study)
    files = wait_for(lambda: sorted(received.iterdir()) if len(list(received.iterdir())) >= 4
                     else None, 60, "SR + 3 key images at the destination")
    objs = [pydicom.dcmread(f) for f in files]  # type: ignore[union-attr]
    src = pydicom.dcmread(ct_study[0], stop_before_pixels=True)
    kinds = sorted(str(o.SOPClassUID.name) for o in objs)
    assert kinds == ["Comprehensive 3D SR Storage"] + ["Secondary Capture Image Storage"] * 3
    for o, f in zip(objs, files, strict=True):  # type: ignore[arg-type]
        assert o.StudyInstanceUID == src.StudyInstanceUID and o.PatientID == src.PatientID
        assert o.SOPInstanceUID not in {pydicom.dcmread(c, stop_before_pixels=True)
                                        .SOPInstanceUID for c in ct_study[:3]}
        assert _errors(f) == []
    sc = next(o for o in objs if o.Modality != "SR")
    assert sc.BurnedInAnnotation == "YES" and sc.pixel_array.shape[-1] == 3
    dump = subprocess.run([tool("dsrdump"), "+Pc", str(next(
        f for f, o in zip(files, objs, strict=True) if o.Modality == "SR"))],  # type: ignore
        capture_output=True, text=True).stdout
    assert "(1386000,SCT,\"Intracranial hemorrhage (disorder)\")" in dump
    # The study is in the web app's worklist, with its source and the sends recorded.
    wait_for(lambda: _done(node), 10, "study done")
    listed = views.list_studies(node.store)
    assert len(listed) == 1 and listed[0]["source"] == "DICOM from SENDER"
    detail = views.study_detail(node.store, listed[0]["id"])
    assert detail is not None and detail["status"] == "done"
    wait_for(lambda: all(s["status"] == "sent" for s in views.study_detail(
        node.store, listed[0]["id"])["sends"]), 10, "sends recorded")  # type: ignore[index]
    # No identifiers in the node's logs: only one-way digests.
    assert "triaged" in caplog.text
    for secret in (str(src.StudyInstanceUID), str(src.PatientID), str(src.SOPInstanceUID)):
        assert secret not in caplog.text


def test_allow_list_and_loopback_default(make_node: Any, tmp_path: Path) -> None:
    from ich.errors import ConfigError
    from ich.net.node import NodeSettings

    with pytest.raises(ConfigError, match="--allow-aet"):
        NodeSettings(data_dir=tmp_path, host="0.0.0.0").validate()
    NodeSettings(data_dir=tmp_path, host="0.0.0.0", allow_aet=["CT1"]).validate()
    node = make_node(allow_aet=["CT1"])
    echo = [tool("echoscu"), "-aec", "ICH", "127.0.0.1", str(node.port)]
    assert subprocess.run([*echo, "-aet", "CT1"], capture_output=True).returncode == 0
    assert subprocess.run([*echo, "-aet", "INTRUDER"], capture_output=True).returncode != 0


def test_compressed_series_is_stored_as_sent(make_node: Any, ct_study: list[Path],
                                             tmp_path: Path) -> None:
    rle = recoded(ct_study, "dcmcrle", tmp_path / "rle")
    node = make_node()
    subprocess.run([tool("storescu"), "-aec", "ICH", "-xr", "127.0.0.1", str(node.port),
                    *map(str, rle)], check=True, capture_output=True, timeout=120)
    wait_for(lambda: _done(node), 60, "compressed study triaged")
    stored = list((node.store.root / "dicom").rglob("*.dcm"))
    assert len(stored) == len(rle)
    assert {str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID)
            for p in stored} == {"1.2.840.10008.1.2.5"}  # RLE Lossless, bytes as received
    assert views.list_studies(node.store)[0]["status"] == "done"


def test_ineligible_study_gets_an_sr_saying_why(make_node: Any, ct_study: list[Path],
                                                tmp_path: Path) -> None:
    def scout(ds: pydicom.Dataset) -> None:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]

    files = conformant_copies(ct_study, tmp_path / "scout", salt="scout", transform=scout)
    node = make_node()
    storescu(node.port, files)
    wait_for(lambda: _done(node), 60, "ineligible study handled")
    row = node.store.query("SELECT sr_path FROM node_studies")[0]
    sr = pydicom.dcmread(row["sr_path"])
    texts = [str(i.TextValue) for i in sr.ContentSequence if i.ValueType == "TEXT"]
    assert any("No series of this study could be analysed" in t for t in texts)
    assert any("localizer" in t for t in texts)
    assert _errors(Path(row["sr_path"])) == []
    study = views.list_studies(node.store)[0]
    detail = views.study_detail(node.store, study["id"])
    assert detail is not None and "localizer" in detail["errors"][0]["reason"]


def test_destination_down_then_up_and_resent_study_supersedes(
        make_node: Any, ct_study: list[Path], tmp_path: Path) -> None:
    port = free_port()
    node = make_node(destinations=[parse_peer(f"DEST@127.0.0.1:{port}")])
    storescu(node.port, ct_study)
    wait_for(lambda: node.store.query(
        "SELECT 1 FROM node_outbox WHERE attempts >= 1 AND status='pending'"), 60,
        "a failed first delivery")
    out = tmp_path / "late"
    out.mkdir()
    proc = Proc([tool("storescp"), "-aet", "DEST", "-od", str(out), str(port)], cwd=tmp_path)
    try:
        wait_port(port)
        wait_for(lambda: len(list(out.iterdir())) >= 4, 60, "delivery once DEST is up")
        first_sr = node.store.query("SELECT sr_path FROM node_studies")[0]["sr_path"]
        storescu(node.port, ct_study)  # re-sent: triaged again, the new SR supersedes
        wait_for(lambda: node.store.query("SELECT sr_path FROM node_studies")[0]["sr_path"]
                 != first_sr and _done(node), 60, "re-triage")
        new = pydicom.dcmread(node.store.query("SELECT sr_path FROM node_studies")[0]["sr_path"])
        old = pydicom.dcmread(first_sr)
        ref = new.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
        assert ref.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == old.SOPInstanceUID
        assert new.SeriesInstanceUID == old.SeriesInstanceUID
        assert new.InstanceNumber == old.InstanceNumber + 1
        assert len(views.list_studies(node.store)) == 1  # replaced, not duplicated
    finally:
        proc.stop()


def test_ten_studies_by_ten_associations_at_once(make_node: Any, ct_study: list[Path],
                                                 tmp_path: Path) -> None:
    node = make_node(stable_seconds=1.0)
    studies = [conformant_copies(ct_study, tmp_path / f"s{i}", salt=f"s{i}") for i in range(10)]
    procs = [subprocess.Popen([tool("storescu"), "-aec", "ICH", "-aet", f"SCANNER{i}",
                               "127.0.0.1", str(node.port), *map(str, files)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for i, files in enumerate(studies)]
    assert [p.wait(180) for p in procs] == [0] * 10
    wait_for(lambda: _done(node, 10), 400, "10 studies triaged")  # slow on a loaded machine
    assert len(node.store.query("SELECT 1 FROM node_instances")) == 10 * len(ct_study)
    listed = views.list_studies(node.store)
    assert sorted(s["source"] for s in listed) == sorted(f"DICOM from SCANNER{i}"
                                                         for i in range(10))
