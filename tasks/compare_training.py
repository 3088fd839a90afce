"""``python -m tasks.compare_training``: our training recipe against a plain-loop reference, same data, same budget.

    python -m tasks.compare_training --task seg --threads 2 --out runs/compare_seg            # built-in sample data
    python -m tasks.compare_training --task det --dataset scenes --iters 300 --out runs/compare_det_scenes
    python -m tasks.compare_training --task seg --data-root VOCdevkit/VOC2012 --out runs/compare_seg_voc

Ours is our trainer run in this process (``tasks.seg_train`` / ``tasks.det_train``) in its real-data mode, so with
the defaults a user with ``--data-root`` gets (see :mod:`tasks.seg_config`, :mod:`tasks.det_config`; on a few
hundred images detection picks ``--recipe small``), changed only where the comparison needs it: the budget
(``--iters``, ``--batch-size``, crop / size), random initialisation
(``--pretrained none``: no download), MobileNetV2 at width 1.0 (smp's and torchvision's encoders are width 1.0;
for segmentation ``--separable`` like smp's DeepLabV3+), the train/val splits, and one evaluation at the end. The
reference is the library's own model under the plain loop of :mod:`tasks.compare.references`. Both read the same
images in the same order and are scored by the same code on the same full-size val images (mIoU by
:class:`tasks.seg_metrics.ConfusionMatrix`, where classes absent from labels and predictions do not count; VOC07
and area mAP by :class:`tasks.det_metrics.VOCAccumulator`, difficult objects ignored).

Both run in this process, ours first, so on CPU the reference trains under the allocator setting our trainers make
(:mod:`tasks.engine.memory`): speed, not scores, depends on it.

One run's score moves by several points with rounding and chance alone on a few dozen val images, so compare
over several seeds (``--seed 0 1 2``: each redraws generated data, initialisation and order) and read the mean.

Data: ``--data-root`` (a VOC-layout folder with ``train``/``val`` lists), else generated under ``--out/data``: the
task's built-in sample data (``--dataset sample``) or :mod:`tasks.scenes_synthetic` (``--dataset scenes``). Writes
``compare.md`` and ``compare.json`` into ``--out`` (our run is in ``--out/ours``); ``--out`` must be new or empty.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

if not __package__:  # run as a file (`python tasks/compare_training.py`): make the repository importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch

from tasks.compare.references import NUM_CLASSES, train_smp_deeplab, train_torchvision_ssdlite
from tasks.compare.report import per_class, write_report, write_summary
from tasks.engine.cli import positive, run
from tasks.voc import read_split

__all__ = ["main", "parse_args"]

BUDGETS = {  # per task: the default budget, and --quick's (checks the command, not the recipes)
    "seg": {"full": dict(iters=600, batch_size=8, crop_size=160, images=(240, 60)),
            "quick": dict(iters=3, batch_size=2, crop_size=64, images=(4, 2))},
    "det": {"full": dict(iters=300, batch_size=16, size=320, images=(320, 80)),
            "quick": dict(iters=3, batch_size=2, size=96, images=(4, 2))},
}
SCENE_SIZES = {"full": (200, 400), "quick": (64, 96)}
OURS = {"seg": "tasks.seg_train: DeepLabV3+ ld_mobilenetv2_100 --separable, output stride 16, recipe defaults",
        "det": "tasks.det_train: SSDLite ld_mobilenetv2_100, recipe defaults (--recipe by data size, warmup + cosine)"}
REFERENCES = {"seg": "smp.DeepLabV3Plus('mobilenet_v2', encoder_weights=None), plain loop: SGD 0.01, poly 0.9",
              "det": "torchvision ssdlite320_mobilenet_v3_large(weights=None), plain loop: SGD, one-cycle 0.05, flip"}
NEVER = "1000000"  # --eval-interval in epochs: the trainers then evaluate once, at the end


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tasks.compare_training", description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=("seg", "det"), required=True)
    p.add_argument("--data-root", help="VOC-layout folder with train and val lists (default: generated data)")
    p.add_argument("--dataset", choices=("sample", "scenes"), help="data generated under --out without --data-root: "
                   "the task's built-in sample data or tasks.scenes_synthetic (default: sample)")
    p.add_argument("--images", type=positive(int), nargs=2, metavar=("TRAIN", "VAL"),
                   help="images of the generated data (default: seg 240 60, det 320 80)")
    p.add_argument("--iters", type=positive(int), help="optimizer steps of each model (default: seg 600, det 300)")
    p.add_argument("--batch-size", type=positive(int), help="images per step (default: seg 8, det 16)")
    p.add_argument("--crop-size", type=positive(int), help="seg: square training crop, a multiple of 16 (default 160)")
    p.add_argument("--size", type=positive(int), help="det: square input side (default: 320)")
    p.add_argument("--threads", type=positive(int), default=os.cpu_count(),
                   help="torch CPU threads of both (default: all cores)")
    p.add_argument("--workers", type=positive(int, allow_zero=True), default=1, help="DataLoader workers of both "
                                                                                     "(default: 1)")
    p.add_argument("--seed", type=int, nargs="+", default=[0],
                   help="seed of data, initialisation and order (default: 0); several seeds run one comparison each "
                        "under --out/seed_<N> and report every seed and the mean")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument("--out", type=Path, help="new or empty folder for the report, our run and generated data "
                                            "(default: runs/compare_<task>_<dataset>)")
    p.add_argument("--quick", action="store_true", help="a tiny budget and tiny data: checks the command, not the "
                                                        "recipes")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress lines")
    args = p.parse_args(argv)
    if args.data_root and args.dataset:
        raise ValueError("give --data-root or --dataset, not both")
    args.dataset = Path(args.data_root).name if args.data_root else args.dataset or "sample"
    for key, value in BUDGETS[args.task]["quick" if args.quick else "full"].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.out = args.out or Path(f"runs/compare_{args.task}_{args.dataset}")
    args.argv = sys.argv[1:] if argv is None else argv
    if len(set(args.seed)) != len(args.seed):
        raise ValueError(f"--seed lists a seed twice: {args.seed}")
    args.seeds, args.seed = args.seed, args.seed[0]
    return args


def _check(args: argparse.Namespace) -> None:
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise ValueError(f"--out {args.out} already exists and is not empty: choose a new --out (a comparison never "
                         f"replaces an earlier one)")
    if args.task == "seg" and args.crop_size % 16:
        raise ValueError(f"--crop-size must be a multiple of 16 (smp's DeepLabV3+ needs it), got {args.crop_size}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch.cuda.is_available() is False")


def prepare_data(args: argparse.Namespace) -> Path:
    """The VOC folder both models train on: ``--data-root``, or data generated under ``--out/data``."""
    if args.data_root:
        return Path(args.data_root)
    train, val = args.images
    if args.dataset == "scenes":
        from tasks.scenes_synthetic import make_scenes_voc

        size_range = SCENE_SIZES["quick" if args.quick else "full"]
        return make_scenes_voc(args.out / "data", num_train=train, num_val=val, seed=args.seed, size_range=size_range)
    if args.task == "seg":
        from tasks.seg_synthetic import make_synthetic_voc as make_seg

        return make_seg(args.out / "data", num_train=train, num_val=val, seed=args.seed)
    from tasks.det_synthetic import make_synthetic_voc as make_det

    return make_det(args.out / "data", num_train=train, num_val=val, seed=args.seed)


def _check_warmup(args: argparse.Namespace, root: Path) -> None:
    """Our detection recipe warms up for one epoch, which must be shorter than the run."""
    if args.task != "det":
        return
    images = len(read_split(root / "ImageSets" / "Main" / "train.txt"))
    per_epoch = images // args.batch_size
    if per_epoch >= args.iters:
        raise ValueError(f"--iters {args.iters} is within our detection recipe's one-epoch warmup ({per_epoch} steps "
                         f"of --batch-size {args.batch_size} on {images} images): give more --iters or fewer --images")


def _scores(metrics: dict) -> dict[str, float | None]:
    """The overall scores among a run's metrics (per-class lists, tables and timings left out)."""
    return {k: v for k, v in metrics.items() if (isinstance(v, float) or v is None) and not k.endswith("_s")}


