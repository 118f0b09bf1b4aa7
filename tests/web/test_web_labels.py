"""The web app follows the run's labels: a one-label run (``hemorrhage``), a three-label run
without ``any``, per-label thresholds, and results kept with the labels they were made with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from web_helpers import LOCAL, FakePredictor, as_files, wait_done

from ich.labels import LABELS

THREE = ("intraparenchymal", "epidural", "subarachnoid")


def test_one_label_run_end_to_end(make_run: Any, phantom: list[list[Path]],
                                  tmp_path: Path) -> None:
    """The real Predictor on an untrained ``("hemorrhage",)`` run: info, probabilities, flags,
    thresholds from ``RUN/thresholds.json``, ranking, CSV and the flag/label checks."""
    from fastapi.testclient import TestClient

    from ich.web.app import create_app
    from ich.web.predictor import load_predictor
    from ich.web.settings import WebSettings

    run = make_run(tmp_path / "run", ("hemorrhage",))
    (run / "thresholds.json").write_text(json.dumps(
        {"method": "youden", "labels": {"hemorrhage": {"threshold": 1e-6}}}))
    settings = WebSettings(data_dir=tmp_path / "data")
    with TestClient(base_url=LOCAL, app=create_app(settings, load_predictor(run))) as client:
        info = client.get("/api/info").json()
        assert info["labels"] == ["hemorrhage"] and info["triage"] == "max"
        assert info["thresholds"] == {"hemorrhage": pytest.approx(1e-6)}
        ids = [client.post("/api/studies", files=as_files(s)).json()["id"] for s in phantom[:2]]
        details = [wait_done(client, sid, timeout=120) for sid in ids]
        for d in details:
            assert d["status"] == "done" and d["labels"] == ["hemorrhage"]
            assert set(d["probabilities"]) == {"hemorrhage"}
            slices = d["series"][0]["slices"]
            assert all(set(s["probabilities"]) == {"hemorrhage"} for s in slices)
            p = d["probabilities"]["hemorrhage"]
            assert p == pytest.approx(d["series"][0]["probabilities"]["hemorrhage"])
            assert 0 <= min(s["probabilities"]["hemorrhage"] for s in slices) <= 1
            assert d["score"] == pytest.approx(p)
            assert d["flags"] == ["hemorrhage"]  # p >= the run's threshold 1e-6
        rows = client.get("/api/studies").json()
        assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
        flagged = client.get("/api/studies", params={"flag": "hemorrhage"})
        assert flagged.status_code == 200 and {r["id"] for r in flagged.json()} == set(ids)
        bad = client.get("/api/studies", params={"flag": "any"})
        assert bad.status_code == 400 and "hemorrhage" in bad.json()["detail"]
        wrong = client.get(f"/api/studies/{ids[0]}/slices/0/heatmap.png",
                           params={"label": "subdural"})
        assert wrong.status_code == 400 and "hemorrhage" in wrong.json()["detail"]
        csv = client.get(f"/api/studies/{ids[0]}/results.csv").text.splitlines()
        assert csv[0].split(",")[-1] == "hemorrhage" and len(csv[0].split(",")) == 6
        assert len(csv) == 1 + details[0]["n_slices"]


def _three_label_client(make_client: Any, thresholds: dict[str, float]) -> tuple[Any, Any]:
    predictor = FakePredictor(labels=THREE)
    predictor.thresholds = thresholds  # type: ignore[attr-defined]
    return make_client(predictor=predictor), predictor


def test_three_label_run_thresholds_flags_and_heatmaps(make_client: Any,
                                                       phantom: list[list[Path]]) -> None:
    client, predictor = _three_label_client(make_client, {"epidural": 0.0})
    info = client.get("/api/info").json()
    assert info["labels"] == list(THREE) and info["triage"] == "max"
    assert info["thresholds"] == {"intraparenchymal": 0.5, "epidural": 0.0, "subarachnoid": 0.5}
    sid = client.post("/api/studies", files=as_files(phantom[0])).json()["id"]
    d = wait_done(client, sid)
    probs = d["probabilities"]
    assert list(probs) == list(THREE) and d["score"] == pytest.approx(max(probs.values()))
    # epidural is flagged at the run's threshold 0.0 whatever its value; the others at 0.5.
    assert d["flags"] == [k for k in THREE if probs[k] >= (0.0 if k == "epidural" else 0.5)]
    assert "epidural" in d["flags"]
    assert [r["id"] for r in client.get("/api/studies", params={"flag": "epidural"}).json()] \
        == [sid]
    r = client.get("/api/studies", params={"flag": "any"})
    assert r.status_code == 400 and all(k in r.json()["detail"] for k in THREE)
    ok = client.get(f"/api/studies/{sid}/slices/1/heatmap.png", params={"label": "epidural"})
    assert ok.status_code == 200 and ok.headers["content-type"] == "image/png"
    # Without a label: the run's first label (it has no "any"); the stand-in asserts the name.
    calls = predictor.heat_calls
    assert client.get(f"/api/studies/{sid}/slices/2/heatmap.png").status_code == 200
    assert predictor.heat_calls == calls + 1
    header = client.get(f"/api/studies/{sid}/results.csv").text.splitlines()[0].split(",")
    assert header[-3:] == list(THREE)


def _client(data: Path, predictor: Any) -> Any:
    from fastapi.testclient import TestClient

    from ich.web.app import create_app
    from ich.web.settings import WebSettings

    return TestClient(base_url=LOCAL, app=create_app(WebSettings(data_dir=data), predictor))


def test_results_keep_the_labels_they_were_made_with(tmp_path: Path,
                                                     phantom: list[list[Path]]) -> None:
    """A data folder first served by a six-label run, then by a one-label run: the earlier
    study stays keyed by the six labels, the new one by ``hemorrhage``, ranked together."""
    data = tmp_path / "data"
    with _client(data, FakePredictor()) as six:
        first = six.post("/api/studies", files=as_files(phantom[0])).json()["id"]
        assert set(wait_done(six, first)["probabilities"]) == set(LABELS)
    with _client(data, FakePredictor(labels=("hemorrhage",))) as one:
        second = one.post("/api/studies", files=as_files(phantom[1])).json()["id"]
        d = wait_done(one, second)
        assert list(d["probabilities"]) == ["hemorrhage"]
        old = one.get(f"/api/studies/{first}").json()
        assert set(old["probabilities"]) == set(LABELS)
        assert old["score"] == pytest.approx(old["probabilities"]["any"])
        rows = one.get("/api/studies").json()
        assert len(rows) == 2
        assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    with _client(data, None) as idle:  # no model: the labels of the newest stored result
        info = idle.get("/api/info").json()
        assert not info["model_ready"] and info["labels"] == ["hemorrhage"]
        assert idle.get("/api/studies", params={"flag": "hemorrhage"}).status_code == 200


def test_triage_score_and_labels_units() -> None:
    from ich.web.predictor import triage_label, triage_score

    assert triage_label(LABELS) == "any" and triage_label(THREE) is None
    assert triage_score(None) is None
    assert triage_score({"any": 0.2, "subdural": 0.9}) == pytest.approx(0.2)
    assert triage_score({"epidural": 0.2, "subarachnoid": 0.7}) == pytest.approx(0.7)
    assert triage_score({"hemorrhage": 0.4}) == pytest.approx(0.4)
