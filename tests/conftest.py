"""Shared test helpers."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, so renaming mistakes cannot hide."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
    return model


@pytest.fixture
def one_thread():
    """Tiny tensors gain nothing from threads, and spinning OpenMP threads crawl on a loaded 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def torchvision_mnv2(tmp_path_factory) -> tuple[nn.Module, Path]:
    """A random torchvision MobileNetV2 with non-trivial BN statistics, saved in torchvision's layout."""
    torch.manual_seed(0)
    reference = randomize_bn(torchvision.models.mobilenet_v2()).eval()
    path = tmp_path_factory.mktemp("w") / "mobilenet_v2_tv.pth"
    torch.save(reference.state_dict(), path)
    return reference, path
