"""``python -m tasks.benchmark``: our models against torchvision, timm and smp, side by side in one process.

Every group of models doing the same job is warmed up and then timed in interleaved rounds (see
:mod:`tasks.bench.measure`), with a fixed thread count and CUDA synchronised around each run. Writes
``benchmark.md``, ``benchmark.json`` and ``benchmark.png`` (ratio bars) into ``--out``, refusing to replace an
earlier run's files. ``--quick`` runs every group at toy sizes with 2 timed runs (for CI: checks the command, not
the speed).

    python -m tasks.benchmark --threads 1 --out runs/benchmark
    python -m tasks.benchmark --quick --groups backbone,detection --out /tmp/bench
"""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .bench.allocator import allocator_groups
from .bench.data import data_group
from .bench.detection import detection_group, postprocess_group
from .bench.measure import MAX_ROUNDS, Group, run_group
from .bench.models import backbone_group, deeplab_group, train_step_group
from .bench.report import OUTPUT_FILES, machine_info, write_report
from .engine.cli import run
from .engine.memory import reuse_freed_memory

GROUPS = ("backbone", "deeplab", "detection", "train", "data")


@dataclass(frozen=True)
class Plan:
    """Sizes of one run: ``FULL`` is the published comparison, ``QUICK`` the same groups at toy sizes."""

    backbone: tuple[tuple[int, int], ...]  # (input side, batch)
    seg_size: int
    seg_strides: tuple[int, ...]
    det_image: tuple[int, int]  # (H, W) of the image given to the detectors (resized to 320 inside)
    train: tuple[int, int]  # (batch, crop)
    malloc: dict[str, tuple[int, int]]  # per task: (batch, input side) of the CPU allocator comparison
    data_images: int
    data_image_size: tuple[int, int]
    data_batch: int
    data_det_size: int
    reps: int
    warmup: int
    min_seconds: float  # a group's rounds go on past ``reps`` until they took this long (tight ratios of fast models)


FULL = Plan(backbone=((224, 1), (224, 8), (512, 1), (512, 8)), seg_size=512, seg_strides=(16, 8),
            det_image=(375, 500), train=(8, 256), malloc={"det": (16, 320), "seg": (8, 256)}, data_images=64,
            data_image_size=(375, 500), data_batch=8, data_det_size=320, reps=9, warmup=1,
            min_seconds=20.0)
QUICK = Plan(backbone=((64, 1),), seg_size=64, seg_strides=(16,), det_image=(60, 80), train=(2, 64),
             malloc={"det": (2, 96), "seg": (2, 64)}, data_images=4, data_image_size=(64, 96), data_batch=2,
             data_det_size=96, reps=2, warmup=1, min_seconds=0.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tasks.benchmark",
        description="Time our backbones, DeepLabV3+, SSDLite, a training step and the data loaders against "
                    "torchvision, timm and smp, side by side in one process; write benchmark.md, .json and .png.")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmark"),
                        help="folder for the report; must not hold an earlier run's files (default: runs/benchmark)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for the whole run (default: 1)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall (default): elapsed time; cpu: this process's CPU time, which leaves out time taken "
                             "by other jobs on a shared machine (with --threads 1 on CPU only)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    parser.add_argument("--quick", action="store_true", help="toy sizes and 2 timed runs: checks, not numbers")
    parser.add_argument("--reps", type=int, default=None, help=f"least timed rounds of every model (default: "
                                                               f"{FULL.reps}, --quick {QUICK.reps})")
    parser.add_argument("--warmup", type=int, default=None, help=f"warm-up runs per model (default: {FULL.warmup})")
    parser.add_argument("--min-seconds", type=float, default=None,
                        help=f"after --reps rounds, go on timing a group until its rounds took this long, at most "
                             f"{MAX_ROUNDS} rounds (default: {FULL.min_seconds:g}, --quick {QUICK.min_seconds:g})")
    parser.add_argument("--groups", default=",".join(GROUPS),
                        help=f"comma-separated subset of {', '.join(GROUPS)} (default: all)")
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="leave out the torch.compile rows (compiling takes about a minute per model on CPU; "
                             "--quick always leaves them out)")
    parser.add_argument("--malloc", choices=["reuse", "default"], default="reuse",
                        help="on CPU: reuse (default) keeps freed memory in the heap, as the task commands run; "
                             "default leaves glibc's malloc as it is, returning large blocks to the kernel")
    parser.add_argument("--runtimes", action="store_true", help="add ONNX Runtime fp32/INT8 rows")
    parser.add_argument("--workers", default="0,1,2", help="DataLoader worker counts to time (default: 0,1,2)")
    return parser.parse_args(argv)


