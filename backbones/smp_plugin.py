"""Every backbone as a native segmentation_models_pytorch encoder, registered under its own name.

``import backbones`` adds each ``ld_*`` name to ``smp.encoders.encoders``, so
``smp.DeepLabV3Plus(encoder_name="ld_mobilenetv2_100", encoder_weights=None, encoder_output_stride=16)`` and
every other smp architecture build on our backbones. The encoder is built already dilated (our ShuffleNetV1
average-pool shortcuts included); smp's ``make_dilated`` patches only ``nn.Conv2d`` and would miss those
shortcuts, so here it only checks. All smp knowledge of the project lives here.

Weights. smp's default ``encoder_weights="imagenet"`` works for every name with a named Hugging Face hub source
(:data:`backbones.weights.PRETRAINED`): smp's hub download of those repos is routed through
:func:`backbones.weights.download` (offline: our one-line :class:`~backbones.weights.DownloadError`), and the
encoder's ``load_state_dict`` takes the file in any layout we read. Names without such weights fail with a line
naming ``encoder_weights=None``; local files load with :func:`load_encoder_weights`.
"""
from __future__ import annotations

import inspect
import os
from typing import Any
from collections.abc import Mapping

import segmentation_models_pytorch.encoders as smp_encoders
import torch
from segmentation_models_pytorch.encoders import encoders as SMP_ENCODERS
from torch import Tensor, nn

from .base import Backbone, check_in_chans
from .dilation import OUTPUT_STRIDES
from .mobilenetv1 import MobileNetV1
from .mobilenetv2 import MobileNetV2
from .registry import get_spec, list_backbones
from .shufflenetv1 import ShuffleNetV1
from .weights import PRETRAINED, adapt_input_conv, download, load_pretrained

__all__ = ["SmpMobileNetV1", "SmpMobileNetV2", "SmpShuffleNetV1", "load_encoder_weights"]


