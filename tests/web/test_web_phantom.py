"""A whole phantom cohort in one .zip upload: grouped into its studies, none mixed up."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from web_helpers import wait_done, zip_bytes


def test_cohort_zip_is_split_into_its_studies(make_client, tiny_cohort: Path) -> None:
    client = make_client()
    images = sorted((tiny_cohort / "images").glob("*.dcm"))
    archive = zip_bytes([(p.name, p.read_bytes()) for p in images])
    r = client.post("/api/studies", files=[("files", ("cohort.zip", archive, "application/zip"))])
    assert r.status_code == 201, r.text
    body = r.json()
    patients = pd.read_csv(tiny_cohort / "patients.csv")
    expected = patients.groupby("study_instance_uid")["image_id"].apply(set).to_dict()
    assert len(body["ids"]) == len(expected) and body["errors"] == []
    for sid in body["ids"]:
        d = wait_done(client, sid)
        assert d["status"] == "done"
        got = {s["sop_instance_uid"] for s in d["series"][0]["slices"]}
        assert got == expected[d["study_instance_uid"]]
        # slice_index in patients.csv is the true order along z: the viewer's order must match.
        truth = patients.set_index("image_id").loc[
            [s["sop_instance_uid"] for s in d["series"][0]["slices"]], "slice_index"].tolist()
        assert truth == sorted(truth)
    worklist = client.get("/api/studies").json()
    anys = [w["probabilities"]["any"] for w in worklist]
    assert anys == sorted(anys, reverse=True) and len(worklist) == len(expected)
