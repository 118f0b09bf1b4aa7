"""Background jobs, restarts, concurrency, token enforcement and preload."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from web_helpers import LOCAL, FakePredictor, relabelled, wait_done

from ich.errors import ConfigError
from ich.web.app import create_app, preload
from ich.web.jobs import claim_next
from ich.web.settings import WebSettings
from ich.web.store import Store


def _post(client, files):
    return client.post("/api/studies", files=[("files", (n, b, "application/dicom"))
                                              for n, b in files])


def test_job_interrupted_mid_run_is_finished_after_restart(tmp_path, phantom) -> None:
    from fastapi.testclient import TestClient

    data = tmp_path / "data"
    paths = phantom[0][:5]
    with TestClient(base_url=LOCAL, app=create_app(WebSettings(data_dir=data, start_worker=False),
                               FakePredictor())) as c1:
        sid = _post(c1, relabelled(paths, "r")).json()["id"]
        # The server "crashes" after the worker claimed the job but before it finished.
        assert claim_next(c1.app.state.ich.store) is not None
        assert c1.get(f"/api/studies/{sid}").json()["status"] == "processing"
    predictor = FakePredictor()
    with TestClient(base_url=LOCAL, app=create_app(WebSettings(data_dir=data), predictor)) as c2:
        d = wait_done(c2, sid)
    assert d["status"] == "done" and predictor.calls == 1
    assert len(d["series"][0]["slices"]) == 5


def test_results_survive_restart(tmp_path, phantom) -> None:
    from fastapi.testclient import TestClient

    data = tmp_path / "data"
    paths = phantom[0][:3]
    app = create_app(WebSettings(data_dir=data), FakePredictor())
    with TestClient(base_url=LOCAL, app=app) as c1:
        sid = _post(c1, relabelled(paths, "s")).json()["id"]
        before = wait_done(c1, sid)
    predictor = FakePredictor()
    with TestClient(base_url=LOCAL, app=create_app(WebSettings(data_dir=data), predictor)) as c2:
        after = c2.get(f"/api/studies/{sid}").json()
        assert c2.get(f"/api/studies/{sid}/slices/1.png").status_code == 200
    assert after["probabilities"] == before["probabilities"] and predictor.calls == 0


def test_ten_concurrent_uploads_none_lost_or_mixed(make_client, phantom) -> None:
    client = make_client(predictor=FakePredictor(delay=0.02))
    paths = phantom[2][10:14]
    uploads = {f"c{i}": relabelled(paths, f"c{i}", hu_shift=3 * i) for i in range(10)}
    got: dict[str, str] = {}
    errors: list[BaseException] = []

    def send(tag: str) -> None:
        try:
            r = _post(client, uploads[tag])
            assert r.status_code == 201, r.text
            got[tag] = r.json()["id"]
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(t,)) for t in uploads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(got) == 10 and len(set(got.values())) == 10
    for tag, sid in got.items():
        d = wait_done(client, sid)
        assert d["status"] == "done" and d["patient_id"] == f"PAT_{tag}"
        uids = {s["sop_instance_uid"] for s in d["series"][0]["slices"]}
        assert len(uids) == 4 and all(u.endswith(f".{tag}") for u in uids)
    assert len(client.get("/api/studies").json()) == 10


def test_token_enforced_everywhere(make_client, phantom) -> None:
    client = make_client(host="0.0.0.0", token="s3cret")
    r = client.get("/api/studies")
    assert r.status_code == 401 and "token" in r.json()["detail"]
    assert client.get("/").status_code == 401
    assert client.get("/api/studies", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = client.get("/api/studies", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    paths = phantom[0][:2]
    sid = client.post("/api/studies", headers={"Authorization": "Bearer s3cret"},
                      files=[("files", (p.name, p.read_bytes())) for p in paths]).json()["id"]
    client.cookies.clear()
    assert client.get(f"/api/studies/{sid}/slices/0.png").status_code == 401
    r = client.get(f"/api/studies/{sid}/slices/0.png?token=s3cret")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    # The page opened with ?token= sets a cookie so its images and scripts load without it.
    assert client.get(f"/api/studies/{sid}/slices/1.png").status_code == 200


def test_non_loopback_without_token_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="token"):
        create_app(WebSettings(data_dir=tmp_path, host="0.0.0.0"))
    WebSettings(data_dir=tmp_path, host="0.0.0.0", token="t").validate()


def test_preload_queues_studies_that_a_server_finishes(tmp_path, phantom) -> None:
    from fastapi.testclient import TestClient

    settings = WebSettings(data_dir=tmp_path / "data")
    series = phantom
    folder = tmp_path / "in"
    folder.mkdir()
    for p in series[0][:3] + series[1][:2]:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "README.txt").write_text("not an image")
    ids = preload(settings, [folder])
    assert len(ids) == 2
    with TestClient(base_url=LOCAL, app=create_app(settings, FakePredictor())) as c:
        sizes = sorted(wait_done(c, sid)["n_slices"] for sid in ids)
    assert sizes == [2, 3]


def test_no_predictor_keeps_jobs_queued(tmp_path, phantom) -> None:
    from fastapi.testclient import TestClient

    paths = phantom[0][:2]
    with TestClient(base_url=LOCAL, app=create_app(WebSettings(data_dir=tmp_path))) as c:
        sid = _post(c, relabelled(paths, "q")).json()["id"]
        assert c.get(f"/api/studies/{sid}").json()["status"] == "queued"
        assert "no model" in c.get("/api/info").json()["provenance"]["note"]
        assert c.get(f"/api/studies/{sid}/slices/0/heatmap.png").status_code == 409
    store = Store(Path(tmp_path))
    assert store.query("SELECT status FROM jobs")[0]["status"] == "queued"
    store.close()
