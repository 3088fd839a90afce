"""PASCAL VOC 2012 semantic segmentation data in its published layout, with every file checked before training.

Layout::

    VOC2012/JPEGImages/<id>.jpg
    VOC2012/SegmentationClass/<id>.png          palette PNG: class index per pixel, 255 = boundary / ignore
    VOC2012/ImageSets/Segmentation/{train,val,trainval}.txt   (1,464 train / 1,449 val)
    SBD augmentation (optional, Hariharan et al. 2011): <sbd-root>/SegmentationClassAug/<id>.png (grey-level
    indices) and <sbd-root>/train_aug.txt (10,582 ids; must not contain val ids)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from tasks.engine import progress
from tasks.voc import VOC_CLASSES, check_image, image_size, read_image, read_split


__all__ = ["CLASS_NAMES", "IGNORE_INDEX", "voc_palette", "read_label", "VOCSegmentation"]

IGNORE_INDEX = 255
CLASS_NAMES = ("background", *VOC_CLASSES)
"""The 21 segmentation classes: index 0 is background, 255 is ignored."""


def voc_palette() -> np.ndarray:
    """The 256-entry VOC colour map ``(256, 3)`` uint8: bits of the index spread over the high bits of R, G, B."""
    idx = np.arange(256)
    palette = np.zeros((256, 3), dtype=np.uint8)
    for shift in range(8):
        for channel in range(3):
            bit = (idx >> (channel + 3 * shift)) & 1
            palette[:, channel] |= (bit << (7 - shift)).astype(np.uint8)
    return palette


def read_label(path: str | os.PathLike, *, num_classes: int) -> np.ndarray:
    """A label map ``(H, W)`` uint8 from a palette ('P') or grey-level ('L') PNG holding class indices.

    Raises:
        ValueError: if the PNG holds colours instead of indices, or values outside ``{0..num_classes-1, 255}``.
    """
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise ValueError(f"label {path} is a {im.mode!r} image; expected a palette ('P') or grey ('L') "
                                 f"PNG of class indices (an RGB rendering cannot be read back as classes)")
            label = np.asarray(im)
    except FileNotFoundError:
        raise FileNotFoundError(f"label not found: {path}") from None
    except OSError as e:
        raise ValueError(f"cannot decode label {path}: {e}") from e
    bad = np.setdiff1d(np.unique(label), [*range(num_classes), IGNORE_INDEX])
    if bad.size:
        raise ValueError(f"label {path} holds values {bad.tolist()}; valid are 0..{num_classes - 1} and "
                         f"{IGNORE_INDEX} (ignore)")
    return label


class VOCSegmentation(Dataset):
    """Images and label maps of one split.

    Items are ``transform(image=..., mask=...)`` outputs; a key may be an index or an ``(index, seed)`` pair
    from :class:`tasks.engine.SeededShardSampler`, whose seed is passed to ``transform`` as ``seed=``.

    Args:
        root: the ``VOC2012`` directory.
        split: an ImageSets/Segmentation list name ("train", "val", ...), or "train_aug" with ``sbd_root``.
        num_classes: labels must lie in ``0..num_classes-1`` or be 255.
        transform: ``callable(image, mask, seed) -> dict``; None returns the raw arrays.
        sbd_root: directory with SegmentationClassAug/ and train_aug.txt (SBD augmented training set).
    """

    def __init__(self, root: str | os.PathLike, split: str, *, num_classes: int = 21,
                 transform: Callable[..., dict] | None = None, sbd_root: str | os.PathLike | None = None) -> None:
        self.root = Path(root)
        if not (self.root / "JPEGImages").is_dir():
            raise FileNotFoundError(f"{self.root} is not a VOC2012 directory: JPEGImages/ missing "
                                    f"(pass the .../VOCdevkit/VOC2012 folder)")
        self.num_classes = num_classes
        self.transform = transform
        if split == "train_aug":
            if sbd_root is None:
                raise ValueError("split 'train_aug' needs sbd_root (folder with SegmentationClassAug/, train_aug.txt)")
            self.ids = read_split(Path(sbd_root) / "train_aug.txt")
            self.label_dir = Path(sbd_root) / "SegmentationClassAug"
            self._check_disjoint_from_val()
        else:
            self.ids = read_split(self.root / "ImageSets" / "Segmentation" / f"{split}.txt")
            self.label_dir = self.root / "SegmentationClass"
        self.split = split
        self._check_files()

    def _check_disjoint_from_val(self) -> None:
        val_list = self.root / "ImageSets" / "Segmentation" / "val.txt"
        leaked = set(self.ids) & set(read_split(val_list)) if val_list.is_file() else set()
        if leaked:
            raise ValueError(f"train_aug.txt contains {len(leaked)} val images (e.g. {sorted(leaked)[:3]}); "
                             f"remove them or val mIoU is meaningless")

    def _check_files(self) -> None:
        missing = [str(p) for i in self.ids for p in (self.image_path(i), self.label_path(i)) if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} files of split {self.split!r} are missing, e.g. "
                                    + ", ".join(missing[:5]))

    def verify(self, *, show_progress: bool = False) -> None:
        """Check every listed image and label before training: both headers decode (PIL reads headers only, so this
        is fast) and each label has its image's size. Label values are checked when a label is read."""
        for image_id in progress(self.ids, enabled=show_progress, desc=f"checking {self.split}"):
            size = image_size(self.image_path(image_id))
            check_image(self.label_path(image_id), size=size, what="label")

    def image_path(self, image_id: str) -> Path:
        return self.root / "JPEGImages" / f"{image_id}.jpg"

    def label_path(self, image_id: str) -> Path:
        return self.label_dir / f"{image_id}.png"

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw ``(H, W, 3)`` image and ``(H, W)`` label of item ``index``, sizes checked to match."""
        image_id = self.ids[index]
        image = read_image(self.image_path(image_id))
        label = read_label(self.label_path(image_id), num_classes=self.num_classes)
        if image.shape[:2] != label.shape:
            raise ValueError(f"{self.image_path(image_id)} is {image.shape[:2]} but its label "
                             f"{self.label_path(image_id)} is {label.shape}")
        return image, label

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, seed = key if isinstance(key, tuple) else (key, None)
        image, label = self.load(index)
        if self.transform is None:
            return {"image": image, "mask": label}
        return {**self.transform(image=image, mask=label, seed=seed), "index": index}
