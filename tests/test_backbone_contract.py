"""The feature contract, checked for every registered backbone (adding a name adds it here)."""
from __future__ import annotations

import math

import pytest
import torch

from backbones import create_backbone, list_backbones

SIZES = [(65, 97), (64, 64)]


@pytest.mark.parametrize("output_stride", [32, 16, 8])
@pytest.mark.parametrize("name", list_backbones())
def test_maps_match_feature_info(name: str, output_stride: int) -> None:
    model = create_backbone(name, output_stride=output_stride).eval()
    strides = [f.stride for f in model.feature_info]
    assert strides == sorted(strides) and max(strides) == output_stride
    assert model.strides == [min(s, output_stride) for s in (2, 4, 8, 16, 32)]
    for h, w in SIZES:
        with torch.no_grad():
            maps = model(torch.randn(2, 3, h, w))
        assert len(maps) == len(model.out_indices) == 5
        for fmap, c, s in zip(maps, model.channels, model.strides):
            assert fmap.shape == (2, c, math.ceil(h / s), math.ceil(w / s))
            assert torch.isfinite(fmap).all()


@pytest.mark.parametrize("name", list_backbones())
def test_every_parameter_gets_a_gradient(name: str) -> None:
    model = create_backbone(name, output_stride=16).train()
    maps = model(torch.randn(2, 3, 65, 97))
    sum(m.mean() for m in maps).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad
    assert not any(n.startswith("classifier") for n in model.state_dict())


@pytest.mark.parametrize("name", ["ld_mobilenetv2_100", "ld_shufflenetv1_g3_100"])
def test_output_stride_keeps_parameters(name: str) -> None:
    shapes = [{k: v.shape for k, v in create_backbone(name, output_stride=s).state_dict().items()}
              for s in (32, 16, 8)]
    assert shapes[0] == shapes[1] == shapes[2]
    dilated = create_backbone(name, output_stride=8)
    dilated.load_state_dict(create_backbone(name).state_dict())


def test_mobilenetv2_extra_taps() -> None:
    model = create_backbone("ld_mobilenetv2_100", out_indices=[4, 6]).eval()
    assert (model.channels, model.strides) == ([576, 1280], [16, 32])
    assert model.detection_indices == (4, 6)
    maps = model(torch.randn(1, 3, 96, 96))
    assert [m.shape[1:] for m in maps] == [(576, 6, 6), (1280, 3, 3)]
    assert create_backbone("ld_mobilenetv2_100", act_layer="relu").stem.act.__class__ is torch.nn.ReLU


@pytest.mark.parametrize("name", ["ld_mobilenetv2_100", "ld_shufflenetv1_g3_100"])
def test_torchscript_matches_eager(name: str) -> None:
    model = create_backbone(name, output_stride=16).eval()
    x = torch.randn(1, 3, 64, 80)
    scripted = torch.jit.script(model)
    for a, b in zip(scripted(x), model(x)):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name,frozen", [("ld_mobilenetv2_100", 2), ("ld_shufflenetv1_g8_050", 1)])
def test_frozen_stages_stop_gradients_and_bn_updates(name: str, frozen: int) -> None:
    model = create_backbone(name, frozen_stages=frozen).train()
    stages = model.stage_modules()
    before = [s.state_dict() for s in stages]
    before = [{k: v.clone() for k, v in sd.items()} for sd in before]
    sum(m.mean() for m in model(torch.randn(2, 3, 64, 64))).backward()
    for i, (stage, old) in enumerate(zip(stages, before)):
        frozen_here = i <= frozen
        assert all(p.requires_grad != frozen_here for p in stage.parameters())
        stats_same = all(torch.equal(v, old[k]) for k, v in stage.state_dict().items() if "running" in k)
        assert stats_same == frozen_here, f"stage {i}"


def test_norm_eval_keeps_bn_statistics() -> None:
    model = create_backbone("ld_shufflenetv1_g3_050", norm_eval=True).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model(torch.randn(2, 3, 64, 64))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("in_chans", [1, 4])
def test_in_chans(in_chans: int) -> None:
    model = create_backbone("ld_shufflenetv1_g2_100", in_chans=in_chans).eval()
    assert model(torch.randn(1, in_chans, 64, 64))[0].shape[1] == model.channels[0]
