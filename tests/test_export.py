"""Export: ONNX and TorchScript round trips against eager PyTorch, the ONNX Runtime wrappers against the torch
models' own call interface, INT8 quantization, and ``python -m tasks.export`` on tiny checkpoints.

Tolerances: fp32 ONNX Runtime outputs within ``1e-4 x max(1, largest |eager value|)`` of eager (the export
command's own check), integer outputs (labels, counts) equal; TorchScript within 1e-5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from backbones import create_backbone
from heads import create_detector, create_segmenter
from tasks import export
from tasks.det_deploy import OUTPUT_NAMES, DeployableDetector
from tasks.det_synthetic import make_synthetic_voc as make_det_data
from tasks.onnx_export import check_onnx, compare_outputs, export_onnx, tolerance
from tasks.onnx_quantize import float_nodes, quantize_int8, quantized_op_counts
from tasks.onnx_runtime import OnnxDetector, OnnxSegmenter, load_onnx, ort_session
from tasks.seg_model import model_config
from tasks.seg_synthetic import make_synthetic_voc as make_seg_data
from tasks.torchscript_export import export_torchscript, load_torchscript

from conftest import randomize_bn

FAMILIES = ["ld_mobilenetv2_035", "ld_shufflenetv1_g3_050"]
KINDS = ["backbone", "segmenter", "detector_raw", "detector_nms"]
DET_CLASSES = ["aeroplane", "boat", "sheep", "tvmonitor"]  # what the synthetic detection data draws
SEG_HEAD = dict(aspp_channels=16, decoder_channels=16, separable=True)
ONE_THREAD = ["--threads", "1"]  # the command's default (all cores) crawls on a loaded 2-core machine


pytestmark = pytest.mark.usefixtures("one_thread")


def _randomized(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and every conv at unit-ish scale, so logits are far from zero."""
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
    return randomize_bn(model, seed).eval()


def _detector(family: str) -> nn.Module:
    """Its own initialization (kaiming everywhere saturates the softmax into ties), random BN statistics, one
    extra layer (fewer nodes to trace and script)."""
    torch.manual_seed(0)
    model = create_detector(family, len(DET_CLASSES) + 1, size=64, extra_channels=[(32, 64)])  # 3 maps, not 6
    return randomize_bn(model).eval()


def _assert_same_detections(actual: dict, expected: dict) -> None:
    """Equal up to the order of (near-)tied scores: each expected detection pairs with its own actual one of the
    same label, score within 1e-5 and box within 1e-3 pixels."""
    assert actual.keys() == expected.keys() and len(actual["labels"]) == len(expected["labels"]) > 0
    gap = (actual["scores"][:, None] - expected["scores"][None]).abs() \
        + (actual["boxes"][:, None] - expected["boxes"][None]).abs().amax(-1) / 100
    gap[actual["labels"][:, None] != expected["labels"][None]] = float("inf")
    best = gap.argmin(0)
    assert len(set(best.tolist())) == len(best) and gap.min(0).values.max() <= 1e-5


