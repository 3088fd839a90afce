"""Mixed precision (CUDA only; a no-op on CPU) and the channels_last memory format."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

__all__ = ["Precision"]


class Precision:
    """Autocast + gradient scaling (CUDA only) and channels_last (any device).

    Args:
        device: the compute device.
        amp: use float16 autocast with a GradScaler (ignored on CPU, where float16 convs are slow).
        channels_last: convert models and inputs to NHWC (faster with AMP on CUDA; seg_train leaves it off on
            CPU, where BatchNorm's NHWC kernel sums batch statistics imprecisely).
    """

    def __init__(self, device: torch.device, *, amp: bool = False, channels_last: bool = False) -> None:
        cuda = device.type == "cuda"
        self.device = device
        self.amp = amp and cuda
        self.channels_last = channels_last
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Context for the forward pass and loss."""
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=torch.float16)

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Move ``model`` to the device (and to channels_last when enabled)."""
        model = model.to(self.device)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def prepare_input(self, images: torch.Tensor) -> torch.Tensor:
        """Move a ``(N, C, H, W)`` batch to the device (and to channels_last when enabled)."""
        images = images.to(self.device, non_blocking=True)
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """``loss.backward()`` and ``optimizer.step()`` through the GradScaler, then zero the gradients."""
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()
        optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.scaler.load_state_dict(state)