def run_ours(args: argparse.Namespace, root: Path) -> dict:
    """Our trainer in this process; returns its final scores and wall time."""
    argv = ["--data-root", str(root), "--train-split", "train", "--val-split", "val", "--backbone",
            "ld_mobilenetv2_100", "--pretrained", "none", "--iters", str(args.iters), "--batch-size",
            str(args.batch_size), "--threads", str(args.threads), "--workers", str(args.workers), "--seed",
            str(args.seed), "--eval-interval", NEVER, "--num-visualize", "0", "--out", str(args.out / "ours")]
    argv += ["--device", args.device] if args.device else []
    argv += [] if args.progress else ["--no-progress"]
    if args.task == "seg":
        from tasks import seg_train as trainer

        argv += ["--num-classes", str(NUM_CLASSES), "--separable", "--crop-size", str(args.crop_size)]
    else:
        from tasks import det_train as trainer

        argv += ["--size", str(args.size), "--no-coco"]
    start = time.perf_counter()
    summary = trainer.main(argv)
    return {"model": OURS[args.task], "argv": argv, "metrics": _scores(summary["metrics"]),
            "per_class": per_class(args.task, summary["metrics"]), "train_s": summary["seconds"],
            "wall_s": time.perf_counter() - start}


def run_reference(args: argparse.Namespace, root: Path) -> dict:
    """The library's model under its plain loop, with the same budget and threads."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    budget = dict(iters=args.iters, batch_size=args.batch_size, seed=args.seed, workers=args.workers, device=device)
    if args.task == "seg":
        result = train_smp_deeplab(root, crop_size=args.crop_size, **budget)
    else:
        result = train_torchvision_ssdlite(root, size=args.size, **budget)
    return {"model": REFERENCES[args.task], "metrics": _scores(result), "per_class": per_class(args.task, result),
            "train_s": result["train_s"], "wall_s": result["wall_s"]}


def compare(args: argparse.Namespace) -> dict:
    """Run both and write the report; returns what ``compare.json`` holds."""
    _check(args)
    args.out.mkdir(parents=True, exist_ok=True)
    root = prepare_data(args)
    _check_warmup(args, root)
    shape = f"crop {args.crop_size}" if args.task == "seg" else f"{args.size} px"
    budget_text = f"{args.iters} it × {args.batch_size}, {shape}"
    ours = run_ours(args, root)
    reference = run_reference(args, root)
    record = {"task": args.task, "dataset": args.dataset, "data_root": str(root.resolve()), "budget_text": budget_text,
              "budget": {k: getattr(args, k) for k in ("iters", "batch_size", "crop_size", "size", "threads",
                                                       "workers", "seed", "device") if getattr(args, k) is not None},
              "command": "python -m tasks.compare_training " + shlex.join(args.argv), "torch": torch.__version__,
              "reference": reference, "ours": ours}
    print(write_report(args.out, record), flush=True)
    return record


def compare_seeds(args: argparse.Namespace) -> dict:
    """One comparison per seed under ``--out/seed_<N>``, then the per-seed table and mean in ``--out``; returns
    what the summary ``compare.json`` holds."""
    _check(args)
    records = [compare(argparse.Namespace(**{**vars(args), "seed": seed, "out": args.out / f"seed_{seed}"}))
               for seed in args.seeds]
    summary, text = write_summary(args.out, records)
    print(text, flush=True)
    return summary


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    return compare(args) if len(args.seeds) == 1 else compare_seeds(args)


if __name__ == "__main__":
    run(main, "python -m tasks.compare_training")
