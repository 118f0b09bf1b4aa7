"""Fixtures of the DICOM node tests: phantom studies made conformant, and a started node."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "web"))

from net_helpers import conformant_copies

pytest.importorskip("pynetdicom")
pytest.importorskip("highdicom")


@pytest.fixture(scope="session")
def phantom_studies(tiny_cohort: Path) -> list[list[Path]]:
    """The tiny phantom cohort's files grouped by study (RSNA-like ``ID_`` UIDs)."""
    by: dict[str, list[Path]] = {}
    for f in sorted((tiny_cohort / "images").glob("*.dcm")):
        by.setdefault(str(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID),
                      []).append(f)
    return list(by.values())


@pytest.fixture(scope="session")
def ct_study(phantom_studies: list[list[Path]], tmp_path_factory: pytest.TempPathFactory
             ) -> list[Path]:
    """One phantom study with conformant UIDs and SOP Class UID (what storescu sends)."""
    return conformant_copies(phantom_studies[0], tmp_path_factory.mktemp("ct_study"))


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Any]:
    """Factory of started nodes (FakePredictor, free port); all stopped at the end."""
    from web_helpers import FakePredictor

    from ich.net.node import Node, NodeSettings

    nodes: list[Any] = []

    def make(**kw: Any) -> Any:
        kw.setdefault("data_dir", tmp_path / "data")
        kw.setdefault("port", 0)
        kw.setdefault("stable_seconds", 0.5)
        predictor = kw.pop("predictor", FakePredictor())
        node = Node(NodeSettings(**kw), predictor=predictor)
        node.start()
        nodes.append(node)
        return node

    yield make
    for n in nodes:
        n.stop()
