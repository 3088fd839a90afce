"""Command line of ``python -m tasks.det_train``: a recipe for real data with ``--data-root``, a small run on the
built-in sample data without it.

With real data, ``--recipe published`` is the MobileNetV2-SSDLite VOC recipe (Sandler et al. 2018, §6.2; SSD
augmentation of Liu et al. 2016, §2.2): VOC07+12 trainval, 320 input, global batch 32, SGD lr 0.01 momentum 0.9,
weight decay 5e-4 (none on norms and biases), 1 warmup epoch then cosine over 200 epochs, ImageNet-pretrained
backbone, evaluation on VOC2007 test. Its zoom-out and min-IoU crop pay off over hundreds of epochs; a few hundred
steps on a small dataset learn far more from plain flipped images, and more still with AdamW (Loshchilov & Hutter
2019) than with SGD, so ``--recipe small`` (horizontal flip only, AdamW lr 3e-3, weight decay 0.01, as the
built-in sample run) is the default below ``SMALL_DATA_IMAGES`` training images.
The built-in sample data trains on 2 CPU cores in about a minute: ShuffleNetV1 g3 0.5x from scratch at 96 px with
AdamW, zoom-out up to 2x and no min-IoU crop (which on 320 images slows learning past that budget; MobileNetV2 from
scratch also learns far slower there), on one compute thread (62 s against 90 s on two). Unlike segmentation it
trains in channels_last on CPU too: in NCHW it scored lower on each of four seeds of ``tasks.compare_training
--dataset scenes`` (41.9 against 49.0 VOC07 mAP, with SGD in ``small``) and its sample run took 112 s instead
of 82. The shared options and their meaning are those of :mod:`tasks.engine.cli`; the ones below are detection's
own.
"""

from __future__ import annotations

import argparse

from tasks.det_data import read_split
from tasks.engine.cli import TRAINER_COMMON, Defaults, Derived, add_trainer_arguments, parse_train_args, positive

__all__ = ["DEFAULTS", "RECIPES", "SMALL_DATA_IMAGES", "build_parser", "parse_args"]

# What each --recipe sets (with --data-root); an option the user gives wins over its recipe.
RECIPES: dict[str, dict[str, object]] = {
    "published": dict(max_zoom_out=4.0, iou_crop=True, photometric=True, optimizer="sgd", lr=0.01, weight_decay=5e-4),
    "small": dict(max_zoom_out=1.0, iou_crop=False, photometric=False, optimizer="adamw", lr=3e-3, weight_decay=0.01),
}
SMALL_DATA_IMAGES = 2000  # fewer training images than this: --recipe small by default


def _recipe(args: argparse.Namespace) -> str:
    try:
        images = sum(len(read_split(root, args.train_split)) for root in args.data_root)
    except (FileNotFoundError, ValueError):  # the dataset names what is wrong with the folder before the first step
        return "published"
    return "small" if images < SMALL_DATA_IMAGES else "published"


def _from_recipe(key: str) -> Derived:
    text = "; ".join(f"{name} {values[key]}" for name, values in RECIPES.items())
    return Derived(lambda args: RECIPES[args.recipe][key], f"by --recipe: {text}")


RECIPE = Derived(_recipe, f"small below {SMALL_DATA_IMAGES} training images, else published")

DEFAULTS = Defaults(
    common={**TRAINER_COMMON, "head": "ssdlite", "schedule": "cosine", "backbone_lr_mult": 1.0,
            "coco": True, "train_difficult": False, "warmup_epochs": 1.0,
            "val_root": Derived(lambda args: args.data_root[0] if args.data_root else None,
                                "the first --data-root")},
    modes={
        "voc": dict(recipe=RECIPE, **{key: _from_recipe(key) for key in RECIPES["small"]},
                    backbone="ld_mobilenetv2_100", pretrained="default", size=320, batch_size=32, epochs=200,
                    train_split="trainval", val_split="test", eval_interval=10, workers=4,
                    out="runs/det_voc"),
        "synthetic": dict(backbone="ld_shufflenetv1_g3_050", pretrained="none", size=96, max_zoom_out=2.0,
                          iou_crop=False, photometric=True, batch_size=16, epochs=30, optimizer="adamw", lr=3e-3,
                          weight_decay=0.01, train_split="train", val_split="val", eval_interval=10, workers=1,
                          threads=1, synthetic_images=(320, 80), out="runs/det_synthetic"),
    },
    exclusive=(("iters", "epochs"), ("warmup_iters", "warmup_epochs")),
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tasks.det_train",
        description="Train SSDLite on PASCAL VOC (--data-root, e.g. VOC2007 and VOC2012) or, without it, on built-in "
                    "sample data written in the VOC layout under --out. Launch with `torchrun --nproc_per_node N` "
                    "for DDP.")
    groups = add_trainer_arguments(p, data_root_help="VOC folders, e.g. VOCdevkit/VOC2007 VOCdevkit/VOC2012",
                                   data_root_nargs="+")
    data, model, run_ = groups["data"], groups["model"], groups["run"]
    data.add_argument("--recipe", choices=tuple(RECIPES), help="with --data-root: published (SSD augmentation: "
                      "photometric, zoom-out, min-IoU crop; SGD lr 0.01, weight decay 5e-4) or small (flip only; AdamW "
                      "lr 3e-3, weight decay 0.01); options given explicitly override it")
    data.add_argument("--val-root", help="VOC folder to evaluate on")
    data.add_argument("--train-difficult", action=argparse.BooleanOptionalAction,
                      help="also train on objects marked difficult (evaluation always ignores them)")
    data.add_argument("--max-zoom-out", type=positive(float), help="largest zoom-out canvas / image side (1 = off)")
    data.add_argument("--photometric", action=argparse.BooleanOptionalAction, help="random photometric distortion")
    data.add_argument("--iou-crop", action=argparse.BooleanOptionalAction, help="SSD min-IoU random crop")
    model.add_argument("--size", type=positive(int), help="square input side (300 or 320 for VOC)")
    model.add_argument("--head", choices=("ssdlite", "ssd"),
                       help="ssdlite: separable extras and predictors (MobileNetV2 §6.2); ssd: plain convs (SSD300)")
    run_.add_argument("--coco", action=argparse.BooleanOptionalAction,
                      help="also score COCO-style mAP@[.5:.95] (torchmetrics + pycocotools)")
    DEFAULTS.annotate(p)
    return p


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, dict | None]:
    """``(args, checkpoint to resume or None)``; raises ValueError naming a bad option."""
    args, state = parse_train_args(build_parser(), DEFAULTS, argv, task="det")
    if args.recipe is not None and not args.data_root:
        raise ValueError("--recipe applies to --data-root runs; the built-in sample data has its own settings")
    if args.max_zoom_out < 1:
        raise ValueError(f"--max-zoom-out must be >= 1 (1 disables it), got {args.max_zoom_out}")
    return args, state
