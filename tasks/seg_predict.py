"""Write VOC-palette PNG masks for a folder (or list) of images with a trained segmenter.

    python -m tasks.seg_predict --checkpoint runs/seg_voc/best.pt --input photos/ --output masks/

Each ``<name>.<ext>`` gives ``<name>.png``: a palette PNG of class indices at the image's own resolution (the
format of VOC's SegmentationClass, so it reads back as labels); ``--overlay`` also writes ``<name>_overlay.jpg``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from .engine import Precision, list_images, progress, set_cpu_threads, setup_distributed
from .engine.cli import run
from .seg_eval import predict
from .seg_model import inference_transform, load_model
from .seg_voc import read_image, voc_palette

__all__ = ["write_mask", "main"]

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
    p = argparse.ArgumentParser(prog="python -m tasks.seg_predict", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="best.pt or last.pt written by tasks.seg_train")
    p.add_argument("--input", required=True, nargs="+", help="image files and/or folders of images")
    p.add_argument("--output", required=True, help="folder for the PNG masks (created)")
    p.add_argument("--overlay", action="store_true", help="also write <name>_overlay.jpg (image blended with mask)")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument("--amp", action="store_true", help="float16 autocast (CUDA only)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default on CPU: all cores)")
    args = p.parse_args(argv)
    dist = setup_distributed(args.device)
    set_cpu_threads(dist, threads=args.threads)
    device = dist.device
    model, ckpt = load_model(args.checkpoint, device=device)
    transform = inference_transform(ckpt["preprocessing"])
    precision = Precision(device, amp=args.amp)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in progress(list_images(args.input), enabled=True, desc="predict"):
        image = read_image(path)
        sample = transform(image=image, mask=np.zeros(image.shape[:2], np.uint8))
        labels = predict(model, sample["image"][None], precision=precision)[0].cpu().numpy()
        written.append(write_mask(labels, out / f"{path.stem}.png"))
        if args.overlay:
            _overlay(image, labels, out / f"{path.stem}_overlay.jpg")
    print(f"wrote {len(written)} masks to {out}")
    return written


if __name__ == "__main__":
    run(main, "python -m tasks.seg_predict")
