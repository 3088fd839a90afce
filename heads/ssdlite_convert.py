"""Load checkpoints of the popular PyTorch MobileNetV2-SSDLite (qfgaohao/pytorch-ssd, ``mb2-ssd-lite``).

That model (VOC07 test mAP 0.686) is SSDLite on MobileNetV2 1.0 with a few choices of its own, all of which
:func:`create_detector` can express, so a converted checkpoint reproduces its raw class scores and decoded boxes:

- input 300, ``(pixels - 127) / 128`` (mean 127/255, std 128/255 on [0, 1] images);
- taps: the expansion output (1x1 conv + BN + ReLU6) of ``features[14]`` at 19x19 and the 1280 conv at 10x10;
- extras: inverted residuals without skip, ``1280 -(256)-> 512 -(128)-> 256 -(128)-> 256 -(64)-> 64``, linear
  projection;
- predictors: depthwise 3x3 conv *with bias* + BN + ReLU6 -> 1x1 conv; a plain 1x1 conv on the last (1x1) map.
  The depthwise bias sits right before BN, so it is folded into the BN running mean (exact in eval mode, and
  irrelevant in training mode, where BN subtracts the batch mean);
- SSD300 priors: sizes 60..330 px, strides 16/32/64/100/150/300, aspect ratios {2, 3} on every map (3000 boxes),
  clamped to the image in centre form, the same order per location as torchvision's ``DefaultBoxGenerator``;
- ``onnx_compatible`` models use ReLU instead of ReLU6 in the MobileNetV2 body only (extras and heads keep
  ReLU6); the checkpoint cannot tell, so say it with ``onnx_compatible=True``.

Known differences after conversion: torchvision's box coder clamps ``dw, dh`` at ``log(1000 / 16)`` (raw size
outputs above ~20.7, never seen in trained models) and post-processing clips boxes to the image; the original
predictor does neither.
"""
from __future__ import annotations

import os
from typing import Any
from collections.abc import Mapping

from torch import Tensor

from backbones.base import check_keywords, keyword_names
from backbones.weights import convert_state_dict, read_checkpoint, unwrap

from .ssdlite import SSD_KEYWORDS, SSDLite, create_detector

SIZE = 300
# SSDSpec(feature map, shrinkage, box sizes) of the repo's SSD300 prior config, in pixels at 300 input.
PRIOR_SIZES = (60, 105, 150, 195, 240, 285, 330)
PRIOR_STEPS = (16, 32, 64, 100, 150, 300)
LAYOUT: dict[str, Any] = dict(
    size=SIZE, extra_channels=((256, 512), (128, 256), (128, 256), (64, 64)), linear_extras=True,
    pointwise_last=True, anchor_scales=tuple(s / SIZE for s in PRIOR_SIZES), anchor_steps=PRIOR_STEPS,
    image_mean=(127 / 255,) * 3, image_std=(128 / 255,) * 3, nms_thresh=0.45)
# Sub-module index inside their Sequentials -> ours.
_EXTRA_PARTS = {"0": "0.conv", "1": "0.bn", "3": "1.conv", "4": "1.bn", "6": "2.conv", "7": "2.bn"}
_HEAD_PARTS = {"0": "0.conv", "1": "0.bn", "3": "1"}
_HEADERS = {"classification_headers": "head.classification_head.module_list",
            "regression_headers": "head.regression_head.module_list"}


def create_pytorch_ssd_detector(num_classes: int = 21, *, onnx_compatible: bool = False, **kwargs: Any) -> SSDLite:
    """An untrained :class:`SSDLite` in the layout of ``mb2-ssd-lite`` (``kwargs`` override post-processing)."""
    backbone_kwargs = {"act_layer": "relu" if onnx_compatible else "relu6"}
    return create_detector("ld_mobilenetv2_100", num_classes, backbone_kwargs=backbone_kwargs, **{**LAYOUT, **kwargs})


