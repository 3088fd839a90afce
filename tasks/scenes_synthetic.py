"""A second generated dataset, made unlike the built-in ones, in one VOC folder that both tasks read.

    python -m tasks.scenes_synthetic data/scenes --train 240 --val 60 --seed 0

The built-in generators (:mod:`tasks.seg_synthetic`, :mod:`tasks.det_synthetic`) paint a few flat, colour-coded
shapes on smooth backgrounds at 96–224 px. Here: cluttered textured backgrounds (stripes, checkerboards,
blotchy noise, stray line strokes), six other shapes (star, ellipse, hexagon, cross, crescent, arrow) with their
own stripe / checker / noise textures, object radii from 3% to 30% of the short side (some cut by the border,
some partly covered by others), 2–6 objects per image, non-square images of 200–400 px, and a class subset of
six real VOC names, so the trainers read it in real-data mode (``--data-root``, 21 classes) like VOC itself.

Written as VOC does it: ``JPEGImages/``, ``SegmentationClass/`` (palette PNG; a 255 ignore band along every
visible outline), ``Annotations/*.xml`` (boxes are the tight extent of each object's *visible* pixels;
``truncated`` when cut by the border, ``difficult`` when smaller than 10 px or mostly covered),
``ImageSets/Segmentation/{train,val,trainval}.txt`` and ``ImageSets/Main/{train,val,trainval}.txt``.
"""

from __future__ import annotations

import argparse
import colorsys
import json
import shutil
import sys
from pathlib import Path

if not __package__:  # run as a file (`python tasks/scenes_synthetic.py`): make the repository importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import cv2
import numpy as np

from tasks.det_synthetic import write_annotation
from tasks.engine.cli import positive, run
from tasks.seg_data import IGNORE_INDEX
from tasks.seg_synthetic import write_sample
from tasks.voc import VOC_CLASSES

__all__ = ["SCENE_CLASSES", "make_scenes_voc", "main"]

SCENE_CLASSES = {"star": "bird", "ellipse": "bottle", "hexagon": "car", "cross": "chair", "crescent": "dog",
                 "arrow": "person"}
"""Which VOC class each shape is annotated as (none of the built-in detection data's classes)."""
_HUES = dict(zip(SCENE_CLASSES, (0.08, 0.58, 0.0, 0.33, 0.75, 0.45)))  # a loose colour cue, jittered by +-0.08
_MARKER, _VERSION = "scenes.json", 1


def _polygon(shape: str) -> np.ndarray:
    """Vertices ``(N, 2)`` of a unit-radius polygonal shape."""
    if shape == "star":
        angles, radii = np.arange(10) * np.pi / 5, np.tile([1.0, 0.45], 5)
    elif shape == "hexagon":
        angles, radii = np.arange(6) * np.pi / 3, np.ones(6)
    else:
        pts = {"cross": [(-.3, -1), (.3, -1), (.3, -.3), (1, -.3), (1, .3), (.3, .3), (.3, 1), (-.3, 1), (-.3, .3),
                         (-1, .3), (-1, -.3), (-.3, -.3)],
               "arrow": [(-1, -.25), (.2, -.25), (.2, -.7), (1, 0), (.2, .7), (.2, .25), (-1, .25)]}[shape]
        return np.array(pts, np.float64)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)


def _shape_mask(shape: str, h: int, w: int, centre: tuple[float, float], r: float, angle: float) -> np.ndarray:
    """A filled bool ``(h, w)`` mask of ``shape`` of radius ``r`` rotated by ``angle`` (radians)."""
    mask = np.zeros((h, w), np.uint8)
    cx, cy = centre
    if shape == "ellipse":
        cv2.ellipse(mask, (round(cx), round(cy)), (round(r), max(2, round(0.45 * r))), np.degrees(angle), 0, 360, 1, -1)
    elif shape == "crescent":
        cv2.circle(mask, (round(cx), round(cy)), round(r), 1, -1)
        off = 0.45 * r
        cv2.circle(mask, (round(cx + off * np.cos(angle)), round(cy + off * np.sin(angle))), round(0.85 * r), 0, -1)
    else:
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        pts = _polygon(shape) @ rot.T * r + (cx, cy)
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return mask.astype(bool)


