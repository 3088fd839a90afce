"""SSDLite detector (MobileNetV2 paper §6.2) on any backbone of the contract, as a torchvision ``SSD``.

torchvision's ``SSD`` supplies the in-model resize and normalization, IoU matching, the box coder (variances
0.1/0.2), the loss with 3:1 hard negative mining and the softmax + top-k + batched-NMS post-processing. This module
supplies what is SSDLite about it: the backbone's two detection taps, extra layers (1x1 -> depthwise 3x3 stride 2
-> 1x1) after the deepest one, and separable-conv class and box predictors on every map.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.ssd import SSD, SSDScoringHead

from backbones import Backbone, create_backbone
from backbones.base import check_keywords, keyword_names
from backbones.blocks import ConvNormAct
from backbones.fuse import Fusable

from .anchors import SSDBoxGenerator
from .ssd_postprocess import postprocess_detections

# (mid, out) channels of each extra layer, as in the TF Object Detection API and torchvision (mid = out // 2).
EXTRA_CHANNELS: tuple[tuple[int, int], ...] = ((256, 512), (128, 256), (128, 256), (64, 128))
# Aspect ratios {2, 3} on every map: 6 default boxes per location, as torchvision's ssdlite320 and the popular
# PyTorch MobileNetV2-SSDLite use (the TF config instead reduces the first map to 3 boxes).
ASPECT_RATIOS: tuple[int, ...] = (2, 3)
# Matching and post-processing options of torchvision's SSD that create_detector passes through (it swallows others).
SSD_KEYWORDS = keyword_names(SSD.__init__) - {"backbone", "anchor_generator", "size", "num_classes", "image_mean",
                                              "image_std", "head"}
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)


class ExtraBlock(nn.Sequential):
    """One SSDLite extra layer: 1x1 conv -> depthwise 3x3 stride 2 -> 1x1 conv, each with BN.

    ``(N, C_in, H, W) -> (N, C_out, ceil(H / 2), ceil(W / 2))``. ReLU6 follows every conv as in the TF Object
    Detection API; ``linear=True`` leaves it off the last one (an inverted residual without skip, as the popular
    PyTorch MobileNetV2-SSDLite builds its extras).
    """

    def __init__(self, in_chs: int, out_chs: int, *, mid_chs: int, linear: bool = False) -> None:
        super().__init__(
            ConvNormAct(in_chs, mid_chs, act_layer=nn.ReLU6),
            ConvNormAct(mid_chs, mid_chs, 3, stride=2, groups=mid_chs, act_layer=nn.ReLU6),
            ConvNormAct(mid_chs, out_chs, act_layer=None if linear else nn.ReLU6),
        )


class SSDLiteFeatures(nn.Module):
    """The backbone's two detection taps followed by the extra layers, each extra reading the previous map.

    ``forward`` returns ``OrderedDict("0": tap @16, "1": tap @32, "2".. : extras @64, @128, ...)``, the form
    torchvision's ``SSD`` expects; ``out_channels`` lists their channels.
    """

    def __init__(self, backbone: Backbone, *, extra_channels: Sequence[tuple[int, int]] = EXTRA_CHANNELS,
                 linear_extras: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        in_chs = backbone.channels[-1]
        extras = []
        for mid_chs, out_chs in extra_channels:
            extras.append(ExtraBlock(in_chs, out_chs, mid_chs=mid_chs, linear=linear_extras))
            in_chs = out_chs
        self.extras = nn.ModuleList(extras)
        self.out_channels = [*backbone.channels, *(out for _, out in extra_channels)]

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        maps = self.backbone(x)
        x = maps[-1]
        for extra in self.extras:
            x = extra(x)
            maps.append(x)
        return OrderedDict((str(i), m) for i, m in enumerate(maps))


def _predictors(in_channels: Sequence[int], out_channels: Sequence[int], *, pointwise_last: bool) -> nn.ModuleList:
    """Per map: depthwise 3x3 + BN + ReLU6 -> 1x1 conv with bias (paper §6.2); optionally a lone 1x1 on the last."""
    layers = []
    for i, (in_chs, out_chs) in enumerate(zip(in_channels, out_channels)):
        pointwise = nn.Conv2d(in_chs, out_chs, 1)
        if pointwise_last and i == len(in_channels) - 1:
            layers.append(pointwise)
        else:
            layers.append(nn.Sequential(ConvNormAct(in_chs, in_chs, 3, groups=in_chs, act_layer=nn.ReLU6), pointwise))
    return nn.ModuleList(layers)


class SSDLiteHead(nn.Module):
    """Class and box predictors: one scoring implementation (torchvision's ``SSDScoringHead``) used twice.

    They differ only in the columns per default box: ``num_classes`` (background included) for the class head,
    4 box deltas for the regression head. ``forward(maps)`` returns ``{"cls_logits": (N, A, num_classes),
    "bbox_regression": (N, A, 4)}`` with ``A = sum(H_i * W_i * num_anchors_i)``, ordered map by map, then row,
    column, default box.
    """

    def __init__(self, in_channels: Sequence[int], num_anchors: Sequence[int], num_classes: int, *,
                 pointwise_last: bool = False) -> None:
        super().__init__()
        self.classification_head = self._scoring_head(in_channels, num_anchors, num_classes, pointwise_last)
        self.regression_head = self._scoring_head(in_channels, num_anchors, 4, pointwise_last)

    @staticmethod
    def _scoring_head(in_channels: Sequence[int], num_anchors: Sequence[int], num_columns: int,
                      pointwise_last: bool) -> SSDScoringHead:
        out_channels = [a * num_columns for a in num_anchors]
        return SSDScoringHead(_predictors(in_channels, out_channels, pointwise_last=pointwise_last), num_columns)

    def forward(self, x: list[Tensor]) -> dict[str, Tensor]:
        return {"bbox_regression": self.regression_head(x), "cls_logits": self.classification_head(x)}


class SSDLite(Fusable, SSD):
    """torchvision ``SSD`` built from :class:`SSDLiteFeatures` and :class:`SSDLiteHead`.

    ``model(images, targets) -> {"bbox_regression", "classification"}`` losses in training mode;
    ``model(images) -> [{"boxes" (xyxy, input pixels), "scores", "labels" (1..K, 0 is background)}]`` in eval
    mode. Images are float ``(3, H, W)`` in [0, 1]; they are resized to ``size`` and normalized inside.
    ``model.eval().fuse()`` gives the inference fast path (:class:`~backbones.fuse.Fusable`); with
    ``compile=True`` only the network (``backbone`` and ``head``) is compiled, pre- and post-processing stay eager.
    """

    compile_parts = ("backbone", "head")

    def postprocess_detections(self, head_outputs: dict[str, Tensor], image_anchors: list[Tensor],
                               image_shapes: list[tuple[int, int]]) -> list[dict[str, Tensor]]:
        """torchvision's detections, selected for all classes at once (:mod:`heads.ssd_postprocess`, about 30%
        faster on CPU); traced, scripted or compiled graphs keep torchvision's per-class loop, which exports."""
        if torch.jit.is_scripting() or torch.jit.is_tracing() or torch.compiler.is_compiling():
            return super().postprocess_detections(head_outputs, image_anchors, image_shapes)
        return self._select(head_outputs, image_anchors, image_shapes)

    @torch.jit.unused
    def _select(self, head_outputs: dict[str, Tensor], image_anchors: list[Tensor],
                image_shapes: list[tuple[int, int]]) -> list[dict[str, Tensor]]:
        return postprocess_detections(self, head_outputs, image_anchors, image_shapes)

    @torch.no_grad()
    def predict_raw(self, images: list[Tensor] | Tensor) -> tuple[Tensor, Tensor]:
        """Raw class logits ``(N, A, K)`` and decoded boxes ``(N, A, 4)``, xyxy in pixels of the resized input.

        No softmax, clipping, score threshold or NMS: what export, benchmarks and parity checks want.
        """
        return self.raw_outputs(self.transform(list(images))[0])

    def raw_outputs(self, image_list: ImageList) -> tuple[Tensor, Tensor]:
        """:meth:`predict_raw` on images already resized and normalized by ``self.transform``."""
        maps = list(self.backbone(image_list.tensors).values())
        out = self.head(maps)
        anchors = self.anchor_generator(image_list, maps)
        boxes = [self.box_coder.decode_single(reg, anc) for reg, anc in zip(out["bbox_regression"], anchors)]
        return out["cls_logits"], torch.stack(boxes)


