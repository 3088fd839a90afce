"""MobileNetV2 (Sandler et al., 2018) as a multi-scale feature extractor, classifier removed."""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .base import Backbone, FeatureInfo, check_out_indices, check_width
from .blocks import ConvNormAct, InvertedResidual, Stage, act_layer_class, make_divisible
from .dilation import plan_stages

# Paper Table 2, one row per stage: t = expansion ratio, c = output channels at width 1.0,
# n = number of blocks, s = stride of the first block.
ARCH: tuple[tuple[int, int, int, int], ...] = (
    # t,   c, n, s
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
WIDTHS = (0.35, 0.5, 0.75, 1.0, 1.4)  # the registered names; any width in [0.1, 4.0] builds


class MobileNetV2(Backbone):
    """MobileNetV2 feature extractor.

    Taps, execution order (width 1.0): ``stages.0`` 16@2, ``stages.1`` 24@4, ``stages.2`` 32@8, ``stages.4``
    96@16, the SSDLite expansion ``stages.5.0.expand`` 576@16 (paper §6.2), ``stages.6`` 320@32 and the final
    1x1 conv ``head`` 1280@32. Default ``out_indices`` are the five stage outputs at strides 2..32.

    Args:
        width: channel multiplier (paper §5.1); channels are rounded to multiples of 8, the head never shrinks.
        act_layer: ``"relu6"`` (paper) or ``"relu"`` (friendlier to old ONNX exporters).
    """

    def __init__(self, width: float = 1.0, *, out_indices: Sequence[int] | None = None, output_stride: int = 32,
                 in_chans: int = 3, frozen_stages: int = -1, norm_eval: bool = False,
                 act_layer: str = "relu6") -> None:
        super().__init__()
        check_width(width, WIDTHS)
        act = act_layer_class(act_layer)
        self._init_arguments(in_chans=in_chans, output_stride=output_stride, frozen_stages=frozen_stages,
                             norm_eval=norm_eval, num_stages=len(ARCH))
        self.width, self.act_layer = width, act_layer

        plans = plan_stages([s for *_, s in ARCH], output_stride, input_stride=2)
        chans = [make_divisible(c * width) for _, c, _, _ in ARCH]
        head_chs = make_divisible(HEAD_CHANNELS * max(1.0, width))
        # A stage is tapped when it is the last one at its stride; the expansion tap is the last downsampling one.
        tapped = [i for i in range(len(ARCH)) if i + 1 == len(ARCH) or ARCH[i + 1][3] > 1]
        self.expansion_stage = max(i for i, row in enumerate(ARCH) if row[3] > 1)
        info, stage_of_tap, stage_taps = [], [], []
        for i in range(len(ARCH)):
            if i == self.expansion_stage:
                info.append(FeatureInfo(chans[i - 1] * ARCH[i][0], plans[i - 1].out_stride, f"stages.{i}.0.expand"))
                stage_of_tap.append(i)
            if i in tapped:
                stage_taps.append(len(info))
                info.append(FeatureInfo(chans[i], plans[i].out_stride, f"stages.{i}"))
                stage_of_tap.append(i)
        info.append(FeatureInfo(head_chs, plans[-1].out_stride, "head"))
        stage_of_tap.append(len(ARCH))
        self.feature_info = tuple(info)
        self.out_indices = check_out_indices(out_indices, info, default=stage_taps)
        self.detection_indices = (len(info) - 3, len(info) - 1)
        self.tapped_stages = tapped
        last_stage = stage_of_tap[max(self.out_indices)]

        self.stem = ConvNormAct(in_chans, make_divisible(STEM_CHANNELS * width), 3, stride=2, act_layer=act)
        stages, in_chs = [], self.stem.conv.out_channels
        for i, ((t, _, n, _), out_chs, plan) in enumerate(zip(ARCH, chans, plans)):
            if i > last_stage:
                break
            blocks = []
            for j in range(n):
                blocks.append(InvertedResidual(in_chs, out_chs, stride=plan.stride if j == 0 else 1,
                                               expand_ratio=t, act_layer=act,
                                               dilation=plan.first_dilation if j == 0 else plan.dilation))
                in_chs = out_chs
            stages.append(Stage(*blocks))
        self.stages = nn.Sequential(*stages)
        self.head = ConvNormAct(in_chs, head_chs, act_layer=act) if last_stage == len(ARCH) else None
        self._freeze()

    def stage_modules(self) -> list[nn.Module]:
        return [self.stem, *self.stages]

    def forward_taps(self, x: Tensor) -> list[Tensor]:
        taps: list[Tensor] = []
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            if i == self.expansion_stage:
                x, expanded = stage.forward_with_expansion(x)
                taps.append(expanded)
            else:
                x = stage(x)
            if i in self.tapped_stages:
                taps.append(x)
        if self.head is not None:
            taps.append(self.head(x))
        return taps
