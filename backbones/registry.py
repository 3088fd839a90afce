"""Named backbone configurations and the ``create_backbone`` factory."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from collections.abc import Mapping, Sequence

from torch import Tensor

from .base import Backbone, check_keywords, keyword_names
from .mobilenetv1 import WIDTHS as MNV1_WIDTHS, MobileNetV1
from .mobilenetv2 import WIDTHS as MNV2_WIDTHS, MobileNetV2
from .shufflenetv1 import GROUPS, WIDTHS, ShuffleNetV1
from .weights import check_source_arch, load_pretrained

PREFIX = "ld_"


@dataclass(frozen=True)
class BackboneSpec:
    """A registered name: the class and its architecture kwargs."""

    cls: type[Backbone]
    kwargs: Mapping[str, Any]


def _width_tag(width: float) -> str:
    return f"{round(width * 100):03d}"


_SPECS: dict[str, BackboneSpec] = {}
for _w in MNV1_WIDTHS:
    _SPECS[f"{PREFIX}mobilenetv1_{_width_tag(_w)}"] = BackboneSpec(MobileNetV1, {"width": _w})
for _w in MNV2_WIDTHS:
    _SPECS[f"{PREFIX}mobilenetv2_{_width_tag(_w)}"] = BackboneSpec(MobileNetV2, {"width": _w})
for _g in GROUPS:
    for _w in WIDTHS:
        _SPECS[f"{PREFIX}shufflenetv1_g{_g}_{_width_tag(_w)}"] = BackboneSpec(ShuffleNetV1, {"groups": _g, "width": _w})


def list_backbones(pattern: str = "") -> list[str]:
    """Registered backbone names containing ``pattern``, sorted."""
    return sorted(name for name in _SPECS if pattern in name)


def get_spec(name: str) -> BackboneSpec:
    """The spec of ``name``; unknown names raise a ValueError listing the valid ones."""
    if name not in _SPECS:
        raise ValueError(f"unknown backbone {name!r}; valid names are: {', '.join(list_backbones())}")
    return _SPECS[name]


def backbone_keywords(name: str) -> set[str]:
    """Every keyword :func:`create_backbone` accepts for ``name`` (its own and its architecture's)."""
    return (keyword_names(create_backbone) | keyword_names(get_spec(name).cls.__init__)) - {"name"}


def create_backbone(name: str, *, pretrained: bool | str | Mapping[str, Tensor] = False,
                    out_indices: Sequence[int] | None = None, output_stride: int = 32, in_chans: int = 3,
                    frozen_stages: int = -1, norm_eval: bool = False, **arch_kwargs: Any) -> Backbone:
    """Build a registered backbone.

    Args:
        name: one of :func:`list_backbones`.
        pretrained: ``False``; ``True`` for the default named weights; a named source (e.g. ``"torchvision_v1"``);
            a local path (``.pth``/``.safetensors``); an ``http(s)://`` URL; or a state dict. Any layout that
            :mod:`backbones.weights` understands loads; the source's preprocessing lands in ``model.preprocessing``.
        out_indices: taps to return (indices into ``feature_info``); default the stage outputs at strides 2..32.
        output_stride: 32, 16 or 8; the last stages are dilated instead of strided.
        in_chans: input channels; pretrained RGB stems are adapted.
        frozen_stages: freeze the stem (0) and the first N stages; -1 freezes nothing.
        norm_eval: keep every BatchNorm in eval mode while training.
        arch_kwargs: overrides of the architecture (e.g. ``act_layer="relu"`` for MobileNetV2); a named source
            adds the ones its weights were trained with (``act_layer="relu6"`` for timm's MobileNetV1).
    """
    spec = get_spec(name)
    check_keywords("create_backbone", arch_kwargs, backbone_keywords(name))
    arch_kwargs = check_source_arch(name, pretrained, arch_kwargs)
    model = spec.cls(**{**spec.kwargs, **arch_kwargs}, out_indices=out_indices, output_stride=output_stride,
                     in_chans=in_chans, frozen_stages=frozen_stages, norm_eval=norm_eval)
    model.name = name
    model.preprocessing = None
    if pretrained is not False and pretrained is not None:
        load_pretrained(model, pretrained)
    return model
