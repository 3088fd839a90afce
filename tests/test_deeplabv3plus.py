"""DeepLabV3+ head: shapes over every backbone x output stride x odd sizes, train-mode batch 1, and the converter
against a reference model in the published (bubbliiiing/deeplabv3-plus-pytorch) layout built here."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from backbones import create_backbone, list_backbones
from backbones.weights import IMAGENET
from heads import DeepLabV3PlusHead, create_segmenter
from heads.deeplab_convert import (PUBLISHED_PREPROCESSING, convert_deeplab_state_dict, create_published_segmenter,
                                   load_published_deeplab)

SMALL_HEAD = {"aspp_channels": 16, "low_level_channels": 8, "decoder_channels": 16}


@pytest.mark.parametrize("output_stride", [8, 16, 32])
@pytest.mark.parametrize("name", list_backbones())
def test_every_backbone_gives_input_sized_logits(name: str, output_stride: int) -> None:
    model = create_segmenter(name, 5, output_stride=output_stride, **SMALL_HEAD).eval()
    assert model.backbone.strides == [4, output_stride]
    with torch.no_grad():
        assert model(torch.randn(1, 3, 37, 45)).shape == (1, 5, 37, 45)


@pytest.mark.parametrize("size", [(513, 513), (500, 375), (65, 97)])
@pytest.mark.parametrize("name", ["ld_mobilenetv2_050", "ld_shufflenetv1_g3_050"])
def test_odd_sizes_and_separable(name: str, size: tuple[int, int]) -> None:
    model = create_segmenter(name, 3, output_stride=16, separable=True, align_corners=True, **SMALL_HEAD).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, *size)).shape == (1, 3, *size)


@pytest.mark.parametrize("output_stride", [16, 8])
def test_mobilenetv1_needs_nothing_of_its_own(output_stride: int) -> None:
    """Low-level 128@4, ASPP on the dilated 1024 map, and a training step that reaches every parameter."""
    model = create_segmenter("ld_mobilenetv1_100", 21, output_stride=output_stride, **SMALL_HEAD).train()
    assert (model.backbone.channels, model.backbone.strides) == ([128, 1024], [4, output_stride])
    dilations = [block.dw.conv.dilation[0] for stage in model.backbone.stages for block in stage]
    assert dilations == {16: [1] * 12 + [2], 8: [1] * 6 + [2] * 5 + [2, 4]}[output_stride]
    logits = model(torch.randn(2, 3, 65, 97))
    assert logits.shape == (2, 21, 65, 97)
    F.cross_entropy(logits, torch.randint(0, 21, (2, 65, 97))).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_separable_convs_have_no_norm_between_depthwise_and_pointwise() -> None:
    head = create_segmenter("ld_mobilenetv2_050", 3, separable=True, **SMALL_HEAD).head
    for conv in (head.aspp.branches[1], head.decoder[0], head.decoder[1]):
        kinds = [type(m) for m in conv.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.ReLU))]
        assert kinds == [nn.Conv2d, nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
        assert conv.dw.groups == conv.dw.in_channels and conv.dw.bias is None


def test_aspp_rates_follow_the_deepest_stride() -> None:
    for output_stride, rates in [(8, [12, 24, 36]), (16, [6, 12, 18]), (32, [3, 6, 9])]:
        head = create_segmenter("ld_mobilenetv2_035", 2, output_stride=output_stride, **SMALL_HEAD).head
        assert [b.conv.dilation[0] for b in list(head.aspp.branches)[1:]] == rates


@pytest.mark.parametrize("name, stage, final", [("ld_mobilenetv2_050", 160, 1280), ("ld_mobilenetv1_025", 256, 256),
                                                ("ld_shufflenetv1_g3_050", 480, 480)])
def test_aspp_input_picks_the_last_stage_or_the_last_tap(name: str, stage: int, final: int) -> None:
    for aspp_input, channels in (("stage", stage), ("final", final)):
        model = create_segmenter(name, 3, aspp_input=aspp_input, **SMALL_HEAD).eval()
        assert model.backbone.strides == [4, 16] and model.backbone.channels[-1] == channels
        assert model.head.aspp.branches[0].conv.in_channels == channels
        assert model(torch.randn(1, 3, 40, 56)).shape == (1, 3, 40, 56)
    assert create_segmenter(name, 3, **SMALL_HEAD).backbone.channels[-1] == stage  # the default


@pytest.mark.parametrize("kwargs, match", [
    ({"aspp_input": "head"}, r"aspp_input must be one of \['stage', 'final'\], got 'head'"),
    ({"aspp_input": "final", "out_indices": [1, 5]}, "give out_indices or aspp_input, not both"),
])
def test_aspp_input_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_segmenter("ld_mobilenetv2_035", 3, **kwargs)


def test_train_mode_batch_one_keeps_image_pool_stats() -> None:
    model = create_segmenter("ld_mobilenetv2_035", 4, output_stride=16, **SMALL_HEAD).train()
    pool_bn = model.head.aspp.pool.proj.bn
    before = pool_bn.running_mean.clone()
    logits = model(torch.randn(1, 3, 49, 51))
    logits.mean().backward()
    assert logits.shape == (1, 4, 49, 51)
    assert torch.equal(pool_bn.running_mean, before)  # one value per channel: running stats used, not updated
    assert model.head.low_level.bn.num_batches_tracked.item() == 1  # other BNs trained normally
    assert model.head.classifier.weight.grad is not None


@pytest.mark.parametrize("kwargs, match", [
    ({"in_channels": [24, 320], "strides": [8, 16]}, "stride-4"),
    ({"in_channels": [24], "strides": [4, 16]}, "one \\(channels, stride\\)"),
    ({"in_channels": [24, 320], "strides": [4, 4]}, "deepest"),
])
def test_head_rejects_bad_inputs(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DeepLabV3PlusHead(num_classes=21, **kwargs)


def test_head_and_backbone_kwargs_are_routed() -> None:
    model = create_segmenter("ld_mobilenetv2_035", 2, act_layer="relu", in_chans=1, dropout=0.3, **SMALL_HEAD)
    assert model.backbone.act_layer == "relu" and model.backbone.in_chans == 1
    assert model.head.aspp.dropout.p == 0.3


def test_pretrained_backbone_and_torchscript() -> None:
    weights = create_backbone("ld_mobilenetv2_035", out_indices=[1, 5]).state_dict()
    model = create_segmenter("ld_mobilenetv2_035", 2, pretrained_backbone=weights, **SMALL_HEAD).eval()
    assert torch.equal(model.backbone.stem.conv.weight, weights["stem.conv.weight"])
    assert model.preprocessing == IMAGENET
    x = torch.randn(1, 3, 41, 39)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(model)(x), model(x))


# ---- Reference model in the published layout (bubbliiiing/deeplabv3-plus-pytorch, nets/deeplabv3_plus.py) ----
# MobileNetV2 rows (t, c, n, s); their backbone keeps features[0..17] (stem + 17 blocks, no 1280 conv) under
# ``backbone.features``; block convs are flat Sequentials: [pw, bn, relu6,] dw, bn, relu6, pwl, bn.
REF_ARCH = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
# Their dilation: from feature index `start` on, a stride-2 dw conv becomes stride 1 with dilation d // 2 and every
# other dw conv gets dilation d.
REF_DILATION = {16: ((14, 2),), 8: ((7, 2), (14, 4))}


def ref_dw_stride_dilation(index: int, stride: int, output_stride: int) -> tuple[int, int]:
    d = max([dil for start, dil in REF_DILATION[output_stride] if index >= start], default=1)
    if d == 1:
        return stride, 1
    return (1, d // 2) if stride == 2 else (1, d)


class RefBlock(nn.Module):
    def __init__(self, inp: int, out: int, t: int, stride: int, dilation: int) -> None:
        super().__init__()
        hid = inp * t
        layers: list[nn.Module] = [] if t == 1 else [nn.Conv2d(inp, hid, 1, bias=False), nn.BatchNorm2d(hid),
                                                     nn.ReLU6()]
        layers += [nn.Conv2d(hid, hid, 3, stride, dilation, dilation, groups=hid, bias=False), nn.BatchNorm2d(hid),
                   nn.ReLU6(), nn.Conv2d(hid, out, 1, bias=False), nn.BatchNorm2d(out)]
        self.conv = nn.Sequential(*layers)
        self.skip = stride == 1 and inp == out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.skip else self.conv(x)


def ref_conv_bn_relu(inp: int, out: int, k: int = 1, dilation: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(inp, out, k, 1, dilation * (k // 2), dilation, bias=True), nn.BatchNorm2d(out), nn.ReLU()]


class RefDeepLab(nn.Module):
    def __init__(self, num_classes: int, output_stride: int) -> None:
        super().__init__()
        features: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32),
                                                   nn.ReLU6())]
        inp = 32
        for t, c, n, s in REF_ARCH:
            for j in range(n):
                stride, dilation = ref_dw_stride_dilation(len(features), s if j == 0 else 1, output_stride)
                features.append(RefBlock(inp, c, t, stride, dilation))
                inp = c
        self.backbone = nn.Module()
        self.backbone.features = nn.Sequential(*features)
        self.aspp = nn.Module()
        r = 16 // output_stride
        for i, rate in enumerate((1, 6 * r, 12 * r, 18 * r)):
            setattr(self.aspp, f"branch{i + 1}", nn.Sequential(*ref_conv_bn_relu(320, 256, 1 if i == 0 else 3, rate)))
        self.aspp.branch5_conv, self.aspp.branch5_bn, _ = ref_conv_bn_relu(320, 256)
        self.aspp.conv_cat = nn.Sequential(*ref_conv_bn_relu(256 * 5, 256))
        self.shortcut_conv = nn.Sequential(*ref_conv_bn_relu(24, 48))
        self.cat_conv = nn.Sequential(*ref_conv_bn_relu(304, 256, 3), nn.Dropout(0.5),
                                      *ref_conv_bn_relu(256, 256, 3), nn.Dropout(0.1))
        self.cls_conv = nn.Conv2d(256, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = {"mode": "bilinear", "align_corners": True}
        low = self.backbone.features[:4](x)
        deep = self.backbone.features[4:](low)
        a = self.aspp
        pooled = F.relu(a.branch5_bn(a.branch5_conv(deep.mean((2, 3), keepdim=True))))
        branches = [a.branch1(deep), a.branch2(deep), a.branch3(deep), a.branch4(deep),
                    F.interpolate(pooled, deep.shape[-2:], **up)]
        aspp = a.conv_cat(torch.cat(branches, 1))
        low = self.shortcut_conv(low)
        out = self.cat_conv(torch.cat([F.interpolate(aspp, low.shape[-2:], **up), low], 1))
        return F.interpolate(self.cls_conv(out), x.shape[-2:], **up)


def randomised_reference(num_classes: int, output_stride: int) -> RefDeepLab:
    """Random conv biases, BN running stats calibrated on random images, then random BN affine parameters."""
    torch.manual_seed(0)
    ref = RefDeepLab(num_classes, output_stride)
    for m in ref.modules():
        if isinstance(m, nn.Conv2d) and m.bias is not None:
            nn.init.normal_(m.bias, std=0.2)
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration batches
    with torch.no_grad():
        for _ in range(2):
            ref.train()(torch.randn(2, 3, 64, 64))
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(std=0.2)
    return ref.eval()


@pytest.mark.parametrize("output_stride, prefix", [(16, ""), (8, "module.")])  # module.: saved from DataParallel
def test_converter_matches_reference_logits(output_stride: int, prefix: str, tmp_path) -> None:
    ref = randomised_reference(21, output_stride)
    sd = {prefix + k: v for k, v in ref.state_dict().items()}
    documented = ("backbone.features.17.conv.7.running_var", "aspp.branch5_bn.running_mean", "cat_conv.4.bias",
                  "shortcut_conv.0.bias", "cls_conv.bias")
    assert {prefix + k for k in documented} <= set(sd)
    torch.save(sd, tmp_path / "deeplab_mobilenetv2.pth")
    ours = load_published_deeplab(tmp_path / "deeplab_mobilenetv2.pth", output_stride=output_stride).eval()
    assert ours.preprocessing == PUBLISHED_PREPROCESSING
    x = torch.randn(2, 3, 67, 93)
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert expected.std() > 0.1  # the comparison is not between two near-constant maps
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("edit, match", [
    (lambda sd: sd.pop("aspp.branch5_bn.running_var"), "missing.*branch5_bn.running_var"),
    (lambda sd: sd.update({"aspp.extra.weight": torch.zeros(1)}), "unexpected.*aspp.extra.weight"),
    (lambda sd: sd.update({"cls_conv.weight": torch.zeros(21, 128, 1, 1)}), "shape mismatch.*classifier"),
])
def test_converter_rejects_wrong_layouts(edit, match: str) -> None:
    sd = RefDeepLab(21, 16).state_dict()
    edit(sd)
    with pytest.raises(ValueError, match=match):
        convert_deeplab_state_dict(create_published_segmenter(21), sd)


def test_converter_rejects_a_differently_built_model() -> None:
    with pytest.raises(ValueError, match="lacks.*aspp.branches.1.conv.weight.*nothing for.*aspp.branches.1.dw.weight"):
        convert_deeplab_state_dict(create_segmenter("ld_mobilenetv2_100", 21, separable=True),
                                   RefDeepLab(21, 16).state_dict())
