"""``python -m tasks.benchmark --quick`` end to end (files, groups, refusal to overwrite) and the measuring pieces
it rests on: interleaving, MAC counting, peak memory, and the phase-by-phase SSD forward."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from heads import create_detector
from tasks import benchmark
from tasks.engine.memory import glibc
from tasks.bench.detection import postprocess_group, ssd_phases
from tasks.bench.measure import Comparison, Subject, count_gmacs, peak_memory_mb, summarize, time_interleaved
from tasks.bench.models import train_step_group


def test_quick_run_writes_every_group(tmp_path) -> None:
    out = tmp_path / "bench"
    result = benchmark.main(["--quick", "--runtimes", "--clock", "cpu", "--out", str(out)])
    assert sorted(p.name for p in out.iterdir()) == sorted(benchmark.OUTPUT_FILES)
    assert json.loads((out / "benchmark.json").read_text())["groups"] == result["groups"]
    malloc = [g for g in result["groups"] if g["short"].endswith(" malloc")]  # CPU training under two allocators
    assert len(malloc) == (len(benchmark.QUICK.malloc) if glibc() else 0)
    assert len(result["groups"]) == len(benchmark.QUICK.backbone) + len(benchmark.QUICK.seg_strides) + 4 + len(malloc)
    for group in malloc:
        assert all(s["images_per_s"] > 0 for s in group["subjects"].values()) and group["clock"] == "wall"
        assert group["comparisons"][0]["equal_work"] and "Peak resident memory" in group["notes"][-1]
    markdown = (out / "benchmark.md").read_text()
    assert result["settings"]["malloc"] == ("reuse" if glibc() else "default")  # as the task commands run on CPU
    for group in result["groups"]:
        assert f"## {group['title']}" in markdown
        for c in group["comparisons"]:
            same_work = group["short"] == "SSD post" or group in malloc
            assert c["ratio"] > 0 and (c["equal_work"] if same_work else c["work_ratio"] > 0)
            assert f"**{c['ratio']:.2f}** [{c['low']:.2f}–{c['high']:.2f}] | {c['verdict']} |" in markdown
    backbone = result["groups"][0]  # every family, MobileNetV1 against timm's same network
    assert {"ours", "shufflenet", "mobilenetv1"} <= set(backbone["subjects"])
    assert any(c["ours"] == "mobilenetv1" and c["reference"] == "timm_v1" and c["equal_work"]
               for c in backbone["comparisons"])
    detection = next(g for g in result["groups"] if g["title"].startswith("SSDLite"))
    ssdlite = detection["subjects"]["mobilenetv2"]
    assert set(ssdlite["parts"]) == {"pre", "network", "post"}
    assert all(0 < p["median"] <= ssdlite["max"] for p in ssdlite["parts"].values())
    assert [g["clock"] for g in result["groups"] if g not in malloc] == ["cpu"] * (len(result["groups"]) - len(malloc)
                                                                               - 1) + ["wall"]
    loader = result["groups"][-1]["subjects"]
    assert {"seg_0", "det_2"} <= set(loader) and all(s["images_per_s"] > 0 for s in loader.values())
    runtime_rows = {k for g in result["groups"] for k in g["subjects"] if "_ort_" in k}
    assert {k.rsplit("_", 1)[1] for k in runtime_rows} == {"fp32", "int8"}  # --runtimes: ONNX Runtime rows
    assert (out / "benchmark.png").read_bytes().startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="already exist.*another --out"):
        benchmark.main(["--quick", "--groups", "data", "--out", str(out)])


def test_rejects_unknown_groups(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown \\['segmentation'\\]"):
        benchmark.main(["--quick", "--groups", "segmentation", "--out", str(tmp_path)])


def test_rounds_alternate_order_after_warmup() -> None:
    calls: list[str] = []
    subjects = [Subject(k, k, lambda k=k: calls.append(k)) for k in "abc"]
    times = time_interleaved(subjects, reps=3, warmup=2, device=torch.device("cpu"))
    assert calls == list("aabbcc") + list("abc") + list("cba") + list("abc")
    assert all(len(seconds) == 3 for seconds, _ in times.values())
    assert summarize([0.003, 0.001, 0.002]) == {"median": 2.0, "p25": 1.5, "p75": 2.5, "min": 1.0, "max": 3.0,
                                                "reps": 3}


def test_rounds_go_on_until_the_time_budget_is_spent() -> None:
    import time

    from tasks.bench.measure import MAX_ROUNDS

    def nap() -> None:
        time.sleep(0.01)
    subjects = [Subject(k, k, nap) for k in "ab"]  # a round takes about 20 ms
    rounds = len(time_interleaved(subjects, reps=2, warmup=0, device=torch.device("cpu"), min_seconds=0.2)["a"][0])
    assert 6 <= rounds <= 11  # 0.2 s of 20 ms rounds (sleep overshoots), more than the 2 asked for
    fast = [Subject("c", "c", lambda: None)]
    assert len(time_interleaved(fast, reps=2, warmup=0, device=torch.device("cpu"), min_seconds=60)["c"][0]) \
        == MAX_ROUNDS


def test_training_step_runs_in_both_layouts() -> None:
    """seg_train trains in channels_last on CUDA and NCHW on CPU: the step is timed both ways, smp's too."""
    group = train_step_group(2, 32, torch.device("cpu"))
    first_convs = {s.key: next(m for m in s.model.modules() if isinstance(m, nn.Conv2d)) for s in group.subjects}
    channels_last = {k for k, conv in first_convs.items()
                     if conv.weight.is_contiguous(memory_format=torch.channels_last)}
    assert channels_last == {"smp_cl", "separable_cl", "separable_1280_cl"}
    assert {Comparison("separable_cl", "smp"), Comparison("separable_cl", "smp_cl")} <= set(group.comparisons)


