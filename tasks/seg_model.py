"""Building the segmenter from run settings, and rebuilding it from a checkpoint for evaluation/prediction.

A checkpoint stores the settings that shape the model and its input preprocessing under ``"model_config"``,
so ``seg_eval``/``seg_predict`` need only the checkpoint file.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from backbones.weights import IMAGENET, Preprocessing
from heads import create_segmenter

from .engine import load_checkpoint
from .engine.cli import pretrained_arg
from .seg_transforms import SegTransform, eval_transform

__all__ = ["model_config", "build_model", "load_model", "preprocessing_of", "inference_transform"]


def model_config(args) -> dict:
    """The plain-type settings that determine the model's shapes (stored in every checkpoint)."""
    return {"backbone": args.backbone, "num_classes": args.num_classes, "output_stride": args.output_stride,
            "head_channels": args.head_channels, "separable": bool(args.separable)}


def build_model(config: dict, *, pretrained: str | None = None, freeze_bn: bool = False) -> nn.Module:
    """DeepLabV3+ per ``config`` (see :func:`model_config`); ``pretrained`` as ``--pretrained`` takes it."""
    return create_segmenter(config["backbone"], config["num_classes"], output_stride=config["output_stride"],
                            pretrained_backbone=pretrained_arg(pretrained), norm_eval=freeze_bn,
                            aspp_channels=config["head_channels"], decoder_channels=config["head_channels"],
                            separable=config["separable"])


def preprocessing_of(model: nn.Module) -> dict:
    """The input normalisation of the backbone's weights (ImageNet when none were loaded), as plain types."""
    pre: Preprocessing = getattr(model.backbone, "preprocessing", None) or IMAGENET
    return {"mean": list(pre.mean), "std": list(pre.std), "color": pre.color, "input_range": pre.input_range}


def inference_transform(preprocessing: dict) -> SegTransform:
    """Full-resolution evaluation transform for a checkpoint's stored preprocessing."""
    return eval_transform(**preprocessing)


def load_model(path: str | os.PathLike, *, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model of a training checkpoint (``last.pt``/``best.pt``) in eval mode.

    Returns:
        ``(model, checkpoint)``; ``checkpoint["model_config"]`` and ``["preprocessing"]`` describe it.
    """
    checkpoint = load_checkpoint(path)
    if "model_config" not in checkpoint or "model" not in checkpoint:
        raise ValueError(f"{path} is not a tasks.seg_train checkpoint (no 'model_config'/'model' entries)")
    model = build_model(checkpoint["model_config"])
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval(), checkpoint
