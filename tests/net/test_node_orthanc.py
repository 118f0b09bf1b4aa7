"""Against Orthanc (Debian package, started here on loopback): Orthanc pushes a study to the
node, results come back into the same Orthanc study by C-STORE and STOW-RS; ``ich pull``'s
C-GET retrieves a study from Orthanc."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pydicom
import pytest
from net_helpers import Proc, free_port, tool, wait_for, wait_port

from ich.net.peers import parse_peer
from ich.net.pull import c_get
from ich.net.triage import triage_study

pytestmark = [pytest.mark.net, pytest.mark.slow]
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def _http(url: str, data: bytes | None = None) -> Any:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"null")


@pytest.fixture
def orthanc(tmp_path: Path) -> Any:
    """Orthanc with the DICOMweb plugin; the node (AE ICH) is a known modality."""
    tool("Orthanc")
    if not DICOMWEB_PLUGIN.is_file():
        pytest.skip("orthanc-dicomweb not installed")
    http, dicom, node_port = free_port(), free_port(), free_port()
    cfg = {
        "Name": "ich-test", "StorageDirectory": str(tmp_path / "orthanc-db"),
        "IndexDirectory": str(tmp_path / "orthanc-db"), "HttpPort": http, "DicomPort": dicom,
        "DicomAet": "ORTHANC", "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "DicomModalities": {"ich": {"AET": "ICH", "Host": "127.0.0.1", "Port": node_port,
                                    "AllowGet": True, "AllowStore": True}},
        "Plugins": [str(DICOMWEB_PLUGIN)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (tmp_path / "orthanc.json").write_text(json.dumps(cfg))
    proc = Proc([tool("Orthanc"), str(tmp_path / "orthanc.json")], cwd=tmp_path)
    wait_port(http, 30)
    wait_port(dicom, 30)
    yield {"http": f"http://127.0.0.1:{http}", "dicom": dicom, "node_port": node_port}
    proc.stop()


def _upload(base: str, files: list[Path]) -> str:
    study = ""
    for f in files:
        study = _http(f"{base}/instances", f.read_bytes())["ParentStudy"]
    return study


def test_orthanc_to_node_and_results_back(orthanc: Any, make_node: Any,
                                          ct_study: list[Path]) -> None:
    base = orthanc["http"]
    node = make_node(port=orthanc["node_port"],
                     destinations=[parse_peer(f"ORTHANC@127.0.0.1:{orthanc['dicom']}")],
                     stow=[f"{base}/dicom-web"])
    study = _upload(base, ct_study)
    _http(f"{base}/modalities/ich/store", json.dumps({"Resources": [study]}).encode())
    wait_for(lambda: node.store.query("SELECT 1 FROM node_outbox") and all(
        r["status"] == "sent" for r in node.store.query("SELECT status FROM node_outbox")),
        90, "results sent by C-STORE and STOW-RS")
    dests = {r["destination"].split(":")[0] for r in node.store.query(
        "SELECT destination FROM node_outbox")}
    assert dests == {"dimse", "stow"}
    series = _http(f"{base}/studies/{study}/series")
    modalities = sorted(s["MainDicomTags"].get("Modality", "") for s in series)
    assert modalities == ["CT", "OT", "SR"] or modalities == ["CT", "SC", "SR"], modalities
    sr = next(s for s in series if s["MainDicomTags"].get("Modality") == "SR")
    assert len(sr["Instances"]) == 1  # the same SR by two routes is one instance in Orthanc


def test_pull_by_c_get_from_orthanc(orthanc: Any, ct_study: list[Path], tmp_path: Path) -> None:
    from web_helpers import FakePredictor

    from ich.net.node import Node, NodeSettings

    _upload(orthanc["http"], ct_study)
    uid = str(pydicom.dcmread(ct_study[0], stop_before_pixels=True).StudyInstanceUID)
    node = Node(NodeSettings(data_dir=tmp_path / "pulled", port=0), predictor=FakePredictor())
    try:
        n = c_get(node.state, parse_peer(f"ORTHANC@127.0.0.1:{orthanc['dicom']}"), "ICH", uid)
        assert n == len(ct_study)
        node.worker.start()
        assert triage_study(node.state, uid, node.config, node.services)
        row = node.state.study_row(uid)
        assert row is not None and row["status"] == "done" and Path(str(row["sr_path"])).is_file()
    finally:
        node.worker.stop()
        node.store.close()