def _texture(rng: np.random.Generator, h: int, w: int, colours: np.ndarray, period: float) -> np.ndarray:
    """``(h, w, 3)`` float: stripes, a checkerboard or blotchy noise mixing two ``colours``, plus pixel noise."""
    kind = int(rng.integers(3))
    if kind < 2:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        a = rng.uniform(0, np.pi)
        u, v = (xx * np.cos(a) + yy * np.sin(a)) / period, (yy * np.cos(a) - xx * np.sin(a)) / period
        mix = (np.floor(u) % 2) if kind == 0 else ((np.floor(u) + np.floor(v)) % 2)
    else:
        coarse = rng.random((max(2, round(h / period)), max(2, round(w / period))), dtype=np.float32)
        mix = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    mix = mix[..., None]
    return colours[0] * (1 - mix) + colours[1] * mix + rng.normal(0, 8, (h, w, 1))


def _colours(rng: np.random.Generator, hue: float | None) -> np.ndarray:
    """Two RGB colours (0–255): of the class hue family, or (``hue`` None) dull random ones for backgrounds."""
    out = []
    for _ in range(2):
        if hue is None:
            hsv = (rng.random(), rng.uniform(0, 0.45), rng.uniform(0.25, 0.9))
        else:
            hsv = ((hue + rng.uniform(-0.08, 0.08)) % 1, rng.uniform(0.45, 1), rng.uniform(0.35, 1))
        out.append(colorsys.hsv_to_rgb(*hsv))
    return 255 * np.array(out, np.float32)


def _fits(mask: np.ndarray, inst: np.ndarray, areas: list[int]) -> bool:
    """Whether ``mask`` covers at most 30% of itself and of each earlier object (visible parts)."""
    hits = np.bincount(inst[mask], minlength=len(areas) + 1)[1:]
    return all(n <= 0.3 * min(mask.sum(), a) for n, a in zip(hits, areas) if n)


def _outline(visible: np.ndarray, radius: int, cores: np.ndarray) -> np.ndarray:
    """The ignore band ``radius`` px either side of the outline of ``visible``; its interior (or, for an object
    thinner than the band, the object itself) is added to ``cores``."""
    vis8 = visible.astype(np.uint8)
    inner = np.zeros_like(visible)
    for r in range(radius, 0, -1):
        inner = cv2.erode(vis8, np.ones((2 * r + 1,) * 2, np.uint8)).astype(bool)
        if inner.any():
            break
    cores |= inner if inner.any() else visible
    return cv2.dilate(vis8, np.ones((2 * radius + 1,) * 2, np.uint8)).astype(bool) & ~cores


def render_scene(rng: np.random.Generator, size_range: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, list]:
    """One image ``(H, W, 3)`` uint8, its label ``(H, W)`` uint8 (VOC indices, 255 bands) and its objects."""
    h, w = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
    image = _texture(rng, h, w, _colours(rng, None), period=rng.uniform(6, 30))
    for _ in range(int(rng.integers(3, 11))):  # clutter: strokes of background
        p0, p1 = (tuple(int(c) for c in rng.integers(0, (w, h))) for _ in range(2))
        cv2.line(image, p0, p1, tuple(float(c) for c in _colours(rng, None)[0]), int(rng.integers(1, 4)))
    inst, placed = np.zeros((h, w), np.int64), []  # instance map: 0 background, i object i
    for _ in range(int(rng.integers(2, 7))):
        shape = str(rng.choice(list(SCENE_CLASSES)))
        areas = [int((inst == i + 1).sum()) for i in range(len(placed))]
        for _attempt in range(10):
            r = float(np.exp(rng.uniform(np.log(0.03), np.log(0.3))) * min(h, w))
            r = max(r, 5.0)
            centre = (rng.uniform(-0.3 * r, w + 0.3 * r), rng.uniform(-0.3 * r, h + 0.3 * r))
            mask = _shape_mask(shape, h, w, centre, r, rng.uniform(0, 2 * np.pi))
            if mask.sum() >= 20 and _fits(mask, inst, areas):
                break
        else:
            continue
        texture = _texture(rng, h, w, _colours(rng, _HUES[shape]), period=rng.uniform(2, 8))
        image[mask] = texture[mask]
        inst[mask] = len(placed) + 1
        cut = min(centre) - r < 0 or centre[0] + r > w or centre[1] + r > h
        placed.append((shape, int(mask.sum()), cut))
    label, band, objects = np.zeros((h, w), np.uint8), np.zeros((h, w), bool), []
    cores = np.zeros((h, w), bool)  # pixels no outline may cover: every object keeps some of its class
    for i, (shape, area, cut) in enumerate(placed, start=1):
        visible = inst == i
        ys, xs = np.nonzero(visible)
        if len(xs) < 12:  # hidden almost entirely: unlabelled in both tasks
            band |= visible
            continue
        label[visible] = VOC_CLASSES.index(SCENE_CLASSES[shape]) + 1
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        small = min(box[2] - box[0], box[3] - box[1]) < 10
        band |= _outline(visible, 1 if small else 2, cores)
        objects.append({"name": SCENE_CLASSES[shape], "box": box, "truncated": cut,
                        "difficult": small or len(xs) < 0.5 * area})
    label[band & ~cores] = IGNORE_INDEX
    return np.clip(image, 0, 255).astype(np.uint8), label, objects


