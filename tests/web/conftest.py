"""Fixtures for the web tests: a stand-in predictor and started apps on a shared data dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from web_helpers import LOCAL, FakePredictor


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
