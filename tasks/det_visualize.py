"""Images with boxes drawn: predictions of a detector next to the ground truth, for runs and predictions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib import colormaps
from torch import nn
from torchvision.utils import draw_bounding_boxes

from tasks.det_data import VOCDetection
from tasks.engine import save_panels


def draw_detections(
    image: torch.Tensor, detections: dict[str, torch.Tensor], class_names: Sequence[str], *, min_score: float = 0.3
) -> torch.Tensor:
    """``image`` uint8 ``(3, H, W)`` with the detections scoring >= ``min_score`` drawn and labelled.

    Ground truth can be drawn too: pass it without ``scores``.
    """
    keep = detections["scores"] >= min_score if "scores" in detections else slice(None)
    if not len(detections["labels"][keep]):
        return image
    boxes, labels = detections["boxes"][keep].float(), detections["labels"][keep].tolist()
    scores = detections["scores"][keep].tolist() if "scores" in detections else [None] * len(labels)
    text = [class_names[c - 1] + ("" if s is None else f" {s:.2f}") for c, s in zip(labels, scores)]
    colors = [_color(c) for c in labels]
    width = max(1, round(max(image.shape[-2:]) / 200))
    return draw_bounding_boxes(image, boxes, labels=text, colors=colors, width=width)


def _color(label: int) -> tuple[int, int, int]:
    """A fixed colour per class (matplotlib's tab20 cycle)."""
    return tuple(int(255 * c) for c in colormaps["tab20"](label % 20)[:3])


@torch.no_grad()
def save_predictions(
    model: nn.Module, dataset: VOCDetection, path: str | Path, *, class_names: Sequence[str], count: int = 6,
    min_score: float = 0.3,
) -> Path:  # fmt: skip
    """A PNG grid of the first ``count`` images of ``dataset``: ground truth | predictions scoring >= ``min_score``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    rows = []
    for index in range(min(count, len(dataset))):
        image, target = dataset[index]
        image_u8 = (image * 255).round().to(torch.uint8) if image.is_floating_point() else image
        det = model([image_u8.to(device).float() / 255])[0]
        det = {k: v.cpu() for k, v in det.items()}
        rows.append([
            draw_detections(image_u8, target, class_names).permute(1, 2, 0).numpy(),
            draw_detections(image_u8, det, class_names, min_score=min_score).permute(1, 2, 0).numpy(),
        ])  # fmt: skip
    model.train(was_training)
    return save_panels(rows, path, titles=["ground truth", f"predictions (score >= {min_score})"])
