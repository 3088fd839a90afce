"""End-to-end segmentation runs on tiny synthetic data: train, evaluate, predict, resume exactly, torchrun DDP."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tasks import seg_eval, seg_predict, seg_train
from tasks.engine import load_checkpoint, read_metrics, without_timing

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--backbone", "ld_mobilenetv2_035", "--head-channels", "16", "--crop-size", "48", "--batch-size", "4",
        "--synthetic-images", "8", "4", "--workers", "0", "--no-progress", "--threads", "1", "--num-visualize", "2"]


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _train(out: Path, *extra: str) -> dict:
    return seg_train.main([*TINY, "--out", str(out), *extra])


def test_run_writes_outputs_that_eval_and_predict_reproduce(tmp_path):
    summary = _train(tmp_path / "run", "--iters", "4")
    run = tmp_path / "run"
    assert summary["iterations"] == 4
    assert {"last.pt", "best.pt", "metrics.jsonl", "curves.png", "overlays.png", "results.json"} <= \
        {p.name for p in run.iterdir()}
    val = [r for r in read_metrics(run / "metrics.jsonl") if r["split"] == "val"]
    assert [r["step"] for r in val] == [2, 4]
    best_row = max(val, key=lambda r: r["miou"])  # the first of equal scores
    best = load_checkpoint(run / "best.pt")
    assert best["iteration"] == best_row["step"] and best["model_config"]["num_classes"] == 5
    scores = seg_eval.main([str(run / "best.pt"), "--workers", "0", "--json", str(run / "s.json")])
    assert scores.miou == pytest.approx(best_row["miou"], abs=1e-12)
    assert json.loads((run / "s.json").read_text())["miou"] == scores.miou
    images = run / "data" / "VOC2012" / "JPEGImages"
    written = seg_predict.main([str(run / "best.pt"), str(images / "synth_val_00000.jpg"),
                                str(images / "synth_val_00001.jpg"), "--out", str(run / "pred")])
    assert (run / "pred" / "synth_val_00000_overlay.jpg").is_file()
    for mask_path in written:
        with Image.open(mask_path) as mask, Image.open(images / f"{mask_path.stem}.jpg") as image:
            assert mask.mode == "P" and mask.size == image.size
            assert np.asarray(mask).max() < 5


def test_resume_after_stop_matches_uninterrupted_run(tmp_path):
    _train(tmp_path / "full", "--iters", "5")
    _train(tmp_path / "cut", "--iters", "5", "--stop-after", "3")
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["iteration"] == 3
    _train(tmp_path / "cut", "--iters", "5", "--resume")
    full, cut = (load_checkpoint(tmp_path / name / "last.pt") for name in ("full", "cut"))
    assert full["model"].keys() == cut["model"].keys()
    for key, value in full["model"].items():
        assert torch.equal(value, cut["model"][key]), key
    assert full["optimizer"]["state"].keys() == cut["optimizer"]["state"].keys()
    assert all(torch.equal(full["optimizer"]["state"][k]["momentum_buffer"], v["momentum_buffer"])
               for k, v in cut["optimizer"]["state"].items())
    assert full["scheduler"] == cut["scheduler"]
    rows = [without_timing(read_metrics(tmp_path / name / "metrics.jsonl")) for name in ("full", "cut")]
    assert rows[0] == rows[1]


def test_existing_run_needs_resume_with_the_same_model(tmp_path):
    _train(tmp_path / "run", "--iters", "1")
    with pytest.raises(ValueError, match="already holds a run"):
        _train(tmp_path / "run", "--iters", "2")
    with pytest.raises(ValueError, match=r"trained with other settings: --iters 2 \(checkpoint: 1\); "
                                         r"--output-stride 8 \(checkpoint: 16\)"):
        _train(tmp_path / "run", "--iters", "2", "--resume", "--output-stride", "8")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_cpu_processes(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "tasks.seg_train", *TINY, "--iters", "4", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows if r["split"] == "val"] == [2, 4], "4 images per rank, 2 per step: 2 epochs"
    last = load_checkpoint(out / "last.pt")
    assert last["iteration"] == 4 and last["epoch"] == 2
