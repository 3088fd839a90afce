"""Shared training infrastructure: checkpoints, RNG capture, sampling, schedule, logging, plots."""

from __future__ import annotations

import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tasks import engine
from tasks.engine.memory import glibc


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def test_rng_state_round_trips_through_weights_only_checkpoint(tmp_path):
    engine.seed_everything(3)
    _draws()
    engine.atomic_save({"rng": engine.capture_rng_state()}, tmp_path / "s.pt")
    expected = _draws()
    engine.seed_everything(99)
    engine.restore_rng_state(engine.load_checkpoint(tmp_path / "s.pt")["rng"])
    assert _draws() == expected


def test_atomic_save_leaves_previous_file_when_writing_fails(tmp_path):
    target = tmp_path / "last.pt"
    engine.atomic_save({"a": torch.ones(2)}, target)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        engine.atomic_save({"a": Unpicklable()}, target)
    assert torch.equal(engine.load_checkpoint(target)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


@pytest.mark.parametrize("content,match", [(b"not a checkpoint", "cannot read"), (None, "not found")])
def test_load_checkpoint_names_bad_file(tmp_path, content, match):
    path = tmp_path / "bad.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        engine.load_checkpoint(path)


def test_checkpoint_manager_keeps_best_and_restores_it(tmp_path):
    manager = engine.CheckpointManager(tmp_path, mode="max")
    written = [manager.update_best({"v": v}, v) for v in (0.3, 0.2, 0.5)]
    manager.save_last({"v": 0.5})
    assert written == [True, False, True]
    assert engine.load_checkpoint(manager.best_path)["v"] == 0.5
    fresh = engine.CheckpointManager(tmp_path)
    fresh.load_last()
    assert fresh.best == 0.5 and not fresh.is_better(0.4)


def _lrs(make_scheduler, lr: float, steps: int) -> list[float]:
    """The learning rate seen at each of ``steps`` iterations of a fresh SGD under ``make_scheduler``."""
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    sched, lrs = make_scheduler(opt), []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def test_poly_schedule_matches_formula():
    lrs = _lrs(lambda opt: engine.poly_lr_scheduler(opt, total_iters=10, power=0.9), 0.01, 10)
    assert lrs == pytest.approx([0.01 * (1 - i / 10) ** 0.9 for i in range(10)])


def test_cosine_schedule_warms_up_then_decays_to_zero():
    lrs = _lrs(lambda opt: engine.cosine_scheduler(opt, total_iters=10, warmup_iters=2), 0.1, 11)
    expected = [0.05, 0.1] + [0.05 * (1 + math.cos(math.pi * i / 8)) for i in range(9)]
    assert lrs == pytest.approx(expected)
    with pytest.raises(ValueError, match="warmup must be shorter than training"):
        engine.cosine_scheduler(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1), total_iters=5,
                                warmup_iters=5)


def test_eval_shards_are_disjoint_and_complete():
    shards = [engine.eval_shard(10, rank, 3) for rank in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(10))


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.head = nn.Conv2d(4, 2, 1)


@pytest.mark.parametrize("decay_norm_and_bias", [True, False])
def test_param_groups_apply_backbone_multiplier(decay_norm_and_bias):
    model = _Net()
    groups = engine.param_groups(model, lr=0.1, weight_decay=1e-4, backbone_lr_mult=0.1,
                                 decay_norm_and_bias=decay_norm_and_bias)
    by_param = {id(p): g for g in groups for p in g["params"]}
    assert len(by_param) == sum(1 for _ in model.parameters())
    assert all(by_param[id(p)]["lr"] == pytest.approx(0.01) for p in model.backbone.parameters())
    assert all(by_param[id(p)]["lr"] == 0.1 for p in model.head.parameters())
    bn_decay = by_param[id(model.backbone[1].weight)]["weight_decay"]
    assert bn_decay == (1e-4 if decay_norm_and_bias else 0.0)


def test_param_groups_reject_model_without_backbone():
    with pytest.raises(ValueError, match="no submodule 'backbone'"):
        engine.param_groups(nn.Linear(2, 2), lr=0.1, weight_decay=0.0)


@pytest.mark.parametrize("num_samples,world_size", [(10, 1), (10, 3), (2, 4)])
def test_sampler_shards_cover_dataset_with_stable_seeds(num_samples, world_size):
    shards = [engine.SeededShardSampler(num_samples, seed=5, rank=r, world_size=world_size)
              for r in range(world_size)]
    for s in shards:
        s.set_epoch(2)
    items = [list(s) for s in shards]
    assert {i for shard in items for i, _ in shard} == set(range(num_samples))
    assert len({len(shard) for shard in items}) == 1
    shards[0].set_epoch(2, skip=1)
    assert list(shards[0]) == items[0][1:]
    shards[0].set_epoch(3)
    assert list(shards[0]) != items[0] or num_samples < 3


def test_metrics_log_truncates_rows_after_resume_point(tmp_path):
    log = engine.MetricsLog(tmp_path)
    for step in (1, 2, 3):
        log.log("train", step, loss=torch.tensor(float(step)))
    log.truncate_after(2)
    assert [(r["step"], r["loss"]) for r in engine.read_metrics(log.path)] == [(1, 1.0), (2, 2.0)]


def test_plots_write_pngs(tmp_path):
    rows = [{"split": "train", "step": i, "loss": 1 / (i + 1)} for i in range(5)]
    curve = engine.plot_curves(rows, tmp_path / "curves.png", curves=[("train", "loss"), ("val", "miou")])
    panel = engine.save_panels([[np.zeros((8, 8, 3), np.uint8)] * 2], tmp_path / "p.png", titles=["a", "b"])
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in (curve, panel))


