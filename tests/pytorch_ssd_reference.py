"""References in the published layouts of qfgaohao/pytorch-ssd, written here from that repository's architecture:
its MobileNetV1 (the marvis port, ``model.N`` / ``base_net.N`` Sequentials), and the ``mb1-ssd``, ``mb1-ssd-lite`` and
``mb2-ssd-lite`` detectors with their SSD300 priors and box decoding. The converter tests load their state dicts into
our models and compare outputs."""
from __future__ import annotations

import math

import torch
from torch import nn

# MobileNetV1 paper Table 1: output channels and strides of the 13 depthwise-separable blocks.
MNV1_CHANNELS = [64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
MNV1_STRIDES = [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
MNV2_TABLE = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
              (6, 320, 1, 1)]


def mobilenet_v1_layers() -> nn.Sequential:
    """The marvis port's ``model``: conv-BN-ReLU stem, then per block dw conv, BN, ReLU, pw conv, BN, ReLU."""
    layers, inp = [nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())], 32
    for oup, stride in zip(MNV1_CHANNELS, MNV1_STRIDES):
        layers.append(nn.Sequential(nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False), nn.BatchNorm2d(inp),
                                    nn.ReLU(), nn.Conv2d(inp, oup, 1, bias=False), nn.BatchNorm2d(oup), nn.ReLU()))
        inp = oup
    return nn.Sequential(*layers)


class RefInvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand: float, act: type[nn.Module]) -> None:
        super().__init__()
        hid = round(inp * expand)
        pw = [nn.Conv2d(inp, hid, 1, bias=False), nn.BatchNorm2d(hid), act()] if expand != 1 else []
        self.conv = nn.Sequential(*pw, nn.Conv2d(hid, hid, 3, stride, 1, groups=hid, bias=False),
                                  nn.BatchNorm2d(hid), act(), nn.Conv2d(hid, oup, 1, bias=False), nn.BatchNorm2d(oup))
        self.residual = stride == 1 and inp == oup

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


def separable(inp: int, oup: int, *, stride: int = 1, bn: bool = True) -> nn.Sequential:
    """Depthwise 3x3 with bias (-> BN) -> act -> 1x1 with bias: ReLU6 after BN (mb2), ReLU without BN (mb1)."""
    dw = nn.Conv2d(inp, inp, 3, stride, 1, groups=inp)
    middle = [nn.BatchNorm2d(inp), nn.ReLU6()] if bn else [nn.ReLU()]
    return nn.Sequential(dw, *middle, nn.Conv2d(inp, oup, 1))