def _check(args: argparse.Namespace) -> None:
    groups = args.groups.split(",")
    unknown = sorted(set(groups) - set(GROUPS))
    if unknown:
        raise ValueError(f"--groups: unknown {unknown}; valid are {', '.join(GROUPS)}")
    if args.threads < 1 or (args.reps is not None and args.reps < 1) or (args.warmup or 0) < 0 \
            or (args.min_seconds or 0) < 0:
        raise ValueError("--threads and --reps must be positive, --warmup and --min-seconds non-negative")
    existing = [str(args.out / f) for f in OUTPUT_FILES if (args.out / f).exists()]
    if existing:
        raise ValueError(f"{', '.join(existing)} already exist(s): pass another --out (runs are never overwritten)")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch.cuda.is_available() is False")
    if args.clock == "cpu" and (args.threads != 1 or args.device == "cuda"):
        raise ValueError("--clock cpu counts one process's CPU time: use it with --threads 1 and --device cpu")


def _groups(names: list[str], plan: Plan, args: argparse.Namespace, device: torch.device, scratch: Path):
    """Yield the requested groups, built one at a time so only one group's models are alive."""
    compile = args.compile and not args.quick
    if "backbone" in names:
        for size, batch in plan.backbone:
            yield lambda s=size, b=batch: backbone_group(s, b, device, compile=compile, runtimes=args.runtimes)
    if "deeplab" in names:
        for output_stride in plan.seg_strides:
            yield lambda o=output_stride: deeplab_group(plan.seg_size, o, device, compile=compile,
                                                        runtimes=args.runtimes)
    if "detection" in names:
        yield lambda: detection_group(plan.det_image, device, compile=compile, clock=args.clock)
        yield lambda: postprocess_group(device)
    if "train" in names:
        yield lambda: train_step_group(*plan.train, device)
        if device.type == "cpu":
            yield from allocator_groups(plan.malloc)
    if "data" in names:
        workers = [int(w) for w in args.workers.split(",")]
        yield lambda: data_group(scratch, images=plan.data_images, image_size=plan.data_image_size,
                                 crop=plan.train[1], det_size=plan.data_det_size,
                                 batch=plan.data_batch, workers=workers)


def benchmark(args: argparse.Namespace) -> dict:
    """Run the requested groups and return the result (what ``benchmark.json`` holds)."""
    _check(args)
    plan = QUICK if args.quick else FULL
    reps, warmup = args.reps or plan.reps, plan.warmup if args.warmup is None else args.warmup
    min_seconds = plan.min_seconds if args.min_seconds is None else args.min_seconds
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.clock == "cpu" and device.type != "cpu":
        raise ValueError("--clock cpu counts one process's CPU time: use it with --threads 1 and --device cpu")
    torch.set_num_threads(args.threads)
    malloc = "reuse" if device.type == "cpu" and args.malloc == "reuse" and reuse_freed_memory() else "default"
    command = "python -m tasks.benchmark " + shlex.join(sys.argv[1:] if args.argv is None else args.argv)
    result = {"machine": machine_info(device), "groups": [], "notes": [],
              "settings": {"command": command.strip(), "reps": reps, "warmup": warmup, "min_seconds": min_seconds,
                           "quick": args.quick, "clock": args.clock, "malloc": malloc}}
    with tempfile.TemporaryDirectory(prefix="lightdense_bench_") as scratch:
        for build in _groups(args.groups.split(","), plan, args, device, Path(scratch)):
            start = time.perf_counter()
            group: Group = build()
            result["groups"].append(run_group(group, reps=reps, warmup=warmup, device=device, clock=args.clock,
                                              min_seconds=min_seconds))
            logging.info("%s: %.0f s", group.title, time.perf_counter() - start)
            del group
    if not args.compile or args.quick:
        result["notes"].append("torch.compile rows left out (--quick or --no-compile).")
    result["load_average_end"] = list(os.getloadavg())
    return result


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    args.argv = argv
    result = benchmark(args)
    for path in write_report(result, args.out):
        logging.info("wrote %s", path)
    return result


if __name__ == "__main__":
    run(main, "python -m tasks.benchmark")
