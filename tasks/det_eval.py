"""Evaluate a detector on a VOC split: VOC07 11-point and area-under-PR mAP, per-class AP, COCO mAP@[.5:.95].

    python -m tasks.det_eval runs/det/best.pt --data-root VOCdevkit/VOC2007 --split test

Images are fed at their original size; the detector resizes internally and returns boxes in input pixels, so
AP is computed against the annotation boxes exactly as loaded (difficult objects included and ignored by the
VOC rule, passed to COCO as ``iscrowd``). Under torchrun every process scores its shard and results are merged.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from heads import create_detector
from tasks.det_data import VOCDetection, collate
from tasks.det_metrics import VOCAccumulator, coco_map_metric, coco_targets
from tasks.det_transforms import eval_transforms
from tasks.engine import DistInfo, cleanup_distributed, eval_shard, load_checkpoint, progress, setup_distributed
from tasks.engine.cli import run


def detector_config(*, backbone: str, class_names: Sequence[str], size: int) -> dict:
    """What a checkpoint needs to rebuild its detector (stored under ``"detector"``)."""
    return {"backbone": backbone, "class_names": list(class_names), "size": int(size)}


def load_detector(path: str | Path, *, device: torch.device | str = "cpu", **detector_kwargs) -> tuple[nn.Module, dict]:
    """Rebuild the detector of a training checkpoint; returns ``(model in eval mode, its detector config)``."""
    state = load_checkpoint(path)
    if "detector" not in state or "model" not in state:
        raise ValueError(f"{path} is not a detection checkpoint of tasks.det_train (no 'detector'/'model' entry)")
    config = state["detector"]
    model = create_detector(
        config["backbone"], len(config["class_names"]) + 1, size=config["size"], **detector_kwargs
    )
    model.load_state_dict(state["model"])
    return model.to(device).eval(), config


def eval_loader(dataset: Dataset, *, batch_size: int, workers: int, info: DistInfo) -> DataLoader:
    """Every process gets a disjoint, unpadded shard (padding would count images twice)."""
    shard = eval_shard(len(dataset), info.rank, info.world_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=shard, num_workers=workers, collate_fn=collate)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    *,
    class_names: Sequence[str],
    device: torch.device,
    coco: bool = True,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    show_progress: bool = False,
) -> dict[str, object]:
    """Run ``model`` over ``loader`` and score it.

    Returns:
        ``map07``, ``map`` (VOC area), ``ap07``/``ap`` per class (lists, NaN without ground truth), ``table``
        (Markdown), and with ``coco`` ``coco_map``, ``coco_map50``, ``coco_map75``.
    """
    was_training = model.training
    model.eval()
    voc = VOCAccumulator(class_names)
    coco_metric = coco_map_metric() if coco else None
    for images, targets in progress(loader, enabled=show_progress, desc="eval"):
        with autocast():
            predictions = model([image.to(device) for image in images])
        predictions = [{k: v.float().cpu() if k != "labels" else v.cpu() for k, v in p.items()} for p in predictions]
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
    p = argparse.ArgumentParser(prog="python -m tasks.det_eval", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path, help="best.pt / last.pt written by tasks.det_train")
    p.add_argument("--data-root", type=Path, required=True, help="a VOC dir, e.g. VOCdevkit/VOC2007")
    p.add_argument("--split", default="test", help="ImageSets/Main list to evaluate")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", choices=("cpu", "cuda"))
    p.add_argument("--no-coco", action="store_true", help="skip COCO-style mAP")
    p.add_argument("--json", type=Path, help="also write the metrics here")
    args = p.parse_args(argv)
    info = setup_distributed(args.device)
    try:
        model, config = load_detector(args.checkpoint, device=info.device)
        dataset = VOCDetection(args.data_root, args.split, transforms=eval_transforms(),
                               class_names=config["class_names"])
        loader = eval_loader(dataset, batch_size=args.batch_size, workers=args.workers, info=info)
        metrics = evaluate(model, loader, class_names=config["class_names"], device=info.device,
                           coco=not args.no_coco, show_progress=info.is_main)
    finally:
        cleanup_distributed()
    if info.is_main:
        print(metrics["table"])
        line = f"mAP VOC07 {100 * metrics['map07']:.2f}  mAP area {100 * metrics['map']:.2f}"
        print(line + (f"  COCO mAP@[.5:.95] {100 * metrics['coco_map']:.2f}" if "coco_map" in metrics else ""))
        if args.json:
            args.json.write_text(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    run(main, "python -m tasks.det_eval")
