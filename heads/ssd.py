"""The original SSD head (Liu et al., 2016, §2.1 and Fig. 2): plain-conv extra layers and 3x3 conv predictors.

As MobileNetV1-SSD (pytorch-ssd ``mb1-ssd``) builds it on a MobileNet: each extra layer is a 1x1 conv with
bias -> ReLU -> 3x3 stride-2 conv with bias -> ReLU, no BatchNorm; each map is scored by one plain 3x3 conv per
output (classes, box deltas). ``create_detector(..., head="ssd")`` builds these from the keywords of
:class:`SSDLayers`; the detector around them is :mod:`heads.detector`.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from backbones.blocks import ActLayer, ConvNormAct, act_layer_class

from .ssdlite import check_extra_channels

# (mid, out) channels of each extra layer: MobileNetV1-SSD's 1024 -> 512 -> 256 -> 256 -> 256.
EXTRA_CHANNELS: tuple[tuple[int, int], ...] = ((256, 512), (128, 256), (128, 256), (128, 256))


class SSDExtraBlock(nn.Sequential):
    """One SSD extra layer: 1x1 conv -> act -> 3x3 stride-2 conv -> act, convs with bias and no BN.

    ``(N, C_in, H, W) -> (N, C_out, ceil(H / 2), ceil(W / 2))``.
    """

    def __init__(self, in_chs: int, out_chs: int, *, mid_chs: int, act_layer: ActLayer = nn.ReLU) -> None:
        super().__init__(ConvNormAct(in_chs, mid_chs, act_layer=act_layer, norm=False),
                         ConvNormAct(mid_chs, out_chs, 3, stride=2, act_layer=act_layer, norm=False))


class SSDLayers:
    """The SSD extras and predictors of a detector.

    Args:
        extra_channels: ``(mid, out)`` channels of each extra layer; their number sets the maps (2 + len).
        pointwise_last: a 1x1 instead of a 3x3 predictor on the last map (MobileNetV1-SSD keeps the 3x3, which on
            its 1x1 map reads only the centre tap).
        act_layer: ``"relu"`` (paper) or ``"relu6"``.
    """

    def __init__(self, *, extra_channels: Sequence[tuple[int, int]] = EXTRA_CHANNELS, pointwise_last: bool = False,
                 act_layer: str = "relu") -> None:
        self.extra_channels = check_extra_channels(extra_channels)
        self.pointwise_last = pointwise_last
        self.act = act_layer_class(act_layer)

    def extras(self, in_chs: int) -> nn.ModuleList:
        """One :class:`SSDExtraBlock` per ``extra_channels`` entry, each reading the previous map."""
        extras = []
        for mid_chs, out_chs in self.extra_channels:
            extras.append(SSDExtraBlock(in_chs, out_chs, mid_chs=mid_chs, act_layer=self.act))
            in_chs = out_chs
        return nn.ModuleList(extras)

    def predictors(self, in_channels: Sequence[int], out_channels: Sequence[int]) -> nn.ModuleList:
        """Per map one 3x3 conv with bias (padding 1); optionally a 1x1 on the last map."""
        last = len(in_channels) - 1
        return nn.ModuleList(nn.Conv2d(i, o, 1) if self.pointwise_last and k == last else nn.Conv2d(i, o, 3, padding=1)
                             for k, (i, o) in enumerate(zip(in_channels, out_channels)))

    @staticmethod
    def init_weights(module: nn.Module) -> None:
        """Xavier-uniform conv weights and zero biases, as torchvision's SSD and pytorch-ssd initialize them."""
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
