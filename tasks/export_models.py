"""What ``python -m tasks.export`` exports: for a training checkpoint or a backbone name, the module to trace or
script, the metadata written with it, and real images of the task's data (for the check and INT8 calibration).

Exported inputs: a segmenter or backbone takes ``images (N, 3, H, W)`` already normalized as the checkpoint's
preprocessing says (the tensors ``seg_eval`` feeds the PyTorch model); a detector takes RGB in [0, 1] of any size
and resizes and normalizes inside (the images ``det_eval`` feeds torchvision's SSD), see
:class:`tasks.det_deploy.DeployableDetector`. Metadata ``data`` records where the checkpoint's data was (roots
and splits), so evaluating the exported file can default to it as evaluating the checkpoint does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from backbones import create_backbone, list_backbones
from backbones.weights import IMAGENET

from tasks import det_model, seg_model
from tasks.det_data import VOCDetection
from tasks.det_deploy import OUTPUT_NAMES, DeployableDetector
from tasks.det_transforms import eval_transforms
from tasks.engine import load_checkpoint
from tasks.engine.cli import pretrained_arg
from tasks.seg_data import VOCSegmentation

__all__ = ["ExportTarget", "load_target", "load_task_model"]

EXAMPLE_SIZE = (64, 80)  # traced example (H, W); checks run at the real images' sizes, so frozen sizes fail
NORMALIZED = "normalized: (pixel * input_range / 255 - mean) / std, channels in 'color' order"


@dataclass
class ExportTarget:
    """One model ready to export.

    Attributes:
        kind: ``segmenter``, ``detector`` or ``backbone``.
        module: eval-mode module, ``images (N, 3, H, W) -> tensor or list of tensors``.
        output_names: names of its outputs in the exported graph.
        dynamic_hw: whether the input (and the outputs' trailing axes) have dynamic height and width.
        metadata: what the exported file carries (see :mod:`tasks.onnx_export`).
        images: ``images(split, count) -> [(1, 3, H, W)]`` graph inputs from the task's data (``"train"`` or
            ``"val"``), ``None`` without data; raises FileNotFoundError when the recorded data is gone.
    """

    kind: str
    module: nn.Module
    output_names: list[str]
    dynamic_hw: bool
    metadata: dict
    images: Callable[[str, int], list[Tensor]] | None = None
    dynamic_outputs: dict[str, dict[int, str]] = field(default_factory=dict)

    def example(self) -> Tensor:
        """The input the exporter traces: random, of a size no real check image is likely to have."""
        return torch.rand(1, 3, *EXAMPLE_SIZE, generator=torch.Generator().manual_seed(0))


def load_task_model(path: str | Path) -> tuple[str, nn.Module, dict]:
    """``(kind, model in eval mode on CPU, checkpoint)`` of a tasks.seg_train / tasks.det_train checkpoint (or of a
    pytorch-ssd file, which :func:`tasks.det_model.load_model` converts)."""
    task = load_checkpoint(path).get("task")
    if task == "seg":
        return ("segmenter", *seg_model.load_model(path))
    try:
        return ("detector", *det_model.load_model(path))
    except ValueError:
        if task == "det":
            raise
    raise ValueError(f"{path} is not a training checkpoint of tasks.seg_train or tasks.det_train (valid MODEL: "
                     f"their best.pt/last.pt, a qfgaohao/pytorch-ssd .pth, or a backbone name)")


def _sampler(make_dataset: Callable[[str], object], to_input: Callable[[object], Tensor]):
    def images(split: str, count: int) -> list[Tensor]:
        dataset = make_dataset(split)
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0)).tolist()
        return [to_input(dataset[i]) for i in (order[:count] if split == "train" else range(count))]

    return images


def _segmenter(model: nn.Module, checkpoint: dict, data_root: str | None) -> ExportTarget:
    config, data = checkpoint["model_config"], checkpoint["data"]
    root = data_root or data["root"]
    splits = {"train": data["train_split"], "val": data["val_split"]}
    transform = seg_model.inference_transform(checkpoint["preprocessing"])

    def dataset(split: str) -> VOCSegmentation:
        return VOCSegmentation(root, splits[split], num_classes=config["num_classes"], transform=transform,
                               sbd_root=data.get("sbd_root") if split == "train" else None)

    metadata = {"kind": "segmenter", "input": _input_meta(NORMALIZED), "preprocessing": checkpoint["preprocessing"],
                "outputs": [{"name": "logits", "shape": ["N", config["num_classes"], "H", "W"]}],
                "class_names": checkpoint.get("class_names") or [str(i) for i in range(config["num_classes"])],
                "model_config": config, "data": {"root": root, **{f"{k}_split": v for k, v in splits.items()}}}
    return ExportTarget("segmenter", model, ["logits"], True, metadata,
                        _sampler(dataset, lambda s: s["image"][None]) if root else None,
                        dynamic_outputs={"logits": {2: "H", 3: "W"}})


def _detector(model: nn.Module, checkpoint: dict, data_root: str | None, output: str) -> ExportTarget:
    config, data = checkpoint["model_config"], checkpoint["data"] or {}
    train_roots = [data_root] if data_root else data.get("roots") or []
    val_root = data_root or data.get("val_root") or (train_roots[0] if train_roots else None)
    splits = {"train": data.get("train_split", "train"), "val": data.get("val_split", "val")}
    module = DeployableDetector(model, output).eval()

    def dataset(split: str) -> VOCDetection:
        roots = train_roots if split == "train" else [val_root]
        return VOCDetection(roots, splits[split], transforms=eval_transforms(), class_names=checkpoint["class_names"])

    h, w = module.size
    values = f"RGB in [0, 1] (pixel / 255), any size; resized to {h}x{w} and normalized inside the graph"
    preprocessing = {"mean": list(model.transform.image_mean), "std": list(model.transform.image_std),
                     "color": "RGB", "input_range": 1.0, "resize": [h, w], "inside_graph": True}
    metadata = {"kind": "detector", "input": _input_meta(values), "preprocessing": preprocessing,
                "outputs": _detector_outputs(output, module), "class_names": list(checkpoint["class_names"]),
                "model_config": config, "detector_output": output, "postprocess": module.postprocess_options(),
                "data": {"train_roots": [str(r) for r in train_roots], "val_root": val_root and str(val_root),
                         "train_split": splits["train"], "val_split": splits["val"]}}
    sample = _sampler(dataset, lambda s: s[0].as_subclass(Tensor)[None]) if val_root else None
    return ExportTarget("detector", module, OUTPUT_NAMES[output], True, metadata, sample,
                        dynamic_outputs={} if output == "raw" else {"boxes": {1: "D"}, "scores": {1: "D"},
                                                                    "labels": {1: "D"}})


def _detector_outputs(output: str, module: DeployableDetector) -> list[dict]:
    k, (h, w) = module.num_classes, module.size
    if output == "raw":
        return [{"name": "logits", "shape": ["N", "A", k], "note": "class logits, background first (no softmax)"},
                {"name": "boxes", "shape": ["N", "A", 4], "note": f"xyxy in pixels of the {h}x{w} network input, "
                 "not clipped; scale x by W/" f"{w} and y by H/{h} for input pixels"}]
    return [{"name": "boxes", "shape": ["N", "D", 4], "note": "xyxy in input pixels"},
            {"name": "scores", "shape": ["N", "D"]},
            {"name": "labels", "shape": ["N", "D"], "note": "1..K-1, class_names[label - 1]"},
            {"name": "num_detections", "shape": ["N"], "note": "valid rows come first, best score first; the rest "
             "is zero"}]


def _backbone(name: str, *, pretrained: str | None, output_stride: int) -> ExportTarget:
    model = create_backbone(name, pretrained=pretrained_arg(pretrained), output_stride=output_stride).eval()
    pre = model.preprocessing or IMAGENET
    preprocessing = {"mean": list(pre.mean), "std": list(pre.std), "color": pre.color, "input_range": pre.input_range}
    names = [f"features_{i}" for i in range(len(model.out_indices))]
    outputs = [{"name": n, "channels": c, "stride": s, "shape": ["N", c, f"ceil(H/{s})", f"ceil(W/{s})"]}
               for n, c, s in zip(names, model.channels, model.strides)]
    metadata = {"kind": "backbone", "input": _input_meta(NORMALIZED), "preprocessing": preprocessing,
                "outputs": outputs, "model_config": {"backbone": name, "output_stride": output_stride,
                                                     "out_indices": list(model.out_indices),
                                                     "pretrained": pretrained or "none"}}
    axes = {n: {2: f"H{i}", 3: f"W{i}"} for i, n in enumerate(names)}
    return ExportTarget("backbone", model, names, True, metadata, None, dynamic_outputs=axes)


def _input_meta(values: str) -> dict:
    return {"name": "images", "layout": "NCHW", "dtype": "float32", "shape": ["N", 3, "H", "W"], "values": values}


def load_target(model: str, *, detector_output: str = "nms", data_root: str | None = None,
                pretrained: str | None = None, output_stride: int = 32) -> ExportTarget:
    """The :class:`ExportTarget` of MODEL: a seg/det training checkpoint file, or a backbone name.

    ``data_root`` replaces the data folder the checkpoint recorded; ``pretrained``/``output_stride`` shape a bare
    backbone (``--pretrained`` words: none, default, a named source, a path or URL).
    """
    if not Path(model).exists():
        if model in list_backbones():
            return _backbone(model, pretrained=pretrained, output_stride=output_stride)
        raise FileNotFoundError(f"MODEL {model!r} is neither a file nor a backbone name; valid: a best.pt/last.pt "
                                f"of tasks.seg_train or tasks.det_train, or one of {', '.join(list_backbones())}")
    kind, net, checkpoint = load_task_model(model)
    if kind == "segmenter":
        return _segmenter(net, checkpoint, data_root)
    return _detector(net, checkpoint, data_root, detector_output)
