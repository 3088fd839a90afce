"""SSD-style detectors on any backbone of the contract, as torchvision ``SSD`` models: the model and its factory.

torchvision's ``SSD`` supplies the in-model resize and normalization, IoU matching, the box coder (variances
0.1/0.2), the loss with 3:1 hard negative mining and the softmax + top-k + batched-NMS post-processing. This module
supplies the backbone's two detection taps, the default boxes, and the choice of head, which brings the extra
layers after the deepest tap and the class and box predictors on every map: ``"ssdlite"`` (MobileNetV2 paper
§6.2, :mod:`heads.ssdlite`) or ``"ssd"`` (Liu et al., 2016, :mod:`heads.ssd`).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Protocol
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.ssd import SSD, SSDScoringHead

from backbones import Backbone, create_backbone
from backbones.base import check_choice, check_keywords, keyword_names
from backbones.fuse import Fusable

from .anchors import SSDBoxGenerator
from .ssd import SSDLayers
from .ssd_postprocess import postprocess_detections
from .ssdlite import SSDLiteLayers


class HeadLayers(Protocol):
    """What a head brings: ``extra_channels`` ``(mid, out)`` pairs, and builders of its layers."""

    extra_channels: list[tuple[int, int]]

    def extras(self, in_chs: int) -> nn.ModuleList: ...

    def predictors(self, in_channels: Sequence[int], out_channels: Sequence[int]) -> nn.ModuleList: ...

    def init_weights(self, module: nn.Module) -> None: ...


# ``head=`` of create_detector -> the class whose keywords configure that head.
HEADS: dict[str, type[HeadLayers]] = {"ssdlite": SSDLiteLayers, "ssd": SSDLayers}
# Aspect ratios {2, 3} on every map: 6 default boxes per location, as torchvision's ssdlite320 and the popular
# PyTorch MobileNet SSDs use (the TF config instead reduces the first map to 3 boxes).
ASPECT_RATIOS: tuple[int, ...] = (2, 3)
# Matching and post-processing options of torchvision's SSD that create_detector passes through (it swallows others).
SSD_KEYWORDS = keyword_names(SSD.__init__) - {"backbone", "anchor_generator", "size", "num_classes", "image_mean",
                                              "image_std", "head"}
IMAGE_MEAN = (0.5, 0.5, 0.5)
IMAGE_STD = (0.5, 0.5, 0.5)


class DetectionFeatures(nn.Module):
    """The backbone's two detection taps followed by the extra layers, each extra reading the previous map.

    ``forward`` returns ``OrderedDict("0": tap @16, "1": tap @32, "2".. : extras @64, @128, ...)``, the form
    torchvision's ``SSD`` expects; ``out_channels`` lists their channels.
    """

    def __init__(self, backbone: Backbone, layers: HeadLayers) -> None:
        super().__init__()
        self.backbone = backbone
        self.extras = layers.extras(backbone.channels[-1])
        self.out_channels = [*backbone.channels, *(out for _, out in layers.extra_channels)]

    def forward(self, x: Tensor) -> dict[str, Tensor]:  # TorchScript knows no OrderedDict annotation
        maps = self.backbone(x)
        x = maps[-1]
        for extra in self.extras:
            x = extra(x)
            maps.append(x)
        return OrderedDict([(str(i), m) for i, m in enumerate(maps)])


class DetectionHead(nn.Module):
    """Class and box predictors: one scoring implementation (torchvision's ``SSDScoringHead``) used twice.

    They differ only in the columns per default box: ``num_classes`` (background included) for the class head,
    4 box deltas for the regression head. ``forward(maps)`` returns ``{"cls_logits": (N, A, num_classes),
    "bbox_regression": (N, A, 4)}`` with ``A = sum(H_i * W_i * num_anchors_i)``, ordered map by map, then row,
    column, default box.
    """

    def __init__(self, in_channels: Sequence[int], num_anchors: Sequence[int], num_classes: int,
                 layers: HeadLayers) -> None:
        super().__init__()
        self.classification_head = self._scoring_head(in_channels, num_anchors, num_classes, layers)
        self.regression_head = self._scoring_head(in_channels, num_anchors, 4, layers)

    @staticmethod
    def _scoring_head(in_channels: Sequence[int], num_anchors: Sequence[int], num_columns: int,
                      layers: HeadLayers) -> SSDScoringHead:
        return SSDScoringHead(layers.predictors(in_channels, [a * num_columns for a in num_anchors]), num_columns)

    def forward(self, x: list[Tensor]) -> dict[str, Tensor]:
        return {"bbox_regression": self.regression_head(x), "cls_logits": self.classification_head(x)}


class SSDDetector(Fusable, SSD):
    """torchvision ``SSD`` built from :class:`DetectionFeatures` and :class:`DetectionHead`.

    ``model(images, targets) -> {"bbox_regression", "classification"}`` losses in training mode;
    ``model(images) -> [{"boxes" (xyxy, input pixels), "scores", "labels" (1..K, 0 is background)}]`` in eval
    mode. Images are float ``(3, H, W)`` in [0, 1]; they are resized to ``size`` and normalized inside.
    ``head_name`` says which head built it (``"ssdlite"`` or ``"ssd"``). ``model.eval().fuse()`` gives the
    inference fast path (:class:`~backbones.fuse.Fusable`); with ``compile=True`` only the network (``backbone``
    and ``head``) is compiled, pre- and post-processing stay eager.
    """

    head_name: str = "ssdlite"
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

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        """torchvision's ``SSD.forward`` after checking the inputs (a ValueError names the bad item)."""
        if not torch.jit.is_scripting() and not torch.jit.is_tracing():
            self._check_inputs(images, targets)
        return super().forward(images, targets)

    @torch.jit.unused
    def _check_inputs(self, images: list[Tensor] | Tensor, targets: list[dict[str, Tensor]] | None) -> None:
        if len(images) == 0:
            raise ValueError("no images: pass a list of (3, H, W) float RGB tensors in [0, 1]")
        for i, image in enumerate(images):
            if image.dim() != 3 or image.shape[0] != 3:
                raise ValueError(f"image {i} has shape {tuple(image.shape)}; expected (3, H, W) RGB (grey: "
                                 "image.expand(3, -1, -1); RGBA: image[:3])")
            if not image.is_floating_point():
                raise ValueError(f"image {i} is {image.dtype}; expected float RGB in [0, 1] (image.float() / 255)")
        if targets is None:
            return
        if len(targets) != len(images):
            raise ValueError(f"{len(images)} images but {len(targets)} targets: pass one target dict per image")
        num_classes = self.head.classification_head.num_columns
        for i, target in enumerate(targets):
            labels = target["labels"]
            bad = labels[(labels < 1) | (labels >= num_classes)]
            if bad.numel():
                raise ValueError(f"target {i} has labels {bad.tolist()}; valid labels are 1..{num_classes - 1} "
                                 "(0 is the background)")
            if len(labels) != len(target["boxes"]):
                raise ValueError(f"target {i} has {len(target['boxes'])} boxes but {len(labels)} labels")

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
                         "detection_indices (the two taps the head attaches to)")
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


