"""ShuffleNetV1 (Zhang et al., 2018) as a multi-scale feature extractor, laid out as the official megvii release."""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .base import Backbone, FeatureInfo, check_choice, check_out_indices
from .blocks import ConvNormAct, ShuffleUnit, Stage, make_divisible
from .dilation import plan_stages

# Paper Table 1: output channels of stage 2 at width 1.0 for each group count (stages 3 and 4 double it).
STAGE2_CHANNELS: dict[int, int] = {1: 144, 2: 200, 3: 240, 4: 272, 8: 384}
STAGE_REPEATS = (4, 8, 4)
# Stem channels of the official release per width; rounded up to a multiple of the group count.
STEM_CHANNELS: dict[float, int] = {0.5: 12, 1.0: 24, 1.5: 24, 2.0: 48}
WIDTHS = tuple(STEM_CHANNELS)
GROUPS = tuple(STAGE2_CHANNELS)


def stage_channels(groups: int, width: float) -> tuple[int, list[int]]:
    """Stem and stage channels; stages are multiples of ``4 * groups`` so each unit's bottleneck splits evenly.

    For ``groups`` 3 and 8 this reproduces the official tables exactly (e.g. g3 1.0x: 24, [240, 480, 960]).
    """
    stem = -(-STEM_CHANNELS[width] // groups) * groups
    base = make_divisible(STAGE2_CHANNELS[groups] * width, 4 * groups)
    return stem, [base, 2 * base, 4 * base]


class ShuffleNetV1(Backbone):
    """ShuffleNetV1 feature extractor.

    Taps: ``stem`` (3x3 conv s2 + BN + ReLU) @2, ``maxpool`` @4, ``stages.0..2`` @8/16/32. With output stride
    16 or 8 the late stages run at stride 1 with dilated depthwise convs and stride-1 average-pool shortcuts.

    Args:
        groups: group count of the 1x1 convs (paper §3.3): one of 1, 2, 3, 4, 8.
        width: channel multiplier ``s`` of "ShuffleNet s×": one of 0.5, 1.0, 1.5, 2.0.
    """

    def __init__(self, groups: int = 3, width: float = 1.0, *, out_indices: Sequence[int] | None = None,
                 output_stride: int = 32, in_chans: int = 3, frozen_stages: int = -1,
                 norm_eval: bool = False) -> None:
        super().__init__()
        check_choice("groups", groups, GROUPS)
        check_choice("width", width, WIDTHS)
        self._init_arguments(in_chans=in_chans, output_stride=output_stride, frozen_stages=frozen_stages,
                             norm_eval=norm_eval, num_stages=len(STAGE_REPEATS))
        self.groups, self.width = groups, width

        stem_chs, chans = stage_channels(groups, width)
        plans = plan_stages([2] * len(STAGE_REPEATS), output_stride, input_stride=4)
        info = [FeatureInfo(stem_chs, 2, "stem"), FeatureInfo(stem_chs, 4, "maxpool")]
        info += [FeatureInfo(c, p.out_stride, f"stages.{i}") for i, (c, p) in enumerate(zip(chans, plans))]
        self.feature_info = tuple(info)
        self.out_indices = check_out_indices(out_indices, info, default=range(len(info)))
        self.detection_indices = (len(info) - 2, len(info) - 1)
        num_stages = max(self.out_indices) - 1

        self.stem = ConvNormAct(in_chans, stem_chs, 3, stride=2)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages, in_chs = [], stem_chs
        for i, (n, out_chs, plan) in enumerate(zip(STAGE_REPEATS, chans, plans)):
            if i >= num_stages:
                break
            units = []
            for j in range(n):
                units.append(ShuffleUnit(in_chs, out_chs, groups=groups, downsample=j == 0,
                                         stride=plan.stride if j == 0 else 1,
                                         dilation=plan.first_dilation if j == 0 else plan.dilation,
                                         first_groups=1 if i == 0 and j == 0 else None))
                in_chs = out_chs
            stages.append(Stage(*units))
        self.stages = nn.Sequential(*stages)
        self._freeze()

    def stage_modules(self) -> list[nn.Module]:
        return [nn.ModuleList([self.stem, self.maxpool]), *self.stages]

    def forward_taps(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        taps = [x]
        x = self.maxpool(x)
        taps.append(x)
        for stage in self.stages:
            x = stage(x)
            taps.append(x)
        return taps
