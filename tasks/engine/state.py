"""Everything a run needs to continue exactly: weights, optimizer, schedule, grad scaler, RNG, position."""

from __future__ import annotations

from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from .amp import Precision
from .rng import capture_rng_state, restore_rng_state

__all__ = ["training_state", "restore_training_state", "unwrap"]


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel (or the model itself)."""
    return getattr(model, "module", model)


def training_state(model: nn.Module, optimizer: Optimizer, *, scheduler: LRScheduler, precision: Precision,
                   iteration: int, epoch: int, **extra: object) -> dict:
    """A checkpoint dict of tensors and plain types (loads with ``weights_only=True``).

    Args:
        iteration: optimizer steps done so far.
        epoch: the epoch the next step belongs to.
        extra: anything else plain to keep (e.g. the run's arguments as a dict).
    """
    return {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": precision.state_dict(),
        "rng": capture_rng_state(),
        "iteration": int(iteration),
        "epoch": int(epoch),
        **extra,
    }


def restore_training_state(state: dict, model: nn.Module, optimizer: Optimizer, *, scheduler: LRScheduler,
                           precision: Precision) -> tuple[int, int]:
    """Load ``state`` into the live objects and restore RNG; returns ``(iteration, epoch)``."""
    missing = {"model", "optimizer", "scheduler", "scaler", "rng", "iteration", "epoch"} - state.keys()
    if missing:
        raise ValueError(f"not a training checkpoint: missing {sorted(missing)}")
    unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    precision.load_state_dict(state["scaler"])
    restore_rng_state(state["rng"])
    return state["iteration"], state["epoch"]