def test_macs_and_peak_memory_are_counted() -> None:
    conv = nn.Conv2d(8, 16, 3, padding=1, groups=2)
    x = torch.randn(1, 8, 10, 10)
    assert count_gmacs(lambda: conv(x)) * 1e9 == pytest.approx(16 * 4 * 9 * 100)
    assert 4.0 <= peak_memory_mb(lambda: torch.ones(1024, 1024).sum(), torch.device("cpu")) < 5.0


def test_ssd_phases_reproduce_the_forward() -> None:
    model = create_detector("ld_mobilenetv2_035", 4, size=96, score_thresh=0.2).eval()
    images = [torch.rand(3, 70, 90), torch.rand(3, 64, 64)]
    with torch.no_grad():
        expected = model(images)
        detections, parts = ssd_phases(model, images)
    assert set(parts) == {"pre", "network", "post"}
    for got, want in zip(detections, expected):
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_post_processing_is_compared_on_the_same_outputs() -> None:
    """The post-processing row is equal work: both select the same detections from the same head outputs."""
    group = postprocess_group(torch.device("cpu"))
    (reference,), (ours,) = ([s.work() for s in group.subjects if s.role == role] for role in ("reference", "ours"))
    assert len(ours[0]["boxes"]) == 300  # random weights: the full 300 detections, the worst case
    for key in ("boxes", "scores", "labels"):
        assert torch.equal(ours[0][key], reference[0][key])


def test_paired_ratio_bounds_the_median_ratio_by_order_statistics() -> None:
    from tasks.bench.measure import paired_ratio

    ours, reference = [0.9, 0.8, 1.1, 0.95, 0.85, 0.92, 0.88, 0.97, 0.93], [1.0] * 9
    r = paired_ratio(ours, reference)  # 9 rounds: the 2nd smallest and 2nd largest ratio, 1 - 2 * 10/512
    assert (r["ratio"], r["low"], r["high"]) == (0.92, 0.85, 0.97) and r["confidence"] == pytest.approx(0.9609, 1e-3)
    assert r["verdict"] == "faster" and r["ratios"] == sorted(ours)
    assert paired_ratio([2.0, 4.0, 6.0, 8.0, 10.0], [1.0, 2.0, 2.5, 4.0, 4.0])["verdict"] == "slower"  # 94%: min, max
    assert paired_ratio([1.1, 0.9, 1.0, 1.2, 0.8], [1.0] * 5)["verdict"] == "unresolved"
    assert paired_ratio([0.5, 0.5], [1.0, 1.0])["verdict"] == "unresolved"  # 2 runs: 50% is no evidence
    with pytest.raises(ValueError):
        paired_ratio([1.0, 2.0], [1.0])


def test_runtime_rows_without_onnxruntime_leave_one_note(monkeypatch) -> None:
    import importlib.util

    from tasks.bench import runtimes

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    notes: list[str] = []
    model, x = nn.Conv2d(3, 4, 1), torch.randn(1, 3, 8, 8)
    assert runtimes.runtime_subjects("a", "a", model, x, notes=notes) == []
    assert runtimes.runtime_subjects("b", "b", model, x, notes=notes) == []
    assert len(notes) == 1 and "onnxruntime is not installed" in notes[0]
