"""CPU training steps under glibc's default ``malloc`` and with freed memory reused, as the trainers run.

``mallopt`` settings hold for a whole process and glibc's default adapts its mmap threshold only until a setting is
made, so each allocator gets its own process with an identical model, batch and optimizer: a spawned child that
runs one training step per request. The parent alternates requests between the two children as every group is
timed (see :mod:`tasks.bench.measure`), on the wall clock (the work is in the children). Each child's peak
resident memory goes into the group's notes: what reusing freed memory costs.
"""
from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable
from pathlib import Path

import torch

from tasks.engine.memory import glibc, reuse_freed_memory

from .measure import Comparison, Group, Subject
from .models import train_step as segmentation_step

__all__ = ["allocator_groups", "training_step"]

NUM_CLASSES = 21


def training_step(task: str, batch: int, size: int) -> Callable[[], None]:
    """One SGD step of what the trainers train on CPU by default: SSDLite MobileNetV2 in channels_last on random
    images with two boxes each (``det``), or DeepLabV3+ MobileNetV2 with the separable head in NCHW (``seg``)."""
    from heads import create_detector, create_segmenter

    torch.manual_seed(0)
    x = torch.randn(batch, 3, size, size)
    if task == "det":
        model = create_detector("ld_mobilenetv2_100", NUM_CLASSES, size=size).train()
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        box = torch.tensor([[0.1, 0.2, 0.5, 0.6], [0.3, 0.3, 0.9, 0.8]]) * size
        targets = [{"boxes": box, "labels": torch.tensor([3, 5])}] * batch

        def loss() -> torch.Tensor:
            return sum(model(x, targets).values())
    else:
        model = create_segmenter("ld_mobilenetv2_100", NUM_CLASSES, separable=True, aspp_input="final").train()
        return segmentation_step(model, x, torch.randint(0, NUM_CLASSES, (batch, size, size)))
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss().backward()
        optimizer.step()
    return step


def _peak_rss_mb() -> float:
    """This process's peak resident memory since its ``exec`` (``ru_maxrss`` would include the forking parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _serve(conn, reuse: bool, task: str, batch: int, size: int, threads: int) -> None:
    """Child process: answer each ``"run"`` after one step (the parent times it), ``"rss"`` with peak resident MiB."""
    if reuse:
        reuse_freed_memory()
    torch.set_num_threads(threads)
    step = training_step(task, batch, size)
    conn.send("ready")
    while (request := conn.recv()) != "stop":
        if request == "run":
            step()
            conn.send("done")
        else:
            conn.send(_peak_rss_mb())


class _Child:
    """A spawned :func:`_serve` process; :meth:`wait` until it has built its step."""

    def __init__(self, reuse: bool, task: str, batch: int, size: int) -> None:
        self.conn, child = mp.get_context("spawn").Pipe()
        self.process = mp.get_context("spawn").Process(
            target=_serve, args=(child, reuse, task, batch, size, torch.get_num_threads()), daemon=True)
        self.process.start()

    def wait(self) -> None:
        if not self.conn.poll(600) or self.conn.recv() != "ready":
            raise RuntimeError(f"the benchmark's training-step process did not start (exit code "
                               f"{self.process.exitcode})")

    def run(self) -> object:
        self.conn.send("run")
        self.conn.recv()
        return None

    def close(self) -> float:
        self.conn.send("rss")
        rss = self.conn.recv()
        self.conn.send("stop")
        self.process.join(timeout=30)
        return rss


def allocator_groups(plan: dict[str, tuple[int, int]]) -> list[Callable[[], Group]]:
    """Per task of ``plan`` (``task: (batch, size)``) a group timing its CPU training step under both allocators;
    empty where the C library is not glibc."""
    if glibc() is None:
        return []
    return [lambda t=task, b=batch, s=size: _group(t, b, s) for task, (batch, size) in plan.items()]


def _group(task: str, batch: int, size: int) -> Group:
    children = {"default": _Child(False, task, batch, size), "reuse": _Child(True, task, batch, size)}
    for child in children.values():  # both start at once: importing torch twice in a row doubles the wait
        child.wait()
    name = "SSDLite MobileNetV2, channels_last" if task == "det" else "DeepLabV3+ MobileNetV2 separable, NCHW"
    subjects = [Subject("default", f"{name}: glibc malloc defaults", children["default"].run, role="reference",
                        images=batch),
                Subject("reuse", f"{name}: freed memory reused (the trainers on CPU)", children["reuse"].run,
                        images=batch)]

    def finish() -> list[str]:
        rss = {key: child.close() for key, child in children.items()}
        return [f"Peak resident memory of each process: {rss['default']:.0f} MiB with glibc's defaults, "
                f"{rss['reuse']:.0f} MiB with freed memory reused."]
    return Group(f"CPU training step, {task}, batch {batch}, {size}x{size}, glibc malloc", f"{task} malloc",
                 subjects, [Comparison("reuse", "default")], count_work=False, same_work=True, clock="wall",
                 finish=finish)
