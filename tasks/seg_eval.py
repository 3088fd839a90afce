"""Evaluate a segmenter on full-resolution images: mIoU, per-class IoU, pixel accuracy; prediction overlays.

    python -m tasks.seg_eval runs/seg_voc/best.pt                       # the run's own val split
    python -m tasks.seg_eval runs/seg_voc/best.pt --data-root VOCdevkit/VOC2012 --split val --json scores.json
    python -m tasks.seg_eval seg.onnx                                   # what was exported, under ONNX Runtime

Each image is run at its own size (batch 1 by default; larger batches are padded with ignored pixels), never
centre-cropped: the VOC benchmark scores full images, and a centre crop inflates mIoU. Under torchrun every process
scores a disjoint shard and the confusion matrices are summed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

if not __package__:  # run as a file (`python tasks/seg_eval.py`): make the repository importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from tasks.engine import DistInfo, Precision, cleanup_distributed, progress, save_panels
from tasks.engine.cli import add_eval_arguments, run
from tasks.engine.files import refuse_existing
from tasks.engine.inference import start_inference
from tasks.engine.metrics_log import write_json
from tasks.engine.sampler import eval_loader as shard_loader
from tasks.seg_data import VOCSegmentation, voc_palette
from tasks.seg_metrics import ConfusionMatrix, SegScores
from tasks.seg_model import inference_transform, load_model
from tasks.seg_transforms import pad_collate

__all__ = ["eval_loader", "evaluate", "predict", "save_overlays", "main"]


def eval_loader(dataset: VOCSegmentation, info: DistInfo, *, batch_size: int = 1, workers: int = 0) -> DataLoader:
    """This rank's disjoint share of ``dataset``, padded batches (see :func:`tasks.seg_transforms.pad_collate`)."""
    return shard_loader(dataset, rank=info.rank, world_size=info.world_size, batch_size=batch_size, workers=workers,
                        collate_fn=pad_collate, pin_memory=info.device.type == "cuda")


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, *, precision: Precision) -> torch.Tensor:
    """Class indices ``(N, H, W)`` for normalised images ``(N, 3, H, W)``."""
    with precision.autocast():
        return model(precision.prepare_input(images)).argmax(1)


def evaluate(model: nn.Module, loader: DataLoader, *, num_classes: int, precision: Precision,
             show_progress: bool = False) -> SegScores:
    """Scores of ``model`` over ``loader`` summed across all processes (call on every rank)."""
    was_training = model.training
    model.eval()
    matrix = ConfusionMatrix(num_classes, device=precision.device)
    for batch in progress(loader, enabled=show_progress, desc="eval"):
        matrix.update(predict(model, batch["image"], precision=precision), batch["mask"].to(precision.device))
    matrix.all_reduce()
    model.train(was_training)
    return matrix.compute()


def save_overlays(model: nn.Module, dataset: VOCSegmentation, indices: Sequence[int], path: str | Path, *,
                  precision: Precision) -> Path:
    """A PNG with one row per image: image | ground truth | prediction, labels in the VOC palette."""
    palette = voc_palette()
    was_training = model.training
    model.eval()
    rows = []
    for index in indices:
        image, label = dataset.load(index)
        sample = dataset.transform(image=image, mask=label)
        pred = predict(model, sample["image"][None], precision=precision)[0].cpu().numpy()
        rows.append([image, palette[label], palette[pred.astype(np.uint8)]])
    model.train(was_training)
    return save_panels(rows, path, titles=["image", "ground truth", "prediction"])


def _format(scores: SegScores, class_names: Sequence[str]) -> str:
    lines = [f"mIoU {100 * scores.miou:.2f}  pixel acc {100 * scores.pixel_acc:.2f}"]
    lines += [f"  {name:<14s} {100 * iou:6.2f}" for name, iou in zip(class_names, scores.iou)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> SegScores:
    p = argparse.ArgumentParser(prog="python -m tasks.seg_eval", description=__doc__.splitlines()[0])
    add_eval_arguments(p)
    args = p.parse_args(argv)
    if args.json:
        refuse_existing([args.json])
    info, model, ckpt = start_inference(args, task="seg", load_model=load_model)
    try:
        num_classes, data = ckpt["model_config"]["num_classes"], ckpt["data"] or {}
        root, split = args.data_root or data.get("root"), args.split or data.get("val_split")
        if not root or not split:
            raise ValueError(f"{args.model} records no dataset: pass --data-root and --split")
        dataset = VOCSegmentation(root, split, num_classes=num_classes,
                                  transform=inference_transform(ckpt["preprocessing"]))
        dataset.verify(show_progress=info.is_main and args.progress)
        loader = eval_loader(dataset, info, batch_size=args.batch_size, workers=args.workers)
        scores = evaluate(model, loader, num_classes=num_classes, precision=Precision(info.device, amp=args.amp),
                          show_progress=info.is_main and args.progress)
    finally:
        cleanup_distributed()
    if info.is_main:
        print(_format(scores, ckpt["class_names"]))
        if args.json:
            write_json(args.json, scores.as_dict(ckpt["class_names"]))
    return scores


if __name__ == "__main__":
    run(main, "python -m tasks.seg_eval")
