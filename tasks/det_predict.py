"""Run a trained detector on images: one JSON with every detection, and a PNG per image with boxes drawn.

    python -m tasks.det_predict runs/det/best.pt photo.jpg more_photos/ --out predictions/

Boxes are ``[x0, y0, x1, y1]`` in 0-based pixel-edge coordinates of the input image (a box covering the
whole image is ``[0, 0, W, H]``; see :mod:`tasks.det_data`); ``score`` is the softmax class probability.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn
from PIL import Image

from tasks.det_data import read_image
from tasks.det_eval import load_detector
from tasks.det_visualize import draw_detections
from tasks.engine import list_images
from tasks.engine.cli import run

@torch.no_grad()
def predict(model: nn.Module, image: torch.Tensor, *, min_score: float) -> dict[str, torch.Tensor]:
    """Detections for one uint8 ``(3, H, W)`` image scoring at least ``min_score``, boxes in its pixels."""
    device = next(model.parameters()).device
    out = model([image.to(device).float() / 255])[0]
    keep = out["scores"] >= min_score
    return {k: v[keep].cpu() for k, v in out.items()}


def main(argv: list[str] | None = None) -> dict[str, list[dict]]:
    p = argparse.ArgumentParser(prog="python -m tasks.det_predict", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", type=Path, help="best.pt / last.pt written by tasks.det_train")
    p.add_argument("images", nargs="+", help="image files and/or directories of images")
    p.add_argument("--out", type=Path, default=Path("predictions"), help="directory for the JSON and PNGs")
    p.add_argument("--score-thresh", type=float, default=0.3, help="keep detections scoring at least this")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-png", action="store_true", help="write only predictions.json")
    args = p.parse_args(argv)
    if not 0 <= args.score_thresh <= 1:
        p.error(f"--score-thresh must be in [0, 1], got {args.score_thresh}")
    model, config = load_detector(args.checkpoint, device=args.device)
    names = config["class_names"]
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {}
    for path in list_images(args.images):
        image = read_image(path)
        det = predict(model, image, min_score=args.score_thresh)
        results[str(path)] = [
            {"box": [round(v, 2) for v in box], "score": round(score, 4), "label": label, "class": names[label - 1]}
            for box, score, label in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist())
        ]
        if not args.no_png:
            drawn = draw_detections(image, det, names, min_score=args.score_thresh)
            Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(args.out / f"{path.stem}.png")
    (args.out / "predictions.json").write_text(json.dumps(results, indent=1))
    print(f"{sum(map(len, results.values()))} detections in {len(results)} images -> {args.out}")
    return results


if __name__ == "__main__":
    run(main, "python -m tasks.det_predict")
