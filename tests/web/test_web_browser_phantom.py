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
