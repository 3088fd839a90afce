"""TorchScript export: the same modules as the ONNX export, scripted, with the same metadata inside the archive.

Scripted, not traced: scripting keeps every size dynamic (the segmenter and backbone run at any H/W, the
detector's NMS keeps its data-dependent loop) where a trace would freeze the example's sizes and control flow,
and the backbones, DeepLabV3+ and the deployable detector are written to script (their tests script them).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

__all__ = ["METADATA_FILE", "export_torchscript", "load_torchscript"]

METADATA_FILE = "lightdense.json"


def export_torchscript(module: nn.Module, path: str | os.PathLike, *, metadata: dict) -> Path:
    """Script ``module`` (eval mode) and save it to ``path`` with ``metadata`` as ``lightdense.json`` inside."""
    with warnings.catch_warnings():  # torch 2.15 marks TorchScript deprecated; it is what libtorch/mobile load
        warnings.filterwarnings("ignore", message=r"`torch.jit.(script|save)` is deprecated", category=FutureWarning)
        scripted = torch.jit.script(module.eval())
        torch.jit.save(scripted, str(path), _extra_files={METADATA_FILE: json.dumps(metadata)})
    return Path(path)


def load_torchscript(path: str | os.PathLike) -> tuple[torch.jit.ScriptModule, dict]:
    """``(module on CPU in eval mode, metadata)`` of a file written by :func:`export_torchscript`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"TorchScript file not found: {path}")
    extra = {METADATA_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`torch.jit.load` is deprecated", category=FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except RuntimeError as e:
        raise ValueError(f"cannot load TorchScript file {path}: {str(e).splitlines()[0]}") from e
    return module.eval(), json.loads(extra[METADATA_FILE] or "{}")
