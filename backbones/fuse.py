"""The inference fast path: ``model.fuse()`` folds every BatchNorm into its conv, drops dropout, picks the memory
format and optionally compiles. One implementation serves backbones, segmenters and detectors.

Folding (Ioffe & Szegedy, 2015, §3: in inference BN is a fixed affine map per channel) is exact: for a conv
``W x + b`` followed by BN with statistics ``mu, var`` and affine ``gamma, beta``,
``BN(W x + b) = (s W) x + (beta + s (b - mu))`` with ``s = gamma / sqrt(var + eps)``. It is computed in float64
and stored in the conv's dtype, so fused outputs differ from unfused ones only by float rounding.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


__all__ = ["Fusable", "fold_conv_bn", "fold_batchnorms", "fuse_model", "pad_before_depthwise",
           "prefers_channels_last", "PrePaddedConv2d"]

# oneDNN's channels_last depthwise kernel takes at most this much zero padding on a side; with more, oneDNN picks a
# kernel 10-25x slower (CPU, 1 thread, 3x3, padding = dilation): 320 ch at 64x64 with padding 5 takes 33 ms against
# 1.4 ms with 4, 1280 ch at 64x64 with 12 takes 310 ms. Convolving an input padded beforehand keeps the fast kernel:
# 24 ms for the latter, the pad included, where the NCHW kernel takes 27.
ONEDNN_MAX_PADDING = 4


def fold_conv_bn(conv: nn.Conv2d, bn: _BatchNorm) -> nn.Conv2d:
    """Fold eval-mode ``bn`` into ``conv`` in place (the conv gains a bias) and return ``conv``.

    Raises:
        RuntimeError: if ``bn`` is in training mode or keeps no running statistics (it then normalises with
            batch statistics, which no fixed conv reproduces).
    """
    if bn.training or bn.running_mean is None or bn.running_var is None:
        raise RuntimeError(f"cannot fold {type(bn).__name__}({bn.num_features}): it is in training mode or has no "
                           "running statistics; call model.eval() first (only eval-mode BatchNorm is a fixed map)")
    with torch.no_grad():
        scale = torch.rsqrt(bn.running_var.double() + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight.double()
        shift = -bn.running_mean.double() * scale
        if bn.bias is not None:
            shift = shift + bn.bias.double()
        if conv.bias is not None:
            shift = shift + conv.bias.double() * scale
        weight = conv.weight.double() * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
        dtype, grad = conv.weight.dtype, conv.weight.requires_grad
        conv.weight = nn.Parameter(weight.to(dtype), requires_grad=grad)
        conv.bias = nn.Parameter(shift.to(dtype), requires_grad=grad)
    return conv


def fold_batchnorms(model: nn.Module) -> int:
    """Fold the BatchNorm of every :class:`~backbones.blocks.ConvNormAct` in ``model`` into its conv (the BN
    becomes ``nn.Identity``) and replace every dropout by ``nn.Identity``; return the number of BNs folded."""
    from .blocks import ConvNormAct  # blocks import the contract, which imports this module

    folded = 0
    for module in list(model.modules()):
        if isinstance(module, ConvNormAct) and isinstance(module.bn, _BatchNorm):
            fold_conv_bn(module.conv, module.bn)
            module.bn = nn.Identity()
            folded += 1
        for name, child in module.named_children():
            if isinstance(child, nn.modules.dropout._DropoutNd):
                setattr(module, name, nn.Identity())
    return folded


def prefers_channels_last(device: torch.device) -> bool:
    """Whether fused models run faster in channels_last on ``device``.

    CPU: yes. Measured here (1 thread, batch 1, MobileNetV2 224, fused): 26 ms in channels_last against 35 ms
    in NCHW; oneDNN runs depthwise and 1x1 convs in NHWC without reordering each layer. CUDA: left at NCHW,
    the float32 default (channels_last pays off with AMP and tensor cores; pass ``channels_last=True`` then).
    """
    return device.type == "cpu"


class PrePaddedConv2d(nn.Conv2d):
    """``conv`` with its zero padding done by ``F.pad`` before an unpadded convolution: the same values, and oneDNN
    keeps its fast channels_last kernel (see ``ONEDNN_MAX_PADDING``). Shares ``conv``'s parameters and names."""

    def __init__(self, conv: nn.Conv2d) -> None:
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"only numeric zero padding can move before the conv, got {conv.padding!r} "
                             f"({conv.padding_mode})")
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0, conv.dilation,
                         conv.groups, conv.bias is not None, device="meta")
        self.weight, self.bias = conv.weight, conv.bias
        ph, pw = conv.padding
        self.pre_padding = [pw, pw, ph, ph]

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(F.pad(x, self.pre_padding), self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pre_padding={self.pre_padding}"


def _wide_padded_depthwise(module: nn.Module) -> bool:
    return (type(module) is nn.Conv2d and module.groups > 1 and module.groups == module.in_channels
            and module.padding_mode == "zeros" and isinstance(module.padding, tuple)
            and max(module.padding) > ONEDNN_MAX_PADDING)


def pad_before_depthwise(model: nn.Module) -> list[str]:
    """Replace every depthwise conv of ``model`` with more than ``ONEDNN_MAX_PADDING`` zero padding on a side
    (ASPP's atrous branches) by a :class:`PrePaddedConv2d`, in place; return their names. Other padding modes
    (reflect, replicate, circular) are left as they are.

    For channels_last on CPU: it keeps those convs on oneDNN's fast depthwise kernel, in eager mode and under
    ``torch.compile`` alike, and the whole network in one memory format.
    """
    names = [name for name, m in model.named_modules() if name and _wide_padded_depthwise(m)]  # root: not in place
    for name in names:
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, PrePaddedConv2d(model.get_submodule(name)))
    return names


