"""Small pure pieces of the web app: windows, PNG cache, names, settings, the serve command."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from ich.errors import ConfigError
from ich.web.ingest import display_name, slice_z
from ich.web.predictor import PredictorLike
from ich.web.render import (
    BadRequestError,
    PngCache,
    heatmap_png,
    heatmap_rgba,
    parse_window,
    slice_png,
)
from ich.web.settings import WebSettings, default_data_dir


def test_parse_window() -> None:
    assert parse_window("brain") == (40.0, 80.0)
    assert parse_window("Bone") == (600.0, 2800.0)
    assert parse_window("35,90") == (35.0, 90.0)
    for bad in ("lung", "40", "40,0", "a,b", "40,nan"):
        with pytest.raises(BadRequestError):
            parse_window(bad)


def test_slice_png_and_heatmap_alpha() -> None:
    import cv2

    hu = np.array([[-1000, 0], [40, 2000]], np.float32)
    img = cv2.imdecode(np.frombuffer(slice_png(hu, 40, 80), np.uint8), cv2.IMREAD_UNCHANGED)
    assert img.tolist() == [[0, 0], [128, 255]]
    rgba = heatmap_rgba(np.array([[0.0, 1.0]]))
    assert rgba[0, 0, 3] == 0 and rgba[0, 1, 3] > 200


def test_heatmap_png_is_indexed_with_the_rgba_pixels() -> None:
    import io

    from PIL import Image

    yy, xx = np.mgrid[0:37, 0:53]  # not square: rows and columns must not swap
    heat = np.clip(np.hypot(yy - 18, xx - 30) / 30, 0, 1).astype(np.float32)
    heat[0, 0] = np.nan
    png = heatmap_png(heat)
    image = Image.open(io.BytesIO(png))
    assert image.mode == "P" and image.size == (53, 37)  # one byte per pixel, not RGBA
    decoded = np.asarray(image.convert("RGBA"))
    assert np.array_equal(decoded, heatmap_rgba(heat))
    assert decoded[0, 0, 3] == 0 and decoded[18, 30, 3] == 0 and decoded[36, 0, 3] > 200


def test_png_cache_lru() -> None:
    cache = PngCache(2)
    made: list[int] = []
    for k in (1, 2, 1, 3, 2):
        cache.get_or_make(("s", k), lambda k=k: made.append(k) or b"x")  # type: ignore[func-returns-value]
    assert made == [1, 2, 3, 2]  # 1 was reused; 2 was evicted by 3
    cache.drop("s")
    assert cache.get_or_make(("s", 3), lambda: b"y") == b"y"


def test_display_name_and_z() -> None:
    assert display_name("a\\b/c\x00.dcm") == "a/b/c.dcm"
    assert display_name(None) == "unnamed"
    from web_helpers import FakePredictor

    assert isinstance(FakePredictor(), PredictorLike)
    from dataclasses import replace

    from ich.dicom.io import SliceMeta

    meta = SliceMeta(**{f: None for f in SliceMeta.__dataclass_fields__})  # type: ignore[arg-type]
    tilted = replace(meta, image_orientation_patient=(1, 0, 0, 0, 0, -1),
                     image_position_patient=(0, 7, 3))
    assert slice_z(tilted, 0) == pytest.approx(7.0)  # normal = row × col = (0, 1, 0)
    assert slice_z(replace(meta, instance_number=4), 0) == 4.0


def test_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / "ich"
    with pytest.raises(ConfigError, match="port"):
        WebSettings(data_dir=tmp_path, port=0).validate()
    assert WebSettings(data_dir=tmp_path, token="").token is None


def test_serve_command_builds_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from ich.commands import serve as serve_cmd

    seen: list[WebSettings] = []
    monkeypatch.setattr("ich.web.app.serve", lambda s: seen.append(s))
    monkeypatch.setenv("ICH_TOKEN", "envtok")
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    serve_cmd.add_parser(sub, "serve", "serve")
    args = parser.parse_args(["serve", "--data", str(tmp_path), "--host", "0.0.0.0",
                              "--port", "9000", "--model", "runA"])
    assert args.func(args) == 0
    s = seen[0]
    assert (s.data_dir, s.host, s.port, s.token, s.model_dir) == (
        tmp_path, "0.0.0.0", 9000, "envtok", Path("runA"))


def test_heatmap_gets_the_neighbours_the_model_stacks(
    make_client, fake_predictor, phantom
) -> None:
    """The route hands ``heatmap`` one image per model offset, clamped at the series ends."""
    from web_helpers import wait_done

    seen: list[list[np.ndarray]] = []
    original = fake_predictor.heatmap

    def recording(hu, label, neighbours=None):
        seen.append(list(neighbours))
        return original(hu, label, neighbours)

    fake_predictor.offsets = (-1, 0, 1)
    fake_predictor.heatmap = recording
    client = make_client()
    assert client.app.state.ich.warmed.wait(10)  # the start-up warm-up heatmap is not counted
    seen.clear()
    paths = phantom[1][:4]
    sid = client.post("/api/studies", files=[("files", (p.name, p.read_bytes())) for p in paths])
    wait_done(client, sid.json()["id"])
    r = client.get(f"/api/studies/{sid.json()['id']}/slices/0/heatmap.png?label=any")
    assert r.status_code == 200
    (prev, own, nxt), = seen
    assert np.array_equal(prev, own)  # slice 0 has no previous slice: clamped to itself
    assert not np.array_equal(own, nxt)


def test_logs_carry_no_identifiers(make_client, phantom, caplog) -> None:
    import logging

    from web_helpers import relabelled, wait_done

    client = make_client()
    paths = phantom[0][:2]
    with caplog.at_level(logging.DEBUG, logger="ich"):
        sid = client.post("/api/studies", files=[("files", (n, b)) for n, b in
                                                 relabelled(paths, "log")]).json()["id"]
        wait_done(client, sid)
    text = caplog.text
    assert "upload: 2 files" in text
    assert "PAT_log" not in text and "ID_" not in text and ".log" not in text


def test_find_study_matches_exact_files_and_skips_failed(tmp_path: Path) -> None:
    from ich.web.store import Store

    store = Store(tmp_path)
    slices = [{"sop_instance_uid": f"1.{i}", "z": float(i), "sha256": f"{i:064x}", "meta": {}}
              for i in range(3)]
    series = [{"id": "s1", "series_instance_uid": "SE", "rows": 8, "columns": 8,
               "slices": slices}]
    sid = store.add_study({"study_instance_uid": "ST", "patient_id": "P"}, series, [])
    hashes = {x["sha256"] for x in slices}
    assert store.find_study("ST", hashes) == sid
    assert store.find_study("ST", hashes - {slices[0]["sha256"]}) is None
    assert store.find_study("OTHER", hashes) is None
    with store.tx() as db:
        db.execute("UPDATE jobs SET status='failed'")
    assert store.find_study("ST", hashes) is None  # a failed study is read again
    store.close()
