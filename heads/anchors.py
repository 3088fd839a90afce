"""Default boxes of SSD (Liu et al., 2016, §2.2) as torchvision generates them, with centres clipped too."""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator


class SSDBoxGenerator(DefaultBoxGenerator):
    """torchvision's ``DefaultBoxGenerator`` whose ``clip`` clamps all of ``(cx, cy, w, h)`` to [0, 1].

    torchvision clamps only ``w, h``. With explicit ``steps`` a centre can fall outside the image (SSD300's
    stride-32 map has 10 x 32 = 320 > 300, so its last centres sit at 304/300); SSD300 priors as the popular
    PyTorch SSD repositories generate them clamp those centres onto the border. Without ``steps`` centres are
    always inside, and the boxes equal torchvision's. Per location the order is: scale ``s_k``, scale
    ``sqrt(s_k s_k+1)``, then ``(w, h)`` and ``(h, w)`` for each aspect ratio; locations are row-major per map.

    The boxes depend only on the map sizes, the image size and the dtype, so they are computed once per such key
    and reused (torchvision rebuilds them with Python loops on every forward).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._cache: dict[tuple, Tensor] = {}

    def _grid_default_boxes(self, grid_sizes: list[list[int]], image_size: list[int],
                            dtype: torch.dtype = torch.float32) -> Tensor:
        key = (tuple(tuple(int(v) for v in g) for g in grid_sizes), tuple(int(v) for v in image_size), dtype)
        if key not in self._cache:
            boxes = super()._grid_default_boxes(grid_sizes, image_size, dtype)
            self._cache[key] = boxes.clamp(min=0, max=1) if self.clip else boxes
        return self._cache[key]
