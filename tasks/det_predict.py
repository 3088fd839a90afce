"""Run a trained detector on images: one JSON with every detection, and a picture per image with boxes drawn.

    python -m tasks.det_predict runs/det_voc/best.pt photo.jpg more_photos/ --out predictions/

Boxes are ``[x0, y0, x1, y1]`` in 0-based pixel-edge coordinates of the input image (a box covering the whole
image is ``[0, 0, W, H]``; see :mod:`tasks.det_data`); ``score`` is the softmax class probability. Output names stay
unique (see :mod:`tasks.engine.files`), and no existing file is replaced.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if not __package__:  # run as a file (`python tasks/det_predict.py`): make the repository importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from PIL import Image

from tasks.det_data import read_image
from tasks.det_eval import predict
from tasks.det_model import load_model
from tasks.det_visualize import draw_detections
from tasks.engine import Precision, list_images, progress
from tasks.engine.cli import add_predict_arguments, run
from tasks.engine.files import output_stems, refuse_existing
from tasks.engine.inference import start_inference

__all__ = ["main"]


def main(argv: list[str] | None = None) -> dict[str, list[dict]]:
    p = argparse.ArgumentParser(prog="python -m tasks.det_predict", description=__doc__.splitlines()[0])
    add_predict_arguments(p)
    p.add_argument("--score-thresh", type=float, default=0.3, help="keep detections scoring at least this")
    args = p.parse_args(argv)
    if not 0 <= args.score_thresh <= 1:
        raise ValueError(f"--score-thresh must be in [0, 1], got {args.score_thresh}")
    images = list_images(args.inputs)
    json_path = Path(args.out) / "predictions.json"
    drawings = [s.with_name(s.name + ".png") for s in output_stems(images, args.out)] if args.visualize else []
    refuse_existing([json_path, *drawings])
    info, model, ckpt = start_inference(args, task="det", load_model=load_model)
    names, precision = ckpt["class_names"], Precision(info.device, amp=args.amp)
    results: dict[str, list[dict]] = {}
    for i, path in enumerate(progress(images, enabled=args.progress, desc="predict")):
        image = read_image(path)
        det = predict(model, [image.float() / 255], precision=precision)[0]
        keep = det["scores"] >= args.score_thresh
        det = {k: v[keep] for k, v in det.items()}
        results[str(path)] = [
            {"box": [round(v, 2) for v in box], "score": round(score, 4), "label": label, "class": names[label - 1]}
            for box, score, label in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist())
        ]
        if drawings:
            drawings[i].parent.mkdir(parents=True, exist_ok=True)
            drawn = draw_detections(image, det, names, min_score=args.score_thresh)
            Image.fromarray(drawn.permute(1, 2, 0).numpy()).save(drawings[i])
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1))
    print(f"{sum(map(len, results.values()))} detections in {len(results)} images -> {args.out}")
    return results


if __name__ == "__main__":
    run(main, "python -m tasks.det_predict")
