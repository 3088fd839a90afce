"""Evaluate a detector on a VOC split: VOC07 11-point and area-under-PR mAP, per-class AP, COCO mAP@[.5:.95].

    python -m tasks.det_eval runs/det_voc/best.pt                                   # the run's own val split
    python -m tasks.det_eval runs/det_voc/best.pt --data-root VOCdevkit/VOC2007 --split test --json scores.json
    python -m tasks.det_eval det.onnx                                               # what was exported

Images are fed at their original size; the detector resizes internally and returns boxes in input pixels, so
AP is computed against the annotation boxes exactly as loaded (difficult objects included and ignored by the
VOC rule, passed to COCO as ``iscrowd``). Under torchrun every process scores its shard and results are merged.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

if not __package__:  # run as a file (`python tasks/det_eval.py`): make the repository importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from tasks.det_data import VOCDetection, collate
from tasks.det_metrics import VOCAccumulator, coco_map_metric, coco_targets
from tasks.det_model import load_model
from tasks.det_transforms import eval_transforms
from tasks.engine import DistInfo, Precision, cleanup_distributed, progress
from tasks.engine.cli import add_eval_arguments, run
from tasks.engine.files import refuse_existing
from tasks.engine.inference import start_inference
from tasks.engine.metrics_log import write_json
from tasks.engine.sampler import eval_loader as shard_loader

__all__ = ["eval_loader", "evaluate", "main", "predict"]


def eval_loader(dataset: Dataset, info: DistInfo, *, batch_size: int = 8, workers: int = 0) -> DataLoader:
    """This rank's disjoint share of ``dataset``, as lists of images of their own sizes."""
    return shard_loader(dataset, rank=info.rank, world_size=info.world_size, batch_size=batch_size, workers=workers,
                        collate_fn=collate, pin_memory=info.device.type == "cuda")


@torch.no_grad()
def predict(model: nn.Module, images: Sequence[torch.Tensor], *, precision: Precision) -> list[dict[str, torch.Tensor]]:
    """Detections ``{"boxes" (xyxy, input pixels), "scores", "labels"}`` on the CPU for float ``(3, H, W)`` images in
    [0, 1] of any sizes."""
    with precision.autocast():
        out = model([image.to(precision.device) for image in images])
    return [{k: v.cpu() if k == "labels" else v.float().cpu() for k, v in p.items()} for p in out]


def evaluate(model: nn.Module, loader: DataLoader, *, class_names: Sequence[str], precision: Precision,
             coco: bool = True, show_progress: bool = False) -> dict[str, object]:
    """Scores of ``model`` over ``loader``, merged across all processes (call on every rank).

    Returns:
        ``map07``, ``map`` (VOC area), ``ap07``/``ap`` per class (lists, NaN without ground truth), ``table``
        (Markdown), and with ``coco`` ``coco_map``, ``coco_map50``, ``coco_map75``.
    """
    was_training = model.training
    model.eval()
    voc = VOCAccumulator(class_names)
    coco_metric = coco_map_metric() if coco else None
    for images, targets in progress(loader, enabled=show_progress, desc="eval"):
        predictions = predict(model, images, precision=precision)
        voc.update(predictions, targets)
        if coco_metric is not None:
            coco_metric.update(predictions, coco_targets(targets))
    model.train(was_training)
    voc.sync()
    result = voc.compute()
    metrics: dict[str, object] = {
        "map07": result.map07, "map": result.map, "ap07": result.ap07.tolist(), "ap": result.ap.tolist(),
        "table": result.table(),
    }  # fmt: skip
    if coco_metric is not None:
        scores = coco_metric.compute()
        metrics.update(coco_map=float(scores["map"]), coco_map50=float(scores["map_50"]),
                       coco_map75=float(scores["map_75"]))
    return metrics


def main(argv: list[str] | None = None) -> dict[str, object]:
    p = argparse.ArgumentParser(prog="python -m tasks.det_eval", description=__doc__.splitlines()[0])
    add_eval_arguments(p, batch_size=8)
    p.add_argument("--coco", action=argparse.BooleanOptionalAction, default=True,
                   help="also score COCO-style mAP@[.5:.95] (torchmetrics + pycocotools)")
    args = p.parse_args(argv)
    if args.json:
        refuse_existing([args.json])
    info, model, ckpt = start_inference(args, task="det", load_model=load_model)
    try:
        names, data = ckpt["class_names"], ckpt["data"] or {}
        if not (args.data_root or data) or not (args.split or data):
            raise ValueError(f"{args.model} records no dataset: pass --data-root and --split")
        dataset = VOCDetection(args.data_root or data["val_root"], args.split or data["val_split"],
                               transforms=eval_transforms(), class_names=names)
        dataset.verify(show_progress=info.is_main and args.progress)
        loader = eval_loader(dataset, info, batch_size=args.batch_size, workers=args.workers)
        metrics = evaluate(model, loader, class_names=names, precision=Precision(info.device, amp=args.amp),
                           coco=args.coco, show_progress=info.is_main and args.progress)
    finally:
        cleanup_distributed()
    if info.is_main:
        print(metrics["table"])
        line = f"mAP VOC07 {100 * metrics['map07']:.2f}  mAP area {100 * metrics['map']:.2f}"
        print(line + (f"  COCO mAP@[.5:.95] {100 * metrics['coco_map']:.2f}" if "coco_map" in metrics else ""))
        if args.json:
            write_json(args.json, metrics)
    return metrics


if __name__ == "__main__":
    run(main, "python -m tasks.det_eval")
