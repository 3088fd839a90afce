"""ONNX Runtime rows (``--runtimes``): our models exported to ONNX and run by onnxruntime, fp32 and INT8, timed in
the same groups as the eager models.

The export and the sessions belong to the ONNX task (``tasks.onnx_runtime``); this module only asks it for one
callable per precision through :data:`SESSION_FACTORY`::

    benchmark_session(model: nn.Module, example: Tensor, *, int8: bool, threads: int) -> Callable[[], object]

(export ``model`` at ``example``'s shape, quantize when ``int8`` with calibration it chooses, open an
onnxruntime CPU session with ``threads`` intra-op threads, return a function running it on ``example``).
Anything missing (onnxruntime, the task module, that function) skips the rows with a note saying what.
"""
from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .measure import Subject

__all__ = ["SESSION_FACTORY", "runtime_subjects"]

SESSION_FACTORY = ("tasks.onnx_runtime", "benchmark_session")
PRECISIONS = ("fp32", "int8")


def _factory(notes: list[str]) -> Callable | None:
    module_name, function = SESSION_FACTORY
    if importlib.util.find_spec("onnxruntime") is None:
        notes.append("--runtimes: onnxruntime is not installed (pip install onnxruntime); ONNX Runtime rows skipped.")
        return None
    try:
        factory = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError):
        notes.append(f"--runtimes: {module_name}.{function}(model, example, *, int8, threads) is not in this "
                     "checkout; ONNX Runtime rows skipped.")
        return None
    return factory


def runtime_subjects(key: str, label: str, model: nn.Module, example: Tensor, *,
                     notes: list[str]) -> list[Subject]:
    """One subject per precision running ``model`` (subject ``key``) exported to ONNX; MACs are the PyTorch
    model's (onnxruntime's allocations are invisible to the PyTorch profiler, so no peak memory)."""
    factory = _factory(notes)
    if factory is None:
        return []
    subjects = []
    for precision in PRECISIONS:
        run = factory(model, example, int8=precision == "int8", threads=torch.get_num_threads())
        subjects.append(Subject(f"{key}_ort_{precision}", f"{label}, ONNX Runtime {precision}", run, model,
                                same_work_as=key, memory=False))
    return subjects
