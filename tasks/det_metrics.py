"""Detection metrics: PASCAL VOC AP (VOC07 11-point and area under PR) and COCO-style mAP@[.5:.95].

VOC AP (Everingham et al. 2010, §4.2; the devkit's ``VOCevaldet``), per class: detections of all images are
ranked by score; a detection whose highest-IoU ground-truth box of its class (in its image) overlaps it by more
than 0.5 is a true positive if that box is not ``difficult`` and not already taken by a higher-scored detection,
*ignored* (neither TP nor FP) if the box is ``difficult``, and a false positive otherwise. Recall is over the
non-difficult boxes. VOC07 AP averages the best precision at recall >= t for t in {0, 0.1, ..., 1} (the devkit's
floating-point thresholds); VOC2010+ AP is the area under the monotone precision envelope.

Matching within an image only depends on the order of that image's detections, so :class:`VOCAccumulator`
matches image by image (vectorised) as predictions arrive and keeps only (score, TP/FP/ignored) per detection.
Boxes are XYXY pixel edges (see :mod:`tasks.det_data`), so IoU needs no devkit ``+ 1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import box_iou

from tasks.engine import all_gather_objects

TP, FP, IGNORED = 1, 0, -1


def match_detections(
    boxes: torch.Tensor, scores: torch.Tensor, gt_boxes: torch.Tensor, gt_difficult: torch.Tensor, *,
    iou_threshold: float = 0.5,
) -> np.ndarray:  # fmt: skip
    """TP / FP / IGNORED flag for each detection of one class in one image, by the VOC rule.

    Args:
        boxes: detections ``(D, 4)``; scores ``(D,)``.
        gt_boxes: ground truth of the same class ``(G, 4)``; gt_difficult ``(G,)`` bool.

    Returns:
        int8 flags ``(D,)`` in the input order of the detections.
    """
    flags = np.full(len(boxes), FP, dtype=np.int8)
    if len(boxes) == 0 or len(gt_boxes) == 0:
        return flags
    order = torch.sort(scores, descending=True, stable=True).indices
    best_iou, best = box_iou(boxes[order].double(), gt_boxes.double()).max(dim=1)
    best_iou, best = best_iou.numpy(), best.numpy()
    difficult = gt_difficult.numpy()[best]
    hit = best_iou > iou_threshold
    ranked = np.full(len(boxes), FP, dtype=np.int8)
    ranked[hit & difficult] = IGNORED
    candidates = np.flatnonzero(hit & ~difficult)
    _, first = np.unique(best[candidates], return_index=True)  # the best-scored claim on each box wins
    ranked[candidates[first]] = TP
    flags[order.numpy()] = ranked
    return flags


def voc_ap(recall: np.ndarray, precision: np.ndarray, *, use_07_metric: bool) -> float:
    """AP from a ranked PR curve: VOC07 11-point (``use_07_metric``) or area under the precision envelope."""
    if use_07_metric:
        points = [precision[recall >= t].max(initial=0.0) for t in np.arange(0.0, 1.1, 0.1)]
        return float(np.mean(points))
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


@dataclass(frozen=True)
class VOCResult:
    """Per-class AP ``(K,)`` (NaN for classes without non-difficult ground truth) and their means."""

    class_names: tuple[str, ...]
    ap07: np.ndarray
    ap: np.ndarray
    num_gt: np.ndarray
    num_det: np.ndarray

    @property
    def map07(self) -> float:
        return float(np.nanmean(self.ap07)) if np.isfinite(self.ap07).any() else float("nan")

    @property
    def map(self) -> float:
        return float(np.nanmean(self.ap)) if np.isfinite(self.ap).any() else float("nan")

    def table(self) -> str:
        """Markdown table: class, ground-truth count, detections, AP (VOC07), AP (area); then the means."""
        rows = ["| class | GT | detections | AP VOC07 | AP area |", "|---|---:|---:|---:|---:|"]
        for name, gt, det, a07, a in zip(self.class_names, self.num_gt, self.num_det, self.ap07, self.ap):
            rows.append(f"| {name} | {gt} | {det} | {_pct(a07)} | {_pct(a)} |")
        means = f"{_pct(self.map07)} | {_pct(self.map)}"
        rows.append(f"| **mean** | {self.num_gt.sum()} | {self.num_det.sum()} | {means} |")
        return "\n".join(rows)


def _pct(value: float) -> str:
    return "–" if not np.isfinite(value) else f"{100 * value:.1f}"


class VOCAccumulator:
    """Collects matched detections image by image; :meth:`compute` gives the VOC AP of everything seen.

    Args:
        class_names: names of labels ``1..K`` (label 0 is background and never scored).
        iou_threshold: IoU a detection must exceed to match (0.5 in VOC).
    """

    def __init__(self, class_names: Sequence[str], *, iou_threshold: float = 0.5) -> None:
        self.class_names = tuple(class_names)
        self.iou_threshold = iou_threshold
        k = len(self.class_names)
        self.scores: list[list[np.ndarray]] = [[] for _ in range(k)]
        self.flags: list[list[np.ndarray]] = [[] for _ in range(k)]
        self.num_gt = np.zeros(k, dtype=np.int64)

    def update(self, predictions: Sequence[dict], targets: Sequence[dict]) -> None:
        """Add images: predictions hold ``boxes``/``scores``/``labels``, targets ``boxes``/``labels``/``difficult``."""
        for pred, target in zip(predictions, targets, strict=True):
            p_boxes, p_scores, p_labels = (pred[k].detach().cpu() for k in ("boxes", "scores", "labels"))
            g_boxes, g_labels = target["boxes"].cpu(), target["labels"].cpu()
            g_diff = target.get("difficult", torch.zeros_like(g_labels, dtype=torch.bool)).cpu().bool()
            for label in torch.cat([p_labels, g_labels]).long().unique().tolist():
                if not 1 <= label <= len(self.class_names):
                    raise ValueError(f"label {label} outside 1..{len(self.class_names)} (0 is background)")
                p, g = p_labels == label, g_labels == label
                flags = match_detections(
                    p_boxes[p], p_scores[p], g_boxes[g], g_diff[g], iou_threshold=self.iou_threshold
                )
                self.scores[label - 1].append(p_scores[p].double().numpy())
                self.flags[label - 1].append(flags)
                self.num_gt[label - 1] += int((~g_diff[g]).sum())

    def sync(self) -> None:
        """Merge what every process collected; a no-op without a process group."""
        parts = all_gather_objects((self.scores, self.flags, self.num_gt))
        self.scores = [sum((p[0][k] for p in parts), []) for k in range(len(self.class_names))]
        self.flags = [sum((p[1][k] for p in parts), []) for k in range(len(self.class_names))]
        self.num_gt = np.sum([p[2] for p in parts], axis=0)

    def compute(self) -> VOCResult:
        k = len(self.class_names)
        ap07, ap, num_det = np.full(k, np.nan), np.full(k, np.nan), np.zeros(k, dtype=np.int64)
        for c in range(k):
            scores = np.concatenate(self.scores[c]) if self.scores[c] else np.zeros(0)
            flags = np.concatenate(self.flags[c]) if self.flags[c] else np.zeros(0, dtype=np.int8)
            num_det[c] = len(scores)
            if self.num_gt[c] == 0:
                continue
            flags = flags[np.argsort(-scores, kind="stable")]
            flags = flags[flags != IGNORED]
            tp, fp = np.cumsum(flags == TP), np.cumsum(flags == FP)
            recall = tp / self.num_gt[c]
            precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
            ap07[c] = voc_ap(recall, precision, use_07_metric=True)
            ap[c] = voc_ap(recall, precision, use_07_metric=False)
        return VOCResult(self.class_names, ap07, ap, self.num_gt.copy(), num_det)


def coco_map_metric(**kwargs):
    """COCO-style mAP@[.5:.95] (and AP50, AP75, per-size APs): torchmetrics' ``MeanAveragePrecision`` with the
    pycocotools backend. Feed it :func:`coco_targets`; it gathers across processes itself in ``compute()``.

    Raises:
        ValueError: torchmetrics or pycocotools is not installed.
    """
    try:
        import pycocotools  # noqa: F401  (the backend; torchmetrics imports it lazily)
        from torchmetrics.detection import MeanAveragePrecision
    except ImportError as err:
        raise ValueError(f"COCO-style mAP needs torchmetrics and pycocotools ({err}); "
                         "pip install torchmetrics pycocotools, or pass --no-coco") from None
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools", **kwargs)
    metric.warn_on_many_detections = False  # VOC keeps 200 per image; COCO scoring takes the top 100, as intended
    return metric


def coco_targets(targets: Sequence[dict]) -> list[dict]:
    """Targets for :func:`coco_map_metric`: VOC ``difficult`` boxes become COCO ``iscrowd`` (ignored regions)."""
    return [
        {
            "boxes": t["boxes"].as_subclass(torch.Tensor).cpu(),
            "labels": t["labels"].cpu(),
            "iscrowd": t.get("difficult", torch.zeros_like(t["labels"])).long().cpu(),
        }
        for t in targets
    ]