class RefSSD(nn.Module):
    """The repository's SSD: ``base_net``, ``extras``, ``classification_headers``, ``regression_headers``."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def forward(self, x):
        maps = self.taps(x)
        x = maps[-1]
        for extra in self.extras:
            x = extra(x)
            maps.append(x)
        n = x.shape[0]
        conf = [h(m).permute(0, 2, 3, 1).reshape(n, -1, self.num_classes)
                for h, m in zip(self.classification_headers, maps)]
        loc = [h(m).permute(0, 2, 3, 1).reshape(n, -1, 4) for h, m in zip(self.regression_headers, maps)]
        return torch.cat(conf, 1), torch.cat(loc, 1)


class RefMB2SSDLite(RefSSD):
    """``mb2-ssd-lite``: extras are skip-less inverted residuals with fractional expansion, a 1x1 last header."""

    def __init__(self, num_classes: int, act: type[nn.Module]) -> None:
        super().__init__(num_classes)
        layers, inp = [nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), act())], 32
        for t, c, n, s in MNV2_TABLE:
            for i in range(n):
                layers.append(RefInvertedResidual(inp, c, s if i == 0 else 1, t, act))
                inp = c
        layers.append(nn.Sequential(nn.Conv2d(320, 1280, 1, bias=False), nn.BatchNorm2d(1280), act()))
        self.base_net = nn.Sequential(*layers)
        self.extras = nn.ModuleList([RefInvertedResidual(i, o, 2, e, nn.ReLU6) for i, o, e in
                                     [(1280, 512, 0.2), (512, 256, 0.25), (256, 256, 0.5), (256, 64, 0.25)]])
        chans = [576, 1280, 512, 256, 256]
        self.classification_headers = nn.ModuleList(
            [separable(c, 6 * num_classes) for c in chans] + [nn.Conv2d(64, 6 * num_classes, 1)])
        self.regression_headers = nn.ModuleList([separable(c, 24) for c in chans] + [nn.Conv2d(64, 24, 1)])

    def taps(self, x):
        x = self.base_net[:14](x)
        expansion = self.base_net[14].conv
        first = expansion[:3](x)  # tap after the first 1x1 conv + BN + act of features[14]
        return [first, self.base_net[15:](expansion[3:](first))]


class RefMB1SSD(RefSSD):
    """``mb1-ssd`` (plain convs with bias, ReLU; 3x3 headers) or ``mb1-ssd-lite`` (separable, no BN, 1x1 last)."""

    def __init__(self, num_classes: int, lite: bool) -> None:
        super().__init__(num_classes)
        self.base_net = mobilenet_v1_layers()
        extras = []
        for inp, mid, oup in [(1024, 256, 512), (512, 128, 256), (256, 128, 256), (256, 128, 256)]:
            down = [separable(mid, oup, stride=2, bn=False)] if lite else [nn.Conv2d(mid, oup, 3, 2, 1), nn.ReLU()]
            extras.append(nn.Sequential(nn.Conv2d(inp, mid, 1), nn.ReLU(), *down))
        self.extras = nn.ModuleList(extras)
        chans = [512, 1024, 512, 256, 256, 256]

        def headers(columns: int) -> nn.ModuleList:
            if not lite:
                return nn.ModuleList(nn.Conv2d(c, 6 * columns, 3, padding=1) for c in chans)
            return nn.ModuleList([separable(c, 6 * columns, bn=False) for c in chans[:-1]]
                                 + [nn.Conv2d(chans[-1], 6 * columns, 1)])

        self.classification_headers, self.regression_headers = headers(num_classes), headers(4)

    def taps(self, x):
        first = self.base_net[:12](x)  # the last 512-channel block, stride 16
        return [first, self.base_net[12:](first)]


def ref_priors() -> torch.Tensor:
    """SSD300 priors (cx, cy, w, h) relative to the image: per map (size, shrinkage, min, max), ratios {2, 3}."""
    specs = [(19, 16, 60, 105), (10, 32, 105, 150), (5, 64, 150, 195), (3, 100, 195, 240), (2, 150, 240, 285),
             (1, 300, 285, 330)]
    rows = []
    for fm, shrink, lo, hi in specs:
        for y in range(fm):
            for x in range(fm):
                cx, cy = (x + 0.5) * shrink / 300, (y + 0.5) * shrink / 300
                sizes = [(lo, lo), (math.sqrt(lo * hi),) * 2]
                sizes += [(lo * f, lo / f) for r in (2, 3) for f in (math.sqrt(r), 1 / math.sqrt(r))]
                rows += [[cx, cy, w / 300, h / 300] for w, h in sizes]
    return torch.tensor(rows).clamp(0.0, 1.0)


def ref_decode(loc: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
    """Variances 0.1 / 0.2 -> corner boxes relative to the image."""
    centre = loc[..., :2] * 0.1 * priors[:, 2:] + priors[:, :2]
    size = torch.exp(loc[..., 2:] * 0.2) * priors[:, 2:]
    return torch.cat([centre - size / 2, centre + size / 2], -1)


def calibrated(ref: nn.Module) -> nn.Module:
    """Random weights; BN statistics gathered from random images, then every BN affine and stat perturbed."""
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration batches
    with torch.no_grad():
        ref(torch.randn(4, 3, 160, 160))
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
                m.running_mean.add_(torch.randn_like(m.running_mean) * 0.05)
                m.running_var.mul_(torch.empty_like(m.running_var).uniform_(0.8, 1.25))
    return ref.eval()
