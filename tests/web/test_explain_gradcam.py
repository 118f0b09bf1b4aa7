"""Issue 11 point 6: the own Grad-CAM gives the package's numbers, without touching the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ich.explain import grad_cam, last_conv


def _net(in_place: bool) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(inplace=in_place),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 6),
    ).eval()


@pytest.mark.parametrize("target", [0, 4, 5])  # 4: every pooled gradient < 0, an empty map
def test_same_map_as_pytorch_grad_cam(target: int) -> None:
    gc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    net = _net(False)
    ours = grad_cam(net, last_conv(net), x, target)
    ref_net = _net(False)
    with gc.GradCAM(model=ref_net, target_layers=[last_conv(ref_net)]) as cam:
        ref = cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])[0]
    assert ours.shape == (24, 24) and ours.dtype == np.float32
    assert ours.min() == pytest.approx(0.0)
    assert ours.max() == pytest.approx(1.0, abs=1e-5) if target != 4 else not ours.any()
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    # An in-place ReLU after the layer leaves the layer's own output (the map) unchanged.
    # (The package on CPU would read the rectified values: its saved activation shares memory.)
    in_place = _net(True)
    np.testing.assert_allclose(grad_cam(in_place, last_conv(in_place), x, target), ours,
                               atol=1e-6)


def test_leaves_the_model_and_grad_mode_as_they_were() -> None:
    net = _net(True)
    x = torch.rand(1, 3, 24, 24)
    for enabled in (True, False):
        with torch.set_grad_enabled(enabled):
            grad_cam(net, last_conv(net), x, 2)
            assert torch.is_grad_enabled() is enabled
    assert all(p.grad is None for p in net.parameters())  # no parameter gradients made
    assert not net[0]._forward_hooks and not net[3]._forward_hooks  # hook removed


def test_a_layer_the_forward_never_uses_is_a_clear_error() -> None:
    net = _net(False)
    with pytest.raises(ValueError, match="not used"):
        grad_cam(net, nn.Conv2d(3, 3, 1), torch.rand(1, 3, 8, 8), 0)


@pytest.mark.parametrize(("backbone", "layer"), [("resnet10t", "layer4"),
                                                 ("efficientnet_b0", "bn2")])
def test_cam_layer_is_the_backbones_last_stage(backbone: str, layer: str) -> None:
    # The last Conv2d of a ResNet is the shortcut's (layer4.0.downsample): a side branch.
    from ich.explain import cam_layer
    from ich.models.slice_cnn import build_slice_model

    model = build_slice_model(backbone=backbone, in_chans=3, pretrained=False).eval()
    found = cam_layer(model, torch.rand(1, 3, 64, 64))
    assert found is model.backbone.get_submodule(layer)
    if backbone == "resnet10t":
        assert last_conv(model) is not found  # what the heatmap used before
