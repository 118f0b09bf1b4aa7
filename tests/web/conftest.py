"""Fixtures for the web tests: a stand-in predictor and started apps on a shared data dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from web_helpers import LOCAL, FakePredictor, free_port, phantom_studies, serving

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    """uvicorn serving the app on a free loopback port, in a thread."""
    from ich.web.app import create_app
    from ich.web.settings import WebSettings

    port = free_port()
    app = create_app(WebSettings(data_dir=tmp_path / "data", port=port), FakePredictor())
    with serving(app, port) as url:
        yield url


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    """A Debian-chromium page driven by Playwright (skipped where chromium is missing)."""
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        pg = browser.new_page(viewport={"width": 1440, "height": 900})
        yield pg
        browser.close()


@pytest.fixture(scope="session")
def phantom(tiny_cohort: Path) -> list[list[Path]]:
    """The tiny phantom cohort's studies (one series each, 128 px), files in slice order."""
    return list(phantom_studies(tiny_cohort).values())


@pytest.fixture
def fake_predictor() -> FakePredictor:
    return FakePredictor()


@pytest.fixture
def make_client(tmp_path: Path, fake_predictor: FakePredictor) -> Iterator[Any]:
    """Factory of started TestClients on a shared data dir (several = a restart)."""
    from fastapi.testclient import TestClient

    from ich.web.app import create_app
    from ich.web.settings import WebSettings

    clients: list[Any] = []

    def make(**kw: Any) -> Any:
        predictor = kw.pop("predictor", fake_predictor)
        settings = WebSettings(data_dir=kw.pop("data_dir", tmp_path / "data"), **kw)
        client = TestClient(base_url=LOCAL, app=create_app(settings, predictor=predictor))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)
