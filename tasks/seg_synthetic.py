"""A small synthetic segmentation dataset written in the real PASCAL VOC 2012 layout.

It lets ``python -m tasks.seg_train`` run end to end with no download, through the same reader as VOC.
Each image is a noisy, smoothly shaded background with a few textured shapes; the class of a shape is given by
its form *and* a class-specific colour family (jittered), so a model must look at both colour and shape. As
in VOC, a band of 255 (ignore) runs along every object's outline, and shapes may overlap (later ones on top).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from tasks.seg_data import IGNORE_INDEX, voc_palette

__all__ = ["SYNTHETIC_CLASSES", "make_synthetic_voc", "write_sample"]

SYNTHETIC_CLASSES = ("background", "disc", "square", "triangle", "ring")
# Base RGB of each foreground class; every instance jitters it, so colours of classes overlap a little.
_CLASS_COLOURS = np.array([[220, 60, 50], [60, 170, 70], [60, 90, 220], [230, 200, 40]], dtype=np.float32)
_BOUNDARY = 2  # width in pixels of the ignore band on each side of an outline


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth random shading plus pixel noise, ``(h, w, 3)`` float."""
    coarse = rng.uniform(40, 200, size=(3, 3, 3)).astype(np.float32)
    base = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return base + rng.normal(0, 18, size=(h, w, 3))


def _shape_mask(rng: np.random.Generator, cls: int, h: int, w: int) -> np.ndarray:
    """A filled ``(h, w)`` uint8 mask of one shape of class ``cls`` at a random place and size."""
    mask = np.zeros((h, w), np.uint8)
    r = int(rng.uniform(0.12, 0.28) * min(h, w))
    cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, h - r))
    if cls == 1:
        cv2.circle(mask, (cx, cy), r, 1, -1)
    elif cls == 2:
        angle = rng.uniform(0, 90)
        box = cv2.boxPoints(((cx, cy), (1.6 * r, 1.6 * r), angle)).astype(np.int32)
        cv2.fillPoly(mask, [box], 1)
    elif cls == 3:
        start = rng.uniform(0, 2 * np.pi)
        angles = start + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3])
        pts = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1)
    else:
        cv2.circle(mask, (cx, cy), r, 1, -1)
        cv2.circle(mask, (cx, cy), max(2, r // 2), 0, -1)
    return mask


def _render(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """One image ``(h, w, 3)`` uint8 and its label ``(h, w)`` uint8 with 255 outline bands."""
    image = _background(rng, h, w)
    label = np.zeros((h, w), np.uint8)
    outline = np.zeros((h, w), bool)
    kernel = np.ones((2 * _BOUNDARY + 1, 2 * _BOUNDARY + 1), np.uint8)
    for cls in rng.integers(1, len(SYNTHETIC_CLASSES), size=int(rng.integers(1, 4))):
        mask = _shape_mask(rng, int(cls), h, w)
        colour = _CLASS_COLOURS[cls - 1] + rng.normal(0, 25, size=3)
        stripes = 20 * np.sin(np.arange(w)[None, :] * rng.uniform(0.3, 0.8) + rng.uniform(0, 6))
        texture = colour + stripes[..., None] + rng.normal(0, 12, size=(h, w, 3))
        inside = mask.astype(bool)
        image[inside] = texture[inside]
        label[inside] = cls
        band = cv2.dilate(mask, kernel).astype(bool) & ~cv2.erode(mask, kernel).astype(bool)
        outline = (outline & ~inside) | band
    label[outline] = IGNORE_INDEX
    return np.clip(image, 0, 255).astype(np.uint8), label


def write_sample(root: Path, image_id: str, image: np.ndarray, label: np.ndarray, palette: bytes | None = None) -> None:
    """Write ``root/JPEGImages/<id>.jpg`` and ``root/SegmentationClass/<id>.png`` (VOC palette PNG of indices)."""
    palette = voc_palette().tobytes() if palette is None else palette
    Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
    mask = Image.fromarray(label, mode="P")
    mask.putpalette(palette)
    mask.save(root / "SegmentationClass" / f"{image_id}.png")


def make_synthetic_voc(root: str | os.PathLike, *, num_train: int = 240, num_val: int = 60,
                       size_range: tuple[int, int] = (96, 160), seed: int = 0) -> Path:
    """Write ``root/VOC2012`` (JPEGImages, SegmentationClass, ImageSets/Segmentation) and return its path.

    Image sides are drawn from ``size_range`` independently, so evaluation sees odd, non-square sizes. An
    existing complete dataset (same ids listed) is reused, not rewritten.
    """
    if num_train < 1 or num_val < 1:
        raise ValueError(f"num_train and num_val must be positive, got {num_train}, {num_val}")
    if not 32 <= size_range[0] <= size_range[1]:
        raise ValueError(f"size_range must satisfy 32 <= low <= high, got {size_range}")
    voc = Path(root) / "VOC2012"
    lists = voc / "ImageSets" / "Segmentation"
    splits = {"train": [f"synth_train_{i:05d}" for i in range(num_train)],
              "val": [f"synth_val_{i:05d}" for i in range(num_val)]}
    if all((lists / f"{s}.txt").is_file() and (lists / f"{s}.txt").read_text().split() == ids
           for s, ids in splits.items()):
        return voc
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    palette = voc_palette().tobytes()
    for ids in splits.values():
        for image_id in ids:
            h, w = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
            write_sample(voc, image_id, *_render(rng, h, w), palette)
    for name, ids in {**splits, "trainval": splits["train"] + splits["val"]}.items():
        (lists / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return voc
