"""Write a model as ONNX (opset 17, dynamic batch and optionally H/W) with its metadata, and check the file.

The graph is traced by torch's TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``). Measured
here on the segmenter it exports in about 2 s where the torch.export-based (dynamo) exporter takes 40-190 s, it
writes opset 17 (dynamo's lowest is 18), and it honours the ``symbolic`` of an ``autograd.Function``, which is how
the detector's per-class NMS becomes one ``NonMaxSuppression`` node. Both exporters keep H/W dynamic since the
DeepLabV3+ head resizes to shape values without ``int()``.

Metadata: every ``metadata_props`` value is JSON. ``kind`` (``segmenter``/``detector``/``backbone``), ``input``
(name, layout, dtype, value range), ``preprocessing``, ``outputs``, ``class_names``, ``model_config`` and, for
detectors, ``detector_output`` and ``postprocess``. :func:`tasks.onnx_runtime.read_metadata` decodes them.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from tasks.onnx_runtime import ort_session
from tasks.onnx_simplify import drop_dead_nodes, fold_static_dims

__all__ = ["OPSET", "TOLERANCE", "check_onnx", "compare_outputs", "export_onnx", "tolerance", "write_metadata"]

OPSET = 17
TOLERANCE = 1e-4  # fp32 exports: relative to the largest output magnitude (see tolerance)
# Messages of the export itself, not of the model: the exporter's deprecation notice and constants it records
# on purpose (box-coder scalars, the fixed detector input size).
_EXPORT_NOISE = ("You are using the legacy TorchScript-based ONNX export", "The feature will be removed",
                 "torch.tensor results are registered as constants")


def export_onnx(module: nn.Module, example: Tensor, path: str | os.PathLike, *, output_names: Sequence[str],
                dynamic_hw: bool, dynamic_outputs: dict[str, dict[int, str]] | None = None,
                metadata: dict[str, object]) -> Path:
    """Trace ``module`` on ``example (N, 3, H, W)`` and write ``path`` (via a temporary file, then renamed), with
    the shape arithmetic of static dims folded (:mod:`tasks.onnx_simplify`).

    The input is ``images`` with a dynamic batch, and dynamic height/width when ``dynamic_hw``. Outputs keep a
    dynamic batch; ``dynamic_outputs`` names more dynamic output axes (``{name: {axis: label}}``). Any other
    warning of the tracer (a size frozen into a constant) is an error: the file would not do what it says.
    """
    import onnx

    path = Path(path)
    axes = {"images": {0: "N", 2: "H", 3: "W"} if dynamic_hw else {0: "N"}}
    axes.update({name: {0: "N", **(dynamic_outputs or {}).get(name, {})} for name in output_names})
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".onnx-export-") as tmp:
        traced = Path(tmp) / path.name
        with warnings.catch_warnings(record=True) as caught, torch.no_grad():
            warnings.simplefilter("always")
            torch.onnx.export(module.eval(), (example,), str(traced), opset_version=OPSET, dynamo=False,
                              input_names=["images"], output_names=list(output_names), dynamic_axes=axes)
        _raise_tracer_warnings(caught)
        proto = onnx.load(str(traced))
        fold_static_dims(proto)
        drop_dead_nodes(proto)
        write_metadata(proto, metadata)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(traced))
        os.replace(traced, path)
    return path


def _raise_tracer_warnings(caught: list[warnings.WarningMessage]) -> None:
    for w in caught:
        message = str(w.message)
        if not any(noise in message for noise in _EXPORT_NOISE):
            raise RuntimeError(f"export traced something it cannot keep dynamic ({w.filename}:{w.lineno}): "
                               f"{message.splitlines()[0]}")


def write_metadata(proto, metadata: dict[str, object]) -> None:
    """Set ``metadata_props`` of an ``onnx.ModelProto``: one entry per key, values as JSON."""
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)


def compare_outputs(actual: Sequence[np.ndarray], expected: Sequence[Tensor]) -> float:
    """Largest absolute difference over all outputs (``inf`` when shapes or integer outputs differ)."""
    worst = 0.0
    for a, e in zip(actual, expected, strict=True):
        e = e.detach().cpu().numpy()
        if a.shape != e.shape or (not np.issubdtype(e.dtype, np.floating) and not np.array_equal(a, e)):
            return float("inf")
        if a.size:
            worst = max(worst, float(np.abs(a.astype(np.float64) - e).max()))
    return worst


def tolerance(expected: Sequence[Tensor]) -> float:
    """What an fp32 export may differ by: ``TOLERANCE x max(1, largest |expected value|)``."""
    return TOLERANCE * max([1.0, *(float(e.abs().max()) for e in expected if e.numel())])


@torch.no_grad()
def check_onnx(path: str | os.PathLike, module: nn.Module, images: Tensor) -> tuple[float, float]:
    """``(max abs difference, tolerance)`` of ONNX Runtime (CPU) on ``path`` against eager ``module``."""
    session = ort_session(path)
    expected = module.eval()(images)
    expected = [expected] if isinstance(expected, Tensor) else list(expected)
    return compare_outputs(session.run(None, {"images": images.cpu().numpy()}), expected), tolerance(expected)