def _rename(key: str) -> str | None:
    """Our key for one of their extras/header keys (None for keys of neither)."""
    parts = key.split(".")
    if len(parts) == 5 and parts[0] == "extras" and parts[2] == "conv" and parts[3] in _EXTRA_PARTS:
        return f"backbone.extras.{parts[1]}.{_EXTRA_PARTS[parts[3]]}.{parts[4]}"
    if parts[0] in _HEADERS and len(parts) == 3:  # the plain 1x1 conv on the last map
        return f"{_HEADERS[parts[0]]}.{parts[1]}.{parts[2]}"
    if parts[0] in _HEADERS and len(parts) == 4 and parts[2] in _HEAD_PARTS:
        return f"{_HEADERS[parts[0]]}.{parts[1]}.{_HEAD_PARTS[parts[2]]}.{parts[3]}"
    return None


def convert_pytorch_ssd(model: SSDLite, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Rename an ``mb2-ssd-lite`` state dict onto ``model`` (built by :func:`create_pytorch_ssd_detector`).

    ``base_net.*`` goes through ``backbones.weights.convert_state_dict``; extras and headers are renamed here and
    the headers' depthwise biases are folded into their BN. Missing, unexpected or mis-shaped keys raise.
    """
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    backbone = model.backbone.backbone
    base = {k: v for k, v in sd.items() if k.startswith("base_net.")}
    out = {f"backbone.backbone.{k}": v for k, v in convert_state_dict(backbone, base).items()}
    unexpected, biases = [], {}
    for key, value in sd.items():
        if key in base:
            continue
        ours = _rename(key)
        if ours is not None and ours.endswith(".0.conv.bias"):  # depthwise bias, folded below
            biases[ours.removesuffix(".conv.bias")] = value
        elif ours is not None:
            out[ours] = value
        else:
            unexpected.append(key)
    for prefix, bias in biases.items():
        mean = out.get(f"{prefix}.bn.running_mean")
        if mean is None or mean.shape != bias.shape:
            unexpected.append(f"{prefix} depthwise bias")
        else:
            out[f"{prefix}.bn.running_mean"] = mean - bias
    return _checked(model, out, unexpected)


def _checked(model: SSDLite, out: dict[str, Tensor], unexpected: list[str]) -> dict[str, Tensor]:
    expected = model.state_dict()
    for key in expected:  # older checkpoints lack the BN counters
        if key.endswith("num_batches_tracked") and key not in out:
            out[key] = expected[key]
    unexpected += [k for k in out if k not in expected]
    missing = [k for k in expected if k not in out]
    wrong = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
             for k, v in out.items() if k in expected and v.shape != expected[k].shape]
    if unexpected or missing or wrong:
        raise ValueError(f"checkpoint does not match the mb2-ssd-lite layout: missing {sorted(missing)[:8]}, "
                         f"unexpected {sorted(unexpected)[:8]}, shape mismatch {wrong[:8]}")
    return out


def load_pytorch_ssd(source: str | os.PathLike | Mapping[str, Tensor], *, num_classes: int | None = None,
                     onnx_compatible: bool = False, **kwargs: Any) -> SSDLite:
    """Build our detector from an ``mb2-ssd-lite`` checkpoint (path, URL or state dict), in eval mode.

    ``num_classes`` (background included) is read from the checkpoint unless given; VOC models have 21, with
    their label 0 ``BACKGROUND`` matching torchvision's convention. ``kwargs``: post-processing options of
    :func:`~heads.ssdlite.create_detector` (``score_thresh``, ``nms_thresh``, ...).
    """
    check_keywords("load_pytorch_ssd", kwargs, SSD_KEYWORDS | keyword_names(load_pytorch_ssd))
    sd = unwrap(source) if isinstance(source, Mapping) else read_checkpoint(source)
    key = "classification_headers.0.3.weight"
    if key not in sd and f"module.{key}" not in sd:
        raise ValueError(f"not an mb2-ssd-lite checkpoint: no {key!r}; first keys {list(sd)[:6]}")
    if num_classes is None:
        num_classes = sd.get(key, sd.get(f"module.{key}")).shape[0] // 6
    model = create_pytorch_ssd_detector(num_classes, onnx_compatible=onnx_compatible, **kwargs)
    model.load_state_dict(convert_pytorch_ssd(model, sd))
    return model.eval()
