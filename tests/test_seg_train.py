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
    summary = _train(tmp_path / "run", "--iters", "4", "--aspp-input", "final")  # a model_config eval must rebuild
    run = tmp_path / "run"
    assert summary["iterations"] == 4
    assert {"last.pt", "best.pt", "metrics.jsonl", "curves.png", "overlays.png", "results.json"} <= \
        {p.name for p in run.iterdir()}
    val = [r for r in read_metrics(run / "metrics.jsonl") if r["split"] == "val"]
    assert [r["step"] for r in val] == [2, 4]
    best_row = max(val, key=lambda r: r["miou"])  # the first of equal scores
    best = load_checkpoint(run / "best.pt")
    assert best["iteration"] == best_row["step"] and best["model_config"]["num_classes"] == 5
    assert best["model_config"]["aspp_input"] == "final"
    scores = seg_eval.main([str(run / "best.pt"), "--workers", "0", "--threads", "1", "--json", str(run / "s.json")])
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


def test_trainer_steps_are_the_plain_loop_of_the_comparison(tmp_path):
    """With --data-root defaults from scratch and contiguous tensors, a trainer step is exactly the tutorial loop of
    tasks.compare.references (SGD 0.01, momentum 0.9, weight decay 1e-4 on every parameter, poly 0.9, mean pixel
    cross-entropy): the comparison measures the recipe, not hidden plumbing. Dropout draws are reseeded per step."""
    import torch.nn.functional as F

    from heads import create_segmenter
    from tasks.compare.references import sgd_poly
    from tasks.engine import DistInfo
    from tasks.seg_config import parse_args
    from tasks.seg_data import IGNORE_INDEX
    from tasks.seg_synthetic import make_synthetic_voc

    root = make_synthetic_voc(tmp_path / "data", num_train=8, num_val=2, size_range=(64, 80), seed=1)
    iters = 4
    args, _ = parse_args(["--data-root", str(root), "--backbone", "ld_mobilenetv2_035", "--pretrained", "none",
                          "--num-classes", "5", "--head-channels", "16", "--separable", "--crop-size", "48",
                          "--batch-size", "4", "--iters", str(iters), "--workers", "0", "--no-channels-last",
                          "--no-progress", "--out", str(tmp_path / "run")])
    trainer = seg_train.SegTrainer(args, DistInfo(0, 1, 0, torch.device("cpu")))
    torch.manual_seed(args.seed)  # the trainer seeds before it builds the model: same initial weights
    model = create_segmenter("ld_mobilenetv2_035", 5, separable=True, aspp_channels=16, decoder_channels=16,
                             aspp_input="final").train()
    assert all(torch.equal(a, b) for a, b in zip(trainer.model.state_dict().values(), model.state_dict().values()))
    optimizer, scheduler = sgd_poly(model, iters)  # the comparison's own optimizer and schedule
    trainer.model.train()
    trainer.loader.sampler.set_epoch(0)
    for step, batch in enumerate(trainer.loader):
        torch.manual_seed(step)
        ours = trainer.step(batch)[0].item()
        torch.manual_seed(step)
        loss = F.cross_entropy(model(batch["image"]), batch["mask"], ignore_index=IGNORE_INDEX)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        assert ours == pytest.approx(loss.item(), rel=1e-6), step
        for (name, a), b in zip(trainer.model.named_parameters(), model.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9, msg=f"step {step}: {name}")
    assert step + 1 == len(trainer.loader) == 2


def test_checkpoints_older_than_aspp_input_rebuild_with_the_last_stage():
    from tasks.seg_model import build_model

    config = {"backbone": "ld_mobilenetv2_035", "num_classes": 3, "output_stride": 16, "head_channels": 8,
              "separable": True}
    assert build_model(config).backbone.channels[-1] == 112
    assert build_model({**config, "aspp_input": "final"}).backbone.channels[-1] == 1280