def _target(family: str, kind: str) -> tuple[nn.Module, list[str], dict, dict]:
    """(module, output names, dynamic output axes, metadata) as tasks.export_models builds them."""
    if kind == "backbone":
        model = _randomized(create_backbone(family, output_stride=16))
        names = [f"features_{i}" for i in range(len(model.out_indices))]
        return model, names, {n: {2: f"H{i}", 3: f"W{i}"} for i, n in enumerate(names)}, {"kind": kind}
    if kind == "segmenter":
        metadata = {"kind": kind, "class_names": ["bg", "a", "b"], "preprocessing": {"mean": [0.5] * 3}}
        model = _randomized(create_segmenter(family, 3, **SEG_HEAD))
        return model, ["logits"], {"logits": {2: "H", 3: "W"}}, metadata
    output = kind.split("_")[1]
    deploy = DeployableDetector(_detector(family), output).eval()
    metadata = {"kind": "detector", "detector_output": output, "postprocess": deploy.postprocess_options(),
                "class_names": DET_CLASSES}
    axes = {} if output == "raw" else {n: {1: "D"} for n in ("boxes", "scores", "labels")}
    return deploy, OUTPUT_NAMES[output], axes, metadata


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``exported(family, kind) -> (module, .onnx path)``, each built and exported once (at 64x80)."""
    folder, cache = tmp_path_factory.mktemp("onnx"), {}

    def get(family: str, kind: str) -> tuple[nn.Module, Path]:
        if (family, kind) not in cache:
            module, names, axes, metadata = _target(family, kind)
            path = export_onnx(module, torch.rand(1, 3, 64, 80), folder / f"{family}_{kind}.onnx", output_names=names,
                               dynamic_hw=True, dynamic_outputs=axes, metadata=metadata)
            cache[family, kind] = module, path
        return cache[family, kind]

    return get


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", KINDS)
def test_onnx_round_trip_at_sizes_other_than_the_export_size(family, kind, exported):
    module, path = exported(family, kind)
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 75, 100, generator=generator)
    diff, limit = check_onnx(path, module, image)
    assert diff <= limit, diff
    runtime, image = load_onnx(path), torch.rand(2, 3, 97, 66, generator=generator)  # batch 2, another size
    with torch.no_grad():
        expected = module(image)
    expected = [expected] if kind == "segmenter" else expected
    assert compare_outputs([t.numpy() for t in runtime.run(image)], expected) <= tolerance(expected)
    if kind == "segmenter":
        assert expected[0].shape == (2, 3, 97, 66)


# Detectors script the same way on every backbone (test_backbone_contract scripts each), so one family per variant.
@pytest.mark.parametrize("family, kind", [(f, k) for f in FAMILIES for k in KINDS[:2]]
                         + [(FAMILIES[0], "detector_raw"), (FAMILIES[1], "detector_nms")])
def test_torchscript_round_trip(family, kind, exported, tmp_path):
    module = exported(family, kind)[0]
    export_torchscript(module, tmp_path / "m.pt", metadata={"kind": kind, "class_names": DET_CLASSES})
    loaded, metadata = load_torchscript(tmp_path / "m.pt")
    assert metadata == {"kind": kind, "class_names": DET_CLASSES}
    image = torch.rand(2, 3, 75, 100)
    with torch.no_grad(), torch.jit.optimized_execution(False):  # skip the profiling executor's warm-up runs
        expected, actual = module(image), loaded(image)
    for a, e in zip([actual] if kind == "segmenter" else actual, [expected] if kind == "segmenter" else expected,
                    strict=True):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("output", ["raw", "nms"])
def test_onnx_detector_returns_what_torchvision_ssd_returns(output, exported):
    path = exported(FAMILIES[1], f"detector_{output}")[1]
    model = _detector(FAMILIES[1])  # the same weights (same seed) as the exported graph's
    runtime = load_onnx(path)
    assert isinstance(runtime, OnnxDetector) and not runtime.training and runtime.class_names == DET_CLASSES
    generator = torch.Generator().manual_seed(2)
    images = [torch.rand(3, 90, 120, generator=generator), torch.rand(3, 64, 64, generator=generator),
              torch.rand(3, 90, 120, generator=generator)]  # two of one size run as one batch
    with torch.no_grad():
        expected = model(images)
    actual = runtime(images)
    for a, e in zip(actual, expected, strict=True):
        _assert_same_detections(a, e)


def test_onnx_segmenter_wrapper_and_metadata(exported):
    model, path = exported(FAMILIES[0], "segmenter")
    runtime = load_onnx(path, threads=1)
    assert isinstance(runtime, OnnxSegmenter) and runtime.session.get_session_options().intra_op_num_threads == 1
    assert runtime.class_names == ["bg", "a", "b"] and runtime.preprocessing == {"mean": [0.5] * 3}
    images = torch.rand(1, 3, 70, 90).contiguous(memory_format=torch.channels_last)  # as Precision may pass it
    with torch.no_grad():
        torch.testing.assert_close(runtime(images), model(images), rtol=1e-4, atol=1e-4)


def test_int8_graph_holds_quantized_ops_and_runs(exported, tmp_path):
    module, fp32 = exported(FAMILIES[0], "segmenter")
    calibration = [torch.rand(1, 3, 64 + 8 * i, 72, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    report = quantize_int8(fp32, tmp_path / "int8.onnx", calibration)
    assert report["calibration_images"] == 3 and report["keep_float"] == ["tail", "first_conv"]
    counts = quantized_op_counts(tmp_path / "int8.onnx")
    convs = sum(n.op_type == "Conv" for n in onnx.load(fp32).graph.node)
    assert counts["QuantizeLinear"] > 0 and counts["DequantizeLinear"] > convs  # every int8 conv dequantizes weights
    session = ort_session(tmp_path / "int8.onnx")
    image = torch.rand(2, 3, 75, 100)
    with torch.no_grad():
        expected = module(image)
    outputs = session.run(None, {"images": image.numpy()})
    assert outputs[0].shape == tuple(expected.shape) and np.isfinite(outputs[0]).all()


def test_float_nodes_keep_the_tail_and_stem(exported):
    proto = onnx.load(exported(FAMILIES[0], "segmenter")[1])
    nodes = {n.name: n for n in proto.graph.node}
    kept = float_nodes(proto)
    first_conv = next(n for n in proto.graph.node if n.op_type == "Conv")
    final = next(n for n in proto.graph.node if n.output[0] == "logits")  # the upsampling to the input size
    assert first_conv.name in kept and final.name in kept and final.op_type == "Resize"
    assert sum(nodes[k].op_type == "Conv" for k in kept) == 1
    with pytest.raises(ValueError, match="valid: tail, first_conv"):
        float_nodes(proto, ["depthwise"])


# ---- python -m tasks.export on tiny checkpoints ----

@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Untrained checkpoints of both tasks in the trainers' format, with tiny synthetic data where they record."""
    root = tmp_path_factory.mktemp("ckpt")
    seg_root = make_seg_data(root / "seg", num_train=3, num_val=2, size_range=(64, 96))
    args = type("Args", (), dict(backbone=FAMILIES[0], num_classes=5, output_stride=16, head_channels=16,
                                 separable=True, aspp_input="stage"))
    config = model_config(args)
    seg = create_segmenter(FAMILIES[0], 5, aspp_channels=16, decoder_channels=16, separable=True)
    torch.save({"task": "seg", "model": _randomized(seg).state_dict(), "model_config": config,
                "preprocessing": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "color": "RGB",
                                  "input_range": 1.0},
                "class_names": ["background", "disc", "square", "triangle", "ring"],
                "data": {"root": str(seg_root), "sbd_root": None, "train_split": "train", "val_split": "val"}},
               root / "seg.pt")
    det_root = make_det_data(root / "det", num_train=3, num_val=2)
    torch.manual_seed(0)
    detector = randomize_bn(create_detector(FAMILIES[1], len(DET_CLASSES) + 1, size=64))
    torch.save({"task": "det", "model": detector.state_dict(), "class_names": list(DET_CLASSES),
                "model_config": {"backbone": FAMILIES[1], "num_classes": len(DET_CLASSES) + 1, "size": 64,
                                 "head": "ssdlite"},
                "preprocessing": {"mean": [0.5] * 3, "std": [0.5] * 3, "color": "RGB", "input_range": 1.0},
                "data": {"roots": [str(det_root)], "train_split": "train", "val_root": str(det_root),
                         "val_split": "val"}}, root / "det.pt")
    torch.save({"weights": torch.zeros(3)}, root / "other.pt")
    (root / "corrupt.pt").write_bytes(b"not a checkpoint")
    return {"seg": root / "seg.pt", "det": root / "det.pt", "other": root / "other.pt",
            "corrupt": root / "corrupt.pt", "seg_data": seg_root, "det_data": det_root}