def test_single_process_setup_and_cpu_precision(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = engine.setup_distributed("cpu")
    assert (info.rank, info.world_size, info.is_main, info.device.type) == (0, 1, True, "cpu")
    assert engine.all_reduce_sum(torch.ones(2)).tolist() == [1.0, 1.0]
    precision = engine.Precision(info.device, amp=True, channels_last=True)
    assert not precision.amp and precision.autocast().__class__.__name__ == "nullcontext"
    x = precision.prepare_input(torch.zeros(1, 3, 4, 4))
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_training_state_restores_model_optimizer_schedule_and_rng(tmp_path):
    torch.manual_seed(0)
    model = _Net()
    opt = torch.optim.SGD(engine.param_groups(model, lr=0.1, weight_decay=1e-4), lr=0.1, momentum=0.9)
    sched = engine.poly_lr_scheduler(opt, total_iters=10)
    precision = engine.Precision(torch.device("cpu"))

    def step() -> None:
        loss = model.head(model.backbone(torch.randn(2, 3, 6, 6))).square().mean()
        precision.backward_step(loss, opt)
        sched.step()

    step()
    engine.atomic_save(engine.training_state(model, opt, scheduler=sched, precision=precision, iteration=1,
                                             epoch=0), tmp_path / "s.pt")
    step()
    expected = [p.clone() for p in model.parameters()]
    for _ in range(3):
        step()
    state = engine.load_checkpoint(tmp_path / "s.pt")
    assert engine.restore_training_state(state, model, opt, scheduler=sched, precision=precision) == (1, 0)
    step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), expected))
    with pytest.raises(ValueError, match="missing"):
        engine.restore_training_state({"model": {}}, model, opt, scheduler=sched, precision=precision)


def test_cpu_threads_keep_at_most_a_quarter_of_the_cores_for_workers(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    before = torch.get_num_threads()
    info = engine.DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    try:
        for cores, workers, expected in ((2, 4, 2), (4, 1, 3), (16, 2, 14), (16, 8, 12), (64, 4, 60)):
            monkeypatch.setattr("os.cpu_count", lambda cores=cores: cores)
            assert engine.set_cpu_threads(info, workers=workers) == expected, (cores, workers)
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        assert engine.set_cpu_threads(info, workers=4) == 28  # 32 cores per process, 4 kept for workers
        assert engine.set_cpu_threads(info, threads=2) == 2
        with pytest.raises(ValueError, match="threads must be positive"):
            engine.set_cpu_threads(info, threads=0)
    finally:
        torch.set_num_threads(before)


def test_task_cli_reports_user_errors_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tasks.det_train", "--data-root", str(tmp_path / "missing"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("python -m tasks.det_train: error: ")
    assert "missing is not a VOC directory" in proc.stderr and "Traceback" not in proc.stderr


def test_pretrained_words_map_to_create_backbone_values():
    from tasks.engine.cli import pretrained_arg

    assert [pretrained_arg(v) for v in (None, "none", "NONE", "default", "torchvision_v1", "w.pth")] == \
        [False, False, False, True, "torchvision_v1", "w.pth"]


MMAP_PROBE = """
import ctypes, importlib.util
spec = importlib.util.spec_from_file_location("memory", "tasks/engine/memory.py")  # without torch: a fast start
memory = importlib.util.module_from_spec(spec)
spec.loader.exec_module(memory)
glibc, reuse_freed_memory = memory.glibc, memory.reuse_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks "
                                                      "fordblks keepcost").split()]

libc = glibc()
libc.mallinfo2.restype, libc.malloc.restype, libc.free.argtypes = MallInfo2, ctypes.c_void_p, [ctypes.c_void_p]
def mapped_mib(mib):  # how much of a block of that size glibc maps on its own
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(mib << 20)
    mapped = (libc.mallinfo2().hblkhd - before) >> 20
    libc.free(block)
    return mapped
# default; reused; back to the default (larger than the heap's free 64 MiB, which it would serve first)
print(mapped_mib(64), reuse_freed_memory(), mapped_mib(64), reuse_freed_memory(False), mapped_mib(256))
"""


@pytest.mark.skipif(glibc() is None, reason="mallopt settings are glibc's")
def test_reusing_freed_memory_serves_large_blocks_from_the_heap():
    """By default glibc maps a 64 MiB block on its own (and unmaps it on free); with freed memory reused it comes
    from the heap, and the default comes back. In a fresh process: the trainers set it in this one."""
    out = subprocess.run([sys.executable, "-c", MMAP_PROBE], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    assert out.split() == ["64", "True", "0", "True", "256"]


def test_inference_commands_reuse_freed_memory_on_cpu(monkeypatch):
    """seg/det eval and predict start through ``start_inference``: on CPU it keeps freed memory in the heap."""
    import argparse

    from tasks.engine import inference

    calls = []
    monkeypatch.setattr(inference, "reuse_freed_memory", lambda enabled=True: calls.append(enabled) or True)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    model.fuse = lambda: model
    args = argparse.Namespace(device="cpu", threads=torch.get_num_threads(), model="best.pt", fuse=True)
    info, loaded, checkpoint = inference.start_inference(args, task="seg",
                                                         load_model=lambda path, device: (model, {"path": path}))
    assert calls == [True] and info.device.type == "cpu" and loaded is model and checkpoint == {"path": "best.pt"}
