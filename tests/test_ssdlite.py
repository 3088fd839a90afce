"""SSDLite (and SSD) detectors: shapes for every backbone, a training step and inference per family and head, errors,
and parity with the published PyTorch MobileNetV2-SSDLite layout (a reference written here from that repository's
architecture, in pytorch_ssd_reference)."""
from __future__ import annotations

import math

import pytest
import torch
import torchvision
from pytorch_ssd_reference import RefMB2SSDLite, calibrated, ref_decode, ref_priors
from torch import nn
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

from backbones import list_backbones
from heads import create_detector
from heads.anchors import SSDBoxGenerator
from heads.detector import HEADS
from heads.ssdlite_convert import load_pytorch_ssd

FAMILY_NAMES = ["ld_mobilenetv2_050", "ld_shufflenetv1_g3_050"]


@pytest.mark.parametrize("name, size, head", [(n, 320, "ssdlite") for n in list_backbones()]
                         + [(n, 300, h) for n in FAMILY_NAMES for h in HEADS])
def test_maps_predictors_and_anchors_agree(name, size, head):
    """On the meta device (shapes only): 6 maps at strides 16..512, and one prediction row per default box."""
    with torch.device("meta"):
        model = create_detector(name, 21, size=size, head=head).eval()
        maps = model.backbone(torch.empty(1, 3, size, size))
        out = model.head(list(maps.values()))
    grids = [list(m.shape[-2:]) for m in maps.values()]
    assert [m.shape[1] for m in maps.values()] == model.backbone.out_channels
    assert [g[0] for g in grids] == [math.ceil(size / 2 ** k) for k in range(4, 10)]
    num_anchors = model.anchor_generator._grid_default_boxes(grids, [size, size]).shape[0]
    assert num_anchors == 6 * sum(h * w for h, w in grids) == {300: 3000, 320: 3234}[size]
    assert out["cls_logits"].shape == (1, num_anchors, 21) and out["bbox_regression"].shape == (1, num_anchors, 4)


def test_detection_taps_follow_the_contract():
    """MobileNetV2 reads the 576ch expansion @16 and the 1280 conv @32; ShuffleNetV1 its stage outputs @16/@32."""
    with torch.device("meta"):
        mbv2 = create_detector("ld_mobilenetv2_100", 21).backbone.backbone
        shuffle = create_detector("ld_shufflenetv1_g3_100", 21).backbone.backbone
    assert (mbv2.channels, mbv2.strides) == ([576, 1280], [16, 32])
    assert [mbv2.feature_info[i].module for i in mbv2.out_indices] == ["stages.5.0.expand", "head"]
    assert (shuffle.channels, shuffle.strides) == ([480, 960], [16, 32])


def test_pretrained_backbone_sets_weights_and_normalization():
    """Weights in torchvision's layout load into the detector's backbone; the transform takes their mean/std."""
    reference = torchvision.models.mobilenet_v2(width_mult=0.35)
    model = create_detector("ld_mobilenetv2_035", 21, pretrained_backbone=reference.state_dict())
    assert torch.equal(model.backbone.backbone.head.conv.weight, reference.features[18][0].weight)
    assert model.transform.image_mean == [0.485, 0.456, 0.406] and model.transform.image_std == [0.229, 0.224, 0.225]
    assert create_detector("ld_mobilenetv2_035", 21, image_std=(0.25,) * 3).transform.image_std == [0.25] * 3


def test_box_generator_equals_torchvision_without_steps():
    grids, aspect_ratios = [[20, 20], [10, 10], [5, 5], [3, 3], [2, 2], [1, 1]], [[2, 3]] * 6
    ours = SSDBoxGenerator(aspect_ratios, min_ratio=0.2, max_ratio=0.95)._grid_default_boxes(grids, [320, 320])
    theirs = DefaultBoxGenerator(aspect_ratios, min_ratio=0.2, max_ratio=0.95)._grid_default_boxes(grids, [320, 320])
    assert torch.equal(ours, theirs)


def _targets() -> list[dict[str, torch.Tensor]]:
    return [{"boxes": torch.tensor([[10.0, 20.0, 120.0, 150.0], [50.0, 40.0, 90.0, 70.0]]),
             "labels": torch.tensor([3, 20])},
            {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]


@pytest.mark.parametrize("name, head", [(n, "ssdlite") for n in FAMILY_NAMES]
                         + [("ld_mobilenetv1_100", h) for h in HEADS])
def test_training_step_and_inference(name, head):
    torch.manual_seed(0)
    model = create_detector(name, 21, size=160, head=head)
    images = [torch.rand(3, 120, 200), torch.rand(3, 160, 160)]
    losses = model(images, _targets())
    assert set(losses) == {"bbox_regression", "classification"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    for module in (model.backbone.backbone, model.backbone.extras, model.head):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())

    model.eval()
    with torch.no_grad():
        detections = model(images)
    for det, image in zip(detections, images):
        height, width = image.shape[-2:]
        assert det["boxes"].shape == (len(det["scores"]), 4) and len(det["scores"]) > 0
        assert (det["boxes"][:, 2:] <= torch.tensor([width, height])).all() and (det["boxes"] >= 0).all()
        assert ((det["labels"] >= 1) & (det["labels"] <= 20)).all()
        assert ((det["scores"] > 0) & (det["scores"] <= 1)).all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_classes=1), "num_classes"),
    (dict(size=16), "size"),
    (dict(backbone_kwargs={"out_indices": [0, 1]}), "detection_indices"),
    (dict(anchor_scales=[0.2, 0.5]), "anchor_scales needs 7"),
    (dict(anchor_steps=[16, 32]), "anchor_steps needs 6"),
    (dict(head="yolo"), r"head must be one of \['ssdlite', 'ssd'\], got 'yolo'"),
    (dict(extra_channels=[(128,)]), r"extra_channels must be a sequence of \(mid, out\) channel pairs"),
    (dict(head="ssd", act_layer="gelu"), r"act_layer must be one of \['relu6', 'relu'\], got 'gelu'"),
])
def test_bad_arguments_raise(kwargs, match):
    kwargs = {"num_classes": 21, **kwargs}
    with pytest.raises(ValueError, match=match), torch.device("meta"):
        create_detector("ld_mobilenetv2_035", **kwargs)