class SmpEncoder:
    """Mixin giving a :class:`~backbones.base.Backbone` smp's encoder interface.

    ``forward(x)`` returns ``[x, f2, f4, f8, f16, f32][: depth + 1]``, each ``(N, C, H / s, W / s)``; stages
    deeper than ``depth`` are not built. ``out_channels`` and ``output_stride`` are what smp decoders read.
    """

    _is_torch_scriptable = True
    _is_torch_exportable = True
    _is_torch_compilable = True
    __jit_unused_properties__ = [*Backbone.__jit_unused_properties__, "out_channels"]
    # Indices into ``feature_info`` of the stage outputs at strides 2, 4, 8, 16, 32 (before dilation).
    stage_taps: tuple[int, ...] = ()

    def __init__(self, *, depth: int = 5, output_stride: int = 32, name: str = "", **kwargs: Any) -> None:
        if not isinstance(depth, int) or not 1 <= depth <= len(self.stage_taps):
            raise ValueError(f"depth must be an int in [1, {len(self.stage_taps)}], got {depth!r}")
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be one of {list(OUTPUT_STRIDES)}, got {output_stride!r}")
        # Dilation only matters for stages that are built: below 2**depth the plain network is the same.
        super().__init__(**kwargs, out_indices=self.stage_taps[:depth],
                         output_stride=output_stride if output_stride < 2 ** depth else 32)
        assert self.strides == [min(2 ** (i + 1), output_stride) for i in range(depth)], self.strides
        self.name, self.depth, self.preprocessing = name, depth, None
        self.output_stride = min(output_stride, 2 ** depth)

    @property
    def out_channels(self) -> list[int]:
        """Channels of ``forward``'s maps, the input included."""
        return [self.in_chans, *self.channels]

    def forward(self, x: Tensor) -> list[Tensor]:
        if not torch.jit.is_scripting():
            self._check_input(x)
        taps = self.forward_taps(x)
        return [x] + [taps[i] for i in self.out_indices]

    def set_in_channels(self, in_channels: int, pretrained: bool = True) -> None:
        """smp's hook for ``in_channels``: rebuild the stem conv (RGB weights adapted when ``pretrained``)."""
        check_in_chans(in_channels)
        if in_channels == self.in_chans:
            return
        old = self.stem.conv
        new = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding, old.dilation,
                        bias=False)
        if pretrained and self.in_chans == 3:
            with torch.no_grad():
                new.weight.copy_(adapt_input_conv(old.weight, in_channels))
        self.stem.conv, self.in_chans = new, in_channels

    def load_state_dict(self, state_dict: Mapping[str, Tensor], strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict``, also accepting every layout :mod:`backbones.weights` reads (smp hands the
        hub file over as it is) and setting ``preprocessing`` for those."""
        if "stem.conv.weight" in state_dict or not strict:
            return super().load_state_dict(state_dict, strict, assign)
        load_pretrained(self, state_dict)
        return nn.modules.module._IncompatibleKeys([], [])

    def make_dilated(self, output_stride: int) -> None:
        """smp's dilation hook: the encoder was built at ``output_stride`` already, so this only checks."""
        if min(output_stride, 2 ** self.depth) != self.output_stride:
            raise ValueError(f"{self.name or type(self).__name__} was built with output stride "
                             f"{self.output_stride}; pass output_stride={output_stride} when building it")


class SmpMobileNetV1(SmpEncoder, MobileNetV1):
    """MobileNetV1 encoder for smp: the last block at each stride, 64@2, 128@4, 256@8, 512@16, 1024@32 (width 1.0)."""

    stage_taps = (0, 1, 2, 3, 4)


class SmpMobileNetV2(SmpEncoder, MobileNetV2):
    """MobileNetV2 encoder for smp: the stage outputs 16@2, 24@4, 32@8, 96@16, 320@32 (width 1.0)."""

    stage_taps = (0, 1, 2, 3, 5)


class SmpShuffleNetV1(SmpEncoder, ShuffleNetV1):
    """ShuffleNetV1 encoder for smp: ``stem``@2, ``maxpool``@4, stages 2..4 @8/16/32."""

    stage_taps = (0, 1, 2, 3, 4)


SMP_CLASSES: dict[type[Backbone], type[SmpEncoder]] = {MobileNetV1: SmpMobileNetV1, MobileNetV2: SmpMobileNetV2,
                                                       ShuffleNetV1: SmpShuffleNetV1}


def load_encoder_weights(model: nn.Module, source: bool | str | os.PathLike | Mapping[str, Tensor]) -> nn.Module:
    """Load ImageNet weights into the encoder of an smp model built with ``encoder_weights=None``.

    Args:
        model: an smp model (``model.encoder`` is used) or one of our smp encoders.
        source: a file path, URL, state dict or named source, in any layout :mod:`backbones.weights` reads;
            the stem is adapted to the model's ``in_channels``.

    Returns:
        ``model``; the encoder's ``preprocessing`` says how to normalise its inputs.
    """
    encoder = getattr(model, "encoder", model)
    if not isinstance(encoder, SmpEncoder):
        raise ValueError(f"expected an smp model whose encoder is one of {list_backbones()[:2]}..., got encoder "
                         f"{type(encoder).__name__}; for 'tu-' encoders pass encoder_weights=True with "
                         "pretrained_cfg_overlay=dict(file=path) instead")
    load_pretrained(encoder, source)
    return model


NO_WEIGHTS = "lightdense-no-imagenet-weights/"  # repo ids of names without hub weights: never downloaded
# Repo ids of names whose hub weights need another architecture than smp builds (it passes no act_layer).
OTHER_ARCH = "lightdense-weights-need-other-architecture/"
_SMP_HUB_DOWNLOAD = smp_encoders.hf_hub_download


def _hub_source(name: str) -> str:
    """The repo of ``name``'s first named hub source, or a ``NO_WEIGHTS`` / ``OTHER_ARCH`` marker."""
    hub = [s for s in PRETRAINED.get(name, {}).values() if s.location.startswith("hf-hub:")]
    if not hub:
        return NO_WEIGHTS + name
    spec = get_spec(name)
    defaults = {k: p.default for k, p in inspect.signature(spec.cls.__init__).parameters.items()}
    if any({**defaults, **spec.kwargs}.get(arg) != value for arg, value in hub[0].arch.items()):
        return OTHER_ARCH + name
    return hub[0].location.removeprefix("hf-hub:")


def _hub_download(repo_id: str, filename: str, **kwargs: Any) -> str:
    """smp's hub download: our encoders' repos go through :func:`backbones.weights.download`, others to smp's."""
    if repo_id.startswith(NO_WEIGHTS):
        name = repo_id.removeprefix(NO_WEIGHTS)
        raise ValueError(f"encoder {name!r} has no ImageNet weights smp can download (encoder_weights='imagenet'); "
                         f"pass encoder_weights=None and load a local file with "
                         f"backbones.smp_plugin.load_encoder_weights(model, path)")
    if repo_id.startswith(OTHER_ARCH):
        name = repo_id.removeprefix(OTHER_ARCH)
        arch = ", ".join(f"{k}={v!r}" for k, v in next(iter(PRETRAINED[name].values())).arch.items())
        raise ValueError(f"the ImageNet weights of encoder {name!r} were trained with {arch}, which smp's native "
                         f"encoders cannot be built with; use encoder_name='tu-{name}' with encoder_weights=True "
                         "(timm builds it as its weights need)")
    if any(_hub_source(name) == repo_id for name in PRETRAINED):
        return str(download(f"hf-hub:{repo_id}", filename))
    return _SMP_HUB_DOWNLOAD(repo_id, filename=filename, **kwargs)


def _register() -> None:
    """Add every backbone to smp's encoder table once; a name smp already owns is an error, never replaced."""
    for name in list_backbones():
        spec = get_spec(name)
        entry = SMP_ENCODERS.get(name)
        if entry is not None:
            if entry["encoder"].__module__ != __name__:
                raise RuntimeError(f"smp already has an encoder named {name!r}; refusing to overwrite it")
            continue
        imagenet = {"repo_id": _hub_source(name), "revision": None}
        SMP_ENCODERS[name] = {"encoder": SMP_CLASSES[spec.cls], "pretrained_settings": {"imagenet": imagenet},
                              "params": {**spec.kwargs, "name": name}}
    smp_encoders.hf_hub_download = _hub_download


_register()
