"""Command line of ``python -m tasks.seg_train``: the published VOC recipe with ``--data-root``, a small run on the
built-in sample data without it.

With real data the defaults follow the DeepLabV3+ MobileNetV2 recipe of the popular PyTorch port (Chen et al. 2018,
§4): global batch 16, 30k iterations, SGD lr 0.01 momentum 0.9 weight decay 1e-4, poly 0.9, random scale 0.5–2.0,
crop 513, output stride 16, ImageNet-pretrained backbone at 0.1x the head's learning rate. The built-in sample run
computes on one thread, leaving the other core to the loader worker (2-core CPU: 162 s, 155 s on two), and keeps
ASPP on the last stage: from scratch with ``--separable`` a ``--data-root`` run feeds it MobileNetV2's 1280ch conv
instead, which scored 72.8 against 70.5 mIoU over three seeds of ``tasks.compare_training --dataset scenes`` (68.8
against 63.1 in channels_last). On CPU it trains in NCHW: CPU BatchNorm's channels_last kernel computes batch
statistics 10-100x further from float64, which cost 7.2 mIoU over six seeds of that comparison (66.8 against 74.0).
The shared options and their meaning are those of :mod:`tasks.engine.cli`; the ones below are segmentation's own.
"""

from __future__ import annotations

import argparse

from heads.deeplabv3plus import ASPP_INPUTS
from tasks.engine.cli import (TRAINER_COMMON, Defaults, Derived, add_trainer_arguments, parse_train_args, positive,
                              uses_cuda, uses_pretrained)

__all__ = ["DEFAULTS", "build_parser", "parse_args"]

BACKBONE_LR_MULT = Derived(lambda args: 0.1 if uses_pretrained(args) else 1.0,
                           "0.1 with --pretrained weights, 1.0 from scratch")
ASPP_INPUT = Derived(lambda args: "final" if args.separable and not uses_pretrained(args) else "stage",
                     "final from scratch with --separable, else stage")
CHANNELS_LAST = Derived(uses_cuda, "on CUDA; off on CPU, where BatchNorm's NHWC kernel sums batch statistics "
                                   "imprecisely (scenes comparison: 66.8 against 74.0 mIoU)")
DEFAULTS = Defaults(
    common={**TRAINER_COMMON, "channels_last": CHANNELS_LAST, "output_stride": 16, "optimizer": "sgd",
            "schedule": "poly", "weight_decay": 1e-4, "warmup_iters": 0, "val_split": "val",
            "backbone_lr_mult": BACKBONE_LR_MULT,
            "train_split": Derived(lambda args: "train_aug" if args.sbd_root else "train",
                                   "train, or train_aug with --sbd-root")},
    modes={
        "voc": dict(backbone="ld_mobilenetv2_100", pretrained="default", num_classes=21, crop_size=513, batch_size=16,
                    iters=30000, workers=4, head_channels=256, separable=False, aspp_input=ASPP_INPUT, lr=0.01,
                    eval_interval=10, out="runs/seg_voc"),
        "synthetic": dict(backbone="ld_mobilenetv2_050", pretrained="none", num_classes=5, crop_size=96, batch_size=8,
                          epochs=30, workers=1, head_channels=64, separable=True, aspp_input="stage", lr=0.05,
                          eval_interval=1, log_interval=10, threads=1, synthetic_images=(240, 60),
                          out="runs/seg_synthetic"),
    },
    exclusive=(("iters", "epochs"), ("warmup_iters", "warmup_epochs")),
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tasks.seg_train",
        description="Train DeepLabV3+ on PASCAL VOC 2012 (--data-root) or, without it, on built-in sample data "
                    "written in the VOC layout under --out. Launch with `torchrun --nproc_per_node N` for DDP.")
    groups = add_trainer_arguments(p, data_root_help="the VOCdevkit/VOC2012 folder")
    data, model = groups["data"], groups["model"]
    data.add_argument("--sbd-root", help="folder with SegmentationClassAug/ and train_aug.txt: train on the "
                                         "10,582-image SBD-augmented set instead of the 1,464 train images")
    data.add_argument("--num-classes", type=positive(int), help="classes incl. background")
    data.add_argument("--crop-size", type=positive(int), help="side of the square random training crop")
    model.add_argument("--output-stride", type=int, choices=(8, 16, 32), help="backbone output stride")
    model.add_argument("--head-channels", type=positive(int), help="ASPP and decoder width (paper: 256)")
    model.add_argument("--separable", action=argparse.BooleanOptionalAction,
                       help="depthwise-separable 3x3 convs in ASPP and decoder (paper §3.2)")
    model.add_argument("--aspp-input", choices=ASPP_INPUTS,
                       help="map ASPP reads: stage (the last stage's output, MobileNetV2's 320ch; MobileNetV2 paper "
                            "§6.3) or final (the backbone's last tap, MobileNetV2's 1280ch conv, as smp; the same "
                            "map on backbones without one)")
    DEFAULTS.annotate(p)
    return p


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, dict | None]:
    """``(args, checkpoint to resume or None)``; raises ValueError naming a bad option."""
    args, state = parse_train_args(build_parser(), DEFAULTS, argv, task="seg")
    if not args.data_root and args.num_classes < 5:
        raise ValueError(f"the built-in sample data has 5 classes (background + 4 shapes); --num-classes "
                         f"{args.num_classes} is too few")
    return args, state
