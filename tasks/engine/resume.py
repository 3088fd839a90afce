"""Start a run or continue one, losing nothing.

A fresh run never writes into a directory that already holds a run (its checkpoints and log would be replaced or
mixed). ``--resume`` continues ``--out/last.pt`` (or a given checkpoint): the checkpoint must be this task's, and
every option the command line leaves out is taken from it, so ``--resume`` alone continues the same run. An option
given with another value than the checkpoint's is refused, naming each difference, except those that only change
how the run is executed (``MAY_DIFFER``: device, threads, workers, logging, data locations, ...). ``--stop-after``
belongs to one invocation and is never taken from the checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .checkpoint import load_checkpoint

__all__ = ["MAY_DIFFER", "RUN_FILES", "check_task_checkpoint", "plain", "plain_args", "read_task_checkpoint",
           "start_or_resume"]

RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl")
MAY_DIFFER = frozenset({
    "resume", "stop_after", "workers", "threads", "device", "progress", "tensorboard", "num_visualize",
    "dist_timeout", "eval_interval", "log_interval", "amp", "channels_last", "out", "data_root", "sbd_root",
    "val_root",
})
PER_INVOCATION = frozenset({"stop_after"})  # said again each time, never taken from the checkpoint
TASK_NAMES = {"seg": "segmentation (tasks.seg_train)", "det": "detection (tasks.det_train)"}


def plain(value: object) -> object:
    """Paths as strings and tuples as lists, recursively: what a ``weights_only`` checkpoint can hold."""
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def plain_args(args: argparse.Namespace) -> dict:
    """The run's options as plain types, ``--resume`` left out (stored in every checkpoint)."""
    return {k: plain(v) for k, v in vars(args).items() if k != "resume" and not k.startswith("_")}


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _merge(args: argparse.Namespace, stored: dict, path: Path) -> None:
    """Fill options the command line left unset from ``stored``; refuse given ones that contradict it."""
    conflicts = []
    for key, value in stored.items():
        if not hasattr(args, key) or key in PER_INVOCATION:
            continue
        current = getattr(args, key)
        if current is None:
            setattr(args, key, value)
        elif key not in MAY_DIFFER and plain(current) != plain(value):
            conflicts.append(f"{_flag(key)} {plain(current)} (checkpoint: {value})")
    if conflicts:
        raise ValueError(f"{path} was trained with other settings: {'; '.join(conflicts)}. A resumed run keeps its "
                         f"settings: leave these options out, or start a new run with another --out")


def start_or_resume(args: argparse.Namespace, *, task: str) -> dict | None:
    """The checkpoint ``--resume`` names, checked and merged into ``args``, or ``None`` for a fresh run.

    Args:
        args: the parsed options, unset ones still ``None`` (``args.out`` already resolved).
        task: ``"seg"`` or ``"det"``; a checkpoint of the other task is refused.

    Raises:
        ValueError: a fresh run into a directory holding a run, a checkpoint of another task or version, or
            options contradicting the checkpoint's.
        FileNotFoundError: ``--resume`` with nothing to resume.
    """
    out = Path(args.out)
    if not args.resume:
        existing = [name for name in RUN_FILES if (out / name).exists()]
        if existing:
            raise ValueError(f"{out} already holds a run ({', '.join(existing)}): pass --resume to continue it, or "
                             f"--out with a new folder to start another")
        return None
    path = out / "last.pt" if args.resume == "last" else Path(args.resume)
    if not path.is_file():
        raise FileNotFoundError(f"nothing to resume: {path} does not exist (leave out --resume to start a run)")
    state = read_task_checkpoint(path, task, purpose=f"resumed by tasks.{task}_train")
    _merge(args, state.get("args", {}), path)
    return state


def read_task_checkpoint(path: str | Path, task: str, *, purpose: str) -> dict:
    """A training checkpoint of ``task`` (``"seg"``/``"det"``); another task's or a foreign file is refused, the
    message saying what it is instead and what it was needed for (``purpose``, e.g. "evaluated by tasks.seg_eval")."""
    return check_task_checkpoint(load_checkpoint(path), path, task, purpose=purpose)


def check_task_checkpoint(state: dict, path: str | Path, task: str, *, purpose: str) -> dict:
    """``state`` if it is a training checkpoint of ``task``; else the ValueError of :func:`read_task_checkpoint`."""
    kind = state.get("task")
    if kind != task or "model" not in state or "model_config" not in state:
        found = (f"a {TASK_NAMES[kind]} checkpoint" if kind in TASK_NAMES else
                 "not a training checkpoint of this version of lightdense (no 'task' entry)")
        raise ValueError(f"{path} cannot be {purpose}: it is {found}")
    return state
