"""Export a trained segmenter or detector, or a bare backbone, as ONNX or TorchScript, checked as it is written.

    python -m tasks.export runs/seg_synthetic/best.pt --format onnx --out seg.onnx
    python -m tasks.export runs/det_synthetic/best.pt --format onnx --detector-output raw --int8 --out det_raw_int8.onnx
    python -m tasks.export ld_mobilenetv2_100 --pretrained default --format torchscript --out mnv2.pt

The file appears at ``--out`` only after its check passed: ONNX Runtime (CPU), or the reloaded TorchScript module,
against eager PyTorch on real images of the checkpoint's validation data (a random image for a bare backbone,
or when that data is gone).
fp32 passes when the max abs difference is at most ``1e-4 x max(1, largest |eager output|)``, with integer outputs
(detector labels, counts) equal. INT8 passes when at least 80% of the eager predictions survive: pixels keeping
their class, or detections scoring >= 0.3 matched by one of the same class with IoU >= 0.5. ``--int8`` calibrates
on ``--calibration-images`` images of the checkpoint's training data, prepared as evaluation prepares them.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch
from torch import Tensor
from torchvision.ops import box_iou

from tasks.det_deploy import DETECTOR_OUTPUTS, box_scale, postprocess
from tasks.engine import set_cpu_threads, setup_distributed
from tasks.engine.cli import run
from tasks.export_models import ExportTarget, load_target
from tasks.onnx_export import compare_outputs, export_onnx, tolerance, write_metadata
from tasks.onnx_quantize import quantize_int8, quantized_op_counts
from tasks.onnx_runtime import ort_session
from tasks.torchscript_export import export_torchscript, load_torchscript

__all__ = ["FORMATS", "INT8_AGREEMENT", "main"]

FORMATS = ("onnx", "torchscript")
INT8_AGREEMENT = 0.8


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tasks.export", description=__doc__.split("\n\n")[0])
    p.add_argument("model", metavar="MODEL", help="best.pt/last.pt of tasks.seg_train or tasks.det_train, or a "
                                                  "backbone name (a bare feature extractor)")
    p.add_argument("--format", required=True, help=f"one of: {', '.join(FORMATS)}")
    p.add_argument("--out", required=True, type=Path, help="file to write (never overwritten)")
    p.add_argument("--int8", action="store_true", help="ONNX Runtime static INT8 quantization (QDQ)")
    p.add_argument("--calibration-images", type=int, default=100, help="training images to calibrate INT8 on "
                                                                         "(default: 100)")
    p.add_argument("--detector-output", default="nms", help=f"detector graph outputs: {', '.join(DETECTOR_OUTPUTS)} "
                                                            "(default: nms)")
    p.add_argument("--data-root", help="data folder for the check and calibration (default: the checkpoint's)")
    p.add_argument("--pretrained", help="backbone name only: none | default | a named source | path | URL")
    p.add_argument("--output-stride", type=int, default=32, choices=(8, 16, 32),
                   help="backbone name only (default: 32)")
    p.add_argument("--threads", type=int, help="CPU threads of PyTorch and ONNX Runtime (default: all cores)")
    return p


def _validate(args: argparse.Namespace) -> None:
    if args.format not in FORMATS:
        raise ValueError(f"unknown --format {args.format!r}; valid: {', '.join(FORMATS)}")
    if args.detector_output not in DETECTOR_OUTPUTS:
        raise ValueError(f"unknown --detector-output {args.detector_output!r}; valid: {', '.join(DETECTOR_OUTPUTS)}")
    if args.int8 and args.format != "onnx":
        raise ValueError("--int8 needs --format onnx (it is ONNX Runtime quantization)")
    if args.calibration_images < 1:
        raise ValueError(f"--calibration-images must be positive, got {args.calibration_images}")
    if args.out.exists():
        raise ValueError(f"{args.out} exists; refusing to overwrite it (remove it or pick another --out)")
    if not args.out.parent.is_dir():
        raise FileNotFoundError(f"folder of --out does not exist: {args.out.parent}")


def _check_images(target: ExportTarget) -> list[Tensor]:
    """Two validation images of the task's data; a random image for a bare backbone or when the data is gone."""
    try:
        if target.images is not None:
            return target.images("val", 2)
        reason = "no task data for a bare backbone"
    except FileNotFoundError as e:
        reason = f"{e} (--data-root gives the check real images)"
    print(f"{reason}: checking on a random 1x3x224x192 image")
    generator = torch.Generator().manual_seed(0)
    if target.kind == "detector":  # RGB in [0, 1]
        return [torch.rand(1, 3, 224, 192, generator=generator)]
    return [torch.randn(1, 3, 224, 192, generator=generator)]


def _calibration_images(target: ExportTarget, count: int) -> list[Tensor]:
    if target.images is None:
        raise ValueError("--int8 needs calibration images: pass a training checkpoint (its data is used), not a "
                         "bare backbone name")
    return target.images("train", count)


def _eager(target: ExportTarget, image: Tensor) -> list[Tensor]:
    return _run(target.module, image)


