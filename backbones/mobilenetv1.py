"""MobileNetV1 (Howard et al., 2017) as a multi-scale feature extractor, classifier removed."""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .base import Backbone, FeatureInfo, check_out_indices, check_width
from .blocks import ConvNormAct, DepthwiseSeparable, act_layer_class, make_divisible
from .dilation import plan_stages

# Paper Table 1 after the stem, grouped into stages that each end at a new stride (as timm groups them):
# c = output channels at width 1.0, n = depthwise-separable blocks, s = stride of the first block.
# Per block that is 64, 128, 128, 256, 256, 512 x6, 1024, 1024 with strides 1,2,1,2,1,2,1,1,1,1,1,2,1.
ARCH: tuple[tuple[int, int, int], ...] = (
    # c,  n, s
    (64, 1, 1),
    (128, 2, 2),
    (256, 2, 2),
    (512, 6, 2),
    (1024, 2, 2),
)
STEM_CHANNELS = 32
WIDTHS = (0.25, 0.5, 0.75, 1.0, 1.25)  # the registered names; any width in [0.1, 4.0] builds


class MobileNetV1(Backbone):
    """MobileNetV1 feature extractor.

    A 3x3 stride-2 conv stem, then 13 depthwise-separable blocks (paper §3.1). Taps are the last block at each
    stride, ``stages.0..4``: 64@2, 128@4, 256@8, 512@16, 1024@32 at width 1.0, all selected by default.
    ``detection_indices`` are the 512@16 and 1024@32 maps, the ones MobileNetV1-SSD reads.

    Args:
        width: width multiplier (paper §3.3); channels are rounded to multiples of 8 as timm does, which for
            0.25, 0.5, 0.75 and 1.0 equals the paper's ``int(c * width)``.
        act_layer: ``"relu"`` (paper, and the popular PyTorch port) or ``"relu6"`` (TF-slim and timm weights).
    """

    def __init__(self, width: float = 1.0, *, out_indices: Sequence[int] | None = None, output_stride: int = 32,
                 in_chans: int = 3, frozen_stages: int = -1, norm_eval: bool = False,
                 act_layer: str = "relu") -> None:
        super().__init__()
        check_width(width, WIDTHS)
        act = act_layer_class(act_layer)
        self._init_arguments(in_chans=in_chans, output_stride=output_stride, frozen_stages=frozen_stages,
                             norm_eval=norm_eval, num_stages=len(ARCH))
        self.width, self.act_layer = width, act_layer

        plans = plan_stages([s for *_, s in ARCH], output_stride, input_stride=2)
        chans = [make_divisible(c * width) for c, _, _ in ARCH]
        info = [FeatureInfo(c, p.out_stride, f"stages.{i}") for i, (c, p) in enumerate(zip(chans, plans))]
        self.feature_info = tuple(info)
        self.out_indices = check_out_indices(out_indices, info, default=range(len(info)))
        self.detection_indices = (len(info) - 2, len(info) - 1)

        self.stem = ConvNormAct(in_chans, make_divisible(STEM_CHANNELS * width), 3, stride=2, act_layer=act)
        stages, in_chs = [], self.stem.conv.out_channels
        for (_, n, _), out_chs, plan in list(zip(ARCH, chans, plans))[: max(self.out_indices) + 1]:
            blocks = []
            for j in range(n):
                blocks.append(DepthwiseSeparable(in_chs, out_chs, stride=plan.stride if j == 0 else 1, act_layer=act,
                                                 dilation=plan.first_dilation if j == 0 else plan.dilation))
                in_chs = out_chs
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self._freeze()

    def stage_modules(self) -> list[nn.Module]:
        return [self.stem, *self.stages]

    def forward_taps(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        taps: list[Tensor] = []
        for stage in self.stages:
            x = stage(x)
            taps.append(x)
        return taps
