"""The one place where strides become dilations (DeepLab atrous rule, DeepLabV3 §3.1).

Walking the stages, a stage whose stride would take the network past ``output_stride`` runs at stride 1
instead; its first block keeps the dilation reached so far and the blocks after it multiply that dilation by
the stride that was removed. This matches timm's EfficientNet builder, so parameter shapes never change and one
checkpoint serves output strides 8, 16 and 32.
"""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence

OUTPUT_STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class StagePlan:
    """How to build one stage: the first block's stride and dilation, and the dilation of the rest."""

    stride: int
    first_dilation: int
    dilation: int
    out_stride: int


def plan_stages(stage_strides: Sequence[int], output_stride: int, input_stride: int) -> list[StagePlan]:
    """Plan the stages that follow a stem of stride ``input_stride``.

    Args:
        stage_strides: nominal stride of each stage's first block (1 or 2).
        output_stride: the largest stride any map may have; one of 8, 16, 32.
        input_stride: stride of the stem that feeds the first stage.
    """
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {list(OUTPUT_STRIDES)}, got {output_stride!r}")
    current, dilation, plans = input_stride, 1, []
    for stride in stage_strides:
        first_dilation = dilation
        if stride > 1 and current * stride > output_stride:
            dilation *= stride
            stride = 1
        current *= stride
        plans.append(StagePlan(stride, first_dilation, dilation, current))
    return plans