def _check_fp32(name: str, target: ExportTarget, images: list[Tensor], run_file) -> None:
    for image in images:
        expected = _eager(target, image)
        diff, limit = compare_outputs(run_file(image), expected), tolerance(expected)
        print(f"{name} vs eager PyTorch on a {image.shape[-2]}x{image.shape[-1]} image: max abs diff {diff:.3g} "
              f"(tolerance {limit:.3g})")
        if not diff <= limit:
            raise ValueError(f"{name} does not match eager PyTorch (max abs diff {diff:.3g} > {limit:.3g}); "
                             f"nothing written")


def _detections(target: ExportTarget, outputs: list[Tensor], image: Tensor) -> list[Tensor]:
    """The ``nms`` outputs of a detector graph's outputs (a ``raw`` graph's post-processed as the runtime does)."""
    if target.metadata["detector_output"] == "nms":
        return outputs
    options = target.metadata["postprocess"]
    return postprocess(*outputs, box_scale(image, torch.tensor(options["size"], dtype=torch.float32)), **options)


def _agreement(target: ExportTarget, actual: list[Tensor], expected: list[Tensor], image: Tensor) -> float:
    """Share of eager predictions the INT8 model keeps (pixels' classes; detections scoring >= 0.3)."""
    if target.kind == "segmenter":
        return float((actual[0].argmax(1) == expected[0].argmax(1)).float().mean())
    actual, expected = _detections(target, actual, image), _detections(target, expected, image)
    boxes, scores, labels, count = (t[0] for t in expected)
    boxes_q, labels_q, count_q = actual[0][0], actual[2][0], int(actual[3][0])
    keep = scores[:count] >= 0.3
    if not keep.any():
        return 1.0
    iou = box_iou(boxes[:count][keep], boxes_q[:count_q])
    same = labels[:count][keep, None] == labels_q[None, :count_q]
    return float(((iou >= 0.5) & same).any(1).float().mean())


def _check_int8(target: ExportTarget, images: list[Tensor], path: Path) -> None:
    session = ort_session(path)
    for image in images:
        actual = [torch.from_numpy(a) for a in session.run(None, {"images": image.numpy()})]
        share = _agreement(target, actual, _eager(target, image), image)
        print(f"INT8 vs eager PyTorch on a {image.shape[-2]}x{image.shape[-1]} image: {100 * share:.1f}% of the "
              f"predictions kept (need {100 * INT8_AGREEMENT:.0f}%)")
        if share < INT8_AGREEMENT:
            raise ValueError(f"the INT8 model keeps only {100 * share:.1f}% of the eager predictions; nothing "
                             "written")


def _write_onnx(target: ExportTarget, path: Path, args: argparse.Namespace, images: list[Tensor],
                calibration: list[Tensor]) -> None:
    fp32 = path.with_name(path.stem + ".fp32.onnx") if args.int8 else path
    export_onnx(target.module, target.example(), fp32, output_names=target.output_names,
                dynamic_hw=target.dynamic_hw, dynamic_outputs=target.dynamic_outputs, metadata=target.metadata)
    session = ort_session(fp32)
    _check_fp32("ONNX Runtime fp32", target, images, lambda x: session.run(None, {"images": x.numpy()}))
    if not args.int8:
        return
    report = quantize_int8(fp32, path, calibration)
    import onnx

    proto = onnx.load(str(path))
    write_metadata(proto, {**target.metadata, "int8": report})
    onnx.save(proto, str(path))
    print(f"INT8: {report['method']}; calibrated on {report['calibration_images']} training images; in float: "
          f"{', '.join(report['keep_float'])} ({len(report['float_nodes'])} nodes); "
          f"quantized ops {quantized_op_counts(path)}")
    _check_int8(target, images, path)


def main(argv: list[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    _validate(args)
    set_cpu_threads(setup_distributed("cpu"), threads=args.threads)
    target = load_target(args.model, detector_output=args.detector_output, data_root=args.data_root,
                         pretrained=args.pretrained, output_stride=args.output_stride)
    calibration = _calibration_images(target, args.calibration_images) if args.int8 else []
    images = _check_images(target)
    with tempfile.TemporaryDirectory(dir=args.out.parent, prefix=".export-") as tmp:
        staged = Path(tmp) / args.out.name
        if args.format == "onnx":
            _write_onnx(target, staged, args, images, calibration)
        else:
            export_torchscript(target.module, staged, metadata=target.metadata)
            module = load_torchscript(staged)[0]
            _check_fp32("TorchScript", target, images, lambda x: [o.numpy() for o in _run(module, x)])
        if args.out.exists():
            raise ValueError(f"{args.out} appeared while exporting; refusing to overwrite it")
        os.replace(staged, args.out)
    print(f"wrote {target.kind} ({args.format}{', int8' if args.int8 else ''}) to {args.out}")
    return args.out


def _run(module, image: Tensor) -> list[Tensor]:
    """Outputs as a list; TorchScript without its profiling executor, which would spend its first runs on
    profiling and fusion (seconds) where the check runs twice."""
    with torch.no_grad(), torch.jit.optimized_execution(False):
        out = module(image)
    return [out] if isinstance(out, Tensor) else list(out)


if __name__ == "__main__":
    run(main, "python -m tasks.export")
