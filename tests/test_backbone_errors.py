"""Bad input fails early with a message that names what was wrong and what is valid."""
from __future__ import annotations

import pytest
import torch

from backbones import create_backbone

BAD_ARGS = [
    (("ld_resnet50",), {}, "unknown backbone 'ld_resnet50'; valid names are: ld_mobilenetv2_035"),
    (("ld_mobilenetv2_100",), {"output_stride": 4}, r"output_stride must be one of \[8, 16, 32\], got 4"),
    (("ld_mobilenetv2_100",), {"out_indices": [0, 9]}, r"out_indices entry 9 is out of range; valid .*0\.\.6"),
    (("ld_mobilenetv2_100",), {"out_indices": [3, 1]}, "strictly increasing"),
    (("ld_mobilenetv2_100",), {"out_indices": 3}, "non-empty sequence"),
    (("ld_mobilenetv2_100",), {"frozen_stages": 9}, r"frozen_stages must be in range\(-1, 8\), got 9"),
    (("ld_mobilenetv2_100",), {"in_chans": 0}, "in_chans must be a positive int"),
    (("ld_mobilenetv2_100",), {"act_layer": "gelu"}, r"act_layer must be one of \['relu6', 'relu'\]"),
    (("ld_mobilenetv2_100",), {"width": 0}, "width must be a number"),
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
