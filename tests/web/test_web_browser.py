"""The viewer in real headless Chromium (Playwright driving Debian's /usr/bin/chromium).

Set ICH_UPDATE_SCREENSHOTS=1 to refresh docs/images/viewer.png from this run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from web_helpers import FakePredictor, free_port, relabelled, sample_series, serving

pytestmark = [pytest.mark.browser, pytest.mark.real]

REPO = Path(__file__).resolve().parents[2]


def _write(files: list[tuple[str, bytes]], folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files:
        (folder / name).write_bytes(data)
    return [str(folder / n) for n, _ in files]


def test_upload_worklist_and_viewer(server: str, page: Any, tmp_path: Path, rsna_sample) -> None:
    series = sample_series(rsna_sample)
    page.goto(server + "/")
    assert "not for diagnosis" in page.inner_text("#notice")
    page.wait_for_function(
        "() => document.querySelector('#provenance').textContent.includes('test double')")
    # Two uploads through the file input: a real hemorrhage series, and a normal one.
    page.set_input_files("#upload-input", _write(
        [(p.name, p.read_bytes()) for p in series["ID_cd5a85fd"]], tmp_path / "a"))
    page.wait_for_function(
        "() => document.querySelector('#upload-message').textContent.includes('Received')")
    normal = relabelled(series["ID_eeaf99e7"][:8], "n", hu_shift=-60)
    broken = [("broken.dcm", b"this is not DICOM")]
    page.set_input_files("#upload-input", _write(normal + broken, tmp_path / "b"))
    page.wait_for_selector("#upload-errors li")
    assert "broken.dcm" in page.inner_text("#upload-errors")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#worklist-body tr')].length === 2 && "
        "[...document.querySelectorAll('#worklist-body .badge')]"
        ".every(b => b.textContent === 'done')",
        timeout=30000)
    anys = [float(x) for x in page.eval_on_selector_all(
        "#worklist-body tr", "rows => rows.map(r => r.dataset.any)")]
    assert anys == sorted(anys, reverse=True) and anys[0] > anys[1]
    page.screenshot(path=str(tmp_path / "worklist.png"))
    assert "ID_cd5a85fd" in page.inner_text("#worklist-body tr:first-child")

    page.click("#worklist-body tr:first-child")
    page.wait_for_selector("#chart polyline")
    assert page.locator("#chart polyline").count() == 6
    start = int(page.get_attribute("#slice-index", "data-index"))
    src0 = page.get_attribute("#slice-img", "src")
    page.focus("#image-wrap")
    page.keyboard.press("ArrowUp" if start > 0 else "ArrowDown")
    after_key = int(page.get_attribute("#slice-index", "data-index"))
    assert abs(after_key - start) == 1 and page.get_attribute("#slice-img", "src") != src0
    page.hover("#image-wrap")
    page.mouse.wheel(0, 300)
    page.wait_for_function(
        f"() => +document.querySelector('#slice-index').dataset.index === {after_key + 1}")
    page.click("#window-buttons button[data-window='subdural']")
    assert "window=subdural" in page.get_attribute("#slice-img", "src")
    page.fill("#win-center", "50")
    page.fill("#win-width", "150")
    page.click("#win-apply")
    assert "window=50%2C150" in page.get_attribute("#slice-img", "src")
    page.click("#window-buttons button[data-window='brain']")
    # Chart click jumps: the far left of the chart is the first slice.
    box = page.locator("#chart").bounding_box()
    page.mouse.click(box["x"] + 3, box["y"] + box["height"] / 2)
    assert page.get_attribute("#slice-index", "data-index") == "0"
    page.mouse.click(box["x"] + box["width"] * 0.6, box["y"] + box["height"] / 2)
    idx = int(page.get_attribute("#slice-index", "data-index"))
    assert 0 < idx < 33
    assert page.locator("#heat-img").is_hidden()
    page.check("#heat-toggle")
    page.select_option("#heat-label", "subdural")
    page.wait_for_function("() => document.querySelector('#heat-img').complete && "
                           "document.querySelector('#heat-img').naturalWidth === 512")
    assert "label=subdural" in page.get_attribute("#heat-img", "src")
    page.fill("#heat-opacity", "40")
    page.dispatch_event("#heat-opacity", "input")
    assert page.eval_on_selector("#heat-img", "e => e.style.opacity") == "0.4"
    page.wait_for_selector("#meta dt")
    assert "sop instance uid" in page.inner_text("#meta")
    assert page.get_attribute("#dl-csv", "href").endswith("/results.csv")
    assert "not for diagnosis" in page.inner_text("#notice")
    page.click("#top-slices button:first-child")
    top = int(page.get_attribute("#top-slices button:first-child", "data-index"))
    assert page.get_attribute("#slice-index", "data-index") == str(top)
    page.click("#upload-dismiss")
    page.wait_for_function("() => document.querySelector('#slice-img').complete && "
                           "document.querySelector('#heat-img').complete")
    page.screenshot(path=str(tmp_path / "viewer.png"))
    if os.environ.get("ICH_UPDATE_SCREENSHOTS") == "1":
        shutil.copyfile(tmp_path / "viewer.png", REPO / "docs" / "images" / "viewer.png")


def test_search_filter_and_delete(server: str, page: Any, tmp_path: Path, rsna_sample) -> None:
    series = sample_series(rsna_sample)
    page.goto(server + "/")
    for tag in ("x1", "x2"):
        page.set_input_files("#upload-input", _write(
            relabelled(series["ID_ee4d05e4"][:3], tag), tmp_path / tag))
        page.wait_for_function(
            f"() => document.querySelector('#worklist-body').textContent.includes('PAT_{tag}')")
    page.fill("#search", "PAT_x2")
    page.wait_for_function("() => document.querySelectorAll('#worklist-body tr').length === 1")
    assert "PAT_x2" in page.inner_text("#worklist-body")
    page.click("#worklist-body tr:first-child")
    page.wait_for_selector("#study-probs tr")
    page.on("dialog", lambda d: d.accept())
    page.click("#delete-study")
    page.wait_for_url(server + "/")
    page.fill("#search", "")
    # Wait for the worklist as the server now has it: until its next refresh the page can
    # still show the filtered list of before the delete (one row, PAT_x2).
    page.wait_for_function(
        "() => document.querySelectorAll('#worklist-body tr').length === 1"
        " && document.querySelector('#worklist-body').textContent.includes('PAT_x1')")
    assert "PAT_x1" in page.inner_text("#worklist-body")
    assert "PAT_x2" not in page.inner_text("#worklist-body")


def test_drop_and_folder_upload(server: str, page: Any, tmp_path: Path, rsna_sample) -> None:
    import base64

    series = sample_series(rsna_sample)
    page.goto(server + "/")
    dropped = relabelled(series["ID_ee4d05e4"][:3], "drop")
    payload = [(n, base64.b64encode(b).decode()) for n, b in dropped]
    # A real drop event carrying File objects, as the browser makes for dragged files.
    page.evaluate("""files => {
        const dt = new DataTransfer();
        for (const [name, b64] of files) {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            dt.items.add(new File([bytes], name, {type: "application/dicom"}));
        }
        window.dispatchEvent(new DragEvent("dragenter", {dataTransfer: dt}));
        window.dispatchEvent(new DragEvent("drop", {dataTransfer: dt}));
    }""", payload)
    page.wait_for_function(
        "() => document.querySelector('#worklist-body').textContent.includes('PAT_drop')")
    folder = tmp_path / "folder"
    _write(relabelled(series["ID_eeaf99e7"][:4], "dir"), folder / "sub")
    (folder / "DICOMDIR.txt").write_text("not an image")
    page.set_input_files("#folder-input", str(folder))
    page.wait_for_function(
        "() => document.querySelector('#worklist-body').textContent.includes('PAT_dir')")
    assert "DICOMDIR.txt" in page.inner_text("#upload-errors")
    row = page.locator("#worklist-body tr", has_text="PAT_dir")
    assert row.locator("td").nth(3).inner_text() == "4"


def test_token_page(tmp_path: Path, page: Any) -> None:

    from ich.web.app import create_app
    from ich.web.settings import WebSettings

    port = free_port()
    settings = WebSettings(data_dir=tmp_path, host="127.0.0.1", port=port, token="tok")
    with serving(create_app(settings, FakePredictor()), port):
        r = page.goto(f"http://127.0.0.1:{port}/")
        assert r.status == 401 and "token" in page.inner_text("body")
        page.goto(f"http://127.0.0.1:{port}/?token=tok")
        page.wait_for_function(
            "() => document.querySelector('#provenance').textContent.includes('test double')")
        assert page.inner_text("#worklist-empty").startswith("No studies yet")


def _one_study(files: list[tuple[str, bytes]], study_uid: str) -> list[tuple[str, bytes]]:
    """The same files with one StudyInstanceUID (several series of one study)."""
    import io

    import pydicom

    out = []
    for name, data in files:
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.StudyInstanceUID = study_uid
        buf = io.BytesIO()
        ds.save_as(buf)
        out.append((name, buf.getvalue()))
    return out


def test_series_picker(server: str, page: Any, tmp_path: Path, rsna_sample) -> None:
    series = sample_series(rsna_sample)
    first = relabelled(series["ID_eeaf99e7"][:5], "a", hu_shift=-60)  # quiet, 5 slices
    second = relabelled(series["ID_cd5a85fd"][:7], "b")  # the suspicious one, 7 slices
    files = _one_study(first + second, "1.2.826.0.1.3680043.8.498.77")
    page.goto(server + "/")
    page.set_input_files("#upload-input", _write(files, tmp_path / "two"))
    page.wait_for_function(
        "() => [...document.querySelectorAll('#worklist-body .badge')]"
        ".some(b => b.textContent === 'done')", timeout=30000)
    page.click("#worklist-body tr:first-child")
    page.wait_for_selector("#chart polyline")
    assert page.locator("#series-select").is_visible()
    assert page.locator("#series-select option").count() == 2
    assert "2 series" in page.inner_text("#study-title")
    # Opens on the series with the most suspicious slice; scrolling stays inside it.
    chosen = int(page.eval_on_selector("#series-select", "e => +e.value"))
    n_chosen = 7 if "7 slices" in page.inner_text(f"#series-select option[value='{chosen}']") else 5
    assert page.inner_text("#slice-index").endswith(f"/ {n_chosen}")
    other = 1 - chosen
    page.select_option("#series-select", str(other))
    assert page.inner_text("#slice-index").endswith(f"/ {12 - n_chosen}")
    page.focus("#image-wrap")
    page.keyboard.press("Home")
    # Slice 1 of the second series in the list is slice 5 of the study (0-based, API order).
    offset = 0 if other == 0 else int(page.eval_on_selector(
        "#series-select", "e => e.options[0].textContent.match(/(\\d+) slices/)[1]"))
    assert f"/slices/{offset}.png" in page.get_attribute("#slice-img", "src")
    page.screenshot(path=str(tmp_path / "series.png"))
