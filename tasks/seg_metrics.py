"""Semantic segmentation scores from one confusion matrix: mIoU, per-class IoU, pixel accuracy.

IoU_c = TP_c / (TP_c + FP_c + FN_c) accumulated over the whole split (not averaged per image), the PASCAL VOC
definition. Pixels labelled 255 are ignored. Classes absent from both labels and predictions have no IoU and
are left out of the mean (NaN in the per-class list).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tasks.engine import all_reduce_sum
from tasks.seg_data import IGNORE_INDEX

__all__ = ["ConfusionMatrix", "SegScores"]


@dataclass(frozen=True)
class SegScores:
    """Scores of a split: ``miou`` and ``pixel_acc`` in [0, 1], ``iou`` per class (NaN where undefined)."""

    miou: float
    pixel_acc: float
    iou: list[float]

    def as_dict(self, class_names: list[str] | tuple[str, ...] | None = None) -> dict[str, object]:
        names = class_names or [str(i) for i in range(len(self.iou))]
        return {"miou": self.miou, "pixel_acc": self.pixel_acc, "iou": dict(zip(names, self.iou))}


class ConfusionMatrix:
    """Accumulates ``matrix[target, prediction]`` pixel counts.

    Args:
        num_classes: number of classes C; targets equal to ``ignore_index`` are skipped.
    """

    def __init__(self, num_classes: int, *, ignore_index: int = IGNORE_INDEX, device: torch.device | None = None):
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``prediction`` class indices and ``target`` labels of the same shape (e.g. (N, H, W))."""
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ in shape")
        keep = target != self.ignore_index
        t = target[keep].long()
        p = prediction[keep].long()
        if t.numel() and (t.min() < 0 or t.max() >= self.num_classes):
            raise ValueError(f"target values must be in [0, {self.num_classes}) or {self.ignore_index}")
        codes = t * self.num_classes + p
        self.matrix += torch.bincount(codes, minlength=self.num_classes**2).view(self.num_classes, -1).to(
            self.matrix.device)

    def all_reduce(self) -> None:
        """Sum the matrices of all processes (DDP evaluation on disjoint shards)."""
        all_reduce_sum(self.matrix)

    def compute(self) -> SegScores:
        m = self.matrix.double()
        tp = m.diag()
        union = m.sum(0) + m.sum(1) - tp
        iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
        valid = ~iou.isnan()
        miou = iou[valid].mean().item() if valid.any() else float("nan")
        total = m.sum()
        pixel_acc = (tp.sum() / total).item() if total > 0 else float("nan")
        return SegScores(miou=miou, pixel_acc=pixel_acc, iou=iou.tolist())
