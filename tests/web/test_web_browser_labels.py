"""The viewer in real Chromium with a one-label run (``hemorrhage``): the worklist's ranking
column, the findings filter, the probability tables, the chart legend and the heatmap label
picker show the run's label, never the six RSNA labels."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from web_helpers import FakePredictor, as_files, free_port, serving

pytestmark = pytest.mark.browser


@pytest.fixture
def one_label_server(tmp_path: Path) -> Iterator[str]:
    from ich.web.app import create_app
    from ich.web.settings import WebSettings

    port = free_port()
    predictor = FakePredictor(labels=("hemorrhage",))
    predictor.thresholds = {"hemorrhage": 1e-6}  # type: ignore[attr-defined]
    app = create_app(WebSettings(data_dir=tmp_path / "data", port=port), predictor)
    with serving(app, port) as url:
        yield url


def _options(page: Any, select: str) -> list[str]:
    return list(page.eval_on_selector_all(f"{select} option", "os => os.map(o => o.value)"))


def test_viewer_shows_the_runs_one_label(one_label_server: str, page: Any,
                                         phantom: list[list[Path]], tmp_path: Path) -> None:
    server = one_label_server
    r = httpx.post(server + "/api/studies", files=as_files(phantom[0]), timeout=60)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    page.goto(server + "/")
    page.wait_for_function("() => document.querySelector('#score-head').textContent "
                           "=== 'P(hemorrhage)'")
    assert _options(page, "#flag-filter") == ["", "hemorrhage"]
    page.wait_for_function("() => [...document.querySelectorAll('#worklist-body .badge')]"
                           ".some(b => b.textContent === 'done')", timeout=30000)
    chip = page.inner_text(f"#worklist-body tr[data-id='{sid}'] .chip")
    assert chip == "hemorrhage"  # flagged at the run's threshold, named by the run's label
    # The ranking bar is highlighted at the run's threshold (1e-6), not at 0.5.
    assert page.locator(f"#worklist-body tr[data-id='{sid}'] .pbar i.hi").count() == 1
    page.select_option("#flag-filter", "hemorrhage")
    page.wait_for_function("() => document.querySelector('#worklist-count').textContent "
                           "=== '1 study'")
    page.screenshot(path=str(tmp_path / "worklist.png"))
    page.click(f"#worklist-body tr[data-id='{sid}']")
    page.wait_for_selector("#chart polyline")
    assert page.locator("#chart polyline").count() == 1
    assert page.get_attribute("#chart polyline", "data-label") == "hemorrhage"
    assert page.eval_on_selector_all("#study-probs tr td:first-child",
                                     "t => t.map(x => x.textContent)") == ["hemorrhage"]
    assert page.eval_on_selector_all("#slice-probs tr td:first-child",
                                     "t => t.map(x => x.textContent)") == ["hemorrhage"]
    assert "hemorrhage" in page.inner_text("#chart-legend")
    assert "subdural" not in page.inner_text("#viewer")
    assert _options(page, "#heat-label") == ["hemorrhage"]
    with page.expect_response(lambda resp: "heatmap.png?label=hemorrhage" in resp.url) as got:
        page.check("#heat-toggle")
    assert got.value.status == 200
    page.screenshot(path=str(tmp_path / "viewer.png"))