@pytest.mark.parametrize("onnx_compatible", [False, True])
def test_published_layout_converts_exactly(onnx_compatible, tmp_path):
    torch.manual_seed(0)
    ref = calibrated(RefMB2SSDLite(21, nn.ReLU if onnx_compatible else nn.ReLU6))
    path = tmp_path / "mb2-ssd-lite.pth"
    torch.save(ref.state_dict(), path)
    model = load_pytorch_ssd(path, onnx_compatible=onnx_compatible)

    pixels = torch.randint(0, 256, (2, 3, 300, 300)).float()
    image_list = model.transform(list(pixels / 255))[0]
    # Same preprocessing: mean 127/255, std 128/255 on [0, 1] equals (p - 127) / 128 on 0..255, to rounding.
    torch.testing.assert_close(image_list.tensors, (pixels - 127) / 128, atol=1e-6, rtol=0)
    with torch.no_grad():  # both models on the same tensor, so that rounding differences do not compound
        ref_scores, ref_loc = ref(image_list.tensors)
        scores, boxes = model.raw_outputs(image_list)
    assert scores.shape == (2, 3000, 21) and ref_scores.std() > 0.1 and ref_loc.std() > 0.1
    torch.testing.assert_close(scores, ref_scores, atol=1e-4, rtol=0)
    torch.testing.assert_close(boxes / 300, ref_decode(ref_loc, ref_priors()), atol=1e-4, rtol=0)


def test_converter_rejects_other_layouts():
    ref_sd = RefMB2SSDLite(5, nn.ReLU6).state_dict()
    with pytest.raises(ValueError, match="classification_headers"):
        load_pytorch_ssd({"conv.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="unexpected"):
        load_pytorch_ssd({**ref_sd, "extras.4.conv.0.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="shape mismatch"):
        load_pytorch_ssd(ref_sd, num_classes=21)


@pytest.mark.parametrize("images,targets,match", [
    ([], None, "no images"),
    ([torch.rand(1, 64, 64)], None, r"image 0 has shape \(1, 64, 64\); expected \(3, H, W\)"),
    ([torch.rand(3, 64, 64), torch.rand(4, 64, 64)], None, r"image 1 has shape \(4, 64, 64\)"),
    ([torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)], None, "image 0 is torch.uint8; expected float"),
    ([torch.rand(3, 64, 64)] * 2, [{"boxes": torch.tensor([[1.0, 1, 9, 9]]), "labels": torch.tensor([1])}],
     "2 images but 1 targets"),
    ([torch.rand(3, 64, 64)], [{"boxes": torch.tensor([[1.0, 1, 9, 9]]), "labels": torch.tensor([0])}],
     r"target 0 has labels \[0\]; valid labels are 1..4 \(0 is the background\)"),
    ([torch.rand(3, 64, 64)], [{"boxes": torch.tensor([[1.0, 1, 9, 9]]), "labels": torch.tensor([5])}],
     r"target 0 has labels \[5\]; valid labels are 1..4"),
])
def test_detector_inputs_are_checked_naming_the_item(images, targets, match):
    model = create_detector("ld_mobilenetv2_035", 5, size=64)
    with pytest.raises(ValueError, match=match):
        model(images, targets)


@pytest.mark.parametrize("dtype,match", [(torch.uint8, "expects a float image tensor, got torch.uint8"),
                                         (torch.float64, "input is torch.float64 but the weights are torch.float32")])
def test_backbone_refuses_other_dtypes_clearly(dtype, match):
    from backbones import create_backbone

    with pytest.raises(ValueError, match=match):
        create_backbone("ld_shufflenetv1_g3_050")(torch.zeros(1, 3, 64, 64, dtype=dtype))


def test_predict_raw_gives_logits_and_boxes_of_every_default_box():
    torch.manual_seed(0)
    model = create_detector("ld_mobilenetv2_035", 21, size=320).eval()
    images = [torch.rand(3, 375, 500), torch.rand(3, 333, 500)]
    scores, boxes = model.predict_raw(images)
    assert scores.shape == (2, 3234, 21) and boxes.shape == (2, 3234, 4)
    with torch.no_grad():
        again = model.raw_outputs(model.transform(images)[0])
    assert torch.equal(scores, again[0]) and torch.equal(boxes, again[1])
