"""Train DeepLabV3+ for semantic segmentation on PASCAL VOC 2012, or on built-in sample data in the VOC layout.

    python -m tasks.seg_train                                   # built-in sample data, about 3 minutes on CPU
    python -m tasks.seg_train --data-root VOCdevkit/VOC2012      # the published recipe
    torchrun --nproc_per_node 4 -m tasks.seg_train --data-root VOCdevkit/VOC2012 --amp

Writes to ``--out``: ``last.pt`` (every epoch, on ``--stop-after`` and on Ctrl-C), ``best.pt`` (best val mIoU),
``metrics.jsonl``, ``curves.png``, ``overlays.png``, ``results.json``. ``--resume`` continues exactly. The loop,
checkpoints and resume rules are the shared :class:`tasks.engine.trainer.Trainer`'s.
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # run as a file (`python tasks/seg_train.py`): make the repository importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch
import torch.nn.functional as F
from torch import nn

from tasks.engine import barrier, plot_curves, read_metrics
from tasks.engine.cli import run
from tasks.engine.metrics_log import write_json
from tasks.engine.trainer import Trainer, train_main
from tasks.seg_config import DEFAULTS, parse_args
from tasks.seg_data import CLASS_NAMES, IGNORE_INDEX, VOCSegmentation
from tasks.seg_eval import eval_loader, evaluate, save_overlays
from tasks.seg_model import build_model, model_config, preprocessing_of
from tasks.seg_synthetic import SYNTHETIC_CLASSES, make_synthetic_voc
from tasks.seg_transforms import eval_transform, train_transform

__all__ = ["SegTrainer", "main", "seg_loss"]


def seg_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pixel-wise cross-entropy ``(N, C, H, W)`` vs ``(N, H, W)`` averaged over non-ignored pixels (0 if none)."""
    total = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (target != IGNORE_INDEX).sum().clamp(min=1)


def class_names(num_classes: int, *, synthetic: bool) -> list[str]:
    """Names of the classes: the sample data's or VOC's when the count matches, ``class_<i>`` beyond them."""
    known = SYNTHETIC_CLASSES if synthetic else CLASS_NAMES if num_classes == len(CLASS_NAMES) else ()
    return [known[i] if i < len(known) else f"class_{i}" for i in range(num_classes)]


class SegTrainer(Trainer):
    """DeepLabV3+ on VOC-layout data: per-pixel cross-entropy, mIoU on full-resolution val images."""

    task, command, metric, defaults = "seg", "python -m tasks.seg_train", "miou", DEFAULTS

    def build_datasets(self) -> tuple[VOCSegmentation, VOCSegmentation]:
        args = self.args
        root = args.data_root
        if root is None:
            if self.info.is_main:
                make_synthetic_voc(self.out / "data", num_train=args.synthetic_images[0],
                                   num_val=args.synthetic_images[1], seed=args.seed)
            barrier()
            root = self.out / "data" / "VOC2012"
        self.data_root = Path(root).resolve()
        self.class_names = class_names(args.num_classes, synthetic=args.data_root is None)
        train = VOCSegmentation(root, args.train_split, num_classes=args.num_classes, sbd_root=args.sbd_root)
        return train, VOCSegmentation(root, args.val_split, num_classes=args.num_classes)

    def build_model(self, pretrained: str | None, preprocessing: dict | None) -> nn.Module:
        return build_model(model_config(self.args), pretrained=pretrained, freeze_bn=self.args.freeze_bn)

    def preprocessing_of(self, model: nn.Module) -> dict:
        return preprocessing_of(model)

    def attach_transforms(self, preprocessing: dict) -> None:
        self.train_set.transform = train_transform(self.args.crop_size, **preprocessing)
        self.val_set.transform = eval_transform(**preprocessing)
        self.val_loader = eval_loader(self.val_set, self.info, workers=min(self.args.workers, 2))

    def model_config(self) -> dict:
        return model_config(self.args)

    def data_record(self) -> dict:
        sbd = self.args.sbd_root and str(Path(self.args.sbd_root).resolve())
        return {"root": str(self.data_root), "sbd_root": sbd, "train_split": self.args.train_split,
                "val_split": self.args.val_split}

    def losses(self, batch: dict) -> dict[str, torch.Tensor]:
        images = self.precision.prepare_input(batch["image"])
        return {"loss": seg_loss(self.model(images), batch["mask"].to(self.info.device, non_blocking=True))}

    def evaluate(self) -> dict:
        scores = evaluate(self.eval_model, self.val_loader, num_classes=self.args.num_classes,
                          precision=self.precision, show_progress=self.info.is_main and self.args.progress)
        return scores.as_dict(self.class_names)

    def write_figures(self) -> None:
        plot_curves(read_metrics(self.log.path), self.out / "curves.png",
                    curves=[("train", "loss"), ("train", "lr"), ("val", "miou")])
        count = min(self.args.num_visualize, len(self.val_set))
        if count:
            save_overlays(self.eval_model, self.val_set, range(count), self.out / "overlays.png",
                          precision=self.precision)

    def write_results(self, metrics: dict) -> None:
        write_json(self.out / "results.json", {**metrics, "iteration": self.iteration, "best_miou":
                                               self.checkpoints.best})


def main(argv: list[str] | None = None) -> dict:
    return train_main(SegTrainer, parse_args, argv)


if __name__ == "__main__":
    run(main, "python -m tasks.seg_train")