def make_scenes_voc(root: str | Path, *, num_train: int = 240, num_val: int = 60, seed: int = 0,
                    size_range: tuple[int, int] = (200, 400)) -> Path:
    """Write the VOC folder ``root`` (or reuse it when made with the same parameters) and return its path.

    Image ``i`` of a split depends on ``(seed, split, i)`` only. Written to ``root.tmp`` and renamed, so an
    interrupted write never leaves a half dataset that looks complete.
    """
    if num_train < 1 or num_val < 1:
        raise ValueError(f"num_train and num_val must be positive, got {num_train}, {num_val}")
    if not 32 <= size_range[0] <= size_range[1]:
        raise ValueError(f"size_range must satisfy 32 <= low <= high, got {size_range}")
    root = Path(root)
    params = {"num_train": num_train, "num_val": num_val, "seed": seed, "size_range": list(size_range),
              "version": _VERSION}
    if (root / _MARKER).is_file() and json.loads((root / _MARKER).read_text()) == params:
        return root
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("JPEGImages", "SegmentationClass", "Annotations", "ImageSets/Segmentation", "ImageSets/Main"):
        (tmp / sub).mkdir(parents=True)
    ids = {"train": [f"scene_train_{i:05d}" for i in range(num_train)],
           "val": [f"scene_val_{i:05d}" for i in range(num_val)]}
    for split_index, names in enumerate(ids.values()):
        for i, image_id in enumerate(names):
            image, label, objects = render_scene(np.random.default_rng([seed, split_index, i]), size_range)
            write_sample(tmp, image_id, image, label)
            write_annotation(tmp / "Annotations" / f"{image_id}.xml", f"{image_id}.jpg", (image.shape[1],
                             image.shape[0]), objects, folder="scenes")
    for split, names in {**ids, "trainval": ids["train"] + ids["val"]}.items():
        for lists in ("Segmentation", "Main"):
            (tmp / "ImageSets" / lists / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    (tmp / _MARKER).write_text(json.dumps(params))
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(prog="python -m tasks.scenes_synthetic", description=__doc__.splitlines()[0])
    p.add_argument("out", help="folder to write (reused when it holds a dataset of the same parameters)")
    p.add_argument("--train", type=positive(int), default=240, help="training images (default: 240)")
    p.add_argument("--val", type=positive(int), default=60, help="validation images (default: 60)")
    p.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    p.add_argument("--size-range", type=positive(int), nargs=2, default=(200, 400), metavar=("LOW", "HIGH"),
                   help="range of image sides, drawn independently (default: 200 400)")
    args = p.parse_args(argv)
    root = make_scenes_voc(args.out, num_train=args.train, num_val=args.val, seed=args.seed,
                           size_range=tuple(args.size_range))
    print(f"wrote {root} ({args.train} train + {args.val} val images; classes {', '.join(SCENE_CLASSES.values())})")
    return root


if __name__ == "__main__":
    run(main, "python -m tasks.scenes_synthetic")