def create_detector(backbone_name: str, num_classes: int, *, head: str = "ssdlite", size: int = 320,
                    pretrained_backbone: Any = False, backbone_kwargs: dict[str, Any] | None = None,
                    anchor_scales: Sequence[float] | None = None, anchor_steps: Sequence[int] | None = None,
                    image_mean: Sequence[float] | None = None, image_std: Sequence[float] | None = None,
                    **kwargs: Any) -> SSDDetector:
    """SSDLite (MobileNetV2 paper §6.2) or SSD (Liu et al., 2016) on a registered backbone.

    Args:
        backbone_name: one of ``backbones.list_backbones()``; its ``detection_indices`` taps feed the head.
        num_classes: classes including background (21 for PASCAL VOC); labels are 1..num_classes-1.
        head: ``"ssdlite"`` (separable extras and predictors) or ``"ssd"`` (plain-conv extras, 3x3 predictors).
        size: square input side the images are resized to (300 as SSD300, 320 as torchvision's ssdlite320).
        pretrained_backbone: the ``pretrained`` argument of ``backbones.create_backbone``.
        backbone_kwargs: more ``create_backbone`` arguments (e.g. ``act_layer="relu"``, ``frozen_stages=1``).
        anchor_scales: ``len(maps) + 1`` default-box scales relative to ``size``; default 0.2..0.95 then 1.0.
        anchor_steps: per-map pixel step between default-box centres; default ``size / map size``.
        image_mean, image_std: normalization of [0, 1] RGB inputs; default: what the pretrained backbone weights
            expect (``backbone.preprocessing``), else mean 0.5, std 0.5 (inputs to [-1, 1], as torchvision).
        kwargs: the head's options (``heads.ssdlite.SSDLiteLayers``: ``extra_channels``, ``linear_extras``,
            ``pointwise_last``, ``norm``, ``act_layer``; ``heads.ssd.SSDLayers``: ``extra_channels``,
            ``pointwise_last``, ``act_layer``) and torchvision ``SSD``'s post-processing and matching options
            (``score_thresh``, ``nms_thresh``, ``detections_per_img``, ``topk_candidates``, ``iou_thresh``, ...).
    """
    check_choice("head", head, list(HEADS))
    head_keys = keyword_names(HEADS[head].__init__)
    check_keywords("create_detector", kwargs, SSD_KEYWORDS | head_keys | keyword_names(create_detector))
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"num_classes counts the background too and must be an int >= 2, got {num_classes!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 32:
        raise ValueError(f"size must be an int >= 32 (e.g. 300 or 320), got {size!r}")
    layers = HEADS[head](**{k: v for k, v in kwargs.items() if k in head_keys})
    ssd_kwargs = {k: v for k, v in kwargs.items() if k not in head_keys}
    backbone = detection_backbone(backbone_name, pretrained=pretrained_backbone, **(backbone_kwargs or {}))
    features = DetectionFeatures(backbone, layers)
    num_maps = len(features.out_channels)
    scales = _anchor_arg("anchor_scales", anchor_scales, num_maps + 1)
    steps = _anchor_arg("anchor_steps", anchor_steps, num_maps)
    anchors = SSDBoxGenerator([list(ASPECT_RATIOS)] * num_maps, min_ratio=0.2, max_ratio=0.95, scales=scales,
                              steps=steps)
    scoring = DetectionHead(features.out_channels, anchors.num_anchors_per_location(), num_classes, layers)
    layers.init_weights(features.extras)
    layers.init_weights(scoring)
    mean, std = _normalization(backbone, image_mean, image_std)
    model = SSDDetector(features, anchors, (size, size), num_classes, image_mean=mean, image_std=std, head=scoring,
                        **ssd_kwargs)
    model.head_name = head
    return model
