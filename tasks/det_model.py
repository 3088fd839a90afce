"""The detector of a run: settings -> model, and a checkpoint -> the same model for evaluation or prediction.

The detector normalises its own ``[0, 1]`` RGB inputs (torchvision's ``GeneralizedRCNNTransform``) with the mean
and std its backbone weights expect; those live in no state dict, so a checkpoint stores them under
``"preprocessing"`` beside ``"model_config"``, and :func:`load_model` rebuilds the model with them. Without that a
model trained with ImageNet statistics would be evaluated with 0.5/0.5. The twin for segmentation is
:mod:`tasks.seg_model`.
"""

from __future__ import annotations

import os
from argparse import Namespace
from collections.abc import Sequence

import torch
from torch import nn

from heads import create_detector
from tasks.engine.cli import pretrained_arg
from tasks.engine.resume import read_task_checkpoint

__all__ = ["build_model", "load_model", "model_config", "preprocessing_of"]


def model_config(args: Namespace, class_names: Sequence[str]) -> dict:
    """The plain-type settings that determine the model's shapes (stored in every checkpoint)."""
    return {"backbone": args.backbone, "num_classes": len(class_names) + 1, "size": int(args.size)}


def build_model(config: dict, *, preprocessing: dict | None = None, pretrained: str | None = None,
                freeze_bn: bool = False) -> nn.Module:
    """SSDLite per ``config``; ``preprocessing`` (from a checkpoint) fixes the input normalisation, else the
    pretrained weights' (``pretrained`` as ``--pretrained`` takes it), else mean 0.5 / std 0.5."""
    mean = std = None
    if preprocessing is not None:
        scale = preprocessing.get("input_range", 1.0)
        mean = [m / scale for m in preprocessing["mean"]]
        std = [s / scale for s in preprocessing["std"]]
    return create_detector(config["backbone"], config["num_classes"], size=config["size"],
                           pretrained_backbone=pretrained_arg(pretrained), image_mean=mean, image_std=std,
                           backbone_kwargs={"norm_eval": True} if freeze_bn else None)


def preprocessing_of(model: nn.Module) -> dict:
    """The normalisation the detector applies to ``[0, 1]`` RGB inputs, as plain types."""
    transform = model.transform
    return {"mean": [float(m) for m in transform.image_mean], "std": [float(s) for s in transform.image_std],
            "color": "RGB", "input_range": 1.0}


def load_model(path: str | os.PathLike, *, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model of a ``tasks.det_train`` checkpoint (``last.pt``/``best.pt``) in eval mode, normalising
    its inputs as in training.

    Returns:
        ``(model, checkpoint)``; ``checkpoint["model_config"]``, ``["preprocessing"]``, ``["class_names"]`` and
        ``["data"]`` describe it.
    """
    checkpoint = read_task_checkpoint(path, "det", purpose="used as a detection model")
    model = build_model(checkpoint["model_config"], preprocessing=checkpoint["preprocessing"])
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval(), checkpoint
