"""The inference fast path: fused models compute what unfused ones do (to 1e-5) for every family and model kind,
in both memory formats and compiled; fusing is in place, leaves no BatchNorm or dropout, and refuses training."""
from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import segmentation_models_pytorch as smp
import timm
import torch
from torch import nn

from backbones import create_backbone
from backbones.blocks import channel_shuffle
from backbones.fuse import PrePaddedConv2d, fold_conv_bn, pad_before_depthwise
from heads import create_detector, create_segmenter
from conftest import randomize_bn

FAMILIES = ["ld_mobilenetv2_050", "ld_shufflenetv1_g3_050"]
IMAGE = torch.randn(2, 3, 67, 45, generator=torch.Generator().manual_seed(0))
SMALL_HEAD = {"aspp_channels": 32, "low_level_channels": 8, "decoder_channels": 32}


def _segmenter(name: str) -> nn.Module:
    return create_segmenter(name, 5, output_stride=8, separable=True, dropout=0.5, classifier_dropout=0.5,
                            **SMALL_HEAD)


def _detector(name: str) -> nn.Module:
    return create_detector(name, 5, size=96, extra_channels=((32, 64), (16, 32), (16, 32), (8, 16)))


MODELS: dict[str, Callable[[str], nn.Module]] = {
    "backbone": lambda name: create_backbone(name, output_stride=16),
    "segmenter": lambda name: create_segmenter(name, 5, output_stride=16, **SMALL_HEAD),
    "separable segmenter": _segmenter,
    "detector": _detector,
    "timm classifier": lambda name: timm.create_model(name, num_classes=7),
    "smp encoder": lambda name: smp.DeepLabV3Plus(name, encoder_weights=None, encoder_output_stride=16).encoder,
}


