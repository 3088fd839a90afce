"""Both tasks as one product: every command runs in all three forms, and checkpoints rebuild what was trained."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from backbones import create_backbone
from heads import create_detector
from tasks import det_train, seg_train
from tasks.__main__ import COMMANDS
from tasks.det_model import load_model as load_detector
from tasks.engine import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
DET_TINY = ["--synthetic-images", "8", "4", "--size", "64", "--batch-size", "4", "--workers", "0", "--no-progress",
            "--threads", "1", "--num-visualize", "0", "--no-coco", "--no-channels-last", "--warmup-iters", "1"]
SEG_TINY = ["--backbone", "ld_mobilenetv2_035", "--head-channels", "16", "--crop-size", "48", "--batch-size", "4",
            "--synthetic-images", "8", "4", "--workers", "0", "--no-progress", "--threads", "1",
            "--num-visualize", "0"]


def _help(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run([*cmd, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", [m.removeprefix("tasks.") for m, _ in COMMANDS.values()])
def test_every_command_runs_as_a_file(name):
    proc = _help(sys.executable, f"tasks/{name}.py")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout


@pytest.mark.parametrize("name", ["seg_train", "det_eval"])
def test_commands_run_as_modules_and_as_the_installed_command(name):
    assert _help(sys.executable, "-m", f"tasks.{name}").returncode == 0
    script = Path(sys.executable).with_name("lightdense")
    if not script.exists():
        script = shutil.which("lightdense")
    assert script, "the lightdense console command is not installed (pip install -e .)"
    proc = _help(str(script), name.replace("_", "-"))
    assert proc.returncode == 0 and f"tasks.{name}" in proc.stdout, proc.stderr[-2000:]
    listing = subprocess.run([str(script)], capture_output=True, text=True, timeout=300)
    assert all(command in listing.stdout for command in COMMANDS)


def test_detector_checkpoint_keeps_its_normalisation(tmp_path):
    """A detector trained from ImageNet weights given as a state dict is rebuilt with ImageNet mean/std."""
    torch.manual_seed(0)
    weights = tmp_path / "imagenet_like.pth"
    torch.save(create_backbone("ld_mobilenetv2_035", out_indices=range(7)).state_dict(), weights)
    det_train.main([*DET_TINY, "--backbone", "ld_mobilenetv2_035", "--pretrained", str(weights), "--iters", "2",
                    "--out", str(tmp_path / "run")])
    model, ckpt = load_detector(tmp_path / "run" / "last.pt")
    assert ckpt["preprocessing"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert list(model.transform.image_mean) == pytest.approx([0.485, 0.456, 0.406])
    # the model as training built it: weights from the same file, then the trained state
    reference = create_detector("ld_mobilenetv2_035", ckpt["model_config"]["num_classes"], size=64,
                                pretrained_backbone=torch.load(weights, weights_only=True))
    reference.load_state_dict(ckpt["model"])
    images = [torch.rand(3, 70, 90), torch.rand(3, 64, 64)]
    with torch.no_grad():
        for ours, theirs in zip(model(images), reference.eval()(images)):
            for key in ("boxes", "scores", "labels"):
                assert torch.equal(ours[key], theirs[key]), key


@pytest.mark.parametrize("first", ["det", "seg"])
def test_a_fresh_detection_run_never_replaces_a_run(tmp_path, first):
    out = tmp_path / "run"
    if first == "det":
        det_train.main([*DET_TINY, "--backbone", "ld_mobilenetv2_035", "--iters", "2", "--out", str(out)])
    else:
        seg_train.main([*SEG_TINY, "--iters", "2", "--out", str(out)])
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(ValueError, match="already holds a run .*pass --resume to continue it, or --out"):
        det_train.main([*DET_TINY, "--backbone", "ld_mobilenetv2_035", "--iters", "2", "--out", str(out)])
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    if first == "seg":  # resuming the other task's run is refused too, naming what the checkpoint is
        with pytest.raises(ValueError, match=r"cannot be resumed by tasks.det_train: it is a segmentation"):
            det_train.main([*DET_TINY, "--out", str(out), "--resume"])
    assert load_checkpoint(out / "last.pt")["task"] == first
