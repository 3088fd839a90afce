"""The SSD augmentation keeps boxes inside the image and on the objects they describe.

Ground truth by painting: pure red / green / blue rectangles on grey; after the geometric transforms the
extent of each colour in the output image must be where the transformed box of that label says.
"""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors

from tasks.det_transforms import eval_transforms, train_transforms

BOXES = [(10, 12, 70, 60), (90, 30, 150, 130), (160, 5, 195, 40)]  # pixel edges, one per colour channel
SIZE = 96


def _painted() -> tuple[tv_tensors.Image, dict]:
    image = torch.full((3, 140, 200), 128, dtype=torch.uint8)
    for channel, (x0, y0, x1, y1) in enumerate(BOXES):
        image[:, y0:y1, x0:x1] = 0
        image[channel, y0:y1, x0:x1] = 255
    boxes = tv_tensors.BoundingBoxes(torch.tensor(BOXES, dtype=torch.float32), format="XYXY", canvas_size=(140, 200))
    target = {
        "boxes": boxes,
        "labels": torch.tensor([1, 2, 3]),
        "difficult": torch.tensor([False, True, False]),
    }
    return tv_tensors.Image(image), target


def _painted_extent(image: torch.Tensor, channel: int) -> list[float] | None:
    """Pixel-edge box of the pixels that are (more than half-way) the pure colour of ``channel``."""
    others = [c for c in range(3) if c != channel]
    mask = (image[channel] > 0.75) & (image[others].max(dim=0).values < 0.25)
    if not mask.any():
        return None
    ys, xs = mask.nonzero(as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


@pytest.mark.parametrize("seed", range(40))
def test_geometric_augmentation_moves_boxes_with_the_painted_objects(seed):
    torch.manual_seed(seed)
    image, target = train_transforms(SIZE, photometric=False, min_size=3)(*_painted())
    boxes = target["boxes"]
    assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32
    assert boxes.canvas_size == (SIZE, SIZE) and len(boxes) == len(target["labels"]) == len(target["difficult"])
    assert ((boxes >= 0) & (boxes <= SIZE)).all() and (boxes[:, 2:] - boxes[:, :2] >= 3).all()
    for box, label, difficult in zip(boxes.tolist(), target["labels"].tolist(), target["difficult"].tolist()):
        assert difficult == (label == 2)  # flags stay with their boxes when others are dropped
        extent = _painted_extent(image, label - 1)
        assert extent is not None, f"label {label} box {box} has no painted pixels"
        assert box == pytest.approx(extent, abs=1.5), f"label {label}"


def test_augmentation_varies_and_sometimes_drops_boxes():
    outcomes = set()
    for seed in range(40):
        torch.manual_seed(seed)
        _, target = train_transforms(SIZE, photometric=False)(*_painted())
        first = tuple(target["boxes"][0].round().tolist()) if len(target["labels"]) else ()
        outcomes.add((len(target["labels"]), first))
    assert len(outcomes) > 20 and any(n < 3 for n, _ in outcomes)


def test_photometric_distortion_changes_pixels_not_boxes():
    geometry_off = dict(max_zoom_out=1, iou_crop=False, hflip=False)
    plain, _ = train_transforms((140, 200), photometric=False, **geometry_off)(*_painted())
    changed = 0
    for seed in range(10):
        torch.manual_seed(seed)
        image, target = train_transforms((140, 200), photometric=True, **geometry_off)(*_painted())
        assert target["boxes"].tolist() == [list(b) for b in BOXES]
        changed += not torch.allclose(image, plain)
    assert changed > 0


def test_eval_transform_keeps_geometry():
    image, target = eval_transforms()(*_painted())
    assert image.shape == (3, 140, 200) and image.max() == 1.0 and target["boxes"].tolist() == [list(b) for b in BOXES]


@pytest.mark.parametrize("kwargs,match", [({"max_zoom_out": 0.5}, "max_zoom_out"), ({"min_size": 0}, "min_size")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        train_transforms(SIZE, **kwargs)
