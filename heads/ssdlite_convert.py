"""Load checkpoints of qfgaohao/pytorch-ssd: ``mb1-ssd``, ``mb1-ssd-lite`` and ``mb2-ssd-lite``, told apart by keys.

Those models (VOC07 test mAP 0.675 for ``mb1-ssd``, 0.686 for ``mb2-ssd-lite``; the Jetson fork exports them to
ONNX) are SSD / SSDLite with choices of their own, all of which :func:`create_detector` can express, so a
converted checkpoint reproduces their raw class scores and decoded boxes. Shared by the three:

- input 300, ``(pixels - 127) / 128`` (mean 127/255, std 128/255 on [0, 1] images), NMS IoU 0.45;
- SSD300 priors: sizes 60..330 px, strides 16/32/64/100/150/300, aspect ratios {2, 3} on every map (3000 boxes),
  clamped to the image in centre form, the same order per location as torchvision's ``DefaultBoxGenerator``;
- the backbone's two detection taps at 19x19 and 10x10, then four extra layers down to 1x1.

Per layout (``base_net.*`` is the backbone, ``extras.N``, ``classification_headers.N``, ``regression_headers.N``):

- ``mb1-ssd``: MobileNetV1 1.0 with ReLU (``base_net.N.{0,1,3,4}``, taps 512@16 and 1024@32); extras
  1x1 conv -> ReLU -> 3x3 stride-2 conv -> ReLU with biases, 1024 -> 512 -> 256 -> 256 -> 256; every predictor a
  plain 3x3 conv with bias (the SSD head).
- ``mb1-ssd-lite``: the same body and extra widths, but separable convs without BN: extras 1x1 conv -> ReLU ->
  depthwise 3x3 stride 2 -> ReLU -> 1x1 conv (linear), predictors depthwise 3x3 -> ReLU -> 1x1, a plain 1x1 on the
  last map (the SSDLite head with ``norm=False``, ReLU).
- ``mb2-ssd-lite``: MobileNetV2 1.0 (taps: the expansion output of ``features[14]`` at 19x19 and the 1280 conv),
  extras inverted residuals without skip ``1280 -(256)-> 512 -(128)-> 256 -(128)-> 256 -(64)-> 64`` with a linear
  projection, predictors depthwise 3x3 conv *with bias* + BN + ReLU6 -> 1x1 conv, a plain 1x1 on the last map. The
  depthwise bias sits right before BN, so it is folded into the BN running mean (exact in eval mode, and irrelevant
  in training mode, where BN subtracts the batch mean). ``onnx_compatible`` models use ReLU instead of ReLU6 in
  the MobileNetV2 body only; the checkpoint cannot tell, so say it with ``onnx_compatible=True``.

Known differences after conversion: torchvision's box coder clamps ``dw, dh`` at ``log(1000 / 16)`` (raw size
outputs above ~20.7, never seen in trained models) and post-processing clips boxes to the image; the original
predictor does neither.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from collections.abc import Mapping

from torch import Tensor

from backbones.base import check_choice, check_keywords, keyword_names
from backbones.weights import convert_state_dict, read_checkpoint, unwrap

from .detector import SSD_KEYWORDS, SSDDetector, create_detector

SIZE = 300
# SSDSpec(feature map, shrinkage, box sizes) of the repo's SSD300 prior config, in pixels at 300 input.
PRIOR_SIZES = (60, 105, 150, 195, 240, 285, 330)
PRIOR_STEPS = (16, 32, 64, 100, 150, 300)
COMMON: dict[str, Any] = dict(size=SIZE, anchor_scales=tuple(s / SIZE for s in PRIOR_SIZES), anchor_steps=PRIOR_STEPS,
                              image_mean=(127 / 255,) * 3, image_std=(128 / 255,) * 3, nms_thresh=0.45)
MB1_EXTRAS = ((256, 512), (128, 256), (128, 256), (128, 256))


@dataclass(frozen=True)
class PytorchSSDLayout:
    """One pytorch-ssd architecture: what identifies it, how we build it, and how its keys map onto ours.

    ``extras`` / ``headers`` map the sub-module path inside ``extras.N`` / ``*_headers.N`` to ours (``""``: the
    module itself, a plain conv); ``class_key`` is the first class header's last conv (``6 * num_classes`` rows).
    """

    backbone: str
    base_key: str
    class_key: str
    head: str
    options: Mapping[str, Any]
    extras: Mapping[str, str]
    headers: Mapping[str, str]


LAYOUTS: dict[str, PytorchSSDLayout] = {
    "mb1-ssd": PytorchSSDLayout(
        "ld_mobilenetv1_100", "base_net.1.3.weight", "classification_headers.0.weight", "ssd",
        dict(extra_channels=MB1_EXTRAS), {"0": "0.conv", "2": "1.conv"}, {"": ""}),
    "mb1-ssd-lite": PytorchSSDLayout(
        "ld_mobilenetv1_100", "base_net.1.3.weight", "classification_headers.0.2.weight", "ssdlite",
        dict(extra_channels=MB1_EXTRAS, linear_extras=True, pointwise_last=True, norm=False, act_layer="relu"),
        {"0": "0.conv", "2.0": "1.conv", "2.2": "2.conv"}, {"0": "0.conv", "2": "1", "": ""}),
    "mb2-ssd-lite": PytorchSSDLayout(
        "ld_mobilenetv2_100", "base_net.1.conv.0.weight", "classification_headers.0.3.weight", "ssdlite",
        dict(extra_channels=((256, 512), (128, 256), (128, 256), (64, 64)), linear_extras=True, pointwise_last=True),
        {"conv.0": "0.conv", "conv.1": "0.bn", "conv.3": "1.conv", "conv.4": "1.bn", "conv.6": "2.conv",
         "conv.7": "2.bn"},
        {"0": "0.conv", "1": "0.bn", "3": "1", "": ""}),
}
_OURS = {"extras": "backbone.extras", "classification_headers": "head.classification_head.module_list",
         "regression_headers": "head.regression_head.module_list"}


def create_pytorch_ssd_detector(num_classes: int = 21, *, layout: str = "mb2-ssd-lite", onnx_compatible: bool = False,
                                **kwargs: Any) -> SSDDetector:
    """An untrained detector in a pytorch-ssd ``layout`` (``kwargs`` override post-processing options)."""
    check_choice("layout", layout, list(LAYOUTS))
    spec = LAYOUTS[layout]
    if onnx_compatible and spec.backbone != "ld_mobilenetv2_100":
        raise ValueError(f"onnx_compatible applies to mb2-ssd-lite only; {layout} uses ReLU throughout already")
    act = "relu" if onnx_compatible or spec.backbone == "ld_mobilenetv1_100" else "relu6"
    return create_detector(spec.backbone, num_classes, head=spec.head, backbone_kwargs={"act_layer": act},
                           **{**COMMON, **spec.options, **kwargs})


def detect_pytorch_ssd_layout(state_dict: Mapping[str, Tensor]) -> str:
    """Which of :data:`LAYOUTS` ``state_dict`` is in (``module.`` prefixes allowed); ValueError for none."""
    keys = {k.removeprefix("module.") for k in state_dict}
    for name, spec in LAYOUTS.items():
        if spec.base_key in keys and spec.class_key in keys:
            return name
    wanted = ", ".join(f"{n} ({s.base_key} + {s.class_key})" for n, s in LAYOUTS.items())
    raise ValueError(f"not a pytorch-ssd checkpoint; expected the keys of {wanted}; first keys {list(state_dict)[:6]}")


def _rename(key: str, spec: PytorchSSDLayout) -> str | None:
    """Our key for one of their extras/header keys (None for keys of neither)."""
    group, _, rest = key.partition(".")
    index, _, rest = rest.partition(".")
    path, _, param = rest.rpartition(".")
    table = spec.extras if group == "extras" else spec.headers if group in _OURS else {}
    if not index.isdigit() or path not in table:
        return None
    return ".".join(p for p in (_OURS[group], index, table[path], param) if p)


def convert_pytorch_ssd(model: SSDDetector, state_dict: Mapping[str, Tensor], layout: str) -> dict[str, Tensor]:
    """Rename a pytorch-ssd state dict in ``layout`` onto ``model`` (built by :func:`create_pytorch_ssd_detector`).

    ``base_net.*`` goes through ``backbones.weights.convert_state_dict``; extras and headers are renamed here, and
    a conv bias our model does not have, right before a BN, is folded into that BN. Missing, unexpected or
    mis-shaped keys raise.
    """
    spec, expected = LAYOUTS[layout], model.state_dict()
    sd = {k.removeprefix("module."): v for k, v in state_dict.items()}
    base = {k: v for k, v in sd.items() if k.startswith("base_net.")}
    out = {f"backbone.backbone.{k}": v for k, v in convert_state_dict(model.backbone.backbone, base).items()}
    unexpected, biases = [], {}
    for key, value in sd.items():
        if key in base:
            continue
        ours = _rename(key, spec)
        if ours in expected:
            out[ours] = value
        elif ours is not None and ours.endswith(".conv.bias"):  # a bias before BN, folded below
            biases[ours.removesuffix(".conv.bias")] = value
        else:
            unexpected.append(key)
    for prefix, bias in biases.items():
        mean = out.get(f"{prefix}.bn.running_mean")
        if mean is None or mean.shape != bias.shape:
            unexpected.append(f"{prefix} conv bias")
        else:
            out[f"{prefix}.bn.running_mean"] = mean - bias
    return _checked(expected, out, unexpected, layout)


def _checked(expected: Mapping[str, Tensor], out: dict[str, Tensor], unexpected: list[str],
             layout: str) -> dict[str, Tensor]:
    for key in expected:  # older checkpoints lack the BN counters
        if key.endswith("num_batches_tracked") and key not in out:
            out[key] = expected[key]
    unexpected += [k for k in out if k not in expected]
    missing = [k for k in expected if k not in out]
    wrong = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
             for k, v in out.items() if k in expected and v.shape != expected[k].shape]
    if unexpected or missing or wrong:
        raise ValueError(f"checkpoint does not match the {layout} layout: missing {sorted(missing)[:8]}, "
                         f"unexpected {sorted(unexpected)[:8]}, shape mismatch {wrong[:8]}")
    return out


def load_pytorch_ssd(source: str | os.PathLike | Mapping[str, Tensor], *, num_classes: int | None = None,
                     onnx_compatible: bool = False, **kwargs: Any) -> SSDDetector:
    """Build our detector from a pytorch-ssd checkpoint (path, URL or state dict), in eval mode.

    The layout (``mb1-ssd``, ``mb1-ssd-lite`` or ``mb2-ssd-lite``) is read from the keys and lands in
    ``model.pytorch_ssd_layout``. ``num_classes`` (background included) is read from the checkpoint unless given;
    VOC models have 21, with their label 0 ``BACKGROUND`` matching torchvision's convention. ``kwargs``:
    post-processing options of :func:`~heads.detector.create_detector` (``score_thresh``, ``nms_thresh``, ...).
    """
    check_keywords("load_pytorch_ssd", kwargs, SSD_KEYWORDS | keyword_names(load_pytorch_ssd))
    sd = unwrap(source) if isinstance(source, Mapping) else read_checkpoint(source)
    layout = detect_pytorch_ssd_layout(sd)
    if num_classes is None:
        key = LAYOUTS[layout].class_key
        num_classes = sd.get(key, sd.get(f"module.{key}")).shape[0] // 6
    model = create_pytorch_ssd_detector(num_classes, layout=layout, onnx_compatible=onnx_compatible, **kwargs)
    model.load_state_dict(convert_pytorch_ssd(model, sd, layout))
    model.pytorch_ssd_layout = layout
    return model.eval()
