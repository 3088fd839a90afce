"""The SSDLite detector as one tensor-in, tensor-out graph, for ONNX and TorchScript export.

torchvision's ``SSD`` takes a list of images, resizes and normalizes each, generates default boxes from the maps it
sees and post-processes image by image in Python loops. :class:`DeployableDetector` computes the same thing on a
batch tensor: bilinear resize to the fixed input size, normalize, backbone and head, box decoding against default
boxes computed once (they depend only on that size), then either

* ``raw``: class logits ``(N, A, K)`` and decoded boxes ``(N, A, 4)`` xyxy in pixels of the resized network
  input (no softmax, clipping or NMS: what TensorRT and other runtimes post-process themselves), or
* ``nms``: torchvision's post-processing (:func:`postprocess`): softmax, boxes clipped to the resized image, per
  class the ``topk_candidates`` best scores above ``score_thresh``, per-class NMS, the ``detections_per_img`` best
  overall, boxes mapped back to input pixels; padded outputs ``boxes (N, D, 4)``, ``scores (N, D)``,
  ``labels (N, D)`` and ``num_detections (N,)``, valid rows first in descending score, padding zero.

Every step repeats torchvision's arithmetic but one: torchvision normalizes the full image, then resizes; here the
resize comes first, so the per-pixel normalization runs on the small network input (on a 500x375 image at 96 px it
cost more than all convolutions). Both are the same linear map, so outputs differ by float rounding (~1e-6) and
the detections equal the eager model's up to score ties.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import boxes as box_ops

from heads.detector import SSDDetector

__all__ = ["DETECTOR_OUTPUTS", "OUTPUT_NAMES", "DeployableDetector", "box_scale", "nms_rows", "postprocess"]

DETECTOR_OUTPUTS = ("raw", "nms")
OUTPUT_NAMES = {"raw": ["logits", "boxes"], "nms": ["boxes", "scores", "labels", "num_detections"]}


def nms_rows(boxes: Tensor, scores: Tensor, iou_threshold: float, score_threshold: float) -> Tensor:
    """NMS on every row: ``boxes (B, k, 4)``, ``scores (B, k)`` -> kept ``(M, 3)`` int64 ``[row, 0, index]``.

    Candidates need ``score > score_threshold``; this is ONNX ``NonMaxSuppression`` with one class per row.
    """
    kept = []
    for row in range(boxes.shape[0]):
        candidates = torch.nonzero(scores[row] > score_threshold).flatten()
        keep = candidates[box_ops.nms(boxes[row, candidates], scores[row, candidates], iou_threshold)]
        kept.append(torch.stack([torch.full_like(keep, row), torch.zeros_like(keep), keep], dim=1))
    return torch.cat(kept) if kept else torch.zeros((0, 3), dtype=torch.int64, device=boxes.device)


class _OnnxNMS(torch.autograd.Function):
    """:func:`nms_rows` that the ONNX exporter writes as one ``NonMaxSuppression`` node over all rows."""

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, iou_threshold: float, score_threshold: float,
                max_per_row: int) -> Tensor:
        return nms_rows(boxes, scores, iou_threshold, score_threshold)

    @staticmethod
    def symbolic(g, boxes, scores, iou_threshold: float, score_threshold: float, max_per_row: int):
        def const(value, dtype):
            return g.op("Constant", value_t=torch.tensor([value], dtype=dtype))

        scores = g.op("Unsqueeze", scores, const(1, torch.int64))  # (B, 1 class, k)
        return g.op("NonMaxSuppression", boxes, scores, const(max_per_row, torch.int64),
                    const(iou_threshold, torch.float32), const(score_threshold, torch.float32))


def _nms(boxes: Tensor, scores: Tensor, iou_threshold: float, score_threshold: float, rows: int) -> Tensor:
    if not torch.jit.is_scripting():
        if torch.onnx.is_in_onnx_export():
            return _OnnxNMS.apply(boxes, scores, iou_threshold, score_threshold, rows)
    return nms_rows(boxes, scores, iou_threshold, score_threshold)


def postprocess(logits: Tensor, boxes: Tensor, scale: Tensor, *, size: list[int], num_classes: int,
                score_thresh: float, nms_thresh: float, topk: int, detections_per_img: int) -> list[Tensor]:
    """torchvision ``SSD.postprocess_detections`` and ``transform.postprocess`` on a batch, padded.

    Args:
        logits: ``(N, A, K)`` class logits, background first. boxes: ``(N, A, 4)`` decoded, resized-input pixels.
        scale: ``(4,)`` input size / resized size as ``(w, h, w, h)``, mapping boxes back to input pixels.
        size: the resized ``(H, W)`` boxes are clipped to. num_classes: ``K`` (a plain int, so the graph
            has no shape-dependent Python branch). topk: candidates per class (at most ``A``).

    Returns:
        ``boxes (N, D, 4)``, ``scores (N, D)``, ``labels (N, D)`` int64, ``num_detections (N,)`` int64.
    """
    n, a = boxes.shape[0], boxes.shape[1]
    boxes = box_ops.clip_boxes_to_image(boxes, (size[0], size[1]))
    scores = torch.softmax(logits, dim=-1)[:, :, 1:].transpose(1, 2)  # (N, C, A) foreground classes
    classes = num_classes - 1
    top_scores, top_index = scores.topk(topk, dim=2)  # (N, C, k), best first
    flat = (top_index + torch.arange(n, device=boxes.device).view(n, 1, 1) * a).reshape(-1)
    candidates = boxes.reshape(-1, 4)[flat].reshape(n * classes, topk, 4)
    kept = _nms(candidates, top_scores.reshape(n * classes, topk), nms_thresh, score_thresh, topk)
    flat_kept = kept[:, 0] * topk + kept[:, 2]
    keep = torch.zeros(n * classes * topk, dtype=torch.int64, device=boxes.device)
    keep = keep.scatter(0, flat_kept, torch.ones_like(flat_kept)).reshape(n, classes * topk) > 0
    ranked = torch.where(keep, top_scores.reshape(n, classes * topk), torch.full_like(keep, -1, dtype=boxes.dtype))
    best, order = ranked.topk(min(detections_per_img, classes * topk), dim=1)
    valid = keep.gather(1, order)
    out_boxes = candidates.reshape(n, classes * topk, 4).gather(1, order[:, :, None].expand(-1, -1, 4)) * scale
    zero = torch.zeros_like(best)
    return [torch.where(valid[:, :, None], out_boxes, zero[:, :, None]), torch.where(valid, best, zero),
            torch.where(valid, order // topk + 1, torch.zeros_like(order)), valid.sum(1)]


def box_scale(images: Tensor, resized_hw: Tensor) -> Tensor:
    """``(w, h, w, h)`` ratios input / resized size as torchvision's ``resize_boxes`` computes them (float32)."""
    ratio = torch._shape_as_tensor(images)[2:].to(torch.float32) / resized_hw  # a shape op when traced
    return ratio[[1, 0, 1, 0]]


