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
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


__all__ = ["Fusable", "fold_conv_bn", "fold_batchnorms", "fuse_model", "keep_nchw", "prefers_channels_last"]

# oneDNN's channels_last depthwise kernels fall far behind its NCHW ones from this dilation on (CPU, 1 thread,
# 1280 ch at 32x32 and 960 ch at 64x64): dilation 4 is 1.4-1.6x faster in channels_last, dilation 6 and 12 are
# 4.5-5.9x slower, and 1280 ch at 64x64 with dilation 12 or 24 is 9-10x slower. Full convolutions stay faster in
# channels_last at every rate.
NCHW_MIN_DILATION = 6


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


# Forward hooks of the NCHW regions, typed for TorchScript (a scripted fused model scripts its hooks too).
def _to_nchw(module: nn.Module, args: tuple[Tensor]) -> tuple[Tensor]:
    return (args[0].contiguous(),)


def _to_channels_last(module: nn.Module, args: tuple[Tensor], output: Tensor) -> Tensor:
    return output.contiguous(memory_format=torch.channels_last)


def _run_in_nchw(module: nn.Module) -> None:
    """Give ``module`` NCHW weights and hooks that hand it an NCHW input and give its output back in channels_last."""
    module.to(memory_format=torch.contiguous_format)
    module.register_forward_pre_hook(_to_nchw)
    module.register_forward_hook(_to_channels_last)


def _slow_in_channels_last(module: nn.Module) -> bool:
    return (type(module) is nn.Conv2d and module.groups > 1 and module.groups == module.in_channels
            and max(module.dilation) >= NCHW_MIN_DILATION)


def keep_nchw(model: nn.Module) -> list[str]:
    """Run the atrous depthwise convs (dilation >= ``NCHW_MIN_DILATION``) of a channels_last ``model`` in NCHW;
    return the names of the modules that now run in NCHW.

    A module with ``nchw_region = True`` that holds such convs (ASPP, whose branches share one input) runs in NCHW
    as a whole, so its input and output change layout once; any other such conv changes layout on its own.
    """
    slow = {name for name, m in model.named_modules() if _slow_in_channels_last(m)}
    regions = [name for name, m in model.named_modules()
               if getattr(m, "nchw_region", False) and any(s.startswith(f"{name}.") for s in slow)]
    singles = [s for s in sorted(slow) if not any(s.startswith(f"{r}.") for r in regions)]
    for name in regions + singles:
        _run_in_nchw(model.get_submodule(name))
    return regions + singles


def fuse_model(model: nn.Module, *, channels_last: bool | None = None, compile: bool | dict[str, Any] = False,
               compile_parts: tuple[str, ...] = ()) -> nn.Module:
    """Turn an eval-mode ``model`` into its inference fast path, in place; return it.

    Args:
        model: any module built from :class:`~backbones.blocks.ConvNormAct` (backbones, segmenters, detectors).
        channels_last: convert parameters to channels_last (the first conv then carries the format through the
            network; inputs need no conversion), except, on CPU, the atrous depthwise convs :func:`keep_nchw` keeps
            in NCHW. ``None``: :func:`prefers_channels_last` for the model's device.
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
            keep_nchw(model)
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
        channels_last where that is faster on the model's device (CPU; ASPP's atrous depthwise convs stay NCHW)
        and optionally ``torch.compile``.

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
