"""ONNX Runtime rows (``--runtimes``): our models exported to ONNX and run by onnxruntime, fp32 and INT8, timed in
the same groups as the eager models.

Each model is exported at the example's shape with :func:`tasks.onnx_export.export_onnx` (static height and
width: the speed of one size is measured), quantized for the INT8 row with :func:`tasks.onnx_quantize.quantize_int8`
(calibrated on random images of that shape: the row measures speed, not accuracy) and run by an onnxruntime CPU
session with the benchmark's thread count. Without onnxruntime the rows are skipped with a note.
"""
from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from .measure import Subject

__all__ = ["benchmark_session", "runtime_subjects"]

PRECISIONS = ("fp32", "int8")
_WORKDIR = tempfile.TemporaryDirectory(prefix="lightdense_bench_")  # removed when the process exits


def benchmark_session(model: nn.Module, example: Tensor, *, int8: bool, threads: int,
                      name: str = "model") -> Callable[[], object]:
    """A function running ``model`` exported to ONNX (INT8 with ``int8``) on ``example`` under onnxruntime."""
    from tasks.onnx_export import export_onnx
    from tasks.onnx_quantize import quantize_int8
    from tasks.onnx_runtime import ort_session

    model = model.eval()
    with torch.no_grad():
        outputs = model(example)
    count = 1 if isinstance(outputs, Tensor) else len(outputs)
    path = Path(tempfile.mkdtemp(prefix=name, dir=_WORKDIR.name)) / "fp32.onnx"
    export_onnx(model, example, path, output_names=[f"output_{i}" for i in range(count)], dynamic_hw=False,
                metadata={"kind": "benchmark"})
    if int8:
        generator = torch.Generator().manual_seed(0)
        calibration = [torch.randn(example.shape, generator=generator) for _ in range(4)]
        quantized = path.with_name("int8.onnx")
        quantize_int8(path, quantized, calibration)
        path = quantized
    session = ort_session(path, threads=threads)
    feed = {"images": example.cpu().numpy()}
    return lambda: session.run(None, feed)


def runtime_subjects(key: str, label: str, model: nn.Module, example: Tensor, *,
                     notes: list[str]) -> list[Subject]:
    """One subject per precision running ``model`` (subject ``key``) exported to ONNX; MACs are the PyTorch
    model's (onnxruntime's allocations are invisible to the PyTorch profiler, so no peak memory)."""
    if importlib.util.find_spec("onnxruntime") is None:
        note = "--runtimes: onnxruntime is not installed (pip install 'lightdense[export]'); ONNX Runtime rows skipped."
        if note not in notes:  # once per group
            notes.append(note)
        return []
    subjects = []
    for precision in PRECISIONS:
        run = benchmark_session(model, example, int8=precision == "int8", threads=torch.get_num_threads(), name=key)
        subjects.append(Subject(f"{key}_ort_{precision}", f"{label}, ONNX Runtime {precision}", run, model,
                                same_work_as=key, memory=False))
    return subjects
