"""JSON API tests on phantom studies with a deterministic stand-in predictor (so a clone
without the real sample tests the whole API); one test repeats the upload on the real sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from web_helpers import relabelled, sample_series, wait_done, zip_bytes

from ich.labels import LABELS


def _files(paths: list[Path]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (p.name, p.read_bytes(), "application/dicom")) for p in paths]


def _upload_in_slice_order(client, paths: list[Path]) -> None:
    r = client.post("/api/studies", files=_files(paths[::-1]))  # reversed: order must not matter
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["ids"] == [body["id"]] and body["errors"] == [] and body["files"] == len(paths)
    d = wait_done(client, body["id"])
    assert d["status"] == "done" and d["n_slices"] == len(paths)
    slices = d["series"][0]["slices"]
    z = [s["z"] for s in slices]
    assert z == sorted(z) and len(set(z)) == len(z)
    assert [s["index"] for s in slices] == list(range(len(paths)))
    assert set(slices[0]["probabilities"]) == set(LABELS)
    study_any = d["probabilities"]["any"]
    assert study_any == pytest.approx(max(s["probabilities"]["any"] for s in slices), abs=1e-6)
    assert d["provenance"]["training_data"] == "none (test double)"
    assert "not for diagnosis" in d["notice"]


def test_upload_series_results_in_slice_order(make_client, phantom: list[list[Path]]) -> None:
    _upload_in_slice_order(make_client(), phantom[2])


@pytest.mark.real
def test_upload_real_series_results_in_slice_order(make_client, rsna_sample: Path) -> None:
    _upload_in_slice_order(make_client(), sample_series(rsna_sample)["ID_cd5a85fd"])


def test_worklist_most_suspicious_first_and_filters(make_client, phantom) -> None:
    client = make_client()
    paths = phantom[0][:6]
    ids = []
    for tag, shift in (("low", 0), ("high", 40), ("mid", 15)):  # max share 0.19, 0.51, 0.46
        r = client.post("/api/studies", files=[("files", (n, b, "application/dicom"))
                                               for n, b in relabelled(paths, tag, shift)])
        ids.append((tag, r.json()["id"]))
    for _, sid in ids:
        wait_done(client, sid)
    rows = client.get("/api/studies").json()
    anys = [r["probabilities"]["any"] for r in rows]
    assert anys == sorted(anys, reverse=True) and len(rows) == 3
    assert [r["patient_id"] for r in rows] == ["PAT_high", "PAT_mid", "PAT_low"]
    hit = client.get("/api/studies", params={"q": "PAT_mid"}).json()
    assert [r["id"] for r in hit] == [dict(ids)["mid"]]
    assert client.get("/api/studies", params={"status": "failed"}).json() == []
    r = client.get("/api/studies", params={"flag": "nonsense"})
    assert r.status_code == 400 and "unknown flag" in r.json()["detail"]


def test_png_endpoints_and_errors(make_client, phantom: list[list[Path]]) -> None:
    client = make_client()
    paths = phantom[1][:5]
    sid = client.post("/api/studies", files=_files(paths)).json()["id"]
    wait_done(client, sid)
    import cv2

    for window in ("brain", "subdural", "bone", "40,80"):
        r = client.get(f"/api/studies/{sid}/slices/2.png", params={"window": window})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        img = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_UNCHANGED)
        assert img.shape == (128, 128)
    brain = client.get(f"/api/studies/{sid}/slices/2.png?window=brain").content
    bone = client.get(f"/api/studies/{sid}/slices/2.png?window=bone").content
    assert brain != bone
    r = client.get(f"/api/studies/{sid}/slices/2/heatmap.png", params={"label": "subdural"})
    heat = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_UNCHANGED)
    assert r.headers["content-type"] == "image/png" and heat.shape == (128, 128, 4)
    cases = [
        (f"/api/studies/{sid}/slices/2.png?window=lung", 400, "window must be"),
        (f"/api/studies/{sid}/slices/2.png?window=40,-5", 422, "positive"),
        (f"/api/studies/{sid}/slices/99.png", 404, "has no slice 99"),
        (f"/api/studies/{sid}/slices/x.png", 400, "index"),
        (f"/api/studies/{sid}/slices/1/heatmap.png?label=blood", 400, "unknown label"),
        ("/api/studies/nope", 404, "no study"),
        ("/api/studies/nope/slices/0.png", 404, "no study"),
    ]
    for url, code, text in cases:
        r = client.get(url)
        assert r.status_code == code, url
        assert text in r.json()["detail"], (url, r.json())


def test_results_downloads_and_409_before_ready(make_client, fake_predictor, phantom) -> None:
    client = make_client(start_worker=False)
    paths = phantom[3][:4]
    sid = client.post("/api/studies", files=_files(paths)).json()["id"]
    r = client.get(f"/api/studies/{sid}/results.csv")
    assert r.status_code == 409 and "not ready" in r.json()["detail"]
    client2 = make_client()  # a server with a worker on the same data
    wait_done(client2, sid)
    csv = client2.get(f"/api/studies/{sid}/results.csv")
    assert csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.strip().splitlines()
    assert lines[0].split(",")[-6:] == list(LABELS) and len(lines) == 5
    js = client2.get(f"/api/studies/{sid}/results.json").json()
    assert js["id"] == sid and len(js["series"][0]["slices"]) == 4


def test_zip_upload_and_broken_files_reported(make_client, phantom) -> None:
    client = make_client()
    paths = phantom[0][:4]
    good = [(p.name, p.read_bytes()) for p in paths]
    truncated = ("cut.dcm", paths[0].read_bytes()[:2000])
    archive = zip_bytes([*good, ("notes.txt", b"hello")])
    files = [("files", ("scan.zip", archive, "application/zip")),
             ("files", ("cut.dcm", truncated[1], "application/dicom")),
             ("files", ("../../etc/passwd", b"not dicom at all", "text/plain"))]
    r = client.post("/api/studies", files=files)
    assert r.status_code == 201, r.text
    body = r.json()
    reasons = {e["file"]: e["reason"] for e in body["errors"]}
    assert set(reasons) == {"scan.zip/study/notes.txt", "cut.dcm", "../../etc/passwd"}
    assert all(reasons.values())
    d = wait_done(client, body["id"])
    assert d["n_slices"] == 4 and d["status"] == "done" and len(d["errors"]) == 3
    data = Path(client.app.state.ich.settings.data_dir)
    assert not any("passwd" in p.name for p in data.rglob("*"))  # names never become paths


def test_only_broken_files_gives_422_and_no_entry(make_client) -> None:
    client = make_client()  # issue 11: nothing usable -> 422 with the reasons, no worklist row
    r = client.post("/api/studies", files=[("files", ("a.dcm", b"garbage", "application/dicom"))])
    assert r.status_code == 422 and r.json()["errors"][0]["file"] == "a.dcm"
    assert client.get("/api/studies").json() == []
    r = client.post("/api/studies", data={"x": "1"})
    assert r.status_code == 400 and "no files" in r.json()["detail"]


def test_same_study_uploaded_again_is_not_duplicated(make_client, phantom) -> None:
    client = make_client()
    paths = phantom[0][:4]
    first = client.post("/api/studies", files=_files(paths)).json()
    assert first["existing"] == []
    wait_done(client, first["id"])
    again = client.post("/api/studies", files=_files(paths[::-1])).json()  # any order
    assert again["ids"] == [first["id"]] and again["existing"] == [first["id"]]
    assert len(client.get("/api/studies").json()) == 1
    fewer = client.post("/api/studies", files=_files(paths[:3])).json()  # other content
    assert fewer["existing"] == [] and fewer["id"] != first["id"]
    assert len(client.get("/api/studies").json()) == 2


def test_delete(make_client, phantom: list[list[Path]]) -> None:
    client = make_client()
    paths = phantom[0][:3]
    sid = client.post("/api/studies", files=_files(paths)).json()["id"]
    wait_done(client, sid)
    assert client.get(f"/api/studies/{sid}/slices/0.png").status_code == 200
    r = client.delete(f"/api/studies/{sid}")
    assert r.status_code == 200 and r.json() == {"deleted": sid}
    assert client.get(f"/api/studies/{sid}").status_code == 404
    assert client.get(f"/api/studies/{sid}/slices/0.png").status_code == 404
    assert client.delete(f"/api/studies/{sid}").status_code == 404
    data = Path(client.app.state.ich.settings.data_dir)
    assert not list((data / "files").rglob("*.dcm")) and not list((data / "arrays").glob("*"))


def test_limits(make_client, phantom: list[list[Path]]) -> None:
    client = make_client(max_files=2, max_upload_bytes=2_000_000)
    paths = phantom[0][:3]
    r = client.post("/api/studies", files=_files(paths))
    assert r.status_code == 413 and "too many files" in r.json()["detail"]
    r = client.post("/api/studies", files=[("files", ("a.zip", zip_bytes(
        [(p.name, p.read_bytes()) for p in paths]), "application/zip"))])
    assert r.status_code == 413 and "limit is 2" in r.json()["detail"]
    big = b"\0" * 2_100_000
    r = client.post("/api/studies", files=[("files", ("big.dcm", big, "application/dicom"))])
    assert r.status_code == 413 and "too large" in r.json()["detail"]
    assert client.get("/api/studies").json() == []


def test_openapi_docs(make_client) -> None:
    client = make_client()
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/api/studies", "/api/studies/{study_id}",
              "/api/studies/{study_id}/slices/{index}.png",
              "/api/studies/{study_id}/slices/{index}/heatmap.png",
              "/api/studies/{study_id}/results.csv"):
        assert p in paths
