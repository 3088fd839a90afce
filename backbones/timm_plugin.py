"""Every backbone as a timm model: importing :mod:`backbones` registers each ``ld_*`` name with timm.

``timm.create_model(name, num_classes=N)`` gives an ImageNet classifier with timm's model interface;
``features_only=True`` gives timm's ``FeatureListNet`` (or ``feature_cls="getter"``) over the same modules, so
one checkpoint serves both. timm's feature taps are our taps that ``FeatureListNet`` can reach (top-level
children, or one ``Sequential`` deep): the stage outputs at strides 2..32 (indices 0..4) and, for MobileNetV2,
the 1280-channel ``head`` (index 5). A top-level conv-BN-act tap (ShuffleNetV1's ``stem``, MobileNetV2's ``head``)
is a ``Sequential`` that ``FeatureListNet`` splits into its layers, so timm names it by its last one
(``stem.act``). MobileNetV2's SSDLite expansion tap is left out, keeping timm's convention that indices 0..4 are
strides 2..32. All timm knowledge of the project lives here.

No ``from __future__ import annotations`` here: torch.fx copies ``forward``'s annotations into the code it
generates, and TorchScript must resolve them (timm's FX + TorchScript feature path).
"""

from typing import Any
from collections.abc import Mapping

import torch
from timm.layers import create_classifier, register_notrace_function
from timm.models import build_model_with_cfg, generate_default_cfgs, is_model
from timm.models import model_entrypoint, register_model
from timm.models._features import feature_take_indices
from torch import Tensor, nn

from .base import Backbone
from .blocks import ConvNormAct, channel_shuffle
from .mobilenetv1 import MobileNetV1
from .mobilenetv2 import MobileNetV2
from .registry import get_spec, list_backbones
from .shufflenetv1 import ShuffleNetV1
from .weights import (IMAGENET, MEGVII, PRETRAINED, Preprocessing, WeightSource, check_source_arch,
                      convert_state_dict)

__all__ = ["TimmMobileNetV1", "TimmMobileNetV2", "TimmShuffleNetV1", "timm_taps"]


def timm_taps(backbone: Backbone) -> list[int]:
    """Indices into ``backbone.feature_info`` of the taps timm's ``FeatureListNet`` can reach, in order."""
    return [i for i, f in enumerate(backbone.feature_info) if f.module.count(".") <= 1]


