"""SliceModel: shapes for any channel count, embeddings, weights from a file, name errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ich.errors import CheckpointError, ConfigError
from ich.models.slice_cnn import SliceModel, build_slice_model

TINY = "resnet10t"


@pytest.mark.parametrize("in_chans", [1, 3, 9])
def test_forward_and_embed_shapes(in_chans: int) -> None:
    torch.manual_seed(0)
    model = SliceModel(TINY, in_chans=in_chans).eval()
    x = torch.randn(2, in_chans, 32, 32)
    with torch.no_grad():
        emb = model.embed(x)
        logits = model(x)
    assert emb.shape == (2, model.embed_dim)
    assert logits.shape == (2, 6)
    assert torch.allclose(model.head(emb), logits)
    assert model.init_source == "scratch"


def test_convolutions_run_channels_last_with_the_same_logits(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = SliceModel(TINY, in_chans=3).eval()
    conv = model.backbone.conv1[0].weight  # type: ignore[index]
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    path = tmp_path / "tiny.pth"
    torch.save(model.state_dict(), path)
    loaded = SliceModel(TINY, in_chans=3, weights=str(path)).eval()  # loading keeps the layout
    assert loaded.backbone.conv1[0].weight.is_contiguous(  # type: ignore[index]
        memory_format=torch.channels_last)
    plain = SliceModel(TINY, in_chans=3).eval()  # the same weights in the default layout
    plain.backbone.to(memory_format=torch.contiguous_format)
    plain.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), loaded(x))
        torch.testing.assert_close(model(x), plain.head(plain.backbone(
            (x - plain.input_mean) / plain.input_std)), atol=1e-5, rtol=1e-4)


def test_embed_dim_matches_conv_head_backbones() -> None:
    # mobilenetv3 pools then applies a conv head: embed_dim must be that head's width.
    model = SliceModel("mobilenetv3_small_050", in_chans=3).eval()
    with torch.no_grad():
        emb = model.embed(torch.randn(1, 3, 32, 32))
    assert emb.shape == (1, model.embed_dim)


def test_weights_from_file_roundtrip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    src = SliceModel(TINY, in_chans=3).eval()
    path = tmp_path / "tiny.pth"
    torch.save(src.state_dict(), path)
    torch.manual_seed(2)
    dst = SliceModel(TINY, in_chans=3, weights=str(path)).eval()
    assert dst.init_source == "file"
    assert dst.load_report == {"missing": [], "unexpected": []}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(src(x), dst(x))


def test_backbone_state_dict_adapts_first_conv(tmp_path: Path) -> None:
    # A timm-style backbone file (RGB stem + 1000-class fc) loads into a 9-channel model.
    import timm

    rgb = timm.create_model(TINY, num_classes=1000, in_chans=3)
    path = tmp_path / "rgb.pth"
    torch.save(rgb.state_dict(), path)
    model = SliceModel(TINY, in_chans=9, weights=path)
    assert model.load_report["unexpected"] == []
    assert model.load_report["missing"] == []
    stem = model.backbone.state_dict()["conv1.0.weight"]
    assert stem.shape[1] == 9
    assert model.eval()(torch.randn(1, 9, 32, 32)).shape == (1, 6)


def test_safetensors_weights(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    src = SliceModel(TINY, in_chans=1)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    dst = SliceModel(TINY, in_chans=1, weights=path)
    assert torch.equal(dst.classifier.weight, src.classifier.weight)


def test_missing_weights_file_is_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        SliceModel(TINY, in_chans=3, weights=tmp_path / "nope.pth")


def test_unknown_backbone_suggests_close_names() -> None:
    with pytest.raises(ConfigError, match="efficientnet_b0"):
        build_slice_model(backbone="efficientnetb0", in_chans=3)


def test_pretrained_without_hub_is_checkpoint_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import timm

    real = timm.create_model

    def offline(name: str, pretrained: bool = False, **kw: object) -> torch.nn.Module:
        if pretrained:
            raise OSError("hub unreachable")
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr("ich.models.slice_cnn.timm.create_model", offline)
    with pytest.raises(CheckpointError, match="--weights PATH"):
        SliceModel(TINY, in_chans=3, pretrained=True)


def test_model_args_rebuild() -> None:
    model = SliceModel(TINY, in_chans=5, drop_rate=0.3)
    again = SliceModel(**model.model_args())  # type: ignore[arg-type]
    assert again.embed_dim == model.embed_dim and again.in_chans == 5


def test_imagenet_weights_bring_their_normalisation(tmp_path: Path) -> None:
    """ImageNet backbone weights expect timm's mean/std (cycled over the channels); a model
    from scratch or from an ich SliceModel file keeps [0, 1] inputs unchanged."""
    import timm

    rgb = timm.create_model(TINY, num_classes=1000, in_chans=3)
    path = tmp_path / "rgb.pth"
    torch.save(rgb.state_dict(), path)
    model = SliceModel(TINY, in_chans=9, weights=path)
    mean, std = model.normalisation
    want_mean = tuple(rgb.pretrained_cfg["mean"])
    assert mean == pytest.approx([float(want_mean[c % 3]) for c in range(9)])
    assert std[:3] == pytest.approx([float(v) for v in rgb.pretrained_cfg["std"]])
    x = torch.rand(1, 9, 32, 32)
    m = torch.tensor(mean).reshape(1, 9, 1, 1)
    s = torch.tensor(std).reshape(1, 9, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model.eval().embed(x), model.backbone((x - m) / s))
    ours = tmp_path / "ours.pth"
    torch.save(model.state_dict(), ours)
    assert SliceModel(TINY, in_chans=9, weights=ours).normalisation == ((0.0,) * 9, (1.0,) * 9)
