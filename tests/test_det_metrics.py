"""VOC AP agrees with two independent computations on the same detections.

1. ``_devkit_ap`` below: a straight transcription of the classic devkit procedure (one global score ranking
   per class, a per-detection loop, ``max IoU`` written out with min/max arithmetic, a per-box "taken" flag,
   the 11-point and envelope AP as loops). It shares no code with :mod:`tasks.det_metrics`, which matches image
   by image with ``torchvision.ops.box_iou`` and vectorised first-claim selection. Compared with difficult
   boxes and overlapping boxes, where the VOC rule is particular.
2. torchmetrics ``MeanAveragePrecision`` on the pycocotools backend, restricted to where the COCO and VOC
   definitions coincide: IoU threshold 0.5 only, no difficult boxes, boxes of one class in one image disjoint
   (then at most one box can overlap a detection by IoU > 0.5, so COCO's and VOC's matching agree), at most 100
   detections per image and class. With recall thresholds {0, 0.1, ..., 1} COCO's interpolated AP *is* the
   VOC07 11-point AP; with 1001 thresholds it approximates the area under the envelope within 1/1000 per step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tasks.det_metrics import VOCAccumulator, coco_map_metric, voc_ap

NAMES = ("a", "b", "c")


def _jitter(rng: np.random.Generator, box: list[float]) -> list[float]:
    cx, cy = (box[0] + box[2]) / 2 + rng.normal(0, 2), (box[1] + box[3]) / 2 + rng.normal(0, 2)
    w, h = (box[2] - box[0]) * np.exp(rng.normal(0, 0.1)), (box[3] - box[1]) * np.exp(rng.normal(0, 0.1))
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def _scene(rng: np.random.Generator, *, difficult: bool, disjoint: bool) -> tuple[list[dict], list[dict]]:
    """25 images: ground truth of 3 classes; detections = 0-2 jittered copies per box (misses, duplicates,
    10% with a wrong label) plus 0-3 random false positives, with random scores."""
    preds, targets = [], []
    for _ in range(25):
        boxes, labels, det, det_labels = [], [], [], []
        for i in range(int(rng.integers(0, 5))):
            x, y = (i * 60 + rng.uniform(0, 10), rng.uniform(0, 200)) if disjoint else rng.uniform(0, 200, 2)
            boxes.append([x, y, x + rng.uniform(15, 50), y + rng.uniform(15, 50)])
            labels.append(int(rng.integers(1, 4)))
            for _ in range(int(rng.integers(0, 3))):
                det.append(_jitter(rng, boxes[-1]))
                det_labels.append(labels[-1] if rng.random() > 0.1 else int(rng.integers(1, 4)))
        for x, y in rng.uniform(0, 200, (int(rng.integers(0, 4)), 2)):
            det.append([x, y, x + 30, y + 30])
            det_labels.append(int(rng.integers(1, 4)))
        diff = rng.random(len(labels)) < (0.25 if difficult else 0.0)
        preds.append({"boxes": torch.tensor(det).reshape(-1, 4).float(), "labels": torch.tensor(det_labels).long(),
                      "scores": torch.from_numpy(rng.random(len(det))).float()})
        targets.append({"boxes": torch.tensor(boxes).reshape(-1, 4).float(), "labels": torch.tensor(labels).long(),
                        "difficult": torch.from_numpy(diff)})
    return preds, targets


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _devkit_ap(preds: list[dict], targets: list[dict], label: int) -> tuple[float, float]:
    gts = {}
    for i, t in enumerate(targets):
        keep = (t["labels"] == label).numpy()
        gts[i] = {"boxes": t["boxes"].double().numpy()[keep], "difficult": t["difficult"].numpy()[keep],
                  "taken": [False] * int(keep.sum())}
    npos = sum(int((~g["difficult"]).sum()) for g in gts.values())
    dets = [(float(s), i, b) for i, p in enumerate(preds)
            for b, s, c in zip(p["boxes"].double().numpy(), p["scores"].double().numpy(), p["labels"].numpy())
            if c == label]
    dets.sort(key=lambda d: -d[0])
    tp, fp = [], []
    for _, i, box in dets:
        g = gts[i]
        ious = [_iou(box, gb) for gb in g["boxes"]]
        j = int(np.argmax(ious)) if ious else -1
        if j >= 0 and ious[j] > 0.5:
            if g["difficult"][j]:
                tp.append(0), fp.append(0)
            elif not g["taken"][j]:
                g["taken"][j] = True
                tp.append(1), fp.append(0)
            else:
                tp.append(0), fp.append(1)
        else:
            tp.append(0), fp.append(1)
    tp, fp = np.cumsum(tp), np.cumsum(fp)
    rec = tp / npos
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    ap07 = 0.0
    for t in np.arange(0.0, 1.1, 0.1):
        ap07 += (prec[rec >= t].max() if (rec >= t).any() else 0.0) / 11
    mrec, mpre = [0.0, *rec, 1.0], [0.0, *prec, 0.0]
    for k in range(len(mpre) - 2, -1, -1):
        mpre[k] = max(mpre[k], mpre[k + 1])
    area = sum((mrec[k + 1] - mrec[k]) * mpre[k + 1] for k in range(len(mrec) - 1) if mrec[k + 1] != mrec[k])
    return ap07, area


def _ours(preds: list[dict], targets: list[dict]):
    acc = VOCAccumulator(NAMES)
    acc.update(preds[:10], targets[:10])  # in two chunks, as an evaluation loop feeds it
    acc.update(preds[10:], targets[10:])
    return acc.compute()


@pytest.mark.parametrize("seed", range(4))
def test_voc_ap_matches_devkit_procedure_with_difficult_and_overlaps(seed):
    preds, targets = _scene(np.random.default_rng(seed), difficult=True, disjoint=False)
    result = _ours(preds, targets)
    assert sum(int(t["difficult"].sum()) for t in targets) > 0
    for label in (1, 2, 3):
        ap07, area = _devkit_ap(preds, targets, label)
        assert result.ap07[label - 1] == pytest.approx(ap07, abs=1e-12)
        assert result.ap[label - 1] == pytest.approx(area, abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("points", [11, 1001])
def test_voc_ap_matches_pycocotools_where_definitions_coincide(seed, points):
    preds, targets = _scene(np.random.default_rng(100 + seed), difficult=False, disjoint=True)
    ours = _ours(preds, targets)
    thresholds = np.arange(0.0, 1.1, 0.1).tolist() if points == 11 else np.linspace(0, 1, points).tolist()
    metric = coco_map_metric(iou_thresholds=[0.5], rec_thresholds=thresholds, class_metrics=True)
    metric.update(preds, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
    coco = metric.compute()
    per_class = dict(zip(coco["classes"].tolist(), coco["map_per_class"].double().tolist()))
    expected = ours.ap07 if points == 11 else ours.ap
    for label in (1, 2, 3):
        # 11 points: the same numbers (float32 output); 1001 points: a Riemann sum of the same envelope
        assert per_class[label] == pytest.approx(expected[label - 1], abs=1e-6 if points == 11 else 2.5e-3)


@pytest.mark.parametrize(
    "recall,precision,ap07,area",
    [
        ([0.5, 1.0], [1.0, 0.5], (6 * 1.0 + 5 * 0.5) / 11, 0.75),
        ([0.25, 0.25, 0.5], [1.0, 0.5, 2 / 3], (3 * 1.0 + 3 * 2 / 3) / 11, 0.25 + 0.25 * 2 / 3),
        ([0.0], [0.0], 0.0, 0.0),
    ],
)
def test_voc_ap_hand_computed(recall, precision, ap07, area):
    rec, prec = np.asarray(recall), np.asarray(precision)
    assert voc_ap(rec, prec, use_07_metric=True) == pytest.approx(ap07)
    assert voc_ap(rec, prec, use_07_metric=False) == pytest.approx(area)


def test_unknown_label_is_rejected():
    acc = VOCAccumulator(NAMES)
    pred = {"boxes": torch.zeros(1, 4), "scores": torch.ones(1), "labels": torch.tensor([4])}
    target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    with pytest.raises(ValueError, match="outside 1..3"):
        acc.update([pred], [target])
