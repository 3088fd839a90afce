"""Command line of ``python -m tasks.det_train`` and the two recipes its defaults come from.

Every option left unset takes its value from a recipe: ``voc`` when ``--data-root`` is given (the published
MobileNetV2-SSDLite VOC recipe: VOC07+12 trainval, 320 input, batch 32, SGD lr 0.01 momentum 0.9, weight decay
5e-4, 200 epochs cosine, ImageNet-pretrained backbone, evaluation on VOC2007 test), ``synthetic`` without it (a
small dataset generated in the VOC layout under ``--out``, sized to train on 2 CPU cores in about five minutes:
ShuffleNetV1 g3 0.5x from scratch at 96 px with AdamW, zoom-out up to 2x and no min-IoU crop, which on 320 images
slows learning past that budget; MobileNetV2 from scratch also learns far slower there).
Options given explicitly always win; the resolved configuration is printed and stored in every checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from backbones import list_backbones

RECIPES: dict[str, dict[str, object]] = {
    "voc": dict(
        backbone="ld_mobilenetv2_100", pretrained_backbone="default", size=320, max_zoom_out=4.0, photometric=True,
        iou_crop=True, batch_size=32, epochs=200, optimizer="sgd", lr=0.01, weight_decay=5e-4, warmup_epochs=1.0,
        train_split="trainval", val_split="test", eval_every=10, workers=4,
    ),
    "synthetic": dict(
        backbone="ld_shufflenetv1_g3_050", pretrained_backbone="none", size=96, max_zoom_out=2.0, photometric=True,
        iou_crop=False, batch_size=16, epochs=30, optimizer="adamw", lr=3e-3, weight_decay=0.01, warmup_epochs=1.0,
        train_split="train", val_split="val", eval_every=10, workers=1,
    ),
}  # fmt: skip


def _positive(kind: type):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tasks.det_train",
        description="Train SSDLite on PASCAL VOC (--data-root) or on a generated VOC-layout dataset (no --data-root).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )  # fmt: skip
    data = p.add_argument_group("data (unset values come from the recipe: voc with --data-root, else synthetic)")
    data.add_argument("--data-root", nargs="+", type=Path, help="VOC dirs, e.g. VOCdevkit/VOC2007 VOCdevkit/VOC2012")
    data.add_argument("--train-split", help="ImageSets/Main list read from every --data-root")
    data.add_argument("--val-root", type=Path, help="VOC dir to evaluate on (default: the first --data-root)")
    data.add_argument("--val-split", help="ImageSets/Main list of --val-root")
    data.add_argument("--train-difficult", action="store_true", help="also train on difficult objects")
    data.add_argument("--synthetic-images", type=_positive(int), nargs=2, default=(320, 80), metavar=("TRAIN", "VAL"))
    data.add_argument("--workers", type=int, help="DataLoader worker processes per rank")
    data.add_argument("--max-zoom-out", type=float, help="largest zoom-out canvas side / image side (1 = off)")
    data.add_argument("--photometric", action=argparse.BooleanOptionalAction, help="random photometric distortion")
    data.add_argument("--iou-crop", action=argparse.BooleanOptionalAction, help="SSD min-IoU random crop")
    model = p.add_argument_group("model")
    model.add_argument("--backbone", choices=list_backbones(), metavar="NAME", help="a backbones.list_backbones() name")
    model.add_argument("--pretrained-backbone", help="none | default | a named source | path | URL")
    model.add_argument("--size", type=_positive(int), help="square input side (300 or 320 for VOC)")
    optim = p.add_argument_group("optimisation")
    optim.add_argument("--epochs", type=_positive(int))
    optim.add_argument("--batch-size", type=_positive(int), help="global batch, split over the processes")
    optim.add_argument("--optimizer", choices=("sgd", "adamw"))
    optim.add_argument("--lr", type=_positive(float), help="peak learning rate (after warmup)")
    optim.add_argument("--momentum", type=float, default=0.9)
    optim.add_argument("--weight-decay", type=float, help="on conv/linear weights; norms and biases get none")
    optim.add_argument("--warmup-epochs", type=float, help="linear warmup length before the cosine decay")
    optim.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help="float16 autocast on CUDA")
    optim.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True, help="NHWC on CUDA")
    run = p.add_argument_group("run")
    run.add_argument("--out", type=Path, default=Path("runs/det"), help="run directory")
    run.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--resume", nargs="?", const="auto", help="checkpoint to resume; bare flag: <out>/last.pt")
    run.add_argument("--max-steps", type=_positive(int), help="stop (with a checkpoint) after this many steps")
    run.add_argument("--eval-every", type=_positive(int), help="evaluate every N epochs (and after the last)")
    run.add_argument("--no-coco", action="store_true", help="skip COCO-style mAP (needs torchmetrics+pycocotools)")
    run.add_argument("--num-visualize", type=int, default=6, help="validation images drawn with predictions")
    run.add_argument("--tensorboard", action="store_true")
    run.add_argument("--no-progress", action="store_true", help="no tqdm bars")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` and fill unset options from the recipe (``args.recipe`` says which)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.recipe = "voc" if args.data_root else "synthetic"
    for key, value in RECIPES[args.recipe].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.val_root is None and args.data_root:
        args.val_root = args.data_root[0]
    if args.warmup_epochs < 0 or args.weight_decay < 0:
        parser.error("--warmup-epochs and --weight-decay must be >= 0")
    return args


def plain_args(args: argparse.Namespace) -> dict:
    """The configuration as plain types, for checkpoints (``weights_only`` loading) and the metrics log."""
    def convert(value: object) -> object:
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        return str(value) if isinstance(value, Path) else value

    return {k: convert(v) for k, v in vars(args).items()}
