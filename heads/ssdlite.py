"""What makes a detector SSDLite (MobileNetV2 paper §6.2): separable extra layers and separable predictors.

The detector around them (backbone taps, anchors, matching, loss, post-processing) is :mod:`heads.detector`;
``create_detector(..., head="ssdlite")`` builds these layers from the keywords of :class:`SSDLiteLayers`.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from backbones.blocks import ActLayer, ConvNormAct, act_layer_class

# (mid, out) channels of each extra layer, as in the TF Object Detection API and torchvision (mid = out // 2).
EXTRA_CHANNELS: tuple[tuple[int, int], ...] = ((256, 512), (128, 256), (128, 256), (64, 128))


class ExtraBlock(nn.Sequential):
    """One SSDLite extra layer: 1x1 conv -> depthwise 3x3 stride 2 -> 1x1 conv, each with BN (or bias, ``norm=False``).

    ``(N, C_in, H, W) -> (N, C_out, ceil(H / 2), ceil(W / 2))``. The activation follows every conv as in the TF
    Object Detection API; ``linear=True`` leaves it off the last one (an inverted residual without skip, as the
    popular PyTorch MobileNetV2-SSDLite builds its extras).
    """

    def __init__(self, in_chs: int, out_chs: int, *, mid_chs: int, linear: bool = False, norm: bool = True,
                 act_layer: ActLayer = nn.ReLU6) -> None:
        super().__init__(
            ConvNormAct(in_chs, mid_chs, act_layer=act_layer, norm=norm),
            ConvNormAct(mid_chs, mid_chs, 3, stride=2, groups=mid_chs, act_layer=act_layer, norm=norm),
            ConvNormAct(mid_chs, out_chs, act_layer=None if linear else act_layer, norm=norm),
        )


def check_extra_channels(extra_channels: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """``extra_channels`` as a list of ``(mid, out)`` pairs of positive ints (may be empty: no extra maps)."""
    pairs = [tuple(p) for p in extra_channels] if isinstance(extra_channels, Sequence) else None
    if pairs is None or not all(len(p) == 2 and all(isinstance(c, int) and c > 0 for c in p) for p in pairs):
        raise ValueError(f"extra_channels must be a sequence of (mid, out) channel pairs, got {extra_channels!r}")
    return pairs


def normal_init(module: nn.Module, std: float = 0.03) -> None:
    """Conv weights ~ N(0, std), biases 0, as torchvision's SSDLite initializes its extras and predictors."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class SSDLiteLayers:
    """The SSDLite extras and predictors of a detector.

    Args:
        extra_channels: ``(mid, out)`` channels of each extra layer; their number sets the maps (2 + len).
        linear_extras: no activation after the extras' last 1x1 (inverted-residual extras).
        pointwise_last: a plain 1x1 conv instead of the separable predictor on the last map.
        norm: BatchNorm after every conv but the predictors' 1x1; ``False``: conv biases instead, no BN (as
            pytorch-ssd's ``mb1-ssd-lite``).
        act_layer: ``"relu6"`` (paper) or ``"relu"``.
    """

    def __init__(self, *, extra_channels: Sequence[tuple[int, int]] = EXTRA_CHANNELS, linear_extras: bool = False,
                 pointwise_last: bool = False, norm: bool = True, act_layer: str = "relu6") -> None:
        self.extra_channels = check_extra_channels(extra_channels)
        self.linear_extras, self.pointwise_last, self.norm = linear_extras, pointwise_last, norm
        self.act = act_layer_class(act_layer)

    def extras(self, in_chs: int) -> nn.ModuleList:
        """One :class:`ExtraBlock` per ``extra_channels`` entry, each reading the previous map."""
        extras = []
        for mid_chs, out_chs in self.extra_channels:
            extras.append(ExtraBlock(in_chs, out_chs, mid_chs=mid_chs, linear=self.linear_extras, norm=self.norm,
                                     act_layer=self.act))
            in_chs = out_chs
        return nn.ModuleList(extras)

    def predictors(self, in_channels: Sequence[int], out_channels: Sequence[int]) -> nn.ModuleList:
        """Per map: depthwise 3x3 + BN + act -> 1x1 conv with bias (paper §6.2); optionally a lone 1x1 on the last."""
        layers = []
        for i, (in_chs, out_chs) in enumerate(zip(in_channels, out_channels)):
            pointwise = nn.Conv2d(in_chs, out_chs, 1)
            if self.pointwise_last and i == len(in_channels) - 1:
                layers.append(pointwise)
            else:
                dw = ConvNormAct(in_chs, in_chs, 3, groups=in_chs, act_layer=self.act, norm=self.norm)
                layers.append(nn.Sequential(dw, pointwise))
        return nn.ModuleList(layers)

    @staticmethod
    def init_weights(module: nn.Module) -> None:
        normal_init(module)
