"""Issue 11 point 8: typed answers (real schemas in /openapi.json) and one error shape,
checked against live answers on phantom studies."""

from __future__ import annotations

from pathlib import Path

import pytest
from web_helpers import as_files, phantom_studies, wait_done

from ich.web.schemas import ErrorBody, Info, StudyDetail, StudySummary, UploadResult


@pytest.fixture(scope="module")
def study(tiny_cohort: Path) -> list[Path]:
    return next(iter(phantom_studies(tiny_cohort).values()))[:4]


def test_openapi_has_real_schemas_for_every_json_route(make_client) -> None:
    doc = make_client().get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    for name in ("Info", "UploadResult", "StudySummary", "StudyDetail", "SliceEntry",
                 "LabelProbabilities", "ErrorBody", "Deleted", "SliceHeader"):
        assert name in schemas, name
    json_routes = [("get", "/api/info"), ("post", "/api/studies"), ("get", "/api/studies"),
                   ("get", "/api/studies/{study_id}"), ("delete", "/api/studies/{study_id}"),
                   ("get", "/api/studies/{study_id}/slices/{index}/meta")]
    for method, path in json_routes:
        ok = next(c for c in ("200", "201") if c in doc["paths"][path][method]["responses"])
        schema = doc["paths"][path][method]["responses"][ok]["content"]["application/json"]
        assert schema["schema"] not in ({}, {"type": "object"}), (method, path)
        errors = doc["paths"][path][method]["responses"]
        assert errors["404"]["content"]["application/json"]["schema"]["$ref"].endswith(
            "ErrorBody"), path
    # Probabilities are keyed by the run's labels (any label set): a label -> number mapping,
    # documented with the six RSNA labels as the example.
    probs = schemas["LabelProbabilities"]
    assert probs["type"] == "object" and probs["additionalProperties"] == {"type": "number"}
    assert set(probs["example"]) == {
        "any", "epidural", "intraparenchymal", "intraventricular", "subarachnoid", "subdural"}
    assert {"labels", "thresholds", "triage"} <= set(schemas["Info"]["properties"])


def test_live_answers_match_the_models(make_client, study) -> None:
    client = make_client()
    Info.model_validate(client.get("/api/info").json())
    up = UploadResult.model_validate(client.post("/api/studies", files=as_files(study)).json())
    wait_done(client, up.id)
    detail = StudyDetail.model_validate(client.get(f"/api/studies/{up.id}").json())
    assert detail.probabilities is not None and len(detail.series[0].slices) == len(study)
    rows = [StudySummary.model_validate(r) for r in client.get("/api/studies").json()]
    assert [r.id for r in rows] == [up.id]
    meta = client.get(f"/api/studies/{up.id}/slices/0/meta").json()
    assert meta["sop_instance_uid"] == detail.series[0].slices[0].sop_instance_uid
    assert "bits_stored" in meta  # header fields without a model field still pass through


def test_every_error_is_one_shape(make_client, study) -> None:
    client = make_client(max_files=2)
    sid = client.post("/api/studies", files=as_files(study[:2])).json()["id"]
    answers = [
        client.get("/api/studies/nope"),  # 404
        client.get(f"/api/studies/{sid}/slices/x.png"),  # 400 (path parameter)
        client.get(f"/api/studies/{sid}/slices/0.png?window=0,0"),  # 422
        client.get("/api/studies", params={"flag": "x"}),  # 400
        client.post("/api/studies", files=as_files(study[:3])),  # 413
        client.post("/api/studies", files=[("files", ("a", b"junk", "x/y"))]),  # 422
        client.get("/api/info", headers={"host": "rebind.example"}),  # 421
        client.delete(f"/api/studies/{sid}", headers={"origin": "http://x.example"}),  # 403
        client.get("/nowhere"),  # 404 outside the API
    ]
    assert sorted({r.status_code for r in answers}) == [400, 403, 404, 413, 421, 422]
    for r in answers:
        body = ErrorBody.model_validate(r.json())
        assert body.detail and set(r.json()) <= {"detail", "errors", "skipped"}, r.json()
    tokened = make_client(token="t")
    r = tokened.get("/api/info")
    assert r.status_code == 401 and ErrorBody.model_validate(r.json()).detail
