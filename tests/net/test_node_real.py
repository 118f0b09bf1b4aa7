"""Real RSNA slices through the node: a JPEG Lossless (dcmcjpeg) copy sent by dcmtk, and the
original files with their non-conformant ``ID_`` UIDs sent by a pynetdicom SCU."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pydicom
import pytest
from net_helpers import conformant_copies, recoded, tool, wait_for
from web_helpers import sample_series

from ich.web import views

pytestmark = [pytest.mark.net, pytest.mark.slow, pytest.mark.real]


def _largest_series(rsna_sample: Path) -> list[Path]:
    return max(sample_series(rsna_sample).values(), key=len)


def test_real_series_jpeg_lossless(make_node: Any, rsna_sample: Path, tmp_path: Path) -> None:
    files = conformant_copies(_largest_series(rsna_sample), tmp_path / "plain", salt="jpeg")
    jpeg = recoded(files, "dcmcjpeg", tmp_path / "jpeg")
    node = make_node()
    subprocess.run([tool("storescu"), "-aec", "ICH", "-xs", "127.0.0.1", str(node.port),
                    *map(str, jpeg)], check=True, capture_output=True, timeout=120)
    wait_for(lambda: node.store.query("SELECT 1 FROM node_studies WHERE status='done'"), 90,
             "real compressed study triaged")
    syntaxes = {str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID)
                for p in (node.store.root / "dicom").rglob("*.dcm")}
    assert syntaxes == {"1.2.840.10008.1.2.4.70"}  # JPEG Lossless SV1, stored as received
    study = views.list_studies(node.store)[0]
    assert study["status"] == "done" and study["n_slices"] == len(files)


def test_node_accepts_rsna_files_as_real_senders_send_them(make_node: Any,
                                                           rsna_sample: Path) -> None:
    from pynetdicom import AE

    files = _largest_series(rsna_sample)[:5]
    node = make_node()
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", ["1.2.840.10008.1.2",
                                                          "1.2.840.10008.1.2.1"])
    assoc = ae.associate("127.0.0.1", node.port, ae_title="ICH")
    assert assoc.is_established
    datasets = [pydicom.dcmread(f) for f in files]
    for ds in datasets:  # the SCU needs it for the command; UIDs stay the non-conformant ID_...
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    try:
        statuses = [assoc.send_c_store(ds).Status for ds in datasets]
    finally:
        assoc.release()
    assert statuses == [0] * len(files)
    stored = node.store.query("SELECT study_instance_uid FROM node_instances")
    assert len(stored) == len(files) and str(stored[0][0]).startswith("ID_")
