"""The references: each library's model trained by the plain loop a user of that library writes.

Segmentation: smp ``DeepLabV3Plus('mobilenet_v2')`` (Chen et al. 2018; separable ASPP and decoder, output stride
16), SGD lr 0.01 momentum 0.9 weight decay 1e-4 on every parameter, poly 0.9 per step, pixel cross-entropy ignoring
255, random scale 0.5–2 / crop / flip. Detection: torchvision ``ssdlite320_mobilenet_v3_large`` (Howard et al.
2019, §6.2), SGD momentum 0.9 weight decay 4e-5, one-cycle schedule (Smith & Topin 2017) peaking at lr 0.05,
horizontal flip only. Both start from random weights (``weights=None``) and read the very data of our trainers:
the same datasets, the same :class:`~tasks.engine.SeededShardSampler` order and, for segmentation, the same crops.
Both are scored by the tasks' own evaluation (:func:`tasks.seg_eval.evaluate`, :func:`tasks.det_eval.evaluate`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from tasks import det_eval, seg_eval
from tasks.det_data import VOCDetection, collate
from tasks.det_transforms import eval_transforms, train_transforms
from tasks.engine import DistInfo, Precision, SeededShardSampler
from tasks.seg_data import CLASS_NAMES, IGNORE_INDEX, VOCSegmentation
from tasks.seg_transforms import eval_transform, train_transform
from tasks.voc import VOC_CLASSES

__all__ = ["NUM_CLASSES", "PadToMultiple", "sgd_poly", "train_smp_deeplab", "train_torchvision_ssdlite"]

NUM_CLASSES = len(VOC_CLASSES) + 1  # both references are built for VOC: background + 20


class PadToMultiple(nn.Module):
    """Run ``model`` on ``(N, C, H, W)`` padded bottom/right to a multiple of ``multiple`` and crop its output back:
    smp's DeepLabV3+ refuses sizes not divisible by its output stride, and evaluation scores full images."""

    def __init__(self, model: nn.Module, multiple: int) -> None:
        super().__init__()
        self.model, self.multiple = model, multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        out = self.model(F.pad(x, (0, -w % self.multiple, 0, -h % self.multiple)))
        return out[..., :h, :w]


def _batches(loader: DataLoader, iters: int) -> Iterator:
    """``iters`` batches over as many epochs as that takes, each epoch in the sampler's order for that epoch."""
    step, epoch = 0, 0
    while True:
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            yield batch
            step += 1
            if step == iters:
                return
        epoch += 1


def _loader(dataset, *, batch_size: int, seed: int, workers: int, collate_fn=None) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, sampler=SeededShardSampler(len(dataset), seed=seed),
                      drop_last=True, num_workers=workers, persistent_workers=workers > 0, collate_fn=collate_fn,
                      generator=torch.Generator())


def _plain_loop(name: str, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, batches: Iterator,
                loss_of: Callable[[object], torch.Tensor], iters: int, start: float) -> None:
    """The loop of every library's tutorial: loss, zero_grad, backward, step, scheduler step; a line per tenth."""
    model.train()
    for step, batch in enumerate(batches, start=1):
        loss = loss_of(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % max(1, iters // 10) == 0 or step == iters:
            print(f"{name}: step {step}/{iters} loss {loss.item():.4f} ({time.perf_counter() - start:.0f} s)",
                  flush=True)


def sgd_poly(model: nn.Module, iters: int) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.LambdaLR]:
    """The segmentation reference's optimizer: SGD lr 0.01 momentum 0.9 weight decay 1e-4 on every parameter, poly
    0.9 stepped per iteration over ``iters``."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (1 - step / iters) ** 0.9)


def train_smp_deeplab(root: str | Path, *, iters: int, batch_size: int, crop_size: int, seed: int, workers: int,
                      device: torch.device) -> dict:
    """Train and score smp's DeepLabV3+ MobileNetV2; returns ``miou``, ``pixel_acc``, ``iou`` (per class name),
    ``train_s``, ``wall_s``."""
    import segmentation_models_pytorch as smp

    start = time.perf_counter()
    torch.manual_seed(seed)
    train = VOCSegmentation(root, "train", num_classes=NUM_CLASSES, transform=train_transform(crop_size))
    val = VOCSegmentation(root, "val", num_classes=NUM_CLASSES, transform=eval_transform())
    model = smp.DeepLabV3Plus("mobilenet_v2", encoder_weights=None, classes=NUM_CLASSES).to(device)
    optimizer, scheduler = sgd_poly(model, iters)
    loader = _loader(train, batch_size=batch_size, seed=seed, workers=workers)

    def loss_of(batch: dict) -> torch.Tensor:
        return F.cross_entropy(model(batch["image"].to(device)), batch["mask"].to(device), ignore_index=IGNORE_INDEX)

    _plain_loop("smp DeepLabV3+", model, optimizer, scheduler, _batches(loader, iters), loss_of, iters, start)
    train_s = time.perf_counter() - start
    info = DistInfo(0, 1, 0, device)
    scores = seg_eval.evaluate(PadToMultiple(model, model.encoder.output_stride).eval(),
                               seg_eval.eval_loader(val, info, workers=min(workers, 2)), num_classes=NUM_CLASSES,
                               precision=Precision(device))
    return {**scores.as_dict(CLASS_NAMES), "train_s": train_s, "wall_s": time.perf_counter() - start}


def train_torchvision_ssdlite(root: str | Path, *, iters: int, batch_size: int, size: int, seed: int, workers: int,
                              device: torch.device) -> dict:
    """Train and score torchvision's SSDLite320 MobileNetV3-Large (at ``size`` if not 320); returns ``map07``,
    ``map``, ``ap07`` (per class, in ``VOC_CLASSES`` order), ``train_s``, ``wall_s``."""
    from torchvision.models.detection import ssdlite320_mobilenet_v3_large

    start = time.perf_counter()
    torch.manual_seed(seed)
    train = VOCDetection(root, "train", transforms=train_transforms(size, photometric=False, max_zoom_out=1.0,
                                                                    iou_crop=False),
                         keep_difficult=False, skip_empty=True)
    val = VOCDetection(root, "val", transforms=eval_transforms())
    model = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=NUM_CLASSES).to(device)
    if size != 320:  # its anchors are relative to the input: only the resize changes
        model.transform.min_size, model.transform.max_size, model.transform.fixed_size = (size,), size, (size, size)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=4e-5)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=iters)
    loader = _loader(train, batch_size=batch_size, seed=seed, workers=workers, collate_fn=collate)

    def loss_of(batch: tuple) -> torch.Tensor:
        images, targets = batch
        targets = [{"boxes": t["boxes"].as_subclass(torch.Tensor).to(device), "labels": t["labels"].to(device)}
                   for t in targets]
        return sum(model([image.to(device) for image in images], targets).values())

    _plain_loop("torchvision SSDLite", model, optimizer, scheduler, _batches(loader, iters), loss_of, iters, start)
    train_s = time.perf_counter() - start
    info = DistInfo(0, 1, 0, device)
    scores = det_eval.evaluate(model, det_eval.eval_loader(val, info, batch_size=max(batch_size, 8), workers=workers),
                               class_names=VOC_CLASSES, precision=Precision(device), coco=False)
    return {"map07": scores["map07"], "map": scores["map"], "ap07": scores["ap07"], "train_s": train_s,
            "wall_s": time.perf_counter() - start}
