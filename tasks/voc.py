"""PASCAL VOC basics shared by the segmentation and detection data: class names, split lists, images.

Layout (Everingham et al., IJCV 2010; the devkit)::

    VOC2012/JPEGImages/<id>.jpg
    VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt     segmentation splits (1,464 / 1,449 images)
    VOC2012/ImageSets/Main/{train,val,trainval,test}.txt         detection splits
    VOC2012/SegmentationClass/<id>.png, VOC2012/Annotations/<id>.xml

Every reader here fails with one line naming the file and what was expected, never a bare PIL traceback.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["VOC_CLASSES", "check_image", "image_size", "read_image", "read_split"]

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
"""The 20 object classes in devkit order: segmentation index / detection label ``i + 1`` is ``VOC_CLASSES[i]``."""


def read_split(path: str | os.PathLike) -> list[str]:
    """Image ids listed one per line in an ImageSets file (extra columns, as in per-class lists, are dropped).

    Raises:
        FileNotFoundError: naming the file and the split lists that exist beside it.
        ValueError: if the list is empty.
    """
    path = Path(path)
    if not path.is_file():
        found = sorted(p.stem for p in path.parent.glob("*.txt") if "_" not in p.stem) if path.parent.is_dir() else []
        raise FileNotFoundError(f"split list not found: {path}; lists in {path.parent}: {found or 'none'}")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise ValueError(f"split list {path} is empty")
    return ids


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as RGB ``(H, W, 3)`` uint8; missing, truncated or undecodable files raise naming the file."""
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except (OSError, SyntaxError, ValueError) as e:  # PIL: UnidentifiedImageError, truncated data, bad headers
        raise ValueError(f"cannot decode image {path}: {e}") from None


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` from the file header alone (no pixel decoding); raises like :func:`read_image`."""
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"cannot decode image {path}: {e}") from None


def check_image(path: str | os.PathLike, *, size: Sequence[int] | None = None, what: str = "image") -> None:
    """Check that ``path`` exists and has a decodable header of ``size`` ``(width, height)`` if given."""
    found = image_size(path)
    if size is not None and tuple(found) != tuple(size):
        raise ValueError(f"{what} {path} is {found[0]}x{found[1]}, expected {size[0]}x{size[1]}")
