"""DeepLabV3+ (Chen et al., ECCV 2018) on any backbone that honours the feature contract.

The head reads only the ``(channels, strides)`` of its inputs: the deepest map feeds ASPP (DeepLabV3 §3.3), the
stride-4 map feeds the decoder's low-level branch (DeepLabV3+ §3.1). Every resize targets the real size of a
tensor, never a fixed scale factor, so any input size (513x513, 500x375, 65x97) gives logits of exactly that size.
"""
from __future__ import annotations

import os
from typing import Any
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones import create_backbone
from backbones.base import Backbone, check_choice, check_keywords, keyword_names
from backbones.registry import backbone_keywords
from backbones.blocks import ConvNormAct
from backbones.fuse import Fusable

ASPP_RATES = (6, 12, 18)  # atrous rates at output stride 16; scaled by 16 / stride of the deepest map
LOW_LEVEL_STRIDE = 4


class SeparableConv(nn.Sequential):
    """Depthwise-separable 3x3 conv (§3.2): depthwise 3x3 (no bias) -> pointwise 1x1 -> BN -> ReLU.

    No BN or ReLU between the two convs, as in smp's and the popular PyTorch ports' heads (TF DeepLab puts both
    there). Trained from scratch on small data the in-between BN-ReLU costs a lot: on the scenes set of
    ``tasks.compare_training`` (600 steps, plain SGD loop) it scored 38 mIoU against 79 without it.
    """

    def __init__(self, in_chs: int, out_chs: int, *, dilation: int = 1) -> None:
        super().__init__()
        self.dw = nn.Conv2d(in_chs, in_chs, 3, padding=dilation, dilation=dilation, groups=in_chs, bias=False)
        self.pw = ConvNormAct(in_chs, out_chs, 1)


def conv3x3(in_chs: int, out_chs: int, *, dilation: int = 1, separable: bool = False) -> nn.Module:
    """3x3 conv-BN-ReLU, or its depthwise-separable form :class:`SeparableConv`."""
    if separable:
        return SeparableConv(in_chs, out_chs, dilation=dilation)
    return ConvNormAct(in_chs, out_chs, 3, dilation=dilation)


