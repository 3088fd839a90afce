"""Joint image/box augmentation for SSD training (Liu et al. 2016, §2.2 "Data augmentation").

The SSD recipe: photometric distortion, zoom out ("expansion") onto a canvas up to 4x larger filled with the
mean colour, a crop whose IoU with some object is at least one of {0.1, 0.3, 0.5, 0.7, 0.9} (or no crop),
horizontal flip, resize to the network input. albumentations 2.x has no min-IoU crop sampler, so
the whole pipeline is ``torchvision.transforms.v2``: one library, one box convention (XYXY pixel edges).
``SanitizeBoundingBoxes`` runs last and removes boxes the crop pushed out or shrank below ``min_size``
together with their ``labels`` and ``difficult`` flags, so no degenerate box reaches the loss.

Evaluation needs no transform but the float conversion: the detector resizes internally and maps its boxes
back to the input size, so metrics are computed at the original resolution against the original boxes.
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

VOC_MEAN_RGB = (123, 117, 104)
"""Mean PASCAL VOC pixel (0-255), the fill colour of the zoom-out canvas."""


def _labels_and_flags(sample: tuple) -> tuple[torch.Tensor, ...]:
    """What :class:`~torchvision.transforms.v2.SanitizeBoundingBoxes` must filter along with the boxes."""
    target = sample[1]
    return tuple(target[key] for key in ("labels", "difficult") if key in target)


def train_transforms(
    size: int | tuple[int, int],
    *,
    photometric: bool = True,
    max_zoom_out: float = 4.0,
    iou_crop: bool = True,
    hflip: bool = True,
    min_size: float = 1.0,
) -> v2.Compose:
    """The SSD training augmentation, ``(image uint8, target) -> (image float [0, 1] (3, S, S), target)``.

    Args:
        size: output side (int) or ``(height, width)``; boxes are rescaled with the image.
        photometric: random brightness / contrast / saturation / hue / channel order.
        max_zoom_out: largest canvas side relative to the image (1 disables zoom out).
        iou_crop: the min-IoU random crop.
        hflip: random horizontal flip.
        min_size: boxes with a side (in output pixels) below this are removed.
    """
    if max_zoom_out < 1:
        raise ValueError(f"max_zoom_out must be >= 1 (1 disables it), got {max_zoom_out}")
    if min_size <= 0:
        raise ValueError(f"min_size must be positive, got {min_size}")
    ops: list[v2.Transform] = []
    if photometric:
        ops.append(v2.RandomPhotometricDistort(p=0.5))
    if max_zoom_out > 1:
        fill = {tv_tensors.Image: VOC_MEAN_RGB, "others": 0}
        ops.append(v2.RandomZoomOut(fill=fill, side_range=(1.0, max_zoom_out), p=0.5))
    if iou_crop:
        ops.append(v2.RandomIoUCrop())
    if hflip:
        ops.append(v2.RandomHorizontalFlip(p=0.5))
    size = (size, size) if isinstance(size, int) else tuple(size)
    ops += [
        v2.Resize(size, antialias=True),
        v2.SanitizeBoundingBoxes(min_size=min_size, labels_getter=_labels_and_flags),
        v2.ToDtype(torch.float32, scale=True),
    ]
    return v2.Compose(ops)


def eval_transforms() -> v2.Compose:
    """Evaluation: only ``uint8 -> float32 [0, 1]``; boxes and image size stay as loaded."""
    return v2.Compose([v2.ToDtype(torch.float32, scale=True)])
