"""Train SSDLite on PASCAL VOC, or with no ``--data-root`` on built-in sample data in the VOC layout.

    python -m tasks.det_train                                    # built-in sample data, about two minutes on CPU
    torchrun --nproc_per_node 4 -m tasks.det_train --data-root VOCdevkit/VOC2007 VOCdevkit/VOC2012

VOC XML parsing and validation, the SSD augmentation, SGD (or AdamW) with linear warmup and per-step cosine decay,
AMP and channels_last on CUDA, DDP under torchrun, VOC and COCO mAP. ``--out`` receives ``last.pt`` (every epoch,
on ``--stop-after`` and on Ctrl-C), ``best.pt`` (best VOC07 mAP), ``metrics.jsonl``, ``curves.png``,
``predictions.png`` (validation images: ground truth | predictions), ``ap_table.md`` and ``results.json``. The
loop, checkpoints and resume rules are the shared :class:`tasks.engine.trainer.Trainer`'s.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as a file (`python tasks/det_train.py`): make the repository importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch
from torch import nn

from tasks.det_data import VOCDetection, collate
from tasks.det_eval import eval_loader, evaluate
from tasks.det_model import build_model, model_config, preprocessing_of
from tasks.det_synthetic import make_synthetic_voc
from tasks.det_transforms import eval_transforms, train_transforms
from tasks.det_visualize import save_predictions
from tasks.engine import barrier, plot_curves, read_metrics
from tasks.engine.cli import run
from tasks.engine.metrics_log import write_json
from tasks.engine.trainer import Trainer, train_main
from tasks.det_config import DEFAULTS, parse_args

__all__ = ["DetTrainer", "main"]


class DetTrainer(Trainer):
    """SSDLite on VOC-layout data: SSD matching and loss, VOC07 mAP (and COCO mAP) on the val split."""

    task, command, metric, defaults = "det", "python -m tasks.det_train", "map07", DEFAULTS
    decay_norm_and_bias = False  # the SSD recipes leave norms and biases without weight decay
    collate = staticmethod(collate)

    def build_datasets(self) -> tuple[VOCDetection, VOCDetection]:
        args = self.args
        roots, val_root = args.data_root, args.val_root
        if roots is None:
            root = self.out / "synthetic_voc"
            if self.info.is_main:
                make_synthetic_voc(root, num_train=args.synthetic_images[0], num_val=args.synthetic_images[1],
                                   seed=args.seed)
            barrier()
            roots, val_root = [root], root
        self.roots, self.val_root = [Path(r).resolve() for r in roots], Path(val_root).resolve()
        augment = train_transforms(args.size, photometric=args.photometric, max_zoom_out=args.max_zoom_out,
                                   iou_crop=args.iou_crop)
        train = VOCDetection(self.roots, args.train_split, transforms=augment, keep_difficult=args.train_difficult,
                             skip_empty=True)
        self.class_names = train.class_names
        return train, VOCDetection(self.val_root, args.val_split, transforms=eval_transforms())

    def build_model(self, pretrained: str | None, preprocessing: dict | None) -> nn.Module:
        return build_model(self.model_config(), preprocessing=preprocessing, pretrained=pretrained,
                           freeze_bn=self.args.freeze_bn)

    def preprocessing_of(self, model: nn.Module) -> dict:
        return preprocessing_of(model)

    def attach_transforms(self, preprocessing: dict) -> None:  # the detector normalises its own inputs
        per_rank = self.args.batch_size // self.info.world_size
        self.val_loader = eval_loader(self.val_set, self.info, batch_size=max(per_rank, 8), workers=self.args.workers)

    def model_config(self) -> dict:
        return model_config(self.args, self.class_names)

    def data_record(self) -> dict:
        return {"roots": [str(r) for r in self.roots], "train_split": self.args.train_split,
                "val_root": str(self.val_root), "val_split": self.args.val_split}

    def losses(self, batch: tuple[list[torch.Tensor], list[dict]]) -> dict[str, torch.Tensor]:
        images, targets = batch
        device = self.info.device
        targets = [{"boxes": t["boxes"].as_subclass(torch.Tensor).to(device), "labels": t["labels"].to(device)}
                   for t in targets]
        return self.model(self.precision.prepare_input(torch.stack(images)), targets)

    def evaluate(self) -> dict:
        metrics = evaluate(self.eval_model, self.val_loader, class_names=self.class_names, precision=self.precision,
                           coco=self.args.coco, show_progress=self.info.is_main and self.args.progress)
        self.ap_table = metrics.pop("table")
        return metrics

    def write_figures(self) -> None:
        curves = [("train", "loss"), ("train", "lr"), ("val", "map07"), ("val", "coco_map")]
        plot_curves(read_metrics(self.log.path), self.out / "curves.png", curves=curves[: 4 if self.args.coco else 3])
        if self.args.num_visualize:
            save_predictions(self.eval_model, self.val_set, self.out / "predictions.png",
                             class_names=self.class_names, count=self.args.num_visualize)

    def write_results(self, metrics: dict) -> None:
        (self.out / "ap_table.md").write_text(self.ap_table + "\n")
        write_json(self.out / "results.json", {**metrics, "iteration": self.iteration,
                                               "best_map07": self.checkpoints.best})


def main(argv: list[str] | None = None) -> dict:
    return train_main(DetTrainer, parse_args, argv)


if __name__ == "__main__":
    run(main, "python -m tasks.det_train")
