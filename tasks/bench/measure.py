"""Side-by-side measurement: interleaved timing, counted GMACs, peak memory, and one group's results.

A :class:`Group` is a set of :class:`Subject` s doing the same job (ours and the references). All of them are warmed
up, then timed in rounds; each round runs every subject once, in alternating order, so machine noise (other jobs,
frequency changes) falls on all of them alike and their ratios stay fair even when absolute times drift.
"""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["CLOCKS", "Comparison", "Group", "Subject", "count_gmacs", "paired_ratio", "peak_memory_mb", "run_group",
           "summarize", "synchronize"]

# A subject's callable runs the work once; it may return {part: seconds} timed inside (e.g. network, post).
Work = Callable[[], object]
EQUAL_WORK = 0.10
"""Two subjects do equal work when their counted MACs differ by at most this fraction."""
MAX_ROUNDS = 200
"""The most timed rounds a group gets when it runs longer to fill its time budget."""
VERDICT_CONFIDENCE = 0.9
"""The least confidence of a paired-ratio interval that calls ours faster or slower (5 runs give 94%, 9 give 96%)."""
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
"""``wall``: elapsed time. ``cpu``: CPU time of this process, which leaves out the time the OS gives other jobs on a
shared machine (meaningful for one compute thread on CPU, where it equals the compute time)."""


@dataclass
class Subject:
    """One model doing the group's work: ``key`` names it in comparisons, ``label`` in the report."""

    key: str
    label: str
    work: Work
    model: nn.Module | None = None
    role: str = "ours"  # or "reference"
    images: int | None = None  # images one run processes: the report adds images/s
    counted: Work | None = None  # what MACs are counted on, when not ``work`` (e.g. a training step's forward pass)
    same_work_as: str | None = None  # key of a subject doing the same MACs (this is a fused copy of it)
    memory: bool = True  # whether the PyTorch profiler can see the run's allocations


@dataclass(frozen=True)
class Comparison:
    """``ours`` against ``reference`` (subject keys): the report gives ``ours / reference`` time and work."""

    ours: str
    reference: str


@dataclass
class Group:
    """Subjects doing the same job, timed together, and the comparisons to report."""

    title: str
    short: str  # for the chart
    subjects: list[Subject]
    comparisons: list[Comparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    count_work: bool = True  # count GMACs and peak memory (off for data loading)
    same_work: bool = False  # the subjects do the same work by construction (when MACs do not measure it)
    clock: str | None = None  # force a clock of CLOCKS (data loading: wall, its work is in other processes)
    finish: Callable[[], list[str]] | None = None  # after timing: release what the subjects hold; returns notes


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so wall-clock time covers the kernels; nothing to wait for on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarize(seconds: Sequence[float]) -> dict[str, float]:
    """Median, quartiles, minimum and maximum of ``seconds``, in milliseconds."""
    ms = sorted(1000.0 * s for s in seconds)
    quartiles = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) > 1 else [ms[0]] * 3
    return {"median": statistics.median(ms), "p25": quartiles[0], "p75": quartiles[2], "min": ms[0],
            "max": ms[-1], "reps": len(ms)}


def time_interleaved(subjects: Sequence[Subject], *, reps: int, warmup: int, device: torch.device,
                     clock: Callable[[], float] = time.perf_counter,
                     min_seconds: float = 0.0) -> dict[str, tuple[list[float], list[dict]]]:
    """Per subject key: seconds of each timed run on ``clock`` and the parts it reported; rounds alternate order.

    At least ``reps`` rounds, more (up to :data:`MAX_ROUNDS`) until the rounds took ``min_seconds`` of wall time:
    fast models get enough rounds for a tight interval of their ratios, slow ones are not held longer.
    """
    for subject in subjects:
        for _ in range(warmup):
            subject.work()
    synchronize(device)
    results: dict[str, tuple[list[float], list[dict]]] = {s.key: ([], []) for s in subjects}
    began, rep = time.perf_counter(), 0
    while rep < reps or (rep < MAX_ROUNDS and time.perf_counter() - began < min_seconds):
        for subject in subjects if rep % 2 == 0 else subjects[::-1]:
            synchronize(device)
            start = clock()
            parts = subject.work()
            synchronize(device)
            results[subject.key][0].append(clock() - start)
            results[subject.key][1].append(parts if isinstance(parts, dict) else {})
        rep += 1
    return results


