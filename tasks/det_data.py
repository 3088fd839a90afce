"""PASCAL VOC detection data: XML annotations, box validation and the dataset.

Coordinates. VOC ``<bndbox>`` values are 1-based, inclusive pixel indices: a box covering a whole W x H image is
``xmin=1, ymin=1, xmax=W, ymax=H``. We convert once, while parsing, to 0-based continuous pixel-edge coordinates
``(x0, y0, x1, y1) = (xmin - 1, ymin - 1, xmax, ymax)``: widths stay ``xmax - xmin + 1`` as in the devkit, boxes
live in ``[0, W] x [0, H]`` like torchvision's, and IoU without the devkit's ``+ 1`` equals the devkit's IoU.
:func:`tasks.det_synthetic.write_annotation` applies the inverse.

Validation happens once, when the dataset is built, so a bad file fails at start-up naming the file and the
object, never as a NaN loss hours later: unknown class names, non-numeric, inverted (``xmin > xmax``) or
completely out-of-image boxes and ``<difficult>`` values other than 0/1 raise :class:`AnnotationError`; boxes that
only stick out of the image are clipped to it (the fix is unambiguous) and counted in
:attr:`VOCDetection.num_clipped`. :meth:`VOCDetection.verify` checks every image header before training.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torchvision import tv_tensors

from tasks.engine import progress
from tasks.voc import VOC_CLASSES, check_image, image_size
from tasks.voc import read_image as read_image_array
from tasks.voc import read_split as read_split_file

_log = logging.getLogger(__name__)


class AnnotationError(ValueError):
    """An annotation file that cannot be used; the message names the file and the object."""


@dataclass(frozen=True)
class VOCRecord:
    """One parsed annotation: boxes ``(M, 4)`` float32 pixel-edge xyxy, labels ``(M,)`` in 1..K, difficult ``(M,)``."""

    image_path: Path
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray

    @property
    def image_id(self) -> str:
        return self.image_path.stem


def _number(obj: ET.Element, tag: str, where: str) -> float:
    text = obj.findtext(tag)
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise AnnotationError(f"{where}: <{tag}> is {text!r}, expected a number") from None
    if not np.isfinite(value):
        raise AnnotationError(f"{where}: <{tag}> is {text!r}, expected a finite number")
    return value


def _flag(obj: ET.Element, tag: str, where: str) -> bool:
    """A VOC 0/1 flag such as ``<difficult>`` (absent means 0); anything else is an error, not a silent 0."""
    text = (obj.findtext(tag) or "0").strip()
    if text not in ("0", "1"):
        raise AnnotationError(f"{where}: <{tag}> is {text!r}, expected 0 or 1")
    return text == "1"


def _image_size(root: ET.Element, xml_path: Path, image_path: Path) -> tuple[int, int]:
    """(width, height) from ``<size>``, or from the image header when ``<size>`` is missing or zero."""
    try:
        width, height = int(root.findtext("size/width", "0")), int(root.findtext("size/height", "0"))
    except ValueError:
        raise AnnotationError(f"{xml_path}: <size> must hold integer <width> and <height>") from None
    if width > 0 and height > 0:
        return width, height
    if not image_path.is_file():
        raise AnnotationError(f"{xml_path}: no usable <size> and no image at {image_path}")
    return image_size(image_path)


def _parse_box(obj: ET.Element, where: str, width: int, height: int) -> tuple[list[float], bool]:
    """Validated 1-based box -> (pixel-edge xyxy, whether it was clipped to the image)."""
    if obj.find("bndbox") is None:
        raise AnnotationError(f"{where}: missing <bndbox>")
    xmin, ymin, xmax, ymax = (_number(obj, f"bndbox/{t}", where) for t in ("xmin", "ymin", "xmax", "ymax"))
    if xmin > xmax or ymin > ymax:
        raise AnnotationError(f"{where}: inverted box xmin={xmin:g} xmax={xmax:g} ymin={ymin:g} ymax={ymax:g}")
    if xmin > width or ymin > height or xmax < 1 or ymax < 1:
        raise AnnotationError(
            f"{where}: box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) lies outside the {width}x{height} image "
            f"(valid 1-based range is x in [1, {width}], y in [1, {height}])"
        )
    clipped = [max(xmin, 1.0), max(ymin, 1.0), min(xmax, float(width)), min(ymax, float(height))]
    return [clipped[0] - 1, clipped[1] - 1, clipped[2], clipped[3]], clipped != [xmin, ymin, xmax, ymax]


def parse_annotation(
    xml_path: str | Path, image_dir: str | Path, *, class_names: Sequence[str] = VOC_CLASSES
) -> tuple[VOCRecord, int]:
    """Parse and validate one VOC XML file.

    Returns:
        The record and the number of boxes clipped to the image.

    Raises:
        AnnotationError: unreadable XML, unknown class, non-numeric / inverted / out-of-image box.
    """
    xml_path = Path(xml_path)
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as err:
        raise AnnotationError(f"{xml_path}: cannot read annotation ({err})") from None
    image_path = Path(image_dir) / (root.findtext("filename") or f"{xml_path.stem}.jpg")
    width, height = _image_size(root, xml_path, image_path)
    boxes, labels, difficult, num_clipped = [], [], [], 0
    for i, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        where = f"{xml_path}: object {i} ({name or 'no name'})"
        if name not in class_names:
            raise AnnotationError(f"{where}: unknown class {name!r}; valid classes are {', '.join(class_names)}")
        box, clipped = _parse_box(obj, where, width, height)
        boxes.append(box)
        labels.append(class_names.index(name) + 1)
        difficult.append(_flag(obj, "difficult", where))
        num_clipped += clipped
    record = VOCRecord(
        image_path=image_path,
        width=width,
        height=height,
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.asarray(labels, dtype=np.int64),
        difficult=np.asarray(difficult, dtype=bool),
    )
    return record, num_clipped


def read_image(path: str | Path) -> torch.Tensor:
    """An image file as uint8 RGB ``(3, H, W)``; unreadable files raise naming the file."""
    return torch.from_numpy(read_image_array(path)).permute(2, 0, 1).contiguous()


def read_split(root: str | Path, split: str) -> list[str]:
    """Image ids listed in ``<root>/ImageSets/Main/<split>.txt``."""
    return read_split_file(Path(root) / "ImageSets" / "Main" / f"{split}.txt")


class VOCDetection(torch.utils.data.Dataset):
    """VOC detection images of one split over one or more roots (e.g. VOC2007 + VOC2012 ``trainval``).

    Items are ``(image, target)``: ``image`` a ``tv_tensors.Image`` uint8 ``(3, H, W)``; ``target`` a dict with
    ``boxes`` (``tv_tensors.BoundingBoxes``, XYXY pixel edges, ``(M, 4)``), ``labels`` int64 ``(M,)`` in 1..K,
    ``difficult`` bool ``(M,)`` and ``index`` (position in the dataset). ``transforms(image, target)`` runs last.

    Args:
        roots: VOC directories, each holding ``Annotations/``, ``JPEGImages/`` and ``ImageSets/Main/``.
        split: name of the ``ImageSets/Main/<split>.txt`` list read from every root.
        transforms: joint image/target transform (see :mod:`tasks.det_transforms`).
        keep_difficult: keep ``difficult`` objects (True for evaluation; training drops them by default).
        skip_empty: drop images left without objects (training; evaluation keeps them: they can hold FPs).
    """

    def __init__(
        self,
        roots: str | Path | Sequence[str | Path],
        split: str,
        *,
        transforms: Callable | None = None,
        keep_difficult: bool = True,
        skip_empty: bool = False,
        class_names: Sequence[str] = VOC_CLASSES,
    ) -> None:
        roots = [Path(roots)] if isinstance(roots, (str, Path)) else [Path(r) for r in roots]
        if not roots:
            raise ValueError("VOCDetection needs at least one root directory")
        self.class_names, self.transforms, self.num_clipped = tuple(class_names), transforms, 0
        self.records: list[VOCRecord] = []
        for root in roots:
            self.records += self._load_root(root, split)
        if not keep_difficult:
            self.records = [_drop_difficult(r) for r in self.records]
        if skip_empty:
            kept = [r for r in self.records if len(r.labels)]
            if len(kept) < len(self.records):
                _log.info("%s/%s: skipped %d images without objects", roots, split, len(self.records) - len(kept))
            self.records = kept
        if not self.records:
            raise ValueError(f"no images in split {split!r} of {[str(r) for r in roots]}")
        if self.num_clipped:
            _log.warning("%s/%s: clipped %d boxes to their image", [str(r) for r in roots], split, self.num_clipped)

    def _load_root(self, root: Path, split: str) -> list[VOCRecord]:
        if not (root / "Annotations").is_dir() or not (root / "JPEGImages").is_dir():
            raise ValueError(
                f"{root} is not a VOC directory: expected Annotations/, JPEGImages/ and ImageSets/Main/ "
                "inside it (e.g. VOCdevkit/VOC2007)"
            )
        records = []
        for image_id in read_split(root, split):
            record, clipped = parse_annotation(
                root / "Annotations" / f"{image_id}.xml", root / "JPEGImages", class_names=self.class_names
            )
            records.append(record)
            self.num_clipped += clipped
        return records

    def verify(self, *, show_progress: bool = False) -> None:
        """Check every image before training: the file exists, its header decodes, and its size is the annotated
        one (PIL reads headers only, so this is fast; pixels are decoded when an image is loaded)."""
        for record in progress(self.records, enabled=show_progress, desc="checking images"):
            check_image(record.image_path, size=(record.width, record.height))

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[tv_tensors.Image, dict]:
        """``key`` is an index or an ``(index, seed)`` pair from :class:`tasks.engine.SeededShardSampler`; the
        seed fixes the random transforms, so a sample's augmentation does not depend on workers or resumption."""
        index, seed = key if isinstance(key, tuple) else (key, None)
        record = self.records[index]
        image = read_image(record.image_path)
        if tuple(image.shape[-2:]) != (record.height, record.width):
            raise AnnotationError(
                f"{record.image_path}: image is {image.shape[-1]}x{image.shape[-2]} but its annotation says "
                f"{record.width}x{record.height}"
            )
        target = {
            "boxes": tv_tensors.BoundingBoxes(
                torch.tensor(record.boxes), format="XYXY", canvas_size=(record.height, record.width)
            ),
            "labels": torch.tensor(record.labels),
            "difficult": torch.tensor(record.difficult),
            "index": index,
        }
        image = tv_tensors.Image(image)
        if self.transforms is None:
            return image, target
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            return self.transforms(image, target)


def _drop_difficult(record: VOCRecord) -> VOCRecord:
    keep = ~record.difficult
    return replace(record, boxes=record.boxes[keep], labels=record.labels[keep], difficult=record.difficult[keep])


def collate(batch: Sequence[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Keep images and targets as lists: torchvision detectors take images of different sizes."""
    images, targets = zip(*batch)
    return list(images), list(targets)