class ImagePooling(nn.Module):
    """ASPP image-level branch (DeepLabV3 §3.3): global average pool -> 1x1 conv -> BN -> ReLU -> broadcast.

    BatchNorm over a single value per channel is undefined, so a plain BN in training mode on a batch of one
    normalises with its running statistics (as in eval) and leaves them unchanged. ``SyncBatchNorm`` is always
    called, since it pools the batch across processes; so is every BN under TorchScript.
    """

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.proj = ConvNormAct(in_chs, out_chs, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.proj.conv(x.mean((2, 3), keepdim=True))
        y = self.proj.bn(y) if torch.jit.is_scripting() else self._norm(y)
        return self.proj.act(y).expand(-1, -1, x.shape[2], x.shape[3])

    @torch.jit.unused
    def _norm(self, y: Tensor) -> Tensor:
        bn = self.proj.bn
        if self.training and y.shape[0] == 1 and not isinstance(bn, nn.SyncBatchNorm):
            return F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        return bn(y)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabV3 §3.3): a 1x1 conv, one 3x3 conv per atrous rate and image
    pooling, concatenated and projected by a 1x1 conv-BN-ReLU, then dropout. ``(N, C, h, w) -> (N, out, h, w)``.
    """

    def __init__(self, in_chs: int, out_chs: int = 256, *, rates: Sequence[int] = ASPP_RATES,
                 separable: bool = False, dropout: float = 0.1) -> None:
        super().__init__()
        self.branches = nn.ModuleList([ConvNormAct(in_chs, out_chs, 1)])
        self.branches.extend(conv3x3(in_chs, out_chs, dilation=r, separable=separable) for r in rates)
        self.pool = ImagePooling(in_chs, out_chs)
        self.project = ConvNormAct(out_chs * (len(rates) + 2), out_chs, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        outs = [branch(x) for branch in self.branches]
        outs.append(self.pool(x))
        return self.dropout(self.project(torch.cat(outs, dim=1)))


class DeepLabV3PlusHead(nn.Module):
    """DeepLabV3+ encoder head and decoder (paper §3.1, Fig. 2).

    ASPP runs on the last (deepest) input; the first stride-4 input goes through a 1x1 conv to
    ``low_level_channels``; the ASPP output is resized to the low-level map, concatenated after it
    (``[aspp, low_level]``), refined by two 3x3 convs and classified by a 1x1 conv.

    Args:
        in_channels: channels of the input maps, shallow to deep.
        strides: their strides; one must be 4 and the deepest must come last.
        num_classes: output channels of the classifier.
        aspp_channels, low_level_channels, decoder_channels: widths (paper: 256, 48, 256).
        aspp_rates: atrous rates at stride 16; the deepest map's stride ``s`` scales them by ``16 / s``.
        separable: depthwise-separable 3x3 convs in ASPP and decoder (paper §3.2).
        dropout: after the ASPP projection. classifier_dropout: before the classifier.
        align_corners: of every bilinear resize (``True`` matches TF DeepLab and its PyTorch ports).
    """

    def __init__(self, in_channels: Sequence[int], strides: Sequence[int], num_classes: int, *,
                 aspp_channels: int = 256, aspp_rates: Sequence[int] = ASPP_RATES, low_level_channels: int = 48,
                 decoder_channels: int = 256, separable: bool = False, dropout: float = 0.1,
                 classifier_dropout: float = 0.0, align_corners: bool = False) -> None:
        super().__init__()
        strides = list(strides)
        if len(in_channels) != len(strides) or LOW_LEVEL_STRIDE not in strides or strides != sorted(strides):
            raise ValueError(f"need one (channels, stride) per input, strides ascending with a stride-"
                             f"{LOW_LEVEL_STRIDE} map; got channels {list(in_channels)}, strides {strides}")
        self.low_level_index = strides.index(LOW_LEVEL_STRIDE)
        self.deep_index = len(strides) - 1
        if strides[-1] <= LOW_LEVEL_STRIDE:
            raise ValueError(f"the deepest input must be deeper than the stride-4 low-level one, got strides {strides}")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        self.align_corners = align_corners
        rates = [max(1, round(r * 16 / strides[-1])) for r in aspp_rates]
        self.aspp = ASPP(in_channels[-1], aspp_channels, rates=rates, separable=separable, dropout=dropout)
        self.low_level = ConvNormAct(in_channels[self.low_level_index], low_level_channels, 1)
        self.decoder = nn.Sequential(
            conv3x3(aspp_channels + low_level_channels, decoder_channels, separable=separable),
            conv3x3(decoder_channels, decoder_channels, separable=separable))
        self.classifier_dropout = nn.Dropout(classifier_dropout)
        self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def resize(self, x: Tensor, size: list[int]) -> Tensor:
        """Bilinear resize of ``x`` to exactly ``size`` (H, W), a tensor's ``shape[-2:]``.

        The sizes pass through untouched: ``int()`` would freeze them into constants under the ONNX tracer and
        specialize them under ``torch.export``, so exported graphs would run only at the export size.
        """
        return F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)

    def forward(self, features: list[Tensor], output_size: list[int] | None = None) -> Tensor:
        """Map the backbone's maps to logits ``(N, num_classes, H4, W4)`` at the stride-4 map's size, or at
        ``output_size`` when given."""
        low = self.low_level(features[self.low_level_index])
        deep = self.resize(self.aspp(features[self.deep_index]), low.shape[-2:])
        logits = self.classifier(self.classifier_dropout(self.decoder(torch.cat([deep, low], dim=1))))
        return logits if output_size is None else self.resize(logits, output_size)


class Segmenter(Fusable, nn.Module):
    """A backbone and a segmentation head: ``(N, in_chans, H, W) -> logits (N, num_classes, H, W)``.

    ``model.eval().fuse()`` gives the inference fast path (:class:`~backbones.fuse.Fusable`).
    """

    __jit_ignored_attributes__ = ["preprocessing"]

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        # How to prepare images (``backbones.weights.Preprocessing``), from the pretrained weights if any.
        self.preprocessing = getattr(backbone, "preprocessing", None)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x), output_size=x.shape[-2:])


ASPP_INPUTS = ("stage", "final")


def select_taps(backbone_name: str, *, output_stride: int, aspp_input: str = "stage",
                **backbone_kwargs: Any) -> list[int]:
    """``[low_level, deep]`` indices into ``feature_info``: the last stride-4 tap and the ASPP input.

    ``aspp_input="stage"`` is the deepest of the backbone's default taps, its last stage output (MobileNetV2: the
    320ch map, the cheaper choice of MobileNetV2 paper §6.3); ``"final"`` its last tap (MobileNetV2: the 1280ch
    1x1 conv, as smp's encoder feeds ASPP). The two are one tap on backbones without a conv after the last stage.
    """
    check_choice("aspp_input", aspp_input, ASPP_INPUTS)
    with torch.device("meta"):  # read the contract without allocating weights
        probe = create_backbone(backbone_name, output_stride=output_stride, **backbone_kwargs)
    deep = max(probe.out_indices) if aspp_input == "stage" else len(probe.feature_info) - 1
    low = [i for i, f in enumerate(probe.feature_info[:deep]) if f.stride == LOW_LEVEL_STRIDE]
    if not low:
        raise ValueError(f"backbone {backbone_name!r} has no stride-{LOW_LEVEL_STRIDE} tap for the decoder; taps: "
                         + ", ".join(f"{f.channels}ch@s{f.stride}" for f in probe.feature_info))
    return [low[-1], deep]


def create_segmenter(backbone_name: str, num_classes: int, *, output_stride: int = 16,
                     pretrained_backbone: bool | str | os.PathLike | Mapping[str, Tensor] = False,
                     out_indices: Sequence[int] | None = None, aspp_input: str | None = None,
                     **kwargs: Any) -> Segmenter:
    """Build a DeepLabV3+ :class:`Segmenter` on a registered backbone.

    Args:
        backbone_name: one of ``backbones.list_backbones()``.
        num_classes: number of classes (21 for PASCAL VOC, background included).
        output_stride: 8, 16 or 32; stride of the deepest map (the last stages are dilated, §3.1).
        pretrained_backbone: passed to ``create_backbone(pretrained=...)`` (``True``, a name, path, URL, dict).
        out_indices: backbone taps to read; default :func:`select_taps` (the stride-4 map and ``aspp_input``).
        aspp_input: ``"stage"`` (default: the last stage's output) or ``"final"`` (the backbone's last tap,
            MobileNetV2's 1280ch conv) feeds ASPP; see :func:`select_taps`. Give it or ``out_indices``, not both.
        kwargs: keywords of :class:`DeepLabV3PlusHead` go to the head, the rest to ``create_backbone``
            (``in_chans``, ``frozen_stages``, ``norm_eval``, ``act_layer``, ...).
    """
    head_keys = keyword_names(DeepLabV3PlusHead.__init__) - {"in_channels", "strides", "num_classes"}
    valid = head_keys | backbone_keywords(backbone_name) - {"pretrained"} | keyword_names(create_segmenter)
    check_keywords("create_segmenter", kwargs, valid)
    head_kwargs = {k: v for k, v in kwargs.items() if k in head_keys}
    backbone_kwargs = {k: v for k, v in kwargs.items() if k not in head_keys}
    if out_indices is not None and aspp_input is not None:
        raise ValueError(f"give out_indices or aspp_input, not both: out_indices {list(out_indices)} already names "
                         f"the ASPP input (the last index)")
    if out_indices is None:
        out_indices = select_taps(backbone_name, output_stride=output_stride, aspp_input=aspp_input or "stage",
                                  **backbone_kwargs)
    backbone = create_backbone(backbone_name, pretrained=pretrained_backbone, out_indices=out_indices,
                               output_stride=output_stride, **backbone_kwargs)
    head = DeepLabV3PlusHead(backbone.channels, backbone.strides, num_classes, **head_kwargs)
    return Segmenter(backbone, head)
