"""Bad input fails early with a message that names what was wrong and what is valid."""
from __future__ import annotations

import pytest
import torch

from backbones import create_backbone

BAD_ARGS = [
    (("ld_resnet50",), {}, "unknown backbone 'ld_resnet50'; valid names are: ld_mobilenetv1_025"),
    (("ld_mobilenetv2_100",), {"output_stride": 4}, r"output_stride must be one of \[8, 16, 32\], got 4"),
    (("ld_mobilenetv2_100",), {"out_indices": [0, 9]}, r"out_indices entry 9 is out of range; valid .*0\.\.6"),
    (("ld_mobilenetv2_100",), {"out_indices": [3, 1]}, "strictly increasing"),
    (("ld_mobilenetv2_100",), {"out_indices": 3}, "non-empty sequence"),
    (("ld_mobilenetv2_100",), {"frozen_stages": 9}, r"frozen_stages must be in range\(-1, 8\), got 9"),
    (("ld_mobilenetv2_100",), {"in_chans": 0}, "in_chans must be a positive int"),
    (("ld_mobilenetv2_100",), {"act_layer": "gelu"}, r"act_layer must be one of \['relu6', 'relu'\]"),
    (("ld_mobilenetv2_100",), {"width": 0}, "width must be a number"),
    (("ld_mobilenetv1_100",), {"width": 0.05}, r"width must be a number in \[0.1, 4.0\] \(e.g. 0.25, 0.5, 0.75, 1.0, "
                                                r"1.25\), got 0.05"),
    (("ld_mobilenetv1_100",), {"frozen_stages": 6}, r"frozen_stages must be in range\(-1, 6\), got 6"),
    (("ld_mobilenetv1_100",), {"act_layer": "hardswish"}, r"act_layer must be one of \['relu6', 'relu'\]"),
    (("ld_shufflenetv1_g3_100",), {"groups": 5}, r"groups must be one of \[1, 2, 3, 4, 8\], got 5"),
    (("ld_shufflenetv1_g3_100",), {"width": 0.75}, r"width must be one of \[0.5, 1.0, 1.5, 2.0\], got 0.75"),
]


@pytest.mark.parametrize("args,kwargs,message", BAD_ARGS)
def test_bad_arguments(args, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        create_backbone(*args, **kwargs)


def test_wrong_channel_count() -> None:
    model = create_backbone("ld_mobilenetv2_100")
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 3, H, W\) \(in_chans=3\), got \(1, 4, 64, 64\)"):
        model(torch.randn(1, 4, 64, 64))
    with pytest.raises(ValueError, match="expects input of shape"):
        model(torch.randn(3, 64, 64))


def test_input_too_small() -> None:
    with pytest.raises(ValueError, match="input 16x40 is too small: .*stride 32, .*at least 32"):
        create_backbone("ld_shufflenetv1_g3_100")(torch.randn(1, 3, 16, 40))
    create_backbone("ld_shufflenetv1_g3_100", output_stride=8)(torch.randn(1, 3, 16, 40))


def _factories():
    from heads import create_detector, create_segmenter
    from heads.deeplab_convert import create_published_segmenter, load_published_deeplab
    from heads.ssdlite_convert import create_pytorch_ssd_detector, load_pytorch_ssd

    name = "ld_mobilenetv2_035"
    return [
        (lambda **kw: create_backbone(name, **kw), "pretraind", "create_backbone", "pretrained"),
        (lambda **kw: create_backbone("ld_shufflenetv1_g3_050", **kw), "act_layer", "create_backbone", None),
        (lambda **kw: create_segmenter(name, 5, **kw), "pretrained", "create_segmenter", "pretrained_backbone"),
        (lambda **kw: create_segmenter(name, 5, **kw), "seperable", "create_segmenter", "separable"),
        (lambda **kw: create_detector(name, 5, **kw), "pretrained", "create_detector", "pretrained_backbone"),
        (lambda **kw: create_detector(name, 5, **kw), "bogus_option", "create_detector", None),
        (lambda **kw: create_detector(name, 5, head="ssd", **kw), "extra_channel", "create_detector",
         "extra_channels"),
        (lambda **kw: create_backbone("ld_mobilenetv1_050", **kw), "act_layr", "create_backbone", "act_layer"),
        (lambda **kw: create_published_segmenter(5, **kw), "output_strid", "create_published_segmenter",
         "output_stride"),
        (lambda **kw: load_published_deeplab({}, **kw), "num_class", "load_published_deeplab", None),
        (lambda **kw: create_pytorch_ssd_detector(5, **kw), "nms_treshold", "create_detector", "nms_thresh"),
        (lambda **kw: load_pytorch_ssd({}, **kw), "onnx_compatble", "load_pytorch_ssd", "onnx_compatible"),
    ]


@pytest.mark.parametrize("index", range(12))
def test_factories_refuse_unknown_keywords_naming_the_closest(index):
    factory, keyword, where, suggestion = _factories()[index]
    with pytest.raises(TypeError) as info:
        factory(**{keyword: 3})
    message = str(info.value)
    assert message.startswith(f"{where}() got an unexpected keyword argument {keyword!r}")
    assert (f"did you mean {suggestion!r}" in message) if suggestion else "did you mean" not in message