def fuse_model(model: nn.Module, *, channels_last: bool | None = None, compile: bool | dict[str, Any] = False,
               compile_parts: tuple[str, ...] = ()) -> nn.Module:
    """Turn an eval-mode ``model`` into its inference fast path, in place; return it.

    Args:
        model: any module built from :class:`~backbones.blocks.ConvNormAct` (backbones, segmenters, detectors).
        channels_last: convert parameters to channels_last (the first conv then carries the format through the
            network; inputs need no conversion); on CPU, depthwise convs with wide padding then pad their input
            first (:func:`pad_before_depthwise`). ``None``: :func:`prefers_channels_last` for the model's device.
        compile: ``torch.compile`` the model in place (``nn.Module.compile``); a dict gives its options (e.g.
            ``{"mode": "max-autotune"}``). The first call of each input shape then compiles (tens of seconds on
            CPU, needs a C++ compiler); later calls run the generated kernels.
        compile_parts: names of the submodules to compile instead of the whole model (a detector compiles its
            network and leaves the image-list pre- and post-processing eager).

    Raises:
        RuntimeError: if the model (or any BatchNorm in it) is in training mode.
    """
    bad = [name for name, m in model.named_modules() if isinstance(m, _BatchNorm) and m.training]
    if model.training or bad:
        where = f" (BatchNorm {bad[0]!r} is training)" if bad else ""
        raise RuntimeError(f"fuse() folds BatchNorm running statistics and is for inference only, but "
                           f"{type(model).__name__} is in training mode{where}; call model.eval() first")
    fold_batchnorms(model)
    param = next(model.parameters(), None)
    if channels_last is None:
        channels_last = param is not None and prefers_channels_last(param.device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        if param is not None and param.device.type == "cpu":
            pad_before_depthwise(model)
    if compile:
        options = compile if isinstance(compile, dict) else {}
        for part in [model.get_submodule(p) for p in compile_parts] or [model]:
            part.compile(**options)
    return model


class Fusable:
    """Mixin giving a module ``fuse()``; ``compile_parts`` names the submodules ``compile=True`` compiles."""

    compile_parts: tuple[str, ...] = ()

    def fuse(self, *, channels_last: bool | None = None, compile: bool | dict[str, Any] = False) -> nn.Module:
        """The inference fast path, in place: fold every BatchNorm into its conv (exact), drop dropout, move to
        channels_last where that is faster on the model's device (CPU) and optionally ``torch.compile``.

        Call after loading weights and ``model.eval()``; returns the model (``model = model.eval().fuse()``).
        The fused model computes the same function (outputs equal within float rounding) but has no BatchNorm
        or dropout left: it is for inference, not for training or for loading checkpoints into.

        Args:
            channels_last: force the memory format; ``None`` decides per device.
            compile: ``True`` or ``torch.compile`` options to compile it too.

        Raises:
            RuntimeError: in training mode.
        """
        return fuse_model(self, channels_last=channels_last, compile=compile, compile_parts=self.compile_parts)
