"""Run an exported ``.onnx`` file under ONNX Runtime with the call interface of the PyTorch model it came from.

:func:`load_onnx` reads the metadata :mod:`tasks.onnx_export` wrote and returns, by the file's ``kind``:

* ``segmenter``: ``model(images (N, 3, H, W) normalized as model.preprocessing) -> logits (N, C, H, W)``;
* ``detector``: ``model([float (3, H, W) RGB images in [0, 1]]) -> [{"boxes" (xyxy, input pixels), "scores",
  "labels"}]`` exactly as torchvision's SSD returns them (a ``raw`` export is post-processed here by the same
  :func:`tasks.det_deploy.postprocess` the ``nms`` graph holds);
* ``backbone``: ``model(images) -> list of feature maps``.

The wrappers are parameter-free ``nn.Module`` s, so evaluation code that calls ``model.eval()`` or reads
``model.training`` works unchanged. Inputs may live on any device; outputs come back as torch tensors on it.
``onnxruntime`` is imported only here, when a file is opened.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from tasks.det_deploy import box_scale, postprocess

__all__ = ["OnnxModel", "OnnxSegmenter", "OnnxDetector", "OnnxBackbone", "load_onnx", "ort_session", "read_metadata"]


def ort_session(path: str | os.PathLike, *, threads: int | None = None):
    """A CPU ``onnxruntime.InferenceSession``; ``threads`` intra-op threads, default ``torch.get_num_threads()``
    (the count :func:`tasks.engine.set_cpu_threads` put in effect), and one inter-op thread."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own types for unreadable or invalid graphs
        raise ValueError(f"cannot load ONNX model {path}: {str(e).splitlines()[0]}") from e


def read_metadata(session) -> dict:
    """The lightdense metadata of a session's model: ``metadata_props`` values JSON-decoded (others, such as the
    marks ONNX Runtime's quantizer leaves, stay strings)."""
    props = session.get_modelmeta().custom_metadata_map
    if "kind" not in props:
        raise ValueError("this ONNX file has no lightdense metadata (export it with python -m tasks.export)")
    return {key: _decode(value) for key, value in props.items()}


def _decode(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


class OnnxModel(nn.Module):
    """An ONNX Runtime session and its metadata (``kind``, ``class_names``, ``preprocessing``, ``model_config``)."""

    def __init__(self, session, metadata: dict) -> None:
        super().__init__()
        self.session, self.metadata = session, metadata
        self.kind: str = metadata["kind"]
        self.class_names: list[str] = metadata.get("class_names", [])
        self.preprocessing: dict = metadata.get("preprocessing", {})
        self.model_config: dict = metadata.get("model_config", {})
        self.input_name = session.get_inputs()[0].name

    def run(self, images: Tensor) -> list[Tensor]:
        """All graph outputs for a ``(N, 3, H, W)`` float batch, as tensors on ``images.device``."""
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        outputs = self.session.run(None, {self.input_name: array})
        return [torch.from_numpy(np.ascontiguousarray(out)).to(images.device) for out in outputs]


class OnnxSegmenter(OnnxModel):
    """``model(images (N, 3, H, W), normalized) -> logits (N, num_classes, H, W)``."""

    def forward(self, images: Tensor) -> Tensor:
        return self.run(images)[0]


class OnnxBackbone(OnnxModel):
    """``model(images (N, 3, H, W), normalized) -> [maps (N, C_i, H / s_i, W / s_i)]``."""

    def forward(self, images: Tensor) -> list[Tensor]:
        return self.run(images)


class OnnxDetector(OnnxModel):
    """``model([images (3, H, W) in [0, 1]]) -> [{"boxes", "scores", "labels"}]``, torchvision's SSD interface.

    Images of one size run as one batch; each result is cut to its ``num_detections`` rows.
    """

    def __init__(self, session, metadata: dict) -> None:
        super().__init__(session, metadata)
        self.output: str = metadata["detector_output"]
        self.options: dict = metadata["postprocess"]

    def forward(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        results: list[dict[str, Tensor]] = [{} for _ in images]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(tuple(image.shape), []).append(i)
        for indices in groups.values():
            batch = torch.stack([images[i] for i in indices])
            outputs = self.run(batch)
            if self.output == "raw":
                resized_hw = torch.tensor(self.options["size"], dtype=torch.float32)
                outputs = postprocess(*outputs, box_scale(batch, resized_hw.to(batch.device)), **self.options)
            boxes, scores, labels, counts = outputs
            for row, i in enumerate(indices):
                n = int(counts[row])
                results[i] = {"boxes": boxes[row, :n], "scores": scores[row, :n], "labels": labels[row, :n]}
        return results


WRAPPERS: dict[str, type[OnnxModel]] = {"segmenter": OnnxSegmenter, "detector": OnnxDetector,
                                        "backbone": OnnxBackbone}


def load_onnx(path: str | os.PathLike, *, threads: int | None = None) -> OnnxModel:
    """Open an ``.onnx`` file written by ``python -m tasks.export`` as the wrapper for its kind (see module doc)."""
    session = ort_session(path, threads=threads)
    metadata = read_metadata(session)
    if metadata["kind"] not in WRAPPERS:
        raise ValueError(f"{path}: unknown model kind {metadata['kind']!r}; valid: {', '.join(WRAPPERS)}")
    return WRAPPERS[metadata["kind"]](session, metadata).eval()
