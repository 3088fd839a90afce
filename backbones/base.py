"""The feature contract every backbone honours and every head reads.

A backbone publishes ``feature_info``: an ordered tuple of taps, one :class:`FeatureInfo` each, in execution
order with strides non-decreasing. ``forward(x)`` returns the maps of the selected ``out_indices``. Heads read
only ``channels`` and ``strides`` (in the spirit of detectron2's ``ShapeSpec`` and timm's ``feature_info``).
"""
from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .fuse import Fusable


@dataclass(frozen=True)
class FeatureInfo:
    """One tap: its channel count, its stride w.r.t. the input, and the dotted name of the module producing it."""

    channels: int
    stride: int
    module: str


class Backbone(Fusable, nn.Module):
    """Base class: subclasses set the attributes below in ``__init__`` and implement :meth:`forward_taps`.

    ``fuse()`` (from :class:`~backbones.fuse.Fusable`) turns an eval-mode backbone into its inference fast path.

    Attributes:
        feature_info: every tap the architecture offers, execution order (modules after the deepest selected
            tap are not built, so a tap's module may be absent).
        out_indices: indices into ``feature_info`` returned by ``forward``.
        detection_indices: the two taps an SSD-style detector should read (the deepest pair by default).
        in_chans, output_stride, frozen_stages, norm_eval: the construction arguments.
    """

    # Python-side metadata that TorchScript must not try to type.
    __jit_ignored_attributes__ = ["feature_info", "detection_indices", "preprocessing"]
    __jit_unused_properties__ = ["channels", "strides"]

    @property
    def channels(self) -> list[int]:
        """Channels of the selected maps, in output order."""
        return [self.feature_info[i].channels for i in self.out_indices]

    @property
    def strides(self) -> list[int]:
        """Strides of the selected maps, in output order."""
        return [self.feature_info[i].stride for i in self.out_indices]

    def forward_taps(self, x: Tensor) -> list[Tensor]:
        """Return the maps of taps ``0 .. max(out_indices)``, in ``feature_info`` order."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> list[Tensor]:
        """Map ``(N, in_chans, H, W)`` to ``[(N, C_i, ceil(H / s_i), ceil(W / s_i))]`` for the selected taps.

        ``x`` is a float tensor of the weights' dtype (uint8 images are refused, not converted: the scaling and
        mean/std depend on the weights, see ``model.preprocessing``)."""
        if not torch.jit.is_scripting():
            self._check_input(x)
        taps = self.forward_taps(x)
        return [taps[i] for i in self.out_indices]

    @torch.jit.unused
    def _check_input(self, x: Tensor) -> None:
        if torch.jit.is_tracing() or isinstance(x, torch.fx.Proxy):  # tracing: shapes are symbolic or fixed
            return
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"{type(self).__name__} expects input of shape (N, {self.in_chans}, H, W) "
                f"(in_chans={self.in_chans}), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{type(self).__name__} expects a float image tensor, got {x.dtype}: convert with "
                             "x.float() / 255 and normalise as model.preprocessing says")
        weight = next(self.parameters(), None)
        if weight is not None and x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
            raise ValueError(f"input is {x.dtype} but the weights are {weight.dtype}: pass x.to({weight.dtype}) "
                             f"(or convert the model with .to({x.dtype}))")
        min_size = max(self.strides)
        if min(x.shape[-2:]) < min_size:
            raise ValueError(
                f"input {x.shape[-2]}x{x.shape[-1]} is too small: the selected taps reach stride {min_size}, so "
                f"height and width must be at least {min_size}")

    def _init_arguments(self, *, in_chans: int, output_stride: int, frozen_stages: int, norm_eval: bool,
                        num_stages: int) -> None:
        """Check and keep the arguments every backbone takes; ``num_stages`` (stem excluded) bounds
        ``frozen_stages``. ``output_stride`` is checked by the dilation planner."""
        check_in_chans(in_chans)
        check_frozen_stages(frozen_stages, num_stages)
        self.in_chans, self.output_stride = in_chans, output_stride
        self.frozen_stages, self.norm_eval = frozen_stages, norm_eval

    # ---- freezing (frozen_stages / norm_eval) ----
    def stage_modules(self) -> list[nn.Module]:
        """``[stem, stage_1, ..., stage_n]``: what ``frozen_stages`` counts (stem is 0)."""
        raise NotImplementedError

    def _freeze(self) -> None:
        for module in self.stage_modules()[: self.frozen_stages + 1]:
            for p in module.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> Backbone:
        """Switch mode, keeping frozen stages (and, with ``norm_eval``, every BN) in eval mode."""
        super().train(mode)
        if mode:
            for module in self.stage_modules()[: self.frozen_stages + 1]:
                module.eval()
            if self.norm_eval:
                for m in self.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
        return self


def check_out_indices(out_indices: Sequence[int] | None, feature_info: Sequence[FeatureInfo],
                      default: Sequence[int]) -> list[int]:
    """Validate ``out_indices`` against ``feature_info``; ``None`` gives ``default``. Negative indices count back."""
    if out_indices is None:
        return list(default)
    n = len(feature_info)
    valid = ", ".join(f"{i}: {f.channels}ch@s{f.stride}" for i, f in enumerate(feature_info))
    if isinstance(out_indices, int) or not out_indices:
        raise ValueError(f"out_indices must be a non-empty sequence of ints, got {out_indices!r}; taps are {valid}")
    result = []
    for i in out_indices:
        if not isinstance(i, int) or not -n <= i < n:
            raise ValueError(f"out_indices entry {i!r} is out of range; valid indices are 0..{n - 1} ({valid})")
        result.append(i % n)
    if len(set(result)) != len(result) or result != sorted(result):
        raise ValueError(f"out_indices must be strictly increasing without repeats, got {list(out_indices)}")
    return result


def check_choice(name: str, value: object, valid: Sequence[object]) -> None:
    """Raise a ValueError naming the argument, the bad value and the valid ones."""
    if value not in valid:
        raise ValueError(f"{name} must be one of {list(valid)}, got {value!r}")


def check_width(width: float, examples: Sequence[float]) -> None:
    """A width (channel) multiplier (MobileNetV1 paper §3.3) in [0.1, 4.0]; ``examples`` are the registered ones."""
    if not isinstance(width, (int, float)) or isinstance(width, bool) or not 0.1 <= width <= 4.0:
        shown = ", ".join(str(w) for w in examples)
        raise ValueError(f"width must be a number in [0.1, 4.0] (e.g. {shown}), got {width!r}")


def check_frozen_stages(frozen_stages: int, num_stages: int) -> None:
    """``frozen_stages`` counts the stem as stage 0; -1 freezes nothing."""
    if not isinstance(frozen_stages, int) or not -1 <= frozen_stages <= num_stages:
        raise ValueError(f"frozen_stages must be in range(-1, {num_stages + 1}), got {frozen_stages!r}")


def check_in_chans(in_chans: int) -> None:
    """``in_chans`` is the number of input image channels (3 for RGB)."""
    if not isinstance(in_chans, int) or isinstance(in_chans, bool) or in_chans < 1:
        raise ValueError(f"in_chans must be a positive int (3 for RGB), got {in_chans!r}")


def keyword_names(*funcs: Callable) -> set[str]:
    """Names of the parameters of ``funcs`` that can be passed by keyword (``self``, ``*args``, ``**kw`` excluded)."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {name for f in funcs for name, p in inspect.signature(f).parameters.items()
            if p.kind in kinds and name != "self"}


def check_keywords(where: str, given: Iterable[str], valid: Iterable[str]) -> None:
    """Refuse keywords of ``given`` that are not in ``valid``, as Python does, but naming the closest valid one.

    Factories that forward ``**kwargs`` (to a backbone class, a head, torchvision's ``SSD``) would otherwise accept a
    typo such as ``pretrained=`` for ``pretrained_backbone=`` silently.
    """
    valid = sorted(set(valid))
    for name in given:
        if name in valid:
            continue
        close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
        close = close or [v for v in valid if name in v or v in name][:1]
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise TypeError(f"{where}() got an unexpected keyword argument {name!r}{hint}; valid keywords: "
                        f"{', '.join(valid)}")


def strict_keywords(func: Callable) -> Callable:
    """Decorate a function of fixed signature so an unknown keyword raises :func:`check_keywords`' TypeError."""
    valid = keyword_names(func)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        check_keywords(func.__name__, kwargs, valid)
        return func(*args, **kwargs)

    return wrapper