def detection_backbone(name: str, *, pretrained: Any = False, **kwargs: Any) -> Backbone:
    """Build backbone ``name`` returning its ``detection_indices`` taps (read from a parameter-free meta build)."""
    if "out_indices" in kwargs:
        raise ValueError("backbone_kwargs must not set out_indices: the detector reads the backbone's "
                         "detection_indices (the two taps SSDLite attaches to)")
    with torch.device("meta"):
        indices = create_backbone(name, **kwargs).detection_indices
    return create_backbone(name, pretrained=pretrained, out_indices=list(indices), **kwargs)


def _normalization(backbone: Backbone, mean: Sequence[float] | None,
                   std: Sequence[float] | None) -> tuple[list[float], list[float]]:
    """Explicit mean/std, else the loaded weights' preprocessing rescaled to [0, 1] inputs, else 0.5/0.5."""
    prep = getattr(backbone, "preprocessing", None)
    if prep is not None and (mean is None or std is None):
        scale = prep.input_range
        mean = [m / scale for m in prep.mean] if mean is None else mean
        std = [s / scale for s in prep.std] if std is None else std
    return list(IMAGE_MEAN if mean is None else mean), list(IMAGE_STD if std is None else std)


def _anchor_arg(name: str, values: Sequence[float] | None, expected: int) -> list[float] | None:
    if values is not None and len(values) != expected:
        raise ValueError(f"{name} needs {expected} values (maps + 1 for scales), got {len(values)}: {list(values)}")
    return None if values is None else list(values)