class TimmClassifier:
    """Mixin turning a :class:`~backbones.base.Backbone` into a timm classification model.

    The backbone is built whole (every tap, so MobileNetV2 keeps its ``head`` conv), then global pooling,
    dropout and a linear ``classifier`` follow the deepest tap. ``feature_info`` becomes timm's list of dicts
    over :func:`timm_taps`; our full tuple stays in ``taps``.
    """

    __jit_ignored_attributes__ = [*Backbone.__jit_ignored_attributes__, "taps"]
    default_drop_rate = 0.0

    def __init__(self, *, num_classes: int = 1000, global_pool: str = "avg", drop_rate: float | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs, out_indices=[-1])
        self.taps = self.feature_info
        self.tap_map = timm_taps(self)
        self.feature_info = [dict(num_chs=self.taps[i].channels, reduction=self.taps[i].stride,
                                  module=self._timm_module(self.taps[i].module)) for i in self.tap_map]
        self.trunk_names = [name for name, _ in self.named_children()]
        self.num_features = self.head_hidden_size = self.taps[-1].channels
        self.num_classes = num_classes
        self.drop_rate = self.default_drop_rate if drop_rate is None else drop_rate
        self.head_drop = nn.Dropout(self.drop_rate)
        self.global_pool, self.classifier = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        self._traits = {"first_conv": None}  # our weight converter adapts the stem to in_chans itself

    def _timm_module(self, name: str) -> str:
        """The module timm names for our tap ``name``: a top-level conv-BN-act is a ``Sequential`` that
        ``FeatureListNet(flatten_sequential=True)`` splits into its layers, so its output is its last layer's."""
        module = self.get_submodule(name)
        if not isinstance(module, ConvNormAct):
            return name
        return f"{name}.{[child for child, _ in module.named_children()][-1]}"

    @property
    def channels(self) -> list[int]:
        return [f["num_chs"] for f in self.feature_info]

    @property
    def strides(self) -> list[int]:
        return [f["reduction"] for f in self.feature_info]

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        """Replace the classifier (``num_classes=0``: none) and the pooling (``global_pool=""``: none)."""
        self.num_classes = num_classes
        self.global_pool, self.classifier = create_classifier(self.num_features, num_classes, pool_type=global_pool)

    def forward_features(self, x: Tensor) -> Tensor:
        """``(N, in_chans, H, W) -> (N, num_features, H / s, W / s)``: the deepest tap, unpooled."""
        if not torch.jit.is_scripting():
            self._check_input(x)
        return self.forward_taps(x)[-1]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.classifier(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: Tensor, indices: int | list[int] | None = None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """timm's intermediate-feature API; ``indices`` count ``feature_info`` (int: the last n taps)."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take, _ = feature_take_indices(len(self.tap_map), indices)
        taps = self.forward_taps(x)
        intermediates = [taps[self.tap_map[i]] for i in take]
        if intermediates_only:
            return intermediates
        return taps[-1], intermediates

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the modules after the deepest tap in ``indices`` (and the classifier); return the kept indices."""
        take, max_index = feature_take_indices(len(self.tap_map), indices)
        top, _, rest = self.taps[self.tap_map[max_index]].module.partition(".")
        names = self.trunk_names
        for name in names[names.index(top):]:
            module = getattr(self, name)
            if name != top:
                stage_list = isinstance(module, nn.Sequential) and not isinstance(module, ConvNormAct)
                setattr(self, name, module[:0] if stage_list else nn.Identity())
            elif rest:
                setattr(self, name, module[: int(rest) + 1])
        if prune_head:
            self.reset_classifier(0, "")
        return take


class TimmMobileNetV1(TimmClassifier, MobileNetV1):
    """MobileNetV1 classifier for timm: pooling and a linear layer after the last block (paper Table 1)."""


class TimmMobileNetV2(TimmClassifier, MobileNetV2):
    """MobileNetV2 classifier for timm (classifier dropout 0.2 as in the paper's training setup)."""

    default_drop_rate = 0.2


class TimmShuffleNetV1(TimmClassifier, ShuffleNetV1):
    """ShuffleNetV1 classifier for timm: pooling and a linear layer after stage 4, as the official release."""


# torch.fx (timm's FX feature extraction) cannot trace the shape arithmetic of the shuffle: keep it a leaf.
register_notrace_function(channel_shuffle)
TIMM_CLASSES: dict[type[Backbone], type[TimmClassifier]] = {MobileNetV1: TimmMobileNetV1, MobileNetV2: TimmMobileNetV2,
                                                            ShuffleNetV1: TimmShuffleNetV1}
# Preprocessing of a family's untagged cfg (no named weights): what its usual checkpoints expect.
FAMILY_PREPROCESSING: dict[type[Backbone], Preprocessing] = {ShuffleNetV1: MEGVII}


def _pretrained_filter(state_dict: Mapping[str, Tensor], model: TimmClassifier) -> dict[str, Tensor]:
    """Convert any layout :mod:`backbones.weights` reads; keep the classifier only where its shape fits."""
    out = convert_state_dict(model, state_dict, keep_classifier=True)
    classifier = model.classifier
    weight = out.get("classifier.weight")
    if weight is not None and isinstance(classifier, nn.Linear) and weight.shape == classifier.weight.shape:
        out.setdefault("classifier.bias", torch.zeros(weight.shape[0]))  # official ShuffleNetV1 has no bias
    else:
        out.pop("classifier.weight", None), out.pop("classifier.bias", None)
    return out


def _cfg(name: str, source: WeightSource | None = None) -> dict[str, Any]:
    """timm pretrained cfg; timm normalises ``pixels / 255``, so our input range folds into mean and std."""
    pre = source.preprocessing if source else FAMILY_PREPROCESSING.get(get_spec(name).cls, IMAGENET)
    cfg = dict(num_classes=1000, input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.875,
               interpolation="bilinear", mean=tuple(m / pre.input_range for m in pre.mean),
               std=tuple(s / pre.input_range for s in pre.std), first_conv="stem.conv", classifier="classifier")
    if source is not None:
        hub = source.location.startswith("hf-hub:")
        cfg["hf_hub_id" if hub else "url"] = source.location.removeprefix("hf-hub:")
    return cfg


def _with_source_arch(name: str, pretrained: bool, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Weights of a named source (the cfg tag, no local file) are built with the architecture they were trained
    with, e.g. ReLU6 for timm's MobileNetV1 weights."""
    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    tag = kwargs.get("pretrained_cfg")
    if not pretrained or overlay.get("file") or overlay.get("state_dict") or not (tag is None or isinstance(tag, str)):
        return kwargs
    return check_source_arch(name, tag or True, kwargs)


def _entrypoint(name: str):
    def create(pretrained: bool = False, **kwargs: Any) -> TimmClassifier:
        spec = get_spec(name)
        kwargs = _with_source_arch(name, pretrained, kwargs)
        return build_model_with_cfg(TIMM_CLASSES[spec.cls], name, pretrained, feature_cfg=dict(flatten_sequential=True),
                                    pretrained_filter_fn=_pretrained_filter, **{**spec.kwargs, **kwargs})

    create.__name__ = create.__qualname__ = name
    create.__doc__ = f"timm entry point of {name} (see :mod:`backbones.timm_plugin`)."
    return create


# @register_model reads ``default_cfgs`` of this module: it must exist before registering.
default_cfgs = generate_default_cfgs({
    **{name: _cfg(name) for name in list_backbones() if name not in PRETRAINED},
    **{f"{name}.{tag}": _cfg(name, src) for name, sources in PRETRAINED.items() for tag, src in sources.items()},
})


def _register() -> None:
    """Register every backbone once; a name timm already owns (from elsewhere) is an error, never overwritten."""
    for name in list_backbones():
        if is_model(name):
            if model_entrypoint(name).__module__ != __name__:
                raise RuntimeError(f"timm already has a model named {name!r}; refusing to overwrite it")
            continue
        register_model(_entrypoint(name))


_register()
