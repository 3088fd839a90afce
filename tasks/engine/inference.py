"""The model an eval or predict command runs: a training checkpoint, or the ONNX file exported from one.

``MODEL`` may be a ``best.pt``/``last.pt`` (rebuilt by the task's ``load_model``) or an ``.onnx`` file written by
``python -m tasks.export``: :func:`tasks.onnx_runtime.load_onnx` presents it with the PyTorch model's call interface
and its metadata carries what the checkpoint would (model config, preprocessing, class names, data), so the same
pre- and post-processing and the same metrics apply to exactly what ships. ONNX Runtime runs it on the CPU with the
thread count of :func:`~tasks.engine.distributed.set_cpu_threads`.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from pathlib import Path

from torch import nn

from .distributed import DistInfo, set_cpu_threads, setup_distributed
from .memory import reuse_freed_memory

__all__ = ["fused_copy", "load_inference_model", "start_inference"]

KINDS = {"seg": "segmenter", "det": "detector"}


def fused_copy(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` on its inference fast path (``fuse()``: BatchNorm folded into the convs, the
    device's faster memory format); ``model`` itself is untouched (training evaluates through such a copy, so its
    scores are those of ``seg_eval``/``det_eval`` on the checkpoint)."""
    return copy.deepcopy(model).eval().fuse()


def load_inference_model(path: str | Path, *, task: str, load_model: Callable[..., tuple[nn.Module, dict]],
                         device: object = "cpu", fuse: bool = True) -> tuple[nn.Module, dict]:
    """``(model in eval mode, checkpoint-like description)`` of a checkpoint (fused unless ``fuse=False``) or an
    exported ``.onnx`` file.

    The description holds ``model_config``, ``preprocessing``, ``class_names`` and ``data`` (``None`` when the
    model records no dataset).
    """
    if Path(path).suffix.lower() != ".onnx":
        model, checkpoint = load_model(path, device=device)
        return (model.fuse() if fuse else model), checkpoint
    from tasks.onnx_runtime import load_onnx  # onnxruntime only when an ONNX file is given

    model = load_onnx(path)
    if model.kind != KINDS[task]:
        raise ValueError(f"{path} is an exported {model.kind}; tasks.{task}_eval and tasks.{task}_predict take an "
                         f"exported {KINDS[task]} or a training checkpoint")
    return model.eval(), {"model_config": model.model_config, "preprocessing": model.preprocessing,
                          "class_names": model.class_names, "data": model.metadata.get("data")}


def start_inference(args: argparse.Namespace, *, task: str,
                    load_model: Callable[..., tuple[nn.Module, dict]]) -> tuple[DistInfo, nn.Module, dict]:
    """Join the process group (one process unless torchrun), set the CPU threads, load ``args.model``.

    On CPU freed memory stays in the heap (:func:`~tasks.engine.memory.reuse_freed_memory`): each image's
    activations reuse the last one's pages instead of faulting in new ones.
    """
    info = setup_distributed(args.device)
    set_cpu_threads(info, threads=args.threads, workers=getattr(args, "workers", 0))
    if info.device.type == "cpu":
        reuse_freed_memory()
    model, checkpoint = load_inference_model(args.model, task=task, load_model=load_model, device=info.device,
                                             fuse=args.fuse)
    return info, model, checkpoint
