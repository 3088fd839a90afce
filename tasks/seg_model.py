"""The segmenter of a run: settings -> model, and a checkpoint -> the same model for evaluation or prediction.

A checkpoint stores what shapes the model under ``"model_config"`` and how to normalise its inputs under
``"preprocessing"`` (the backbone weights' mean/std, colour order and input range), so ``seg_eval``, ``seg_predict``
and ``export`` need only the file. The twin for detection is :mod:`tasks.det_model`.
"""

from __future__ import annotations

import os
from argparse import Namespace
from dataclasses import asdict

import torch
from torch import nn

from backbones.weights import IMAGENET
from heads import create_segmenter
from tasks.engine.cli import pretrained_arg
from tasks.engine.resume import read_task_checkpoint
from tasks.seg_transforms import SegTransform, eval_transform

__all__ = ["build_model", "inference_transform", "load_model", "model_config", "preprocessing_of"]


def model_config(args: Namespace) -> dict:
    """The plain-type settings that determine the model's shapes (stored in every checkpoint)."""
    return {"backbone": args.backbone, "num_classes": args.num_classes, "output_stride": args.output_stride,
            "head_channels": args.head_channels, "separable": bool(args.separable), "aspp_input": args.aspp_input}


def build_model(config: dict, *, pretrained: str | None = None, freeze_bn: bool = False) -> nn.Module:
    """DeepLabV3+ per ``config`` (see :func:`model_config`; checkpoints older than ``aspp_input`` fed ASPP the last
    stage); ``pretrained`` as ``--pretrained`` takes it."""
    return create_segmenter(config["backbone"], config["num_classes"], output_stride=config["output_stride"],
                            pretrained_backbone=pretrained_arg(pretrained), norm_eval=freeze_bn,
                            aspp_channels=config["head_channels"], decoder_channels=config["head_channels"],
                            separable=config["separable"], aspp_input=config.get("aspp_input"))


def preprocessing_of(model: nn.Module) -> dict:
    """The input normalisation of the backbone's weights (ImageNet when none were loaded), as plain types."""
    return asdict(getattr(model.backbone, "preprocessing", None) or IMAGENET)


def inference_transform(preprocessing: dict) -> SegTransform:
    """Full-resolution evaluation transform for a checkpoint's stored preprocessing."""
    return eval_transform(**preprocessing)


def load_model(path: str | os.PathLike, *, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model of a ``tasks.seg_train`` checkpoint (``last.pt``/``best.pt``) in eval mode.

    Returns:
        ``(model, checkpoint)``; ``checkpoint["model_config"]``, ``["preprocessing"]``, ``["class_names"]`` and
        ``["data"]`` describe it.
    """
    checkpoint = read_task_checkpoint(path, "seg", purpose="used as a segmentation model")
    model = build_model(checkpoint["model_config"])
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval(), checkpoint
