"""Training-data throughput: images per second our VOC loaders deliver with 0, 1 and 2 worker processes.

The datasets are generated in the real VOC layouts (``tasks.seg_synthetic``, ``tasks.det_synthetic``) and read
through the training code path: the VOC readers, the training augmentations (segmentation: random scale, crop,
flip; detection: SSD's photometric distortion, zoom out, min-IoU crop, flip, resize), the seeded sampler and the
DataLoader settings of the trainers. One run is one epoch; workers persist between epochs, as in training, and
are started during the warm-up. Timed on the wall clock whatever ``--clock`` says: the work is in the workers.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from tasks.det_data import VOCDetection, collate
from tasks.det_synthetic import make_synthetic_voc as make_detection_voc
from tasks.det_transforms import train_transforms
from tasks.engine import SeededShardSampler
from tasks.seg_synthetic import make_synthetic_voc as make_segmentation_voc
from tasks.seg_transforms import train_transform
from tasks.seg_data import VOCSegmentation

from .measure import Group, Subject

__all__ = ["data_group"]


def _epoch(loader: DataLoader) -> Callable[[], object]:
    def work() -> object:
        for _ in loader:
            pass
        return None
    return work


def _loader(dataset: Dataset, batch: int, workers: int, collate_fn: Callable | None = None) -> DataLoader:
    return DataLoader(dataset, batch_size=batch, sampler=SeededShardSampler(len(dataset), seed=0), drop_last=True,
                      num_workers=workers, persistent_workers=workers > 0, collate_fn=collate_fn,
                      generator=torch.Generator())


def data_group(root: Path, *, images: int, image_size: tuple[int, int], crop: int, det_size: int, batch: int,
               workers: Sequence[int]) -> Group:
    """Segmentation (``crop`` crops of images about ``image_size``) and detection (``det_size``) loaders.

    Args:
        root: an empty scratch folder for the generated datasets.
        images: training images per dataset (one epoch).
    """
    seg_root = make_segmentation_voc(root / "seg", num_train=images, num_val=1, size_range=image_size)
    det_root = make_detection_voc(root / "det", num_train=images, num_val=1)
    seg = VOCSegmentation(seg_root, "train", num_classes=5, transform=train_transform(crop))
    det = VOCDetection(det_root, "train", transforms=train_transforms(det_size), keep_difficult=False)
    subjects = []
    for n in workers:
        seg_loader = _loader(seg, batch, n)
        det_loader = _loader(det, batch, n, collate)
        used = len(seg_loader) * batch
        subjects.append(Subject(f"seg_{n}", f"segmentation, crop {crop}, {n} workers", _epoch(seg_loader),
                                images=used))
        subjects.append(Subject(f"det_{n}", f"detection, {det_size}x{det_size}, {n} workers", _epoch(det_loader),
                                images=len(det_loader) * batch))
    notes = [f"Segmentation images are {image_size[0]}-{image_size[1]} px a side (VOC's are about 500x375); "
             "detection images 160-224 x 120-192 px, resized to the network input by the augmentation."]
    return Group(f"Training data, batch {batch}, images/s (one epoch of {images} images per run)", "data", subjects,
                 notes=notes, count_work=False, clock="wall")