class DeployableDetector(nn.Module):
    """``images (N, 3, H, W)`` float RGB in [0, 1], any size -> the ``raw`` or ``nms`` outputs described above.

    Args:
        model: a trained :class:`heads.detector.SSDDetector` (its weights are shared, not copied).
        output: ``"raw"`` or ``"nms"``.
    """

    __annotations__ = {"box_coder": BoxCoder}

    def __init__(self, model: SSDDetector, output: str = "nms") -> None:
        super().__init__()
        if output not in DETECTOR_OUTPUTS:
            raise ValueError(f"detector output must be one of {', '.join(DETECTOR_OUTPUTS)}, got {output!r}")
        self.output = output
        self.backbone, self.head, self.box_coder = model.backbone, model.head, model.box_coder
        transform = model.transform
        self.size = [int(transform.fixed_size[1]), int(transform.fixed_size[0])]  # (H, W) as torchvision resizes
        self.register_buffer("mean", torch.tensor(transform.image_mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(transform.image_std).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("resized_hw", torch.tensor(self.size, dtype=torch.float32), persistent=False)
        self.register_buffer("anchors", self._default_boxes(model), persistent=False)
        self.score_thresh, self.nms_thresh = float(model.score_thresh), float(model.nms_thresh)
        self.topk = min(int(model.topk_candidates), self.anchors.shape[0])
        self.detections_per_img = int(model.detections_per_img)
        self.num_classes = int(model.head.classification_head.num_columns)

    @torch.no_grad()
    def _default_boxes(self, model: SSDDetector) -> Tensor:
        """Default boxes ``(A, 4)`` xyxy in resized-input pixels, from the model's own generator at its size."""
        param = next(model.parameters())
        x = torch.zeros(1, 3, *self.size, dtype=param.dtype, device=param.device)
        maps = list(model.backbone(x).values())
        return model.anchor_generator(ImageList(x, [(self.size[0], self.size[1])]), maps)[0]

    def postprocess_options(self) -> dict:
        """What :func:`postprocess` needs besides the tensors (recorded in exported metadata)."""
        return {"size": list(self.size), "num_classes": self.num_classes, "score_thresh": self.score_thresh,
                "nms_thresh": self.nms_thresh, "topk": self.topk, "detections_per_img": self.detections_per_img}

    def forward(self, images: Tensor) -> list[Tensor]:
        x = nn.functional.interpolate(images, size=self.size, mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        out = self.head(list(self.backbone(x).values()))
        logits, regression = out["cls_logits"], out["bbox_regression"]
        n, a = regression.shape[0], regression.shape[1]
        boxes = self.box_coder.decode_single(regression.reshape(-1, 4), self.anchors.repeat(n, 1)).reshape(n, a, 4)
        if self.output == "raw":
            return [logits, boxes]
        return postprocess(logits, boxes, box_scale(images, self.resized_hw).to(boxes.dtype), size=self.size,
                           num_classes=self.num_classes, score_thresh=self.score_thresh, nms_thresh=self.nms_thresh,
                           topk=self.topk, detections_per_img=self.detections_per_img)
