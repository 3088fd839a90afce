"""Every backbone through timm: registration, features_only, the classifier interface, TorchScript, weights."""
from __future__ import annotations

import math

import pytest
import timm
import torch

from backbones import create_backbone, list_backbones

MNV2, SNV1 = "ld_mobilenetv2_100", "ld_shufflenetv1_g3_050"
PAIR = (MNV2, SNV1)


def test_every_name_is_registered_with_timm_and_owned_by_us():
    assert set(timm.list_models("ld_*")) == set(list_backbones())
    assert all(timm.models.model_entrypoint(n).__module__ == "backbones.timm_plugin" for n in list_backbones())


@pytest.mark.parametrize("name", list_backbones())
def test_features_only_matches_feature_info(name):
    """Default timm taps are our stage outputs at strides 2..32, and the maps have those shapes."""
    model = timm.create_model(name, features_only=True).eval()
    with torch.device("meta"):  # only its feature_info is needed
        ours = create_backbone(name)
    assert model.feature_info.channels() == ours.channels
    assert model.feature_info.reduction() == ours.strides == [2, 4, 8, 16, 32]
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 33, 33))
    assert [tuple(o.shape[1:]) for o in outs] == [(c, math.ceil(33 / s), math.ceil(33 / s))
                                                  for c, s in zip(ours.channels, ours.strides)]


@pytest.mark.parametrize("name", PAIR)
@pytest.mark.parametrize("output_stride", [8, 16])
def test_features_only_output_stride_and_in_chans(name, output_stride):
    model = timm.create_model(name, features_only=True, output_stride=output_stride, in_chans=4,
                              out_indices=(1, 2, 3, 4)).eval()
    expected = [min(s, output_stride) for s in (4, 8, 16, 32)]
    assert model.feature_info.reduction() == expected
    with torch.no_grad():
        outs = model(torch.randn(1, 4, 64, 64))
    assert [64 // o.shape[-1] for o in outs] == expected
    assert [o.shape[1] for o in outs] == model.feature_info.channels()


@pytest.mark.parametrize("name", PAIR)
def test_getter_and_list_features_agree(name):
    """``feature_cls='getter'`` (forward_intermediates, pruned) returns the same maps as the list wrapper."""
    x = torch.randn(1, 3, 64, 64)
    torch.manual_seed(0)
    listed = timm.create_model(name, features_only=True, out_indices=(0, 2, 4)).eval()
    torch.manual_seed(0)
    getter = timm.create_model(name, features_only=True, out_indices=(0, 2, 4), feature_cls="getter").eval()
    assert getter.feature_info.channels() == listed.feature_info.channels()
    assert isinstance(getter.model.classifier, torch.nn.Identity)  # pruned: no classifier left
    with torch.no_grad():
        for a, b in zip(listed(x), getter(x), strict=True):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", PAIR)
def test_classifier_interface(name):
    model = timm.create_model(name, num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, model.num_features, 2, 2)
        assert model(x).shape == (2, 10)
        assert model.forward_head(feats, pre_logits=True).shape == (2, model.head_hidden_size)
        final, inter = model.forward_intermediates(x)
        torch.testing.assert_close(final, feats)
        assert [t.shape[1] for t in inter] == [f["num_chs"] for f in model.feature_info]
        model.reset_classifier(0, "")
        assert model(x).shape == feats.shape
    cfg = model.pretrained_cfg
    assert cfg["first_conv"] + ".weight" in model.state_dict() and cfg["input_size"] == (3, 224, 224)


def test_pretrained_cfgs_carry_preprocessing():
    mnv2 = timm.create_model(MNV2, pretrained=False).pretrained_cfg
    assert mnv2["mean"] == (0.485, 0.456, 0.406) and mnv2["std"] == (0.229, 0.224, 0.225)
    snv1 = timm.create_model(SNV1, pretrained=False).pretrained_cfg
    assert snv1["mean"] == (0, 0, 0) and snv1["std"] == pytest.approx((1 / 255,) * 3)  # 0..255 pixels, RGB
    assert "notes" not in snv1  # the official BGR stem is flipped on load, so timm's RGB transforms fit


@pytest.mark.parametrize("name", PAIR)
def test_torchscript_features_only(name):
    model = timm.create_model(name, features_only=True, output_stride=16).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(x), scripted(x), strict=True):
            torch.testing.assert_close(a, b)


def test_pretrained_overlay_loads_torchvision_file(torchvision_mnv2):
    reference, path = torchvision_mnv2
    model = timm.create_model(MNV2, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))
        # A 1-channel stem sums the RGB filters: a gray image gives what (g, g, g) gives the RGB model.
        gray = timm.create_model(MNV2, pretrained=True, features_only=True, in_chans=1,
                                 pretrained_cfg_overlay=dict(file=str(path))).eval()
        g = x[:, :1]
        torch.testing.assert_close(gray(g)[-1], reference.features[:18](g.expand(-1, 3, -1, -1)))


def test_pretrained_overlay_loads_bias_free_classifier(tmp_path):
    """A classifier without bias (as the official ShuffleNetV1 release) loads as a zero bias."""
    source = timm.create_model(SNV1).eval()
    state = {k: v for k, v in source.state_dict().items() if k != "classifier.bias"}
    torch.save(state, tmp_path / "snv1.pth")
    model = timm.create_model(SNV1, pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "snv1.pth")))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.nn.init.zeros_(source.classifier.bias)
        torch.testing.assert_close(model.eval()(x), source(x))
    resized = timm.create_model(SNV1, num_classes=7, pretrained=True,
                                pretrained_cfg_overlay=dict(file=str(tmp_path / "snv1.pth")))
    assert resized(x).shape == (1, 7)

