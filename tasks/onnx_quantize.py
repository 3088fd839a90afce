"""INT8 static quantization of an exported ONNX model with ONNX Runtime.

The recipe, measured on the trained synthetic models on a 2-core AVX2 CPU without VNNI (1 thread):

* QDQ format (``QuantizeLinear``/``DequantizeLinear`` pairs that ONNX Runtime fuses into ``QLinearConv`` & co.);
* weights int8, symmetric, per output channel, with ``reduce_range`` (7-bit): without VNNI the u8 x s8 kernels
  can saturate, and full-range weights cost the segmenter 0.4 mIoU;
* activations uint8, asymmetric: symmetric int8 activations have no fast kernel there (1.5x slower than fp32),
  and symmetric uint8 keeps the ReLU/Clip nodes, which made it slower than fp32 too;
* MinMax calibration over the given images (ONNX Runtime's entropy and percentile calibrators need all images
  of one size; evaluation images are not);
* in float: the ``tail`` (what follows the network's last convolutions: the segmenter's upsampling of the
  logits to the input size, the detector's box decoding, softmax and NMS; quantizing the logits' upsampling
  was slower) and the ``first_conv`` (the stem: keeping it float lifted the detector's INT8 VOC07 mAP from 69.1
  to 69.8). Depthwise convolutions and the ASPP image pooling in float gained nothing and ran slower.
"""

from __future__ import annotations

import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

__all__ = ["FLOAT_PARTS", "ImageCalibrationReader", "float_nodes", "quantize_int8", "quantized_op_counts"]

FLOAT_PARTS = ("tail", "first_conv")
METHOD = "QDQ; weights int8 symmetric per-channel (reduce_range); activations uint8 asymmetric; MinMax calibration"


class ImageCalibrationReader:
    """An ONNX Runtime calibration data reader (its ``get_next``/``rewind`` protocol) over graph inputs
    ``(1, 3, H, W)``; sizes may differ from image to image."""

    def __init__(self, images: Sequence[Tensor], input_name: str = "images") -> None:
        self.arrays = [image.detach().cpu().float().contiguous().numpy() for image in images]
        self.input_name = input_name
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.arrays):
            return None
        self.position += 1
        return {self.input_name: self.arrays[self.position - 1]}

    def rewind(self) -> None:
        self.position = 0


def float_nodes(proto, parts: Iterable[str] = FLOAT_PARTS) -> list[str]:
    """Names of the nodes of ``proto`` (an ``onnx.ModelProto``) that ``parts`` keep in float.

    ``tail``: nodes no ``Conv`` depends on, and not a ``Conv``. ``first_conv``: the first ``Conv`` (the stem).
    """
    parts = set(parts)
    if parts - set(FLOAT_PARTS):
        raise ValueError(f"unknown float parts {sorted(parts - set(FLOAT_PARTS))}; valid: {', '.join(FLOAT_PARTS)}")
    nodes = list(proto.graph.node)
    convs = [n for n in nodes if n.op_type == "Conv"]  # exported graphs list nodes in topological order
    names: set[str] = set()
    if "tail" in parts:
        producer = {out: node for node in nodes for out in node.output}
        feeds_conv: set[str] = set()
        stack = list(convs)
        while stack:
            for name in stack.pop().input:
                parent = producer.get(name)
                if parent is not None and parent.name not in feeds_conv:
                    feeds_conv.add(parent.name)
                    stack.append(parent)
        names |= {n.name for n in nodes if n.op_type != "Conv" and n.name not in feeds_conv}
    if "first_conv" in parts and convs:
        names.add(convs[0].name)
    return sorted(names)


def quantize_int8(fp32_path: str | os.PathLike, out_path: str | os.PathLike, images: Sequence[Tensor], *,
                  keep_float: Iterable[str] = FLOAT_PARTS) -> dict:
    """Quantize ``fp32_path`` to ``out_path`` calibrated on ``images`` (graph inputs ``(1, 3, H, W)``).

    The graph is first prepared by ONNX Runtime's ``quant_pre_process`` (shape inference, fusions).

    Returns:
        A report: ``method``, ``calibration_images``, ``keep_float`` and the ``float_nodes`` kept in float.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not images:
        raise ValueError("INT8 calibration needs at least one image")
    keep_float = list(keep_float)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        excluded = float_nodes(onnx.load(prepared), keep_float)
        quantize_static(str(prepared), str(out_path), ImageCalibrationReader(images), quant_format=QuantFormat.QDQ,
                        per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                        calibrate_method=CalibrationMethod.MinMax, extra_options={"WeightSymmetric": True})
    return {"method": METHOD, "calibration_images": len(images), "keep_float": keep_float, "float_nodes": excluded}


def quantized_op_counts(path: str | os.PathLike) -> dict[str, int]:
    """How many ``QuantizeLinear``, ``DequantizeLinear`` and ``QLinear*`` nodes the file holds."""
    import onnx

    ops = Counter(node.op_type for node in onnx.load(str(path)).graph.node)
    return {op: n for op, n in sorted(ops.items()) if op in ("QuantizeLinear", "DequantizeLinear")
            or op.startswith("QLinear")}