def _outputs(model: nn.Module) -> list[torch.Tensor]:
    """Every tensor the model returns, as a flat list (detectors: raw class logits and decoded boxes; fusing leaves
    the post-processing alone, and NMS on random weights turns float rounding into different near-tied boxes)."""
    with torch.no_grad():
        if hasattr(model, "predict_raw"):
            return list(model.predict_raw(list(IMAGE.clamp(0, 1))))
        out = model(IMAGE)
    return list(out) if isinstance(out, (list, tuple)) else [out]


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("name", FAMILIES)
def test_fused_outputs_equal_unfused(name: str, kind: str, channels_last: bool) -> None:
    torch.manual_seed(0)
    model = randomize_bn(MODELS[kind](name)).eval()
    expected = _outputs(model)
    fused = copy.deepcopy(model)
    assert fused.fuse(channels_last=channels_last) is fused
    assert not [m for m in fused.modules() if isinstance(m, (nn.BatchNorm2d, nn.Dropout))]
    assert fused.get_parameter(next(n for n, p in fused.named_parameters() if p.dim() == 4)).is_contiguous(
        memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    got = _outputs(fused)
    assert len(got) == len(expected) and expected[0].numel() > 0
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_compiled_fast_path() -> None:
    """``compile=`` options reach ``torch.compile``; the eager backend keeps this fast (no C++ code generation)."""
    model = randomize_bn(MODELS["backbone"](FAMILIES[1])).eval()
    expected = _outputs(model)
    model.fuse(compile={"backend": "eager", "fullgraph": True})
    for a, b in zip(_outputs(model), expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_detector_compiles_its_network_only() -> None:
    """Pre- and post-processing (image lists, NMS) stay eager; backbone and head are compiled in place."""
    model = _detector(FAMILIES[0]).eval().fuse(compile=True)
    assert model._compiled_call_impl is None
    assert model.backbone._compiled_call_impl is not None and model.head._compiled_call_impl is not None


def test_fuse_refuses_training_mode() -> None:
    model = create_segmenter(FAMILIES[0], 3)
    with pytest.raises(RuntimeError, match="training mode.*model.eval"):
        model.fuse()
    model.eval()
    model.backbone.stem.bn.train()
    with pytest.raises(RuntimeError, match="'backbone.stem.bn' is training"):
        model.fuse()
    assert isinstance(model.backbone.stem.bn, nn.BatchNorm2d)  # nothing was changed


def test_fold_conv_bn_keeps_an_existing_bias_and_refuses_batch_statistics() -> None:
    conv, bn = nn.Conv2d(4, 6, 3, padding=1, bias=True), randomize_bn(nn.BatchNorm2d(6)).eval()
    x = torch.randn(1, 4, 9, 9)
    with torch.no_grad():
        expected = bn(conv(x))
        torch.testing.assert_close(fold_conv_bn(conv, bn)(x), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="running statistics"):
        fold_conv_bn(nn.Conv2d(4, 6, 1), nn.BatchNorm2d(6, track_running_stats=False).eval())


def test_scripting_a_fused_segmenter() -> None:
    """TorchScript still compiles the fused model, the ASPP's pre-padded depthwise convs included."""
    model = randomize_bn(_segmenter(FAMILIES[1])).eval()
    expected = _outputs(model)
    scripted = torch.jit.script(model.fuse())
    with torch.no_grad():
        torch.testing.assert_close(scripted(IMAGE), expected[0], rtol=1e-5, atol=1e-5)


def test_channel_shuffle_keeps_channels_last() -> None:
    """The fast path's memory format survives ShuffleNet's shuffle, with the same channel order as NCHW."""
    x = torch.randn(2, 12, 5, 7)
    expected = channel_shuffle(x, 3)
    got = channel_shuffle(x.contiguous(memory_format=torch.channels_last), 3)
    assert got.is_contiguous(memory_format=torch.channels_last) and torch.equal(got, expected)
    assert torch.equal(expected[:, 4 * 1 + 2], x[:, 2 * 3 + 1])  # output k * (C // g) + j takes input j * g + k


def test_wide_padded_depthwise_convs_pad_their_input_first() -> None:
    """On CPU in channels_last, the separable ASPP's depthwise convs (rates 12, 24, 36 at output stride 8) pad
    before convolving, so the whole network stays in channels_last; the logits keep their values."""
    model = randomize_bn(_segmenter(FAMILIES[0])).eval()
    expected = _outputs(model)[0]
    model.fuse(channels_last=True)
    assert [type(b.dw) for b in model.head.aspp.branches[1:]] == [PrePaddedConv2d] * 3
    assert type(model.head.decoder[0].dw) is nn.Conv2d  # padding 1: left as it is
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters() if p.dim() == 4)
    got = _outputs(model)[0]
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_pre_padded_conv_computes_the_conv() -> None:
    """Padding moved before the conv gives the same values for unequal height and width padding, and the conv's
    own parameters; full convs, depthwise convs with padding up to oneDNN's limit and other padding modes are
    left alone."""
    conv = nn.Conv2d(8, 8, 3, padding=(6, 5), dilation=(6, 5), groups=8)
    model = nn.Sequential(conv, nn.Conv2d(8, 8, 3, padding=4, dilation=4, groups=8), nn.Conv2d(8, 8, 3, padding=9),
                          nn.Conv2d(8, 8, 3, padding=6, dilation=6, groups=8, padding_mode="reflect"))
    x = torch.randn(1, 8, 9, 11).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = conv(x)
        assert pad_before_depthwise(model) == ["0"]
        torch.testing.assert_close(model[0](x), expected, rtol=1e-6, atol=1e-6)
    assert model[0].weight is conv.weight and model[0].bias is conv.bias and model[0].padding == (0, 0)
    assert [type(m) for m in model[1:]] == [nn.Conv2d] * 3
    assert list(model.state_dict()) == [f"{i}.{p}" for i in range(4) for p in ("weight", "bias")]
    with pytest.raises(ValueError, match="zero padding"):
        PrePaddedConv2d(nn.Conv2d(8, 8, 3, padding=6, dilation=6, groups=8, padding_mode="reflect"))
