"""The detector of a run: settings -> model, and a checkpoint -> the same model for evaluation or prediction.

The detector normalises its own ``[0, 1]`` RGB inputs (torchvision's ``GeneralizedRCNNTransform``) with the mean
and std its backbone weights expect; those live in no state dict, so a checkpoint stores them under
``"preprocessing"`` beside ``"model_config"``, and :func:`load_model` rebuilds the model with them. Without that a
model trained with ImageNet statistics would be evaluated with 0.5/0.5. :func:`load_model` also takes a checkpoint
of qfgaohao/pytorch-ssd (``mb1-ssd``, ``mb1-ssd-lite``, ``mb2-ssd-lite``), converted on load. The twin for
segmentation is :mod:`tasks.seg_model`.
"""

from __future__ import annotations

import os
from argparse import Namespace
from collections.abc import Sequence

import torch
from torch import nn

from backbones.weights import unwrap
from heads import create_detector
from heads.ssdlite_convert import create_pytorch_ssd_detector, detect_pytorch_ssd_layout, load_pytorch_ssd
from tasks.engine import load_checkpoint
from tasks.engine.cli import pretrained_arg
from tasks.engine.resume import check_task_checkpoint
from tasks.voc import VOC_CLASSES

__all__ = ["build_model", "load_model", "model_config", "preprocessing_of"]


def model_config(args: Namespace, class_names: Sequence[str]) -> dict:
    """The plain-type settings that determine the model's shapes (stored in every checkpoint)."""
    return {"backbone": args.backbone, "num_classes": len(class_names) + 1, "size": int(args.size), "head": args.head}


def build_model(config: dict, *, preprocessing: dict | None = None, pretrained: str | None = None,
                freeze_bn: bool = False) -> nn.Module:
    """The detector per ``config``; ``preprocessing`` (from a checkpoint) fixes the input normalisation, else the
    pretrained weights' (``pretrained`` as ``--pretrained`` takes it), else mean 0.5 / std 0.5."""
    if "pytorch_ssd_layout" in config:  # a converted pytorch-ssd model normalises as it was trained
        return create_pytorch_ssd_detector(config["num_classes"], layout=config["pytorch_ssd_layout"])
    mean = std = None
    if preprocessing is not None:
        scale = preprocessing.get("input_range", 1.0)
        mean = [m / scale for m in preprocessing["mean"]]
        std = [s / scale for s in preprocessing["std"]]
    return create_detector(config["backbone"], config["num_classes"], head=config.get("head", "ssdlite"),
                           size=config["size"], pretrained_backbone=pretrained_arg(pretrained), image_mean=mean,
                           image_std=std, backbone_kwargs={"norm_eval": True} if freeze_bn else None)


def preprocessing_of(model: nn.Module) -> dict:
    """The normalisation the detector applies to ``[0, 1]`` RGB inputs, as plain types."""
    transform = model.transform
    return {"mean": [float(m) for m in transform.image_mean], "std": [float(s) for s in transform.image_std],
            "color": "RGB", "input_range": 1.0}


def _pytorch_ssd_checkpoint(state: dict) -> tuple[nn.Module, dict]:
    """A qfgaohao/pytorch-ssd state dict as our model and a checkpoint-like description (no data recorded)."""
    model = load_pytorch_ssd(unwrap(state))
    classes = model.head.classification_head.num_columns
    names = list(VOC_CLASSES) if classes == len(VOC_CLASSES) + 1 else [f"class_{i}" for i in range(1, classes)]
    config = {"pytorch_ssd_layout": model.pytorch_ssd_layout, "num_classes": classes, "size": 300}
    return model, {"model_config": config, "class_names": names, "preprocessing": preprocessing_of(model),
                   "data": None}


def load_model(path: str | os.PathLike, *, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model of a ``tasks.det_train`` checkpoint (``last.pt``/``best.pt``), or convert a pytorch-ssd
    checkpoint, in eval mode, normalising its inputs as in training.

    Returns:
        ``(model, checkpoint)``; ``checkpoint["model_config"]``, ``["preprocessing"]``, ``["class_names"]`` and
        ``["data"]`` (``None`` for a converted checkpoint: it records no data) describe it.
    """
    state = load_checkpoint(path)
    if "task" not in state:
        try:
            detect_pytorch_ssd_layout(unwrap(state))
        except ValueError:
            pass
        else:
            model, checkpoint = _pytorch_ssd_checkpoint(state)
            return model.to(device).eval(), checkpoint
    checkpoint = check_task_checkpoint(state, path, "det", purpose="used as a detection model")
    model = build_model(checkpoint["model_config"], preprocessing=checkpoint["preprocessing"])
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval(), checkpoint
