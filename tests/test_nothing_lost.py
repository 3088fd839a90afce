"""Never lose a user's work: outputs never replace files, Ctrl-C saves, resume checks, data is checked first."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tasks import det_predict, det_train, seg_eval, seg_predict, seg_train
from tasks.engine import load_checkpoint, read_metrics, without_timing

ROOT = Path(__file__).resolve().parents[1]
SEG_TINY = ["--backbone", "ld_mobilenetv2_035", "--head-channels", "16", "--crop-size", "48", "--batch-size", "4",
            "--synthetic-images", "8", "4", "--workers", "0", "--no-progress", "--threads", "1",
            "--num-visualize", "0"]
DET_TINY = ["--backbone", "ld_mobilenetv2_035", "--synthetic-images", "8", "4", "--size", "64", "--batch-size", "4",
            "--workers", "0", "--no-progress", "--threads", "1", "--num-visualize", "0", "--no-coco",
            "--no-channels-last", "--warmup-iters", "1"]


@pytest.fixture(autouse=True)
def _keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One tiny finished run of each task."""
    root = tmp_path_factory.mktemp("runs")
    seg_train.main([*SEG_TINY, "--iters", "2", "--out", str(root / "seg")])
    det_train.main([*DET_TINY, "--iters", "2", "--out", str(root / "det")])
    return {"seg": root / "seg", "det": root / "det"}


def _md5(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _photos(tmp_path: Path) -> Path:
    photos = tmp_path / "photos"
    (photos / "b").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a/img.png", "a/other.jpg", "b/img.jpg"):
        (photos / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 52, 3), dtype=np.uint8)).save(photos / name)
    return photos


@pytest.mark.parametrize("task", ["seg", "det"])
def test_predict_never_overwrites_inputs_and_keeps_names_unique(runs, tmp_path, task):
    photos = _photos(tmp_path)
    before = _md5(photos)
    predict = {"seg": seg_predict.main, "det": det_predict.main}[task]
    ckpt = str(runs[task] / "last.pt")
    with pytest.raises(ValueError, match=r"refusing to overwrite .*img\.png"):  # the mask of img.png is img.png
        predict([ckpt, str(photos / "a"), "--out", str(photos / "a")])
    assert _md5(photos) == before
    out = tmp_path / "out"
    inputs = [str(photos / "a" / "img.png"), str(photos / "b" / "img.jpg"), str(photos / "a")]  # img.png twice
    predict([ckpt, *inputs, "--out", str(out)])
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    if task == "seg":
        assert written == ["a/img.png", "a/img_overlay.jpg", "a/other.png", "a/other_overlay.jpg", "b/img.png",
                           "b/img_overlay.jpg"]
    else:
        assert written == ["a/img.png", "a/other.png", "b/img.png", "predictions.json"]
    with pytest.raises(ValueError, match="refusing to overwrite"):  # a second run into the same folder
        predict([ckpt, *inputs, "--out", str(out)])
    assert _md5(photos) == before


