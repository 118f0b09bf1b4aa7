"""``ich train`` checks before it trains: recipe, offline fallback, device, weights, run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from ich.cli import main
from ich.config import config_to_dict, load_config


@pytest.mark.slow
def test_without_config_the_packaged_recipe_is_used_and_offline_falls_back_to_scratch(
    tiny_cache: Path, tiny_overrides: list[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    import ich.models.hub as hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "HUB_ADDRESS", ("127.0.0.1", 1))  # nothing listens: refused at once
    monkeypatch.setattr(hub, "weights_in_cache", lambda backbone: False)
    run = tmp_path / "run"
    overrides = [*tiny_overrides, "model.pretrained=true", "train.epochs=1", "train.stages=[slice]"]
    assert main(["train", str(tiny_cache), "--out", str(run), *overrides]) == 0
    out = capsys.readouterr().out
    assert out.count("training from scratch") == 1 and "127.0.0.1:1 unreachable" in out
    log = (run / "train.log").read_text()  # what was printed, kept with the run
    assert log.startswith("== ") and "training from scratch" in log
    assert "  slice epoch 1 step 1 loss" in log  # progress lines when not on a terminal
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["pretrained"] is False
    expected = config_to_dict(load_config("default", [*overrides, "model.pretrained=false"]))
    expected["data"]["cache"] = str(tiny_cache)
    saved["provenance"] = expected["provenance"]
    assert saved == expected


def test_missing_gpu_is_an_error_line_and_nothing_is_created(
    tiny_cache: Path, tiny_overrides: list[str], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    run = tmp_path / "run"
    assert main(["train", str(tiny_cache), "--out", str(run), *tiny_overrides,
                 "train.device=cuda"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ich train: error: device 'cuda': no CUDA GPU") and "Traceback" not in err
    assert not run.exists()


def test_weights_that_do_not_fit_are_an_error_line(
    tiny_cache: Path, tiny_overrides: list[str], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import timm

    state = timm.create_model("resnet10t", num_classes=0).state_dict()
    name = next(k for k, v in state.items() if v.ndim == 4 and k.startswith("layer1"))
    state[name] = torch.zeros(3, 3, 1, 1)
    weights = tmp_path / "w.pth"
    torch.save(state, weights)
    run = tmp_path / "run"
    assert main(["train", str(tiny_cache), "--out", str(run), "--weights", str(weights),
                 *tiny_overrides]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ich train: error:") and "do not fit backbone 'resnet10t'" in err
    assert name in err and not run.exists()


def test_existing_run_is_refused_not_retrained(
    tiny_run: Path, tiny_cache: Path, tiny_overrides: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    best = tiny_run / "checkpoints" / "slice_best.safetensors"
    before = best.stat().st_mtime_ns
    assert main(["train", str(tiny_cache), "--out", str(tiny_run), *tiny_overrides]) == 1
    err = capsys.readouterr().err
    assert "already holds a run" in err and f"--resume {tiny_run}" in err
    assert best.stat().st_mtime_ns == before


def test_unexpected_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import ich.commands.prepare as prepare

    def boom(args: object) -> int:
        raise ValueError("something\nbroke")

    monkeypatch.setattr(prepare, "run", boom)
    monkeypatch.delenv("ICH_DEBUG", raising=False)
    assert main(["prepare", str(tmp_path), "--out", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert err == ("ich prepare: error: ValueError: something broke (set ICH_DEBUG=1 to see the "
                   "traceback)\n")
