"""Command line of ``python -m tasks.seg_train``: the published VOC recipe by default, a small synthetic run
when no ``--data-root`` is given.

Defaults with real data follow the DeepLabV3+ MobileNetV2 recipe used by the popular PyTorch port
(DESIGN §8): global batch 16, 30k iterations, SGD lr 0.01 momentum 0.9 weight decay 1e-4, poly 0.9, crop 513,
output stride 16, backbone at 0.1x the head's learning rate, ImageNet-pretrained backbone.
"""

from __future__ import annotations

import argparse

from backbones import list_backbones

__all__ = ["build_parser", "parse_args", "VOC_DEFAULTS", "SYNTHETIC_DEFAULTS"]

# Settings whose default depends on the mode; the parser leaves them None and resolve() fills them in.
VOC_DEFAULTS = dict(backbone="ld_mobilenetv2_100", pretrained="default", crop_size=513, batch_size=16, iters=30000,
                    workers=4, head_channels=256, separable=False, channels_last=False, lr=0.01, backbone_lr_mult=0.1,
                    eval_interval=10, log_interval=20, out="runs/seg_voc")
SYNTHETIC_DEFAULTS = dict(backbone="ld_mobilenetv2_050", pretrained="none", crop_size=96, batch_size=8, iters=None,
                          epochs=30, workers=1, head_channels=64, separable=True, channels_last=True, lr=0.05,
                          backbone_lr_mult=1.0, eval_interval=1, log_interval=10, out="runs/seg_synthetic")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: x)`` only for real defaults; mode-dependent ones carry their own note."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or action.dest in VOC_DEFAULTS:
            return action.help or ""
        return super()._get_help_string(action)


def _note_mode_defaults(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:  # argparse has no public accessor for its actions
        if action.dest in VOC_DEFAULTS:
            voc, synthetic = VOC_DEFAULTS[action.dest], SYNTHETIC_DEFAULTS.get(action.dest)
            action.help += f" (default with --data-root: {voc}; synthetic: {synthetic})"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tasks.seg_train", formatter_class=_Formatter,
        description="Train DeepLabV3+ on PASCAL VOC 2012 or, without --data-root, on a small synthetic dataset "
                    "written in the VOC layout under --out. Launch with `torchrun --nproc_per_node N` for DDP.")
    data = p.add_argument_group("data")
    data.add_argument("--data-root", help="the VOCdevkit/VOC2012 folder; omitted: generate synthetic data under --out")
    data.add_argument("--sbd-root", help="folder with SegmentationClassAug/ and train_aug.txt: train on the "
                                         "10,582-image SBD-augmented set instead of the 1,464 train images")
    data.add_argument("--train-split", help="ImageSets/Segmentation list to train on (default: train, or "
                                            "train_aug with --sbd-root)")
    data.add_argument("--val-split", default="val", help="ImageSets/Segmentation list to evaluate on")
    data.add_argument("--num-classes", type=int, help="classes incl. background (VOC 21, synthetic 5)")
    data.add_argument("--crop-size", type=int, help="side of the square random training crop")
    data.add_argument("--workers", type=int, help="DataLoader worker processes per training process")
    data.add_argument("--synthetic-images", type=int, nargs=2, default=(240, 60), metavar=("TRAIN", "VAL"),
                      help="number of synthetic train and val images")
    model = p.add_argument_group("model")
    model.add_argument("--backbone", choices=list_backbones(), metavar="NAME",
                       help=f"backbone, one of: {', '.join(list_backbones())}")
    model.add_argument("--pretrained", help="backbone weights: 'default' (the named ImageNet weights), 'none', "
                                            "a named source, a file path or a URL")
    model.add_argument("--output-stride", type=int, default=16, choices=(8, 16, 32), help="backbone output stride")
    model.add_argument("--head-channels", type=int, help="ASPP and decoder width (paper: 256)")
    model.add_argument("--separable", action=argparse.BooleanOptionalAction, default=None,
                       help="depthwise-separable 3x3 convs in ASPP and decoder (paper §3.2)")
    model.add_argument("--freeze-bn", action="store_true", help="keep backbone BatchNorm in eval mode (frozen stats)")
    optim = p.add_argument_group("optimisation")
    optim.add_argument("--batch-size", type=int, help="global batch size, split evenly over torchrun processes")
    optim.add_argument("--iters", type=int, help="total optimizer steps")
    optim.add_argument("--epochs", type=int, help="train this many epochs instead of --iters (synthetic default: "
                                                  f"{SYNTHETIC_DEFAULTS['epochs']})")
    optim.add_argument("--lr", type=float, help="head learning rate at step 0 (poly decay 0.9)")
    optim.add_argument("--backbone-lr-mult", type=float, help="backbone lr = lr x this")
    optim.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    optim.add_argument("--weight-decay", type=float, default=1e-4, help="SGD weight decay")
    optim.add_argument("--warmup-iters", type=int, default=0, help="linear warmup steps before poly decay")
    optim.add_argument("--amp", action="store_true", help="float16 autocast + GradScaler (CUDA only)")
    optim.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                       help="NHWC memory format (faster depthwise convs on CPU; with --amp on GPU)")
    optim.add_argument("--no-sync-bn", dest="sync_bn", action="store_false",
                       help="under DDP on CUDA, keep per-process BatchNorm instead of SyncBatchNorm")
    run = p.add_argument_group("run")
    run.add_argument("--out", help="run directory: checkpoints, metrics.jsonl, PNG plots (and synthetic data)")
    run.add_argument("--resume", nargs="?", const="last", help="continue from --out/last.pt, or from the given file")
    run.add_argument("--eval-interval", type=int, help="evaluate (and update best.pt) every N epochs, and at the end")
    run.add_argument("--log-interval", type=int, help="log the mean training loss every N steps")
    run.add_argument("--stop-after", type=int, help="save last.pt and exit after this many total steps (as if "
                                                    "killed; --resume continues exactly)")
    run.add_argument("--seed", type=int, default=0, help="seed of initialisation, shuffling and augmentation")
    run.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    run.add_argument("--threads", type=int,
                     help="torch CPU threads per process (default on CPU: cores / processes - workers)")
    run.add_argument("--tensorboard", action="store_true", help="also write TensorBoard scalars under --out")
    run.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm progress bars")
    run.add_argument("--overlays", type=int, default=4, help="val images drawn in overlays.png")
    _note_mode_defaults(p)
    return p


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill mode-dependent defaults and check combinations; raises ValueError naming the bad option."""
    defaults = VOC_DEFAULTS if args.data_root else SYNTHETIC_DEFAULTS
    for key, value in defaults.items():
        if key not in ("iters", "epochs") and getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.iters is not None and args.epochs is not None:
        raise ValueError("give --iters or --epochs, not both")
    if args.iters is None and args.epochs is None:
        args.iters, args.epochs = defaults.get("iters"), defaults.get("epochs")
    args.num_classes = args.num_classes or (21 if args.data_root else 5)
    if not args.data_root and args.num_classes < 5:
        raise ValueError(f"the synthetic dataset has 5 classes (background + 4 shapes); --num-classes "
                         f"{args.num_classes} is too few")
    args.train_split = args.train_split or ("train_aug" if args.sbd_root else "train")
    for name in ("crop_size", "batch_size", "iters", "epochs", "workers", "head_channels", "eval_interval",
                 "log_interval", "stop_after", "threads", "num_classes"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "workers" else 1):
            raise ValueError(f"--{name.replace('_', '-')} must be {'>= 0' if name == 'workers' else 'positive'}, "
                             f"got {value}")
    return args


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return resolve(args)
    except ValueError as e:
        parser.error(str(e))
