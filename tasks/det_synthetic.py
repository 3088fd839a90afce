"""A small synthetic detection dataset written in the real VOC layout, so the default run needs no download.

``make_synthetic_voc(root)`` paints saturated filled shapes on noisy grey gradient backgrounds and writes
``root/{JPEGImages/*.jpg, Annotations/*.xml, ImageSets/Main/{train,val,trainval}.txt}`` exactly as VOC does
(1-based inclusive ``<bndbox>``, ``<difficult>``, ``<truncated>``). Shape and hue decide the class, a few tiny
objects are marked ``difficult`` and some validation images have no objects, so training and evaluation take the
same code path as on PASCAL VOC, difficult handling included.
"""

from __future__ import annotations

import colorsys
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPE_CLASSES = {"rectangle": "tvmonitor", "ellipse": "sheep", "triangle": "boat", "cross": "aeroplane"}
"""Which VOC class each painted shape is annotated as."""
_SHAPE_HUES = {"rectangle": 0.0, "ellipse": 0.25, "triangle": 0.5, "cross": 0.75}
"""Each shape's base hue (jittered by +-0.06): shape and colour both tell the class, so a CPU-sized run learns."""

_MARKER = "synthetic.json"


def write_annotation(
    path: Path, filename: str, size: tuple[int, int], objects: list[dict], *, folder: str = "VOC2007"
) -> None:
    """Write a VOC XML file; ``objects`` hold ``name``, ``box`` (pixel-edge xyxy ints), ``difficult``, ``truncated``.

    Pixel-edge ``(x0, y0, x1, y1)`` becomes the devkit's 1-based inclusive ``(x0 + 1, y0 + 1, x1, y1)``.
    """
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = folder
    ET.SubElement(root, "filename").text = filename
    size_el = ET.SubElement(root, "size")
    for tag, value in zip(("width", "height", "depth"), (*size, 3)):
        ET.SubElement(size_el, tag).text = str(value)
    for obj in objects:
        obj_el = ET.SubElement(root, "object")
        ET.SubElement(obj_el, "name").text = obj["name"]
        ET.SubElement(obj_el, "pose").text = "Unspecified"
        ET.SubElement(obj_el, "truncated").text = str(int(obj.get("truncated", False)))
        ET.SubElement(obj_el, "difficult").text = str(int(obj.get("difficult", False)))
        box_el = ET.SubElement(obj_el, "bndbox")
        x0, y0, x1, y1 = (int(v) for v in obj["box"])
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), (x0 + 1, y0 + 1, x1, y1)):
            ET.SubElement(box_el, tag).text = str(value)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8")


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A greyish linear gradient plus Gaussian noise, ``(height, width, 3)`` uint8 (objects are saturated)."""
    start, end = rng.uniform(70, 190, size=(2, 1)) + rng.uniform(-15, 15, size=(2, 3))
    ramp = np.linspace(0.0, 1.0, width if rng.random() < 0.5 else height)
    grad = start + (end - start) * ramp[:, None]
    grad = grad[None, :, :] if len(ramp) == width else grad[:, None, :]
    pixels = np.broadcast_to(grad, (height, width, 3)) + rng.normal(0, 12, size=(height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _paint(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], color: tuple) -> None:
    """Paint ``shape`` so that its pixels span exactly the pixel-edge ``box``."""
    x0, y0, x1, y1 = box[0], box[1], box[2] - 1, box[3] - 1  # PIL coordinates are inclusive
    if shape == "rectangle":
        draw.rectangle((x0, y0, x1, y1), fill=color, outline=tuple(255 - c for c in color), width=2)
    elif shape == "ellipse":
        draw.ellipse((x0, y0, x1, y1), fill=color)
    elif shape == "triangle":
        draw.polygon(((x0, y1), (x1, y1), ((x0 + x1) // 2, y0)), fill=color)
    else:  # cross: a horizontal and a vertical bar spanning the box
        bar_w, bar_h = max((x1 - x0) // 3, 1), max((y1 - y0) // 3, 1)
        draw.rectangle((x0, (y0 + y1) // 2 - bar_h // 2, x1, (y0 + y1) // 2 + bar_h // 2), fill=color)
        draw.rectangle(((x0 + x1) // 2 - bar_w // 2, y0, (x0 + x1) // 2 + bar_w // 2, y1), fill=color)


def _color(rng: np.random.Generator, hue: float) -> tuple[int, int, int]:
    hsv = ((hue + rng.uniform(-0.06, 0.06)) % 1.0, rng.uniform(0.6, 1.0), rng.uniform(0.55, 1.0))
    return tuple(int(255 * c) for c in colorsys.hsv_to_rgb(*hsv))


def _sample_box(rng: np.random.Generator, width: int, height: int, *, tiny: bool) -> tuple[int, ...]:
    side = min(width, height)
    lo, hi = (6, 12) if tiny else (int(0.15 * side), int(0.5 * side))
    w, h = (int(v) for v in rng.integers(lo, hi + 1, size=2))
    x0, y0 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    return x0, y0, x0 + w, y0 + h


def _overlaps(box: tuple[int, ...], boxes: list[tuple[int, ...]], limit: float = 0.2) -> bool:
    for other in boxes:
        iw = min(box[2], other[2]) - max(box[0], other[0])
        ih = min(box[3], other[3]) - max(box[1], other[1])
        if iw > 0 and ih > 0 and iw * ih > limit * min(_area(box), _area(other)):
            return True
    return False


def _area(box: tuple[int, ...]) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def render_image(rng: np.random.Generator, *, empty: bool = False) -> tuple[Image.Image, list[dict]]:
    """One synthetic image and its objects (``name``, pixel-edge ``box``, ``difficult``)."""
    width, height = int(rng.integers(160, 225)), int(rng.integers(120, 193))
    image = _background(rng, width, height)
    draw, objects, boxes = ImageDraw.Draw(image), [], []
    num = 0 if empty else int(rng.integers(2, 7))
    tiny_flags = [False] * num + ([True] if not empty and rng.random() < 0.3 else [])
    for tiny in tiny_flags:
        box = _sample_box(rng, width, height, tiny=tiny)
        if _overlaps(box, boxes):
            continue
        shape = str(rng.choice(list(SHAPE_CLASSES)))
        _paint(draw, shape, box, _color(rng, _SHAPE_HUES[shape]))
        boxes.append(box)
        objects.append({"name": SHAPE_CLASSES[shape], "box": box, "difficult": tiny})
    return image, objects


def make_synthetic_voc(root: str | Path, *, num_train: int = 320, num_val: int = 80, seed: int = 0) -> Path:
    """Write (or reuse, when the same parameters were used before) a synthetic VOC directory at ``root``.

    Splits: ``train`` (``num_train`` images), ``val`` (``num_val``, every tenth one without objects), ``trainval``.
    """
    root, params = Path(root), {"num_train": num_train, "num_val": num_val, "seed": seed, "version": 4}
    marker = root / _MARKER
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return root
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (tmp / sub).mkdir(parents=True)
    rng = np.random.default_rng(seed)
    ids = {"train": [f"train_{i:05d}" for i in range(num_train)], "val": [f"val_{i:05d}" for i in range(num_val)]}
    for split, names in ids.items():
        for i, image_id in enumerate(names):
            image, objects = render_image(rng, empty=split == "val" and i % 10 == 9)
            image.save(tmp / "JPEGImages" / f"{image_id}.jpg", quality=95)
            write_annotation(tmp / "Annotations" / f"{image_id}.xml", f"{image_id}.jpg", image.size, objects)
    for split, names in {**ids, "trainval": ids["train"] + ids["val"]}.items():
        (tmp / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    (tmp / _MARKER).write_text(json.dumps(params))
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root
