"""Issue 11 point 1 in real Chromium on phantom studies: never the wrong patient.

Open study A, go back, delete study B elsewhere, click B's stale row: every panel must be empty
(no slice, no probabilities, no metadata of A), and the worklist must notice deletions and new
studies by itself while nothing is pending.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from web_helpers import zip_bytes

pytestmark = pytest.mark.browser
GONE = "() => document.querySelector('#study-title').textContent.includes('no study')"


def _upload_cohort(server: str, cohort: Path) -> list[str]:
    images = sorted((cohort / "images").glob("*.dcm"))
    archive = zip_bytes([(p.name, p.read_bytes()) for p in images])
    r = httpx.post(server + "/api/studies", timeout=60,
                   files=[("files", ("c.zip", archive, "application/zip"))])
    assert r.status_code == 201, r.text
    return list(r.json()["ids"])


def test_stale_row_of_a_deleted_study_shows_nothing_of_another(
    server: str, page: Any, tiny_cohort: Path, tmp_path: Path
) -> None:
    ids = _upload_cohort(server, tiny_cohort)
    a, b = ids[0], ids[1]
    page.goto(server + "/")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#worklist-body .badge')].length === 6 && "
        "[...document.querySelectorAll('#worklist-body .badge')]"
        ".every(b => b.textContent === 'done')", timeout=30000)
    page.click(f"#worklist-body tr[data-id='{a}']")
    page.wait_for_selector("#meta dt")
    page.wait_for_selector("#study-probs tr")
    assert page.get_attribute("#dl-csv", "href").endswith(f"{a}/results.csv")
    page.click("a.back")
    page.wait_for_selector(f"#worklist-body tr[data-id='{b}']")
    assert httpx.delete(f"{server}/api/studies/{b}").status_code == 200  # "another tab"
    page.click(f"#worklist-body tr[data-id='{b}']")  # the stale row
    page.wait_for_function(GONE)
    assert page.get_attribute("#slice-img", "src") is None
    assert page.inner_text("#study-probs") == "" and page.inner_text("#slice-probs") == ""
    assert page.inner_text("#meta") == "" and page.inner_text("#top-slices") == ""
    assert page.locator("#chart polyline").count() == 0
    assert page.get_attribute("#dl-csv", "href") is None
    assert page.get_attribute("#dl-csv", "aria-disabled") == "true"
    assert a not in page.inner_text("#viewer")
    page.screenshot(path=str(tmp_path / "stale.png"))
    if os.environ.get("ICH_SCREENSHOT_DIR"):
        page.screenshot(path=os.environ["ICH_SCREENSHOT_DIR"] + "/stale.png")

    # The worklist notices a deletion and a new study by itself, with nothing pending.
    page.click("a.back")
    page.wait_for_function("() => document.querySelectorAll('#worklist-body tr').length === 5")
    assert httpx.delete(f"{server}/api/studies/{ids[2]}").status_code == 200
    page.wait_for_function("() => document.querySelectorAll('#worklist-body tr').length === 4",
                           timeout=10000)
    _upload_cohort(server, tiny_cohort)  # b and ids[2] come back as new entries
    page.wait_for_function("() => document.querySelectorAll('#worklist-body tr').length === 6",
                           timeout=15000)

    # An open study deleted elsewhere empties the viewer within one poll.
    page.click(f"#worklist-body tr[data-id='{a}']")
    page.wait_for_selector("#study-probs tr")
    assert httpx.delete(f"{server}/api/studies/{a}").status_code == 200
    page.wait_for_function(GONE,
                           timeout=10000)
    assert page.inner_text("#study-probs") == "" and page.get_attribute("#slice-img", "src") is None


def test_token_entry_page_logs_in_and_keeps_the_token_out_of_the_address_bar(
    page: Any, tmp_path: Path
) -> None:

    from web_helpers import FakePredictor, free_port, serving

    from ich.web.app import create_app
    from ich.web.settings import WebSettings

    port = free_port()
    settings = WebSettings(data_dir=tmp_path / "d", port=port, token="tok")
    base = f"http://127.0.0.1:{port}"
    with serving(create_app(settings, FakePredictor()), port):
        r = page.goto(base + "/")
        assert r.status == 401 and page.locator("input[name=token]").count() == 1
        page.fill("input[name=token]", "wrong")
        page.click("button[type=submit]")
        assert "not right" in page.inner_text("body")
        page.fill("input[name=token]", "tok")
        page.click("button[type=submit]")
        page.wait_for_function(
            "() => document.querySelector('#provenance')?.textContent.includes('test double')")
        assert page.url == base + "/"
        page.goto(base + "/?token=tok")
        page.wait_for_selector("#worklist-empty")
        assert "token" not in page.url  # redirected to the clean address
        page.goto(base + "/docs")
        page.wait_for_selector(".swagger-ui .opblock", timeout=30000)  # offline assets, CSP ok
        if os.environ.get("ICH_SCREENSHOT_DIR"):
            page.screenshot(path=os.environ["ICH_SCREENSHOT_DIR"] + "/docs.png")


def test_upload_open_series_heatmap_and_delete(server: str, page: Any, phantom,
                                               tmp_path: Path) -> None:
    """The main viewer flows with no real sample: upload through the file input, open the
    study, switch series, show a heatmap, delete it from the viewer."""
    import io

    import pydicom

    files = []
    for k, paths in enumerate(phantom[:2]):  # two phantom series made one study
        for p in paths[: 4 + k]:
            ds = pydicom.dcmread(p)
            ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.4242"
            buf = io.BytesIO()
            ds.save_as(buf)
            (tmp_path / f"{k}_{p.name}").write_bytes(buf.getvalue())
            files.append(str(tmp_path / f"{k}_{p.name}"))
    page.goto(server + "/")
    page.set_input_files("#upload-input", files)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#worklist-body .badge')]"
        ".some(b => b.textContent === 'done')", timeout=30000)
    page.click("#worklist-body tr:first-child")
    page.wait_for_selector("#chart polyline")
    assert page.locator("#series-select option").count() == 2
    assert "2 series" in page.inner_text("#study-title")
    chosen = int(page.eval_on_selector("#series-select", "e => +e.value"))
    n_chosen = int(page.inner_text("#slice-index").rsplit("/", 1)[1])
    page.select_option("#series-select", str(1 - chosen))
    assert int(page.inner_text("#slice-index").rsplit("/", 1)[1]) == 9 - n_chosen
    assert page.locator("#heat-img").is_hidden()
    page.check("#heat-toggle")
    page.select_option("#heat-label", "subdural")
    page.wait_for_function("() => document.querySelector('#heat-img').complete && "
                           "document.querySelector('#heat-img').naturalWidth === 128")
    assert "label=subdural" in page.get_attribute("#heat-img", "src")
    page.on("dialog", lambda d: d.accept())
    page.click("#delete-study")
    page.wait_for_url(server + "/")
    page.wait_for_selector("#worklist-empty")
    assert httpx.get(server + "/api/studies").json() == []
    # The API reference asks nothing of any other host (ReDoc's logo included).
    asked: list[str] = []
    page.on("request", lambda req: asked.append(req.url))
    page.goto(server + "/redoc")
    page.wait_for_selector("text=Upload head-CT DICOM", timeout=30000)
    assert asked and all(u.startswith((server, "data:", "blob:")) for u in asked), asked
