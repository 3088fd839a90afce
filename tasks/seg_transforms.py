"""Augmentation for segmentation training and the evaluation preprocessing (albumentations 2.x, strict).

Training (DeepLab recipe): random scale 0.5-2.0 -> normalise -> pad to the crop size (image 0, i.e. the mean
colour after normalising; mask 255 = ignore) -> random crop -> horizontal flip. Evaluation only normalises:
val images keep their full resolution, as the VOC benchmark scores them (a centre crop would inflate mIoU).
albumentations 2.x ignores unknown 1.x arguments with a mere warning (``PadIfNeeded(value=, mask_value=)`` would
silently pad masks with 0, turning the ignore region into background), so every pipeline is built with
``strict=True`` and pads with ``fill``/``fill_mask``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import albumentations as A
import cv2
import numpy as np
import torch
import torch.nn.functional as F

from backbones.weights import IMAGENET
from tasks.seg_data import IGNORE_INDEX

__all__ = ["SegTransform", "train_transform", "eval_transform", "pad_collate"]


class SegTransform:
    """An albumentations pipeline returning ``image`` float ``(3, H, W)`` and ``mask`` int64 ``(H, W)``.

    ``bgr`` reverses the channels of the RGB input first (for weights trained on BGR, e.g. official ShuffleNetV1).
    ``seed`` (from the sampler) seeds the pipeline for this one call, so the augmentation of a sample does not
    depend on the worker that loads it; without a seed the pipeline's own generator runs on.
    """

    def __init__(self, pipeline: A.Compose, *, bgr: bool = False) -> None:
        self.pipeline = pipeline
        self.bgr = bgr

    def __call__(self, *, image: np.ndarray, mask: np.ndarray, seed: int | None = None) -> dict:
        if seed is not None:
            self.pipeline.set_random_state(np.random.default_rng(seed), random.Random(seed))
        out = self.pipeline(image=np.ascontiguousarray(image[..., ::-1]) if self.bgr else image, mask=mask)
        return {"image": torch.from_numpy(np.ascontiguousarray(out["image"].transpose(2, 0, 1))),
                "mask": torch.from_numpy(np.array(out["mask"], dtype=np.int64))}


def _normalize(mean: Sequence[float], std: Sequence[float], input_range: float) -> A.Normalize:
    """``(pixel * input_range / 255 - mean) / std``, the :class:`backbones.weights.Preprocessing` convention."""
    return A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0 / input_range)


def _check_color(color: str) -> bool:
    if color not in ("RGB", "BGR"):
        raise ValueError(f"color must be 'RGB' or 'BGR', got {color!r}")
    return color == "BGR"


def train_transform(crop_size: int, *, scale_range: tuple[float, float] = (0.5, 2.0), hflip: float = 0.5,
                    mean: Sequence[float] = IMAGENET.mean, std: Sequence[float] = IMAGENET.std, color: str = "RGB",
                    input_range: float = 1.0) -> SegTransform:
    """Random scale, normalise, pad (image 0 / mask 255), random ``crop_size`` square crop, flip.

    ``mean``, ``std``, ``color``, ``input_range``: the backbone weights' preprocessing (ImageNet RGB by default).
    """
    if crop_size < 1:
        raise ValueError(f"crop_size must be positive, got {crop_size}")
    if not 0 < scale_range[0] <= scale_range[1]:
        raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
    pipeline = A.Compose([
        A.RandomScale(scale_limit=(scale_range[0] - 1, scale_range[1] - 1), interpolation=cv2.INTER_LINEAR,
                      mask_interpolation=cv2.INTER_NEAREST, p=1.0),
        _normalize(mean, std, input_range),
        A.PadIfNeeded(min_height=crop_size, min_width=crop_size, position="center",
                      border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=IGNORE_INDEX),
        A.RandomCrop(height=crop_size, width=crop_size),
        A.HorizontalFlip(p=hflip),
    ], strict=True)
    return SegTransform(pipeline, bgr=_check_color(color))


def eval_transform(*, mean: Sequence[float] = IMAGENET.mean, std: Sequence[float] = IMAGENET.std,
                   color: str = "RGB", input_range: float = 1.0) -> SegTransform:
    """Normalisation only: evaluation runs on the full-resolution image."""
    return SegTransform(A.Compose([_normalize(mean, std, input_range)], strict=True), bgr=_check_color(color))


def pad_collate(batch: Sequence[dict]) -> dict:
    """Stack samples of different sizes by padding bottom/right to the largest (image 0, mask 255).

    Returns ``image (N, 3, H, W)``, ``mask (N, H, W)`` and ``index (N,)``; padded pixels are ignored by the
    loss and the metrics, so padded evaluation scores exactly the real pixels.
    """
    height = max(s["image"].shape[-2] for s in batch)
    width = max(s["image"].shape[-1] for s in batch)

    def pad(t: torch.Tensor, value: int) -> torch.Tensor:
        return F.pad(t, (0, width - t.shape[-1], 0, height - t.shape[-2]), value=value)

    return {"image": torch.stack([pad(s["image"], 0) for s in batch]),
            "mask": torch.stack([pad(s["mask"], IGNORE_INDEX) for s in batch]),
            "index": torch.tensor([s.get("index", -1) for s in batch])}
