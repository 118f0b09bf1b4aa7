"""Issue 11 points 3 and 4 on phantom studies: delete means delete, and honest answers."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from web_helpers import as_files, edited, phantom_studies, wait_done, zip_bytes

from ich.runs.provenance import MemberInfo, ModelProvenance
from ich.web.ingest import ingest
from ich.web.state import public_provenance
from ich.web.store import Store
from ich.web.views import csv_text


@pytest.fixture(scope="module")
def studies(tiny_cohort: Path) -> list[list[Path]]:
    return list(phantom_studies(tiny_cohort).values())


def _stored(data: Path) -> list[Path]:
    return [p for p in (data / "files").rglob("*") if p.is_file()]


def test_delete_leaves_no_file_and_no_patient_id_on_disk(make_client, studies, tmp_path) -> None:
    client = make_client()
    data = Path(client.app.state.ich.settings.data_dir)
    files = studies[0][:6]
    pid = str(__import__("pydicom").dcmread(files[0], stop_before_pixels=True).PatientID)
    rejected = [("cut.dcm", files[0].read_bytes()[:3000]),  # truncated pixel data
                ("mr.dcm", edited(files[1], Modality="MR")),
                ("dup.dcm", edited(files[2], InstanceNumber=999))]  # same SOPInstanceUID
    r = client.post("/api/studies", files=as_files(files) + as_files(rejected))
    assert r.status_code == 201, r.text
    reasons = {e["file"]: e["reason"] for e in r.json()["errors"]}
    assert set(reasons) == {"cut.dcm", "mr.dcm", "dup.dcm"}, reasons
    sid = r.json()["id"]
    wait_done(client, sid)
    assert len(_stored(data)) == len(files)  # rejected files are not kept at all
    assert client.delete(f"/api/studies/{sid}").status_code == 200
    assert _stored(data) == [] and list((data / "arrays").iterdir()) == []
    needle = pid.encode()
    for path in data.rglob("*"):
        if path.is_file():
            assert needle not in path.read_bytes(), f"patient id left in {path.name}"


def test_nothing_usable_gives_422_with_reasons_and_no_row(make_client) -> None:
    client = make_client()
    r = client.post("/api/studies", files=[("files", ("a.dcm", b"garbage", "application/dicom")),
                                           ("files", ("b.txt", b"notes", "text/plain"))])
    assert r.status_code == 422
    body = r.json()
    assert "nothing stored" in body["detail"]
    assert {e["file"] for e in body["errors"]} == {"a.dcm", "b.txt"}
    assert all(e["reason"] for e in body["errors"])
    assert client.get("/api/studies").json() == []
    data = Path(client.app.state.ich.settings.data_dir)
    assert _stored(data) == []


class _Broken(io.BytesIO):
    """A stream that dies half-way, like an upload whose client went away."""

    def read(self, n: int | None = -1) -> bytes:
        if self.tell() > 0:
            raise OSError("connection reset")
        return super().read(1 << 20)


def test_half_killed_upload_and_startup_sweep(make_client, studies, tmp_path) -> None:
    data = tmp_path / "data"
    store = Store(data)
    with pytest.raises(OSError):
        ingest(store, [("a.dcm", _Broken(studies[0][0].read_bytes() * 400))], 10, 10**9)
    assert _stored(data) == []
    store.close()
    client = make_client(data_dir=data)
    sid = client.post("/api/studies", files=as_files(studies[0][:3])).json()["id"]
    wait_done(client, sid)
    kept = sorted(_stored(data))
    (data / "files" / "orphan.part").write_bytes(b"half an upload")
    (data / "files" / "ab").mkdir(exist_ok=True)
    (data / "files" / "ab" / ("ab" + "0" * 62 + ".dcm")).write_bytes(b"deleted while down")
    (data / "arrays" / "gone.npy").write_bytes(b"x")
    restarted = make_client(data_dir=data)
    assert sorted(_stored(data)) == kept and not (data / "arrays" / "gone.npy").exists()
    assert restarted.get(f"/api/studies/{sid}/slices/0.png").status_code == 200


def test_wal_is_checkpointed_and_secure_delete_on(make_client, studies) -> None:
    client = make_client()
    sid = client.post("/api/studies", files=as_files(studies[1][:2])).json()["id"]
    client.delete(f"/api/studies/{sid}")
    data = Path(client.app.state.ich.settings.data_dir)
    wal = data / "ich.sqlite-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    assert client.app.state.ich.store.query("PRAGMA secure_delete")[0][0] == 1


def test_zip_members_skipped_are_listed_with_a_reason(make_client, studies) -> None:
    client = make_client()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("scan/", b"")
        zf.writestr("scan\\a.dcm", studies[2][0].read_bytes())  # written by a Windows tool
        zf.writestr("scan/b.dcm", studies[2][1].read_bytes())
        zf.writestr("scan/.DS_Store", b"finder")
        zf.writestr("__MACOSX/scan/._b.dcm", b"fork")
    r = client.post("/api/studies", files=[("files", ("s.zip", buf.getvalue(), "application/zip"))])
    assert r.status_code == 201, r.text
    body = r.json()
    skipped = {e["file"]: e["reason"] for e in body["skipped"]}
    assert set(skipped) == {"s.zip/scan/", "s.zip/scan\\a.dcm", "s.zip/scan/.DS_Store",
                            "s.zip/__MACOSX/scan/._b.dcm"}
    assert "folder" in skipped["s.zip/scan/"] and "hidden" in skipped["s.zip/scan/.DS_Store"]
    assert "backslash" in skipped["s.zip/scan\\a.dcm"]
    assert body["files"] == 1 and body["errors"] == []
    assert client.get(f"/api/studies/{body['id']}").json()["n_slices"] == 1


def test_partial_study_uploaded_again_in_full_is_one_entry(make_client, studies) -> None:
    client = make_client()
    full = studies[3]
    part = client.post("/api/studies", files=as_files(full[: len(full) // 2])).json()
    wait_done(client, part["id"])
    again = client.post("/api/studies", files=as_files(full)).json()
    assert again["ids"] == [part["id"]] and again["merged"] == [part["id"]]
    rows = client.get("/api/studies").json()
    assert len(rows) == 1 and rows[0]["n_slices"] == len(full)
    d = wait_done(client, part["id"])
    assert d["status"] == "done" and len(d["series"][0]["slices"]) == len(full)
    data = Path(client.app.state.ich.settings.data_dir)
    assert len(list((data / "arrays").iterdir())) == 1  # the partial one's array is gone


def test_window_out_of_bounds_is_422(make_client, studies) -> None:
    client = make_client()
    sid = client.post("/api/studies", files=as_files(studies[0][:2])).json()["id"]
    for window in ("40,-5", "40,0", "1e9,80", "40,1e9", "nan,80"):
        r = client.get(f"/api/studies/{sid}/slices/0.png", params={"window": window})
        assert r.status_code == 422, window
    assert client.get(f"/api/studies/{sid}/slices/0.png?window=lung").status_code == 400
    assert client.get(f"/api/studies/{sid}/slices/0.png?window=-100,3000").status_code == 200


def test_limits_answer_413_with_the_configured_number(make_client, studies) -> None:
    client = make_client(max_files=2, max_upload_bytes=3_000_000)
    r = client.post("/api/studies", files=as_files(studies[0][:3]))
    assert r.status_code == 413 and "limit is 2" in r.json()["detail"]
    archive = zip_bytes([(p.name, p.read_bytes()) for p in studies[0][:3]])
    r = client.post("/api/studies", files=[("files", ("a.zip", archive, "application/zip"))])
    assert r.status_code == 413 and "limit is 2" in r.json()["detail"]
    r = client.post("/api/studies", files=[("files", ("big", b"\0" * 3_100_000, "x/y"))])
    assert r.status_code == 413 and "limit is" in r.json()["detail"]
    assert client.get("/api/studies").json() == []
    assert _stored(Path(client.app.state.ich.settings.data_dir)) == []


def test_csv_cells_that_start_a_formula_are_escaped(make_client, studies) -> None:
    assert [csv_text(v) for v in ("=1+2", "+1", "-1", "@SUM(A1)", "1.2.3")] == [
        "'=1+2", "'+1", "'-1", "'@SUM(A1)", "1.2.3"]
    client = make_client()
    evil = [(f"{i}.dcm", edited(p, SeriesInstanceUID="=HYPERLINK(\"x\")"))
            for i, p in enumerate(studies[0][:2])]
    sid = client.post("/api/studies", files=as_files(evil)).json()["id"]
    wait_done(client, sid)
    lines = client.get(f"/api/studies/{sid}/results.csv").text.splitlines()[1:]
    assert lines and all("'=HYPERLINK" in line for line in lines)


def test_model_server_path_not_shown(make_client, fake_predictor) -> None:
    fake_predictor.provenance = ModelProvenance(
        training_data="x", runs=("/srv/secret/models/run-7",),
        members=(MemberInfo("/srv/secret/models/run-7/model.pt", 1, 1.0),))
    info = make_client().get("/api/info").json()
    assert info["provenance"]["runs"] == ["run-7"] and "/srv" not in str(info)
    assert public_provenance(ModelProvenance("relative/ok"))["training_data"] == "relative/ok"
