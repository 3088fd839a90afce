"""Write VOC-palette PNG masks for images (files and/or folders) with a trained segmenter.

    python -m tasks.seg_predict runs/seg_voc/best.pt photos/ more/img.jpg --out masks/

Each image ``<name>.<ext>`` gives ``<name>.png``, a palette PNG of class indices at the image's own resolution (the
format of VOC's SegmentationClass, so it reads back as labels), and with ``--visualize`` (the default)
``<name>_overlay.jpg``. Output names stay unique (see :mod:`tasks.engine.files`), and no existing file is replaced.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if not __package__:  # run as a file (`python tasks/seg_predict.py`): make the repository importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np
from PIL import Image

from tasks.engine import Precision, list_images, progress
from tasks.engine.cli import add_predict_arguments, run
from tasks.engine.files import output_stems, refuse_existing
from tasks.engine.inference import start_inference
from tasks.seg_data import voc_palette
from tasks.seg_eval import predict
from tasks.seg_model import inference_transform, load_model
from tasks.voc import read_image

__all__ = ["main", "write_mask"]


def write_mask(labels: np.ndarray, path: str | Path) -> Path:
    """Save ``(H, W)`` class indices as a VOC palette PNG."""
    mask = Image.fromarray(labels.astype(np.uint8), mode="P")
    mask.putpalette(voc_palette().tobytes())
    mask.save(path)
    return Path(path)


def _overlay(image: np.ndarray, labels: np.ndarray, path: Path, *, alpha: float = 0.5) -> None:
    coloured = voc_palette()[labels]
    blend = np.where(labels[..., None] > 0, (1 - alpha) * image + alpha * coloured, image)
    Image.fromarray(blend.astype(np.uint8)).save(path, quality=90)


def main(argv: list[str] | None = None) -> list[Path]:
    p = argparse.ArgumentParser(prog="python -m tasks.seg_predict", description=__doc__.splitlines()[0])
    add_predict_arguments(p)
    args = p.parse_args(argv)
    images = list_images(args.inputs)
    stems = output_stems(images, args.out)
    masks = [s.with_name(s.name + ".png") for s in stems]
    overlays = [s.with_name(s.name + "_overlay.jpg") for s in stems] if args.visualize else []
    refuse_existing([*masks, *overlays])
    info, model, ckpt = start_inference(args, task="seg", load_model=load_model)
    transform = inference_transform(ckpt["preprocessing"])
    precision = Precision(info.device, amp=args.amp)
    for i, path in enumerate(progress(images, enabled=args.progress, desc="predict")):
        image = read_image(path)
        sample = transform(image=image, mask=np.zeros(image.shape[:2], np.uint8))
        labels = predict(model, sample["image"][None], precision=precision)[0].cpu().numpy()
        masks[i].parent.mkdir(parents=True, exist_ok=True)
        write_mask(labels, masks[i])
        if overlays:
            _overlay(image, labels, overlays[i])
    print(f"wrote {len(masks)} masks{' and overlays' if overlays else ''} to {args.out}")
    return masks


if __name__ == "__main__":
    run(main, "python -m tasks.seg_predict")
