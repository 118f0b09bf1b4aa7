"""The server with the real ``ich.inference.Predictor`` (a tiny trained run), end to end."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from web_helpers import LOCAL, wait_done

from ich.labels import LABELS

pytestmark = pytest.mark.slow


def test_real_predictor_from_model_dir(tiny_run: Path, tiny_cohort: Path, tmp_path: Path) -> None:
    import cv2
    import pandas as pd
    from fastapi.testclient import TestClient

    from ich.web.app import create_app
    from ich.web.settings import WebSettings

    patients = pd.read_csv(tiny_cohort / "patients.csv")
    study_uid = patients["study_instance_uid"].iloc[0]
    ids = patients.loc[patients["study_instance_uid"] == study_uid, "image_id"]
    files = [("files", (f"{i}.dcm", (tiny_cohort / "images" / f"{i}.dcm").read_bytes()))
             for i in ids]
    settings = WebSettings(data_dir=tmp_path / "data", model_dir=tiny_run)
    with TestClient(base_url=LOCAL, app=create_app(settings)) as client:  # no predictor: built
        end = time.time() + 120
        while not client.get("/api/info").json()["model_ready"] and time.time() < end:
            time.sleep(0.1)
        info = client.get("/api/info").json()
        assert info["model_ready"] and info["provenance"]["training_data"]
        sid = client.post("/api/studies", files=files).json()["id"]
        d = wait_done(client, sid, timeout=120)
        assert d["status"] == "done" and d["n_slices"] == len(ids)
        slices = d["series"][0]["slices"]
        probs = np.array([[s["probabilities"][k] for k in LABELS] for s in slices])
        assert probs.shape == (len(ids), 6) and ((probs >= 0) & (probs <= 1)).all()
        r = client.get(f"/api/studies/{sid}/slices/3/heatmap.png", params={"label": "subdural"})
        assert r.status_code == 200, r.text
        heat = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_UNCHANGED)
        assert heat.shape == (128, 128, 4)