def paired_ratio(ours: Sequence[float], reference: Sequence[float], confidence: float = 0.95) -> dict:
    """Ours / reference time from runs paired by round: the median of the per-round ratios and an interval holding
    the true median ratio with at least ``confidence`` (or the widest the runs allow, whose confidence it gives).

    Pairing cancels the drift both runs of a round share (other jobs, clock frequency). The interval is
    distribution-free: the k-th smallest and k-th largest ratio bound the median with probability
    1 - 2 P(Binomial(n, 1/2) < k) (the sign test's interval for a median).
    ``verdict``: ``faster`` or ``slower`` when the interval lies below or above 1 with at least
    :data:`VERDICT_CONFIDENCE`, else ``unresolved``.
    """
    ratios = sorted(a / b for a, b in zip(ours, reference, strict=True))
    n = len(ratios)

    def coverage(k: int) -> float:
        return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2**n

    k = 1
    while k + 1 <= (n + 1) // 2 and coverage(k + 1) >= confidence:
        k += 1
    low, high = ratios[k - 1], ratios[n - k]
    sure = coverage(k) >= VERDICT_CONFIDENCE
    verdict = "faster" if sure and high < 1 else "slower" if sure and low > 1 else "unresolved"
    return {"ratio": statistics.median(ratios), "low": low, "high": high, "confidence": coverage(k),
            "verdict": verdict, "ratios": ratios}


def count_gmacs(work: Work) -> float:
    """Multiply-accumulates of one run, in billions, counted by ``torch.utils.flop_counter`` (2 FLOPs per MAC;
    convolutions and matrix products only, so resizing, NMS and elementwise work are not in it)."""
    with FlopCounterMode(display=False) as counter:
        work()
    return counter.get_total_flops() / 2e9


def peak_memory_mb(work: Work, device: torch.device) -> float:
    """Peak of the memory one run allocates on top of what is already held (weights, inputs), in MiB.

    CUDA: the caching allocator's peak statistic. CPU: the running sum of the allocations and frees the profiler
    records, in time order.
    """
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        work()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        work()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak / 2**20


def _parameters_m(model: nn.Module | None) -> float | None:
    return None if model is None else sum(p.numel() for p in model.parameters()) / 1e6


def run_group(group: Group, *, reps: int, warmup: int, device: torch.device, clock: str = "wall",
              min_seconds: float = 0.0) -> dict:
    """Time (on ``CLOCKS[clock]``; see :func:`time_interleaved`), count and compare the group's subjects; returns
    what the JSON holds."""
    clock = group.clock or clock
    timed = time_interleaved(group.subjects, reps=reps, warmup=warmup, device=device, clock=CLOCKS[clock],
                             min_seconds=min_seconds)
    subjects = {}
    for s in group.subjects:
        seconds, parts = timed[s.key]
        entry = {"label": s.label, "role": s.role, **summarize(seconds), "params_m": _parameters_m(s.model)}
        if s.images:
            entry["images_per_s"] = s.images / (entry["median"] / 1000)
        if parts[0]:
            entry["parts"] = {name: summarize([p[name] for p in parts]) for name in parts[0]}
        if group.count_work:
            same = subjects.get(s.same_work_as)
            entry["gmacs"] = same["gmacs"] if same else count_gmacs(s.counted or s.work)
            entry["peak_mb"] = peak_memory_mb(s.work, device) if s.memory else None
        subjects[s.key] = entry
    comparisons = []
    for c in group.comparisons:
        ours, ref = subjects[c.ours], subjects[c.reference]
        work = ours["gmacs"] / ref["gmacs"] if group.count_work and ref["gmacs"] else None
        comparisons.append({"ours": c.ours, "reference": c.reference,
                            **paired_ratio(timed[c.ours][0], timed[c.reference][0]),
                            "ratio_of_medians": ours["median"] / ref["median"], "work_ratio": work,
                            "equal_work": group.same_work or (work is not None and abs(work - 1) <= EQUAL_WORK)})
    notes = group.notes + (group.finish() if group.finish else [])
    rounds = len(timed[group.subjects[0].key][0])
    return {"title": group.title, "short": group.short, "clock": clock, "rounds": rounds, "subjects": subjects,
            "comparisons": comparisons, "notes": notes}
