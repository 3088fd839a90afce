"""SGD parameter groups with a backbone learning-rate multiplier, and per-iteration LR schedules.

DeepLab (Chen et al. 2017, §4.1) trains with ``lr = base_lr * (1 - iter / max_iter) ** power``, power 0.9;
SSD-style detectors with linear warmup then cosine decay (Loshchilov & Hutter 2017). Both step every iteration.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["build_optimizer", "build_scheduler", "cosine_scheduler", "param_groups", "poly_lr_scheduler"]


def _split_decay(named: Iterable[tuple[str, nn.Parameter]]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    decay, no_decay = [], []
    for _, p in named:
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return decay, no_decay


def param_groups(model: nn.Module, *, lr: float, weight_decay: float, backbone_lr_mult: float = 1.0,
                 backbone_attr: str = "backbone", decay_norm_and_bias: bool = True) -> list[dict]:
    """Optimizer groups: backbone parameters at ``lr * backbone_lr_mult``, the rest at ``lr``.

    Args:
        model: a module with a ``backbone_attr`` submodule (looked up through DDP's ``.module``).
        lr: base learning rate of the head.
        weight_decay: L2 penalty.
        backbone_lr_mult: factor on the backbone learning rate (e.g. 0.1 for a pretrained backbone).
        decay_norm_and_bias: if False, 1-d parameters (BN affine, biases) get no weight decay.

    Returns:
        Groups with an ``initial_lr`` entry, ready for :class:`torch.optim.SGD` and :func:`poly_lr_scheduler`.
    """
    if backbone_lr_mult < 0:
        raise ValueError(f"backbone_lr_mult must be >= 0, got {backbone_lr_mult}")
    inner = getattr(model, "module", model)
    backbone = getattr(inner, backbone_attr, None)
    if not isinstance(backbone, nn.Module):
        raise ValueError(f"{type(inner).__name__} has no submodule {backbone_attr!r} to apply the multiplier to")
    backbone_ids = {id(p) for p in backbone.parameters()}
    named = list(inner.named_parameters())
    groups = []
    for is_backbone, mult in ((True, backbone_lr_mult), (False, 1.0)):
        part = [(n, p) for n, p in named if (id(p) in backbone_ids) == is_backbone]
        decay, no_decay = _split_decay(part)
        if decay_norm_and_bias:
            decay, no_decay = decay + no_decay, []
        for params, wd in ((decay, weight_decay), (no_decay, 0.0)):
            if params:
                groups.append({"params": params, "lr": lr * mult, "initial_lr": lr * mult, "weight_decay": wd,
                               "name": ("backbone" if is_backbone else "head") + ("" if wd else "_no_decay")})
    return groups


def poly_lr_scheduler(optimizer: torch.optim.Optimizer, *, total_iters: int, power: float = 0.9,
                      warmup_iters: int = 0) -> LambdaLR:
    """Per-iteration poly decay ``(1 - it / total_iters) ** power`` with optional linear warmup.

    Call ``scheduler.step()`` after every optimizer step; its state_dict resumes at the same iteration.
    """
    if total_iters <= 0:
        raise ValueError(f"total_iters must be positive, got {total_iters}")
    if not 0 <= warmup_iters < total_iters:
        raise ValueError(f"warmup_iters must be in [0, total_iters={total_iters}), got {warmup_iters}")

    def factor(it: int) -> float:
        decay = max(0.0, 1.0 - it / total_iters) ** power
        return decay * min(1.0, (it + 1) / warmup_iters) if warmup_iters else decay

    return LambdaLR(optimizer, factor)


def cosine_scheduler(optimizer: torch.optim.Optimizer, *, total_iters: int, warmup_iters: int) -> LambdaLR:
    """Linear warmup over ``warmup_iters`` then cosine decay to 0 at ``total_iters``; step every iteration."""
    if not 0 <= warmup_iters < total_iters:
        raise ValueError(f"warmup must be shorter than training: warmup {warmup_iters}, total {total_iters} iters")

    def factor(it: int) -> float:
        if it < warmup_iters:
            return (it + 1) / warmup_iters
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (it - warmup_iters) / (total_iters - warmup_iters))))

    return LambdaLR(optimizer, factor)


def build_optimizer(model: nn.Module, *, name: str, lr: float, momentum: float, weight_decay: float,
                    backbone_lr_mult: float = 1.0, decay_norm_and_bias: bool = True) -> torch.optim.Optimizer:
    """SGD (with ``momentum``) or AdamW over :func:`param_groups`."""
    groups = param_groups(model, lr=lr, weight_decay=weight_decay, backbone_lr_mult=backbone_lr_mult,
                          decay_norm_and_bias=decay_norm_and_bias)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {name!r}")


def build_scheduler(optimizer: torch.optim.Optimizer, *, name: str, total_iters: int, warmup_iters: int) -> LambdaLR:
    """The ``poly`` (power 0.9) or ``cosine`` schedule with linear warmup, stepped every iteration."""
    if name == "poly":
        return poly_lr_scheduler(optimizer, total_iters=total_iters, warmup_iters=warmup_iters)
    if name == "cosine":
        return cosine_scheduler(optimizer, total_iters=total_iters, warmup_iters=warmup_iters)
    raise ValueError(f"schedule must be 'poly' or 'cosine', got {name!r}")
