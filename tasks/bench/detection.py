"""SSDLite end to end (image in, boxes out) against torchvision's ``ssdlite320_mobilenet_v3_large``.

Both detectors are torchvision ``SSD`` s, so one function runs either phase by phase, exactly as
``SSD.forward`` does in eval mode, and times the phases: ``pre`` (resize and normalize), ``network`` (backbone,
extra layers and predictors) and ``post`` (default boxes, decoding, score threshold, per-class top-k, NMS, mapping
boxes back to the input size).
"""
from __future__ import annotations

import functools
import time
from collections.abc import Callable

import torch
from torch import Tensor
from torchvision.models.detection import ssdlite320_mobilenet_v3_large
from torchvision.models.detection.ssd import SSD

from heads import create_detector
from heads.ssd_postprocess import postprocess_detections

from .measure import CLOCKS, Comparison, Group, Subject, synchronize
from .models import MNV2, NUM_CLASSES, SHUFFLENET, fast_paths

__all__ = ["detection_group", "postprocess_group", "ssd_phases"]


def ssd_phases(model: SSD, images: list[Tensor], clock: Callable[[], float] = time.perf_counter,
               ) -> tuple[list[dict[str, Tensor]], dict[str, float]]:
    """``model(images)`` in eval mode, and the seconds (on ``clock``) its ``pre``, ``network`` and ``post`` phases
    took."""
    device = images[0].device
    original_sizes = [tuple(img.shape[-2:]) for img in images]
    start = clock()
    image_list, _ = model.transform(images)
    synchronize(device)
    pre = clock()
    maps = list(model.backbone(image_list.tensors).values())
    head_outputs = model.head(maps)
    synchronize(device)
    network = clock()
    anchors = model.anchor_generator(image_list, maps)
    detections = model.postprocess_detections(head_outputs, anchors, image_list.image_sizes)
    detections = model.transform.postprocess(detections, image_list.image_sizes, original_sizes)
    synchronize(device)
    end = clock()
    return detections, {"pre": pre - start, "network": network - pre, "post": end - network}


def _end_to_end(model: SSD, images: list[Tensor], clock: Callable[[], float]) -> Callable[[], dict[str, float]]:
    def work() -> dict[str, float]:
        with torch.inference_mode():
            return ssd_phases(model, images, clock)[1]
    return work


def detection_group(image_size: tuple[int, int], device: torch.device, *, compile: bool,
                    clock: str = "wall") -> Group:
    """One ``(3, H, W)`` image through each detector at 320x320, 21 classes (VOC), random weights.

    Post-processing settings are each model's defaults (torchvision: score 0.001, top-k 300, NMS 0.55, 300 boxes;
    ours: 0.01, 400, 0.45, 200). With random weights every default box passes both score thresholds, so NMS sees
    the full top-k of every class: post-processing here is the worst case, not a trained model's. ``clock`` (a
    key of ``CLOCKS``) times the phases.
    """
    timer = CLOCKS[clock]
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(3, *image_size, generator=generator).to(device)]
    ref = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=NUM_CLASSES)
    ref = ref.to(device).eval()
    subjects = [Subject("torchvision", "torchvision ssdlite320_mobilenet_v3_large", _end_to_end(ref, images, timer),
                        ref, role="reference")]
    notes: list[str] = []
    make = functools.partial(_end_to_end, images=images, clock=timer)
    for key, name in (("mobilenetv2", MNV2), ("shufflenet", SHUFFLENET)):
        model = create_detector(name, NUM_CLASSES, size=320).to(device).eval()
        subjects.append(Subject(key, f"SSDLite {name}", _end_to_end(model, images, timer), model))
        subjects += fast_paths(key, f"SSDLite {name}", model, make,
                               compile=compile and key == "mobilenetv2", notes=notes)
    notes.append("Post-processing uses each model's default thresholds; with random weights every default box "
                 "passes them, the worst case for NMS.")
    return Group(f"SSDLite 320, one {image_size[1]}x{image_size[0]} image, end to end", "SSDLite e2e", subjects,
                 [Comparison(s.key, "torchvision") for s in subjects[1:]], notes)


def postprocess_group(device: torch.device) -> Group:
    """Post-processing alone, on the same inputs: ours (:mod:`heads.ssd_postprocess`, what our detectors run)
    against torchvision's ``SSD.postprocess_detections``.

    Both select from the head outputs and default boxes of torchvision's SSDLite at random weights on one 320x320
    image, with its thresholds (score 0.001, top-k 300, NMS 0.55, 300 boxes): equal work with the same detections,
    where the end-to-end rows post-process each model's own outputs, whose boxes overlap differently.
    """
    ref = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=NUM_CLASSES)
    ref = ref.to(device).eval()
    image = torch.rand(3, 320, 320, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.inference_mode():
        image_list, _ = ref.transform([image])
        maps = list(ref.backbone(image_list.tensors).values())
        outputs, anchors = ref.head(maps), ref.anchor_generator(image_list, maps)

    def select(function: Callable) -> Callable[[], object]:
        def work() -> object:
            with torch.inference_mode():
                return function(ref, outputs, anchors, image_list.image_sizes)
        return work

    subjects = [Subject("torchvision_post", "torchvision SSD.postprocess_detections",
                        select(SSD.postprocess_detections), role="reference"),
                Subject("ours_post", "heads.ssd_postprocess (all classes at once)", select(postprocess_detections))]
    return Group("SSD post-processing alone, on torchvision SSDLite's outputs for one 320x320 image", "SSD post",
                 subjects, [Comparison("ours_post", "torchvision_post")],
                 ["Random weights: every default box passes the 0.001 score threshold, the worst case for NMS. "
                  "Equal work by construction (the same inputs and detections); no MACs to count."],
                 count_work=False, same_work=True)
