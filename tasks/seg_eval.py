"""Evaluate a segmenter on full-resolution images: mIoU, per-class IoU, pixel accuracy; prediction overlays.

Usage: ``python -m tasks.seg_eval --checkpoint runs/seg_voc/best.pt --data-root .../VOC2012``.
Each image is run at its own size (batch 1 by default; larger batches are padded with ignored pixels), never
centre-cropped, as the VOC benchmark scores it (DESIGN §8).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .engine import (DistInfo, Precision, cleanup_distributed, eval_shard, progress, save_panels, set_cpu_threads,
                     setup_distributed)
from .engine.cli import run
from .seg_metrics import ConfusionMatrix, SegScores
from .seg_model import inference_transform, load_model
from .seg_transforms import pad_collate
from .seg_voc import VOCSegmentation, voc_palette

__all__ = ["eval_loader", "evaluate", "predict", "save_overlays", "main"]


def eval_loader(dataset: VOCSegmentation, dist: DistInfo, *, batch_size: int = 1, workers: int = 0) -> DataLoader:
    """This rank's disjoint share of ``dataset`` (no padding duplicates, so summed counts are exact)."""
    shard = eval_shard(len(dataset), dist.rank, dist.world_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=shard,
                      num_workers=workers, persistent_workers=workers > 0, collate_fn=pad_collate,
                      pin_memory=dist.device.type == "cuda")


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
    p = argparse.ArgumentParser(prog="python -m tasks.seg_eval", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="last.pt or best.pt written by tasks.seg_train")
    p.add_argument("--data-root", help="VOC2012 folder (default: the one the checkpoint was trained with)")
    p.add_argument("--split", default="val", help="ImageSets/Segmentation list to score")
    p.add_argument("--batch-size", type=int, default=1, help="images per forward pass (padded to the largest)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument("--amp", action="store_true", help="float16 autocast (CUDA only)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default on CPU: cores - workers)")
    p.add_argument("--output", help="also write the scores as JSON here")
    args = p.parse_args(argv)
    dist = setup_distributed(args.device)
    set_cpu_threads(dist, threads=args.threads, workers=args.workers)
    model, ckpt = load_model(args.checkpoint, device=dist.device)
    config = ckpt["model_config"]
    data_root = args.data_root or ckpt.get("data_root")
    if not data_root:
        p.error("--data-root is required: the checkpoint does not record its data folder")
    dataset = VOCSegmentation(data_root, args.split, num_classes=config["num_classes"],
                              transform=inference_transform(ckpt["preprocessing"]))
    precision = Precision(dist.device, amp=args.amp)
    scores = evaluate(model, eval_loader(dataset, dist, batch_size=args.batch_size, workers=args.workers),
                      num_classes=config["num_classes"], precision=precision, show_progress=dist.is_main)
    cleanup_distributed()
    names = ckpt.get("class_names") or [str(i) for i in range(config["num_classes"])]
    if dist.is_main:
        print(_format(scores, names))
    if args.output and dist.is_main:
        Path(args.output).write_text(json.dumps(scores.as_dict(names), indent=2))
    return scores


if __name__ == "__main__":
    run(main, "python -m tasks.seg_eval")
