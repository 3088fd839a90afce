"""End to end on a tiny synthetic VOC-layout dataset: train -> evaluate -> predict, exact resume, 2-process DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tasks import det_eval, det_predict, det_train
from tasks.engine import load_checkpoint, read_metrics

# contiguous memory format, as det_eval / det_predict load models: channels_last rounds differently, and an
# untrained model's near-tied scores would then rank differently between the two evaluations
TINY = ["--synthetic-images", "8", "4", "--size", "64", "--backbone", "ld_mobilenetv2_035", "--batch-size", "4",
        "--workers", "0", "--no-progress", "--lr", "0.01", "--warmup-epochs", "0.5", "--device", "cpu",
        "--no-channels-last", "--log-interval", "2"]
ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def _run(out: Path, *extra: str) -> dict | None:
    """The last evaluation's scores of a tiny run."""
    return det_train.main([*TINY, "--out", str(out), *extra])["metrics"]


def test_train_evaluate_predict(tmp_path):
    metrics = _run(tmp_path / "run", "--epochs", "2", "--eval-interval", "1", "--num-visualize", "2")
    out = tmp_path / "run"
    for name in ("last.pt", "best.pt", "metrics.jsonl", "curves.png", "predictions.png", "ap_table.md", "results.json"):
        assert (out / name).is_file(), name
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["split"] for r in rows] == ["train", "val", "train", "val"] and rows[-1]["step"] == 4
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows if r["split"] == "train")
    assert "| tvmonitor |" in (out / "ap_table.md").read_text() and 0 <= metrics["map07"] <= 1
    assert json.loads((out / "results.json").read_text())["iteration"] == 4

    # the standalone evaluation of the final weights reproduces the in-training numbers, on the run's one thread
    # (the built-in data's default): other thread counts round differently and re-rank near-tied scores
    again = det_eval.main([str(out / "last.pt"), "--workers", "0", "--threads", "1", "--json",
                           str(tmp_path / "eval.json")])
    for key in ("map07", "map", "coco_map"):
        assert again[key] == pytest.approx(metrics[key], abs=1e-6, nan_ok=True)

    images = out / "synthetic_voc" / "JPEGImages"
    preds = det_predict.main([str(out / "last.pt"), str(images / "val_00000.jpg"), str(images / "val_00001.jpg"),
                              "--out", str(tmp_path / "pred"), "--score-thresh", "0.0"])
    metrics.pop("table", None)
    assert set(json.loads((tmp_path / "pred" / "predictions.json").read_text())) == set(preds) and len(preds) == 2
    assert (tmp_path / "pred" / "val_00000.png").is_file()
    for det in sum(preds.values(), []):
        assert set(det) == {"box", "score", "label", "class"} and 1 <= det["label"] <= 20


def test_resume_is_exact(tmp_path):
    common = ["--epochs", "2", "--eval-interval", "2", "--no-coco", "--num-visualize", "0"]
    _run(tmp_path / "straight", *common)
    _run(tmp_path / "cut", *common, "--stop-after", "3")  # stops in the middle of epoch 2
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["iteration"] == 3
    _run(tmp_path / "cut", "--resume")  # every other option comes from the checkpoint
    straight, resumed = (load_checkpoint(tmp_path / d / "last.pt") for d in ("straight", "cut"))
    assert resumed["iteration"] == straight["iteration"] == 4
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    for param, buffers in straight["optimizer"]["state"].items():
        for name, value in buffers.items():
            assert torch.equal(value, resumed["optimizer"]["state"][param][name]), (param, name)
    assert straight["scheduler"] == resumed["scheduler"]
    rows = [r for r in read_metrics(tmp_path / "cut" / "metrics.jsonl") if r["split"] == "val"]
    assert [r["step"] for r in rows] == [4]


def test_bad_batch_and_resume_arguments(tmp_path):
    with pytest.raises(ValueError, match="fewer than one batch"):
        _run(tmp_path / "a", "--epochs", "1", "--batch-size", "64")
    with pytest.raises(FileNotFoundError, match="nothing to resume: .*missing.pt does not exist"):
        _run(tmp_path / "b", "--epochs", "1", "--resume", str(tmp_path / "missing.pt"))


def test_two_process_ddp_on_cpu(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "tasks.det_train", *TINY, "--out", str(tmp_path / "ddp"), "--epochs", "1", "--num-visualize", "0",
           "--log-interval", "20"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    state = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert state["iteration"] == 2  # 8 images, global batch 4 = 2 per process
    rows = read_metrics(tmp_path / "ddp" / "metrics.jsonl")
    assert [r["split"] for r in rows] == ["train", "val"]  # rank 0 alone writes the log
    assert 0 <= rows[-1]["map07"] <= 1 and 0 <= rows[-1]["coco_map"] <= 1  # VOC and torchmetrics both gathered


@pytest.mark.parametrize("head", ["ssd", "ssdlite"])
def test_mobilenetv1_with_either_head_trains_and_evaluates(tmp_path, head):
    out = tmp_path / head
    metrics = _run(out, "--backbone", "ld_mobilenetv1_025", "--head", head, "--iters", "2", "--no-coco",
                   "--num-visualize", "0")  # the last --backbone wins over TINY's
    state = load_checkpoint(out / "last.pt")
    assert state["model_config"]["head"] == head and state["model_config"]["backbone"] == "ld_mobilenetv1_025"
    again = det_eval.main([str(out / "last.pt"), "--workers", "0", "--threads", "1", "--no-coco"])  # the run's thread
    assert again["map07"] == pytest.approx(metrics["map07"], abs=1e-6, nan_ok=True)


def test_det_eval_scores_a_pytorch_ssd_checkpoint(tmp_path):
    """A qfgaohao/pytorch-ssd mb1-ssd file is converted on load; it records no data, so --data-root is needed."""
    from tasks.det_synthetic import make_synthetic_voc

    from pytorch_ssd_reference import RefMB1SSD

    torch.manual_seed(0)
    torch.save(RefMB1SSD(21, lite=False).state_dict(), tmp_path / "mb1-ssd.pth")
    voc = make_synthetic_voc(tmp_path / "voc", num_train=2, num_val=3)
    with pytest.raises(ValueError, match="records no dataset: pass --data-root and --split"):
        det_eval.main([str(tmp_path / "mb1-ssd.pth")])
    metrics = det_eval.main([str(tmp_path / "mb1-ssd.pth"), "--data-root", str(voc), "--split", "val",
                             "--workers", "0", "--no-coco"])
    assert 0 <= metrics["map07"] <= 1 and len(metrics["ap07"]) == 20