def _wait_for_step(path: Path, step: int, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if any(r["split"] == "train" and r["step"] >= step for r in read_metrics(path)):
            return
        time.sleep(0.05)
    raise AssertionError(f"the run never reached step {step} (exit {proc.poll()})")


def test_ctrl_c_saves_and_resume_equals_an_uninterrupted_run(tmp_path):
    common = [*SEG_TINY, "--iters", "40", "--eval-interval", "100", "--log-interval", "1"]
    cmd = [sys.executable, "-m", "tasks.seg_train", *common, "--out", str(tmp_path / "cut")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_step(tmp_path / "cut" / "metrics.jsonl", 3, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "Continue with: python -m tasks.seg_train --out" in stderr
    cut = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert 3 <= cut["iteration"] < 40
    seg_train.main([*common, "--out", str(tmp_path / "cut"), "--resume"])
    seg_train.main([*common, "--out", str(tmp_path / "full")])
    full, resumed = (load_checkpoint(tmp_path / name / "last.pt") for name in ("full", "cut"))
    assert resumed["iteration"] == full["iteration"] == 40
    for key, value in full["model"].items():
        assert torch.equal(value, resumed["model"][key]), key
    assert without_timing(read_metrics(tmp_path / "cut" / "metrics.jsonl")) == \
        without_timing(read_metrics(tmp_path / "full" / "metrics.jsonl"))


def _torchrun_det_train(out: Path, *options: str) -> subprocess.Popen:
    """A 2-process CPU det_train of 200 steps under torchrun, in its own session (so a test can signal it)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "tasks.det_train", *DET_TINY, "--iters", "200", "--log-interval", "1", *options, "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def test_sigterm_under_torchrun_stops_every_rank_at_one_step(tmp_path):
    out = tmp_path / "ddp"
    proc = _torchrun_det_train(out, "--eval-interval", "100")
    _wait_for_step(out / "metrics.jsonl", 2, proc)
    proc.send_signal(signal.SIGTERM)  # torchrun forwards it to every rank
    _, stderr = proc.communicate(timeout=240)
    assert "stopped by SIGTERM at step" in stderr, stderr[-3000:]
    state = load_checkpoint(out / "last.pt")
    assert 2 <= state["iteration"] < 200
    logged = max(r["step"] for r in read_metrics(out / "metrics.jsonl"))
    assert logged == state["iteration"]  # rank 0 saved the step both ranks stopped after


@pytest.mark.parametrize("task", ["seg", "det"])
def test_a_bad_val_image_is_found_before_the_first_step(tmp_path, task):
    out = tmp_path / "run"
    if task == "seg":
        from tasks.seg_synthetic import make_synthetic_voc

        bad = make_synthetic_voc(out / "data", num_train=8, num_val=4) / "JPEGImages" / "synth_val_00002.jpg"
    else:
        from tasks.det_synthetic import make_synthetic_voc

        bad = make_synthetic_voc(out / "synthetic_voc", num_train=8, num_val=4) / "JPEGImages" / "val_00002.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a JPEG")
    train, tiny = (seg_train, SEG_TINY) if task == "seg" else (det_train, DET_TINY)
    with pytest.raises(ValueError, match=f"cannot decode image .*{bad.name}"):
        train.main([*tiny, "--iters", "2", "--out", str(out)])
    assert not (out / "last.pt").exists() and not (out / "metrics.jsonl").exists()


def test_detection_resume_names_what_differs(runs, tmp_path):
    out = tmp_path / "det"
    shutil.copytree(runs["det"], out)
    with pytest.raises(ValueError, match=r"--backbone ld_mobilenetv2_050 \(checkpoint: ld_mobilenetv2_035\); "
                                         r"--size 96 \(checkpoint: 64\)"):
        det_train.main(["--out", str(out), "--resume", "--backbone", "ld_mobilenetv2_050", "--size", "96"])
    with pytest.raises(ValueError, match="cannot be resumed by tasks.det_train: it is a segmentation"):
        det_train.main(["--out", str(out), "--resume", str(runs["seg"] / "last.pt")])
    for train in (seg_train, det_train):
        with pytest.raises(FileNotFoundError, match="nothing to resume: .*empty/last.pt does not exist"):
            train.main(["--out", str(tmp_path / "empty"), "--resume"])


def test_finished_run_says_so_and_partial_writes_are_cleaned(runs, tmp_path, capsys):
    out = tmp_path / "seg"
    shutil.copytree(runs["seg"], out)
    (out / ".last.pt.x1y2.tmp").write_bytes(b"half a checkpoint")
    before = load_checkpoint(out / "last.pt")
    seg_train.main(["--out", str(out), "--resume"])
    assert "already finished its 2 steps: nothing to resume" in capsys.readouterr().out
    assert not (out / ".last.pt.x1y2.tmp").exists()
    assert load_checkpoint(out / "last.pt")["iteration"] == before["iteration"]


def test_data_roots_are_stored_absolute(runs, tmp_path, monkeypatch):
    data = tmp_path / "voc"
    shutil.copytree(runs["seg"] / "data" / "VOC2012", data)
    monkeypatch.chdir(tmp_path)
    seg_train.main([*SEG_TINY, "--data-root", "voc", "--num-classes", "5", "--iters", "1", "--out", "run",
                    "--pretrained", "none"])
    assert load_checkpoint(tmp_path / "run" / "last.pt")["data"]["root"] == str(data.resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert 0 <= seg_eval.main([str(tmp_path / "run" / "last.pt"), "--workers", "0"]).miou <= 1


@pytest.mark.parametrize("train", [seg_train, det_train])
def test_missing_data_is_found_before_any_download(train, tmp_path, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("tried to download weights before checking the data")

    monkeypatch.setattr("backbones.weights.download", no_download)
    with pytest.raises((FileNotFoundError, ValueError), match="nonexistent"):
        train.main(["--data-root", str(tmp_path / "nonexistent"), "--out", str(tmp_path / "run")])


def _command(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_a_label_error_in_a_loader_worker_is_one_line(runs, tmp_path):
    data = tmp_path / "voc"
    shutil.copytree(runs["seg"] / "data" / "VOC2012", data)
    label = data / "SegmentationClass" / "synth_train_00003.png"
    mask = Image.fromarray(np.full((64, 64), 9, np.uint8), mode="L")
    with Image.open(data / "JPEGImages" / "synth_train_00003.jpg") as image:
        mask.resize(image.size).save(label)
    proc = _command("-m", "tasks.seg_train", *SEG_TINY, "--data-root", str(data), "--num-classes", "5",
                    "--workers", "1", "--iters", "4", "--pretrained", "none", "--out", str(tmp_path / "run"))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines[-1].startswith("python -m tasks.seg_train: error: label ") and "holds values [9]" in lines[-1]


def test_unreadable_images_in_predict_and_eval_are_named(runs, tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "garbage.jpg").write_bytes(b"definitely not an image")
    good = runs["det"] / "synthetic_voc" / "JPEGImages" / "val_00000.jpg"
    (photos / "truncated.jpg").write_bytes(good.read_bytes()[:300])
    for name in ("garbage.jpg", "truncated.jpg"):
        with pytest.raises(ValueError, match=f"cannot decode image .*{name}"):
            det_predict.main([str(runs["det"] / "last.pt"), str(photos / name), "--out", str(tmp_path / name)])
    with pytest.raises(FileNotFoundError, match="input not found: .*missing.jpg"):
        det_predict.main([str(runs["det"] / "last.pt"), str(photos / "missing.jpg")])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="--device cuda was asked for, but no CUDA GPU is available"):
        det_predict.main([str(runs["det"] / "last.pt"), str(good), "--device", "cuda", "--out", str(tmp_path / "c")])


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "X"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to find the ranks")
def test_a_frozen_rank_fails_the_job_after_dist_timeout(tmp_path):
    out = tmp_path / "ddp"
    proc = _torchrun_det_train(out, "--dist-timeout", "5")
    ranks: list[int] = []
    try:
        _wait_for_step(out / "metrics.jsonl", 2, proc)
        ranks = _children(proc.pid)
        assert len(ranks) == 2, ranks
        frozen, waiting = sorted(ranks, key=lambda pid: -pid)
        os.kill(frozen, signal.SIGSTOP)  # one rank freezes; the other waits in the next collective
        deadline = time.time() + 90  # without --dist-timeout it would wait 30 minutes (gloo's default)
        while time.time() < deadline and Path(f"/proc/{waiting}").exists() and _state(waiting) != "Z":
            time.sleep(0.2)
        assert not Path(f"/proc/{waiting}").exists() or _state(waiting) == "Z", "the waiting rank never gave up"
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
        for pid in {*ranks, *_children(proc.pid)}:  # the stopped rank outlives torchrun: it ignores SIGTERM
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
