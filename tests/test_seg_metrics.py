"""Our confusion-matrix scores against torchmetrics on random predictions with ignored pixels."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from tasks.seg_metrics import ConfusionMatrix
from tasks.seg_data import IGNORE_INDEX

NUM_CLASSES = 6


def _batches(seed: int, *, absent: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(3):
        target = torch.randint(0, NUM_CLASSES, (2, 17, 23), generator=g)
        pred = torch.where(torch.rand(target.shape, generator=g) < 0.6, target,
                           torch.randint(0, NUM_CLASSES, target.shape, generator=g))
        if absent is not None:  # a class that occurs nowhere has no IoU
            target[target == absent] = 0
            pred[pred == absent] = 0
        target[torch.rand(target.shape, generator=g) < 0.1] = IGNORE_INDEX
        out.append((pred, target))
    return out


@pytest.mark.parametrize("seed,absent", [(0, None), (1, None), (2, 4)])
def test_matches_torchmetrics(seed, absent):
    ours = ConfusionMatrix(NUM_CLASSES)
    per_class = MulticlassJaccardIndex(NUM_CLASSES, ignore_index=IGNORE_INDEX, average="none")
    accuracy = MulticlassAccuracy(NUM_CLASSES, ignore_index=IGNORE_INDEX, average="micro")
    for pred, target in _batches(seed, absent=absent):
        ours.update(pred, target)
        per_class.update(pred, target)
        accuracy.update(pred, target)
    scores = ours.compute()
    reference = per_class.compute().double()
    present = [c for c in range(NUM_CLASSES) if c != absent]
    if absent is not None:
        assert math.isnan(scores.iou[absent])
    assert torch.tensor([scores.iou[c] for c in present]).double() == pytest.approx(reference[present].tolist())
    assert scores.miou == pytest.approx(reference[present].mean().item())
    assert scores.pixel_acc == pytest.approx(accuracy.compute().item())
    if absent is None:
        macro = MulticlassJaccardIndex(NUM_CLASSES, ignore_index=IGNORE_INDEX, average="macro")
        for pred, target in _batches(seed):
            macro.update(pred, target)
        assert scores.miou == pytest.approx(macro.compute().item())


def test_absent_class_is_nan_and_left_out_of_mean():
    matrix = ConfusionMatrix(3)
    matrix.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, IGNORE_INDEX]))
    scores = matrix.compute()
    assert scores.iou[:2] == [1.0, 1.0] and math.isnan(scores.iou[2])
    assert scores.miou == 1.0


@pytest.mark.parametrize("pred,target,match", [
    (torch.zeros(2, 3), torch.zeros(3, 2), "differ in shape"),
    (torch.zeros(3), torch.tensor([0, 7, 1]), r"target values must be in \[0, 3\)"),
])
def test_bad_input_is_rejected(pred, target, match):
    with pytest.raises(ValueError, match=match):
        ConfusionMatrix(3).update(pred.long(), target.long())