def _normal_init(module: nn.Module, std: float = 0.03) -> None:
    """Conv weights ~ N(0, std), biases 0, as torchvision's SSDLite initializes its extras and predictors."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def create_detector(backbone_name: str, num_classes: int, *, size: int = 320,
                    pretrained_backbone: Any = False, backbone_kwargs: dict[str, Any] | None = None,
                    extra_channels: Sequence[tuple[int, int]] = EXTRA_CHANNELS, linear_extras: bool = False,
                    pointwise_last: bool = False, anchor_scales: Sequence[float] | None = None,
                    anchor_steps: Sequence[int] | None = None,
                    image_mean: Sequence[float] | None = None, image_std: Sequence[float] | None = None,
                    **ssd_kwargs: Any) -> SSDLite:
    """SSDLite on a registered backbone (MobileNetV2 paper §6.2).

    Args:
        backbone_name: one of ``backbones.list_backbones()``; its ``detection_indices`` taps feed the head.
        num_classes: classes including background (21 for PASCAL VOC); labels are 1..num_classes-1.
        size: square input side the images are resized to (300 as SSD300, 320 as torchvision's ssdlite320).
        pretrained_backbone: the ``pretrained`` argument of ``backbones.create_backbone``.
        backbone_kwargs: more ``create_backbone`` arguments (e.g. ``act_layer="relu"``, ``frozen_stages=1``).
        extra_channels: ``(mid, out)`` channels of each extra layer; their number sets the maps (2 + len).
        linear_extras: no activation after the extras' last 1x1 (inverted-residual extras).
        pointwise_last: a plain 1x1 conv instead of the separable predictor on the last map.
        anchor_scales: ``len(maps) + 1`` default-box scales relative to ``size``; default 0.2..0.95 then 1.0.
        anchor_steps: per-map pixel step between default-box centres; default ``size / map size``.
        image_mean, image_std: normalization of [0, 1] RGB inputs; default: what the pretrained backbone weights
            expect (``backbone.preprocessing``), else mean 0.5, std 0.5 (inputs to [-1, 1], as torchvision).
        ssd_kwargs: ``torchvision SSD`` post-processing and matching options (``score_thresh``, ``nms_thresh``,
            ``detections_per_img``, ``topk_candidates``, ``iou_thresh``, ``positive_fraction``).
    """
    check_keywords("create_detector", ssd_kwargs, SSD_KEYWORDS | keyword_names(create_detector))
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"num_classes counts the background too and must be an int >= 2, got {num_classes!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 32:
        raise ValueError(f"size must be an int >= 32 (e.g. 300 or 320), got {size!r}")
    backbone = detection_backbone(backbone_name, pretrained=pretrained_backbone, **(backbone_kwargs or {}))
    features = SSDLiteFeatures(backbone, extra_channels=extra_channels, linear_extras=linear_extras)
    num_maps = len(features.out_channels)
    scales = _anchor_arg("anchor_scales", anchor_scales, num_maps + 1)
    steps = _anchor_arg("anchor_steps", anchor_steps, num_maps)
    anchors = SSDBoxGenerator([list(ASPECT_RATIOS)] * num_maps, min_ratio=0.2, max_ratio=0.95, scales=scales,
                              steps=steps)
    head = SSDLiteHead(features.out_channels, anchors.num_anchors_per_location(), num_classes,
                       pointwise_last=pointwise_last)
    _normal_init(features.extras)
    _normal_init(head)
    mean, std = _normalization(backbone, image_mean, image_std)
    return SSDLite(features, anchors, (size, size), num_classes, image_mean=mean, image_std=std, head=head,
                   **ssd_kwargs)