def test_cli_exports_a_segmentation_checkpoint_in_int8(checkpoints, tmp_path, capsys):
    out = export.main([str(checkpoints["seg"]), "--format", "onnx", "--int8", "--calibration-images", "2",
                       "--out", str(tmp_path / "seg_int8.onnx"), *ONE_THREAD])
    printed = capsys.readouterr().out
    assert "max abs diff" in printed and "calibrated on 2 training images" in printed
    runtime = load_onnx(out)
    assert runtime.kind == "segmenter" and runtime.class_names[1] == "disc"
    assert runtime.metadata["int8"]["calibration_images"] == 2
    assert runtime.metadata["model_config"]["backbone"] == FAMILIES[0]
    assert runtime.metadata["data"] == {"root": str(checkpoints["seg_data"]), "train_split": "train",
                                        "val_split": "val"}
    assert runtime(torch.rand(1, 3, 70, 90)).shape == (1, 5, 70, 90)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg_int8.onnx"]  # no staging files left behind


def test_cli_exports_a_detection_checkpoint(checkpoints, tmp_path):
    out = export.main([str(checkpoints["det"]), "--format", "onnx", "--detector-output", "raw",
                       "--out", str(tmp_path / "det.onnx"), *ONE_THREAD])
    runtime = load_onnx(out)
    assert runtime.metadata["detector_output"] == "raw" and runtime.class_names == DET_CLASSES
    assert runtime.metadata["postprocess"]["size"] == [64, 64] and runtime.preprocessing["inside_graph"]
    detections = runtime([torch.rand(3, 80, 100)])
    assert detections[0]["boxes"].shape[1] == 4 and detections[0]["labels"].dtype == torch.int64


