"""Helpers of the web tests: a deterministic stand-in predictor and study builders.

(A module of its own, not conftest.py: test files import these names, and several conftest.py
files in one test tree would shadow each other as the module "conftest".)

The stand-in computes real numbers from the pixels (fraction of the head in the acute-blood HU
range), so worklist order and per-slice curves are checkable; it is a test double, not a model.
"""

from __future__ import annotations

import io
import socket
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pydicom.config

from ich.dicom.io import SliceMeta
from ich.labels import LABELS
from ich.runs.provenance import ModelProvenance
from ich.web.ingest import slice_z

BLOOD_HU = (50.0, 90.0)
#: Base URL of test clients: the Host header a loopback server accepts.
LOCAL = "http://127.0.0.1"


@dataclass
class FakePrediction:
    order: np.ndarray
    z: np.ndarray
    slice_probs: np.ndarray
    cnn_probs: np.ndarray
    study_probs: np.ndarray


class FakePredictor:
    """Probability per label from the share of head pixels in the acute-blood HU range.

    ``labels``: the run's label set it stands in for (the six RSNA labels by default).
    """

    def __init__(self, delay: float = 0.0, heat_delay: float = 0.0,
                 labels: tuple[str, ...] = LABELS) -> None:
        self.labels = tuple(labels)
        self.provenance = ModelProvenance(training_data="none (test double)", note="tests only")
        self.delay = delay
        self.heat_delay = heat_delay  # seconds per heatmap, standing in for Grad-CAM's cost
        self.heat_calls = 0
        self.calls = 0
        self.offsets: tuple[int, ...] = (0,)

    def _score(self, hu: np.ndarray) -> np.ndarray:
        head = hu > -300
        blood = (hu >= BLOOD_HU[0]) & (hu <= BLOOD_HU[1]) & head
        frac = blood.sum() / max(1, head.sum())
        base = float(np.clip(frac * 1.5, 0.0, 1.0))
        # Labels differ by a fixed factor so the curves are distinguishable.
        factors = (1.0, 0.2, 0.9, 0.6, 0.7, 0.8)
        return np.array([base * factors[k % 6] for k in range(len(self.labels))], np.float32)

    def predict_slices(self, hus: list[np.ndarray], metas: list[SliceMeta]) -> FakePrediction:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        z = np.array([slice_z(m, i) for i, m in enumerate(metas)])
        order = np.argsort(z, kind="stable")
        probs = np.stack([self._score(hus[i]) for i in order])
        return FakePrediction(order, z[order], probs, probs * 0.9, probs.max(axis=0))

    def heatmap(self, hu: np.ndarray, label: str,
                neighbours: list[np.ndarray] | None = None) -> np.ndarray:
        assert label in self.labels
        self.heat_calls += 1
        if self.heat_delay:
            time.sleep(self.heat_delay)
        blood = ((hu >= BLOOD_HU[0]) & (hu <= BLOOD_HU[1])).astype(np.float32)
        return blood


def sample_series(rsna_sample: Path) -> dict[str, list[Path]]:
    """The real sample files grouped by PatientID (one series each)."""
    groups: dict[str, list[Path]] = {}
    for p in sorted(rsna_sample.rglob("*.dcm")):
        pid = str(pydicom.dcmread(p, stop_before_pixels=True).PatientID)
        groups.setdefault(pid, []).append(p)
    return groups


def relabelled(paths: list[Path], tag: str, hu_shift: int = 0) -> list[tuple[str, bytes]]:
    """Copies of a series under new UIDs (a distinct study), optionally with brighter pixels."""
    out = []
    # RSNA's "ID_..." UIDs are invalid: this test code scopes its own pydicom settings (ich no
    # longer relaxes them process-wide at import).
    with pydicom.config.disable_value_validation():
        for p in paths:
            ds = pydicom.dcmread(p)
            for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
                setattr(ds, key, f"{getattr(ds, key)}.{tag}")
            ds.PatientID = f"PAT_{tag}"
            if hu_shift:
                arr = ds.pixel_array.astype(np.int32) + hu_shift
                info = np.iinfo(ds.pixel_array.dtype)
                ds.PixelData = (np.clip(arr, info.min, info.max)
                                .astype(ds.pixel_array.dtype).tobytes())
            buf = io.BytesIO()
            ds.save_as(buf)
            out.append((f"{tag}_{p.name}", buf.getvalue()))
    return out


def zip_bytes(files: list[tuple[str, bytes]]) -> bytes:
    """A .zip archive of (name, bytes) pairs, in folders like a user would zip them."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files:
            zf.writestr(f"study/{name}", data)
    return buf.getvalue()


def wait_done(client: Any, study_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll a study until it is no longer queued/processing."""
    end = time.time() + timeout
    while time.time() < end:
        d = client.get(f"/api/studies/{study_id}").json()
        if d["status"] not in ("queued", "processing"):
            return d
        time.sleep(0.05)
    raise AssertionError(f"study {study_id} not finished after {timeout} s")


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def phantom_studies(cohort: Path) -> dict[str, list[Path]]:
    """The phantom cohort's files grouped by StudyInstanceUID, in true slice order."""
    import pandas as pd

    table = pd.read_csv(cohort / "patients.csv").sort_values(["study_instance_uid",
                                                               "slice_index"])
    return {uid: [cohort / "images" / f"{i}.dcm" for i in g["image_id"]]
            for uid, g in table.groupby("study_instance_uid", sort=True)}


def as_files(items: list[tuple[str, bytes]] | list[Path]) -> list[tuple[str, Any]]:
    """Multipart ``files`` fields for (name, bytes) pairs or paths."""
    out: list[tuple[str, Any]] = []
    for item in items:
        name, data = (item.name, item.read_bytes()) if isinstance(item, Path) else item
        out.append(("files", (name, data, "application/dicom")))
    return out


def edited(path: Path, **changes: Any) -> bytes:
    """The bytes of a DICOM file with some attributes changed."""
    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        setattr(ds, key, value)
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


@contextmanager
def serving(app: Any, port: int, host: str = "127.0.0.1", **uvicorn: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on ``host``:``port`` in a thread; yields the loopback base URL
    and stops the server afterwards (TLS and other uvicorn settings through ``uvicorn``)."""
    import threading

    import uvicorn as uv

    srv = uv.Server(uv.Config(app, host=host, port=port, log_level="warning", **uvicorn))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    end = time.time() + 20
    while not srv.started and time.time() < end:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(10)
