"""SSD post-processing (Liu et al., 2016, §3 "Inference"): per-class score threshold, top-k and NMS, done for all
classes at once instead of one class at a time.

The detections are those of torchvision's ``SSD.postprocess_detections``: for every foreground class the boxes
scoring above ``score_thresh``, at most ``topk`` of them, non-maximum suppressed within the class, then the
``max_detections`` best over all classes. One ``topk`` over the ``(A, K)`` score matrix replaces the K masked
selections (thresholding after the top-k keeps the same boxes, since the threshold keeps a prefix of each sorted
column), and each class's candidates are suppressed as one contiguous slice.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import boxes as box_ops

__all__ = ["select_detections", "postprocess_detections"]


def select_detections(boxes: Tensor, scores: Tensor, *, score_thresh: float, topk: int, nms_thresh: float,
                      max_detections: int) -> dict[str, Tensor]:
    """Detections of one image from decoded ``boxes (A, 4)`` and foreground ``scores (A, K-1)``.

    Returns ``{"boxes": (D, 4), "scores": (D,), "labels": (D,) int64 in 1..K-1}``, best score first.
    """
    num_fg = scores.shape[1]
    top, index = scores.topk(min(topk, scores.shape[0]), dim=0)  # (k, K-1), every column descending
    counts = (top > score_thresh).sum(0).tolist()
    cand_scores, cand_boxes, cand_labels, kept = [], [], [], []
    offset = 0
    for label in range(num_fg):
        n = counts[label]
        if n == 0:
            continue
        class_boxes, class_scores = boxes[index[:n, label]], top[:n, label]
        kept.append(box_ops.nms(class_boxes, class_scores, nms_thresh) + offset)
        cand_boxes.append(class_boxes)
        cand_scores.append(class_scores)
        cand_labels.append(torch.full((n,), label + 1, dtype=torch.int64, device=scores.device))
        offset += n
    if not kept:
        return {"boxes": boxes.new_zeros((0, 4)), "scores": scores.new_zeros((0,)),
                "labels": torch.zeros((0,), dtype=torch.int64, device=scores.device)}
    all_scores, keep = torch.cat(cand_scores), torch.cat(kept)
    keep = keep[all_scores[keep].sort(descending=True)[1]][:max_detections]
    return {"boxes": torch.cat(cand_boxes)[keep], "scores": all_scores[keep], "labels": torch.cat(cand_labels)[keep]}


def postprocess_detections(model, head_outputs: dict[str, Tensor], image_anchors: list[Tensor],
                           image_shapes: list[tuple[int, int]]) -> list[dict[str, Tensor]]:
    """``SSD.postprocess_detections`` for a torchvision ``SSD`` ``model``: softmax, decode against the default
    boxes, clip to each image, :func:`select_detections` with the model's thresholds."""
    all_scores = F.softmax(head_outputs["cls_logits"], dim=-1)
    detections = []
    for deltas, scores, anchors, shape in zip(head_outputs["bbox_regression"], all_scores, image_anchors,
                                              image_shapes):
        boxes = box_ops.clip_boxes_to_image(model.box_coder.decode_single(deltas, anchors), shape)
        detections.append(select_detections(boxes, scores[:, 1:], score_thresh=model.score_thresh,
                                            topk=model.topk_candidates, nms_thresh=model.nms_thresh,
                                            max_detections=model.detections_per_img))
    return detections