def test_cli_exports_torchscript(checkpoints, tmp_path):
    out = export.main([str(checkpoints["seg"]), "--format", "torchscript", "--out", str(tmp_path / "seg.pt"),
                       *ONE_THREAD])
    module, metadata = load_torchscript(out)
    assert metadata["kind"] == "segmenter" and metadata["model_config"]["head_channels"] == 16
    with torch.no_grad(), torch.jit.optimized_execution(False):
        assert module(torch.rand(1, 3, 70, 90)).shape == (1, 5, 70, 90)


def test_cli_refuses_bad_input_in_one_line(checkpoints, tmp_path):
    existing = tmp_path / "taken.onnx"
    existing.write_text("a user's file")
    cases = [
        ([str(checkpoints["other"])], ValueError, "not a training checkpoint .*valid MODEL"),
        ([str(checkpoints["corrupt"])], ValueError, "cannot read checkpoint"),
        ([str(tmp_path / "missing.pt")], FileNotFoundError, "neither a file nor a backbone name; valid"),
        (["ld_mobilenetv2_035", "--int8"], ValueError, "--int8 needs calibration images"),
        ([str(checkpoints["seg"]), "--int8", "--data-root", str(tmp_path)], FileNotFoundError, "JPEGImages/ missing"),
        ([str(checkpoints["seg"]), "--format", "tflite"], ValueError, "valid: onnx, torchscript"),
        ([str(checkpoints["det"]), "--detector-output", "boxes"], ValueError, "valid: raw, nms"),
        ([str(checkpoints["seg"]), "--int8", "--format", "torchscript"], ValueError, "--int8 needs --format onnx"),
        ([str(checkpoints["seg"]), "--out", str(existing)], ValueError, "refusing to overwrite"),
    ]
    for argv, error, match in cases:
        full = [*argv, *([] if "--format" in argv else ["--format", "onnx"])]
        full += [*ONE_THREAD, *([] if "--out" in argv else ["--out", str(tmp_path / "out.onnx")])]
        with pytest.raises(error, match=match) as info:
            export.main(full)
        assert "\n" not in str(info.value), argv
    assert existing.read_text() == "a user's file" and not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("task", ["seg", "det"])
def test_eval_and_predict_score_the_exported_file_as_the_checkpoint(checkpoints, tmp_path, task):
    """What ships is what was measured: the fp32 ONNX file gives the checkpoint's scores and predictions."""
    from tasks import det_eval, det_predict, seg_eval, seg_predict

    evaluate, predict = (seg_eval.main, seg_predict.main) if task == "seg" else (det_eval.main, det_predict.main)
    onnx_file = export.main([str(checkpoints[task]), "--format", "onnx", "--out", str(tmp_path / "m.onnx"),
                             *ONE_THREAD])
    extra = ["--workers", "0", *ONE_THREAD] + (["--no-coco"] if task == "det" else [])
    scores = [evaluate([str(model), *extra]) for model in (checkpoints[task], onnx_file)]
    if task == "seg":
        assert scores[1].miou == scores[0].miou and scores[1].iou == pytest.approx(scores[0].iou, nan_ok=True)
    else:
        assert scores[1]["map07"] == scores[0]["map07"] and scores[1]["ap"] == pytest.approx(scores[0]["ap"],
                                                                                            nan_ok=True)
    images = sorted((checkpoints["seg_data"] if task == "seg" else checkpoints["det_data"]).rglob("*.jpg"))[:2]
    outs = [predict([str(model), *map(str, images), "--out", str(tmp_path / name), *ONE_THREAD])
            for model, name in ((checkpoints[task], "pt"), (onnx_file, "onnx"))]
    if task == "seg":
        from PIL import Image

        for a, b in zip(*outs):
            assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b)))
    else:
        assert [[d["label"] for d in v] for v in outs[0].values()] == [[d["label"] for d in v] for v in
                                                                       outs[1].values()]
    with pytest.raises(ValueError, match="is an exported (segmenter|detector); tasks.(seg|det)_eval"):
        (det_eval.main if task == "seg" else seg_eval.main)([str(onnx_file), "--workers", "0"])
