"""Building blocks shared by the backbones: conv-BN-act, MobileNetV1's depthwise-separable block, MobileNetV2's
inverted residual, ShuffleNet's unit."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import check_choice

ActLayer = Callable[..., nn.Module]
# Activations an architecture can be built with, by the name its ``act_layer`` argument takes.
ACT_LAYERS: dict[str, type[nn.Module]] = {"relu6": nn.ReLU6, "relu": nn.ReLU}


def act_layer_class(name: str) -> type[nn.Module]:
    """The activation class of ``act_layer=name``; a ValueError lists the valid names."""
    check_choice("act_layer", name, list(ACT_LAYERS))
    return ACT_LAYERS[name]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never losing more than 10% (MobileNetV2 §3.4 code)."""
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """ShuffleNet §3.1 channel shuffle in the official release's order: ``(C//g, g) -> (g, C//g)``.

    Output channel ``k * (C // g) + j`` takes input channel ``j * g + k``; this is the inverse of the
    ``view(g, C//g).transpose`` form and is what the official checkpoints were trained with. A channels_last input
    gives a channels_last output (shuffled in its NHWC view), so the fast path does not fall back to NCHW here.
    """
    n, c, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        nhwc = x.permute(0, 2, 3, 1).reshape(n, h, w, c // groups, groups).transpose(3, 4)
        return nhwc.reshape(n, h, w, c).permute(0, 3, 1, 2)
    return x.reshape(n, c // groups, groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ConvNormAct(nn.Sequential):
    """``Conv2d(bias=False) -> BatchNorm2d -> act``; ``act_layer=None`` leaves the activation out.

    A ``Sequential`` of ``conv``, ``bn`` and ``act``, as torchvision's ``Conv2dNormActivation``: its forward walks
    the children, where a written-out ``self.act(self.bn(self.conv(x)))`` paid ``nn.Module.__getattr__`` for each
    (MobileNetV2 224x224 on one CPU thread: 2-3% of the forward, the gap to torchvision's same network).

    ``norm=False`` gives ``Conv2d(bias=True) -> act`` instead (``bn`` is an identity), as detection heads without
    BatchNorm are built. Padding is ``dilation * (kernel_size // 2)``, so a stride-``s`` conv maps ``H`` to
    ``ceil(H / s)``.
    """

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, *, stride: int = 1, dilation: int = 1,
                 groups: int = 1, act_layer: ActLayer | None = nn.ReLU, norm: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, dilation * (kernel_size // 2), dilation,
                              groups, bias=not norm)
        self.bn = nn.BatchNorm2d(out_chs) if norm else nn.Identity()
        self.act = act_layer(inplace=True) if act_layer is not None else nn.Identity()


class DepthwiseSeparable(nn.Module):
    """MobileNetV1 block (paper §3.1, Fig. 3 right): 3x3 depthwise conv-BN-act -> 1x1 pointwise conv-BN-act.

    No skip connection. ``(N, in_chs, H, W) -> (N, out_chs, ceil(H / stride), ceil(W / stride))``.
    """

    def __init__(self, in_chs: int, out_chs: int, *, stride: int, dilation: int = 1,
                 act_layer: ActLayer = nn.ReLU) -> None:
        super().__init__()
        self.dw = ConvNormAct(in_chs, in_chs, 3, stride=stride, dilation=dilation, groups=in_chs, act_layer=act_layer)
        self.pw = ConvNormAct(in_chs, out_chs, act_layer=act_layer)

    def forward(self, x: Tensor) -> Tensor:
        return self.pw(self.dw(x))


class InvertedResidual(nn.Module):
    """MobileNetV2 bottleneck (paper §3.3, Table 1): 1x1 expand -> 3x3 depthwise -> linear 1x1 project.

    The expansion is left out when ``expand_ratio == 1``. The skip connection is used when the block keeps both
    resolution and width. :meth:`forward_with_expansion` also returns the expansion output (the SSDLite tap,
    paper §6.2); for ``expand_ratio == 1`` that is the block input.
    """

    def __init__(self, in_chs: int, out_chs: int, *, stride: int, expand_ratio: int, dilation: int = 1,
                 act_layer: ActLayer = nn.ReLU6) -> None:
        super().__init__()
        mid_chs = in_chs * expand_ratio
        self.expand = ConvNormAct(in_chs, mid_chs, act_layer=act_layer) if expand_ratio != 1 else None
        self.dw = ConvNormAct(mid_chs, mid_chs, 3, stride=stride, dilation=dilation, groups=mid_chs,
                              act_layer=act_layer)
        self.project = ConvNormAct(mid_chs, out_chs, act_layer=None)
        self.use_skip = stride == 1 and in_chs == out_chs

    def forward_with_expansion(self, x: Tensor) -> tuple[Tensor, Tensor]:
        expanded = self.expand(x) if self.expand is not None else x
        out = self.project(self.dw(expanded))
        if self.use_skip:
            out = out + x
        return out, expanded

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_expansion(x)[0]


class ShuffleUnit(nn.Module):
    """ShuffleNet unit (paper §3.2, Fig. 2b/c), laid out as the official release.

    Main branch: grouped 1x1 -> BN -> ReLU -> 3x3 depthwise (stride, dilation) -> BN -> shuffle -> grouped
    1x1 -> BN. Stride 1: ``relu(x + main)``. Downsampling units (stride 2, or stride 1 where dilation replaced the
    stride) concatenate a 3x3 average-pooled shortcut: ``cat(avgpool(x), relu(main))``.
    """

    def __init__(self, in_chs: int, out_chs: int, *, groups: int, stride: int, downsample: bool,
                 dilation: int = 1, first_groups: int | None = None) -> None:
        super().__init__()
        mid_chs = out_chs // 4
        branch_chs = out_chs - in_chs if downsample else out_chs
        self.groups = groups
        self.gconv1 = ConvNormAct(in_chs, mid_chs, groups=groups if first_groups is None else first_groups)
        self.dw = ConvNormAct(mid_chs, mid_chs, 3, stride=stride, dilation=dilation, groups=mid_chs,
                              act_layer=None)
        self.gconv2 = ConvNormAct(mid_chs, branch_chs, groups=groups, act_layer=None)
        self.shortcut = nn.AvgPool2d(3, stride, 1) if downsample else None

    def forward(self, x: Tensor) -> Tensor:
        out = self.dw(self.gconv1(x))
        if self.groups > 1:
            out = channel_shuffle(out, self.groups)
        out = self.gconv2(out)
        if self.shortcut is not None:
            return torch.cat([self.shortcut(x), F.relu(out)], dim=1)
        return F.relu(x + out)


class Stage(nn.Sequential):
    """A run of blocks; :meth:`forward_with_expansion` also returns the first block's expansion output."""

    def forward_with_expansion(self, x: Tensor) -> tuple[Tensor, Tensor]:
        expanded = x
        for i, block in enumerate(self):
            if i == 0:
                x, expanded = block.forward_with_expansion(x)
            else:
                x = block(x)
        return x, expanded
