"""The original SSD head, and pytorch-ssd's MobileNetV1 detectors ``mb1-ssd`` and ``mb1-ssd-lite`` loaded from their
checkpoints, against references written here from that repository's architecture (pytorch_ssd_reference)."""
from __future__ import annotations

import itertools

import pytest
import torch
from pytorch_ssd_reference import RefMB1SSD, RefMB2SSDLite, calibrated, ref_decode, ref_priors
from torch import nn

from heads import create_detector
from heads.ssdlite_convert import detect_pytorch_ssd_layout, load_pytorch_ssd


def test_ssd_head_is_plain_convs_with_bias():
    with torch.device("meta"):
        model = create_detector("ld_mobilenetv1_100", 21, head="ssd", size=300)
    assert model.head_name == "ssd" and model.backbone.out_channels == [512, 1024, 512, 256, 256, 256]
    head_modules = list(itertools.chain(model.backbone.extras.modules(), model.head.modules()))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in head_modules)
    convs = [m for m in head_modules if isinstance(m, nn.Conv2d)]
    assert all(c.bias is not None and c.groups == 1 for c in convs)
    extras = [c.kernel_size + c.stride for c in model.backbone.extras.modules() if isinstance(c, nn.Conv2d)]
    assert extras == [(1, 1, 1, 1), (3, 3, 2, 2)] * 4
    predictors = model.head.classification_head.module_list
    assert [(p.kernel_size, p.out_channels) for p in predictors] == [((3, 3), 6 * 21)] * 6
    assert isinstance(model.backbone.extras[0][0].act, nn.ReLU)


def test_head_keywords_belong_to_their_head():
    with pytest.raises(TypeError, match="create_detector.. got an unexpected keyword argument 'linear_extras'"):
        create_detector("ld_mobilenetv1_100", 21, head="ssd", linear_extras=True)
    with torch.device("meta"):
        lite = create_detector("ld_mobilenetv1_100", 21, norm=False, act_layer="relu")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in lite.head.modules())


@pytest.mark.parametrize("lite", [False, True])
def test_mb1_layouts_convert_exactly(lite, tmp_path):
    torch.manual_seed(0)
    ref = calibrated(RefMB1SSD(21, lite=lite))
    with torch.no_grad():  # keep raw size outputs below torchvision's decode clamp (~20.7), as trained models do
        for m in ref.regression_headers.modules():
            if isinstance(m, nn.Conv2d) and m.groups == 1:
                m.weight.mul_(0.25)
    path = tmp_path / "mb1.pth"
    torch.save(ref.state_dict(), path)
    model = load_pytorch_ssd(path)
    assert model.pytorch_ssd_layout == ("mb1-ssd-lite" if lite else "mb1-ssd")
    assert model.head_name == ("ssdlite" if lite else "ssd")

    pixels = torch.randint(0, 256, (2, 3, 300, 300)).float()
    image_list = model.transform(list(pixels / 255))[0]
    torch.testing.assert_close(image_list.tensors, (pixels - 127) / 128, atol=1e-6, rtol=0)
    with torch.no_grad():
        ref_scores, ref_loc = ref(image_list.tensors)
        scores, boxes = model.raw_outputs(image_list)
    assert scores.shape == (2, 3000, 21) and ref_scores.std() > 0.5 and 0.1 < ref_loc.std() < ref_loc.abs().max() < 20
    torch.testing.assert_close(scores, ref_scores, atol=1e-4, rtol=0)
    torch.testing.assert_close(boxes / 300, ref_decode(ref_loc, ref_priors()), atol=1e-4, rtol=0)


def test_layouts_are_told_apart_and_mismatches_reported():
    states = {name: ref.state_dict() for name, ref in [("mb1-ssd", RefMB1SSD(5, lite=False)),
                                                       ("mb1-ssd-lite", RefMB1SSD(5, lite=True)),
                                                       ("mb2-ssd-lite", RefMB2SSDLite(5, nn.ReLU6))]}
    assert {name: detect_pytorch_ssd_layout(sd) for name, sd in states.items()} == {n: n for n in states}
    mixed = {k: v for k, v in states["mb1-ssd"].items() if not k.startswith("classification_headers")}
    with pytest.raises(ValueError, match="not a pytorch-ssd checkpoint; expected the keys of mb1-ssd"):
        load_pytorch_ssd(mixed)
    with pytest.raises(ValueError, match=r"does not match the mb1-ssd-lite layout: .*unexpected \['extras.4.0.weight'"):
        load_pytorch_ssd({**states["mb1-ssd-lite"], "extras.4.0.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="onnx_compatible applies to mb2-ssd-lite only"):
        load_pytorch_ssd(states["mb1-ssd"], onnx_compatible=True)
