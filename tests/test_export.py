"""``ich export``: ONNX and TorchScript files that match PyTorch, described by a JSON file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ich.cli import main
from ich.runs.checkpoint import load_slice_model


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_matches_pytorch(
    fmt: str, tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    out = tmp_path / f"slice.{fmt}"
    assert main(["export", str(tiny_run), "--format", fmt, "--out", str(out)]) == 0
    assert "largest difference from PyTorch" in capsys.readouterr().out
    meta = json.loads((tmp_path / f"slice.{fmt}.json").read_text())
    assert meta["input_size"] == 32 and meta["parity_max_abs_diff"] <= 1e-3
    model = load_slice_model(tiny_run / "checkpoints" / "slice_best.safetensors")[0].eval()
    x = torch.rand(2, *meta["inputs"]["x"][1:], generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        want = model(x).numpy()
    if fmt == "onnx":
        import onnxruntime as ort

        got = ort.InferenceSession(str(out)).run(None, {"x": x.numpy()})[1]
    else:
        got = torch.jit.load(str(out))(x)[1].detach().numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_export_refusals(tiny_run: Path, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.pt"
    assert main(["export", str(tiny_run), "--format", "torchscript", "--out", str(out),
                 "--tolerance", "-1"]) == 1
    assert "differs from PyTorch" in capsys.readouterr().err and not out.exists()
    (tmp_path / "fs").mkdir()
    (tmp_path / "fs" / "foldset.json").write_text("{}")
    assert main(["export", str(tmp_path / "fs"), "--format", "onnx", "--out", str(out)]) == 1
    assert "is a fold set" in capsys.readouterr().err
