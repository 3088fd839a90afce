"""The benchmark's files: ``benchmark.md`` (tables), ``benchmark.json`` (every number) and ``benchmark.png`` (the
ours/reference time ratios as bars). Files are created exclusively: an existing one is never overwritten."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import matplotlib
import torch

from .measure import MAX_ROUNDS, VERDICT_CONFIDENCE

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)

__all__ = ["OUTPUT_FILES", "machine_info", "markdown", "ratio_chart", "write_report"]

OUTPUT_FILES = ("benchmark.md", "benchmark.json", "benchmark.png")
CLOCK_WORDS = {"wall": "wall clock", "cpu": "process CPU-time clock (time taken by other jobs left out; data loading "
                                            "stays on the wall clock)"}

MALLOC_WORDS = {"reuse": "Freed memory stays in the heap (glibc `mallopt`, as the task commands run on CPU).",
                "default": "glibc's default malloc (large blocks go back to the kernel when freed)."}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict:
    """CPU, core count, accelerator, library versions and the load average (other jobs make times noisy)."""
    import segmentation_models_pytorch as smp
    import timm
    import torchvision

    info = {"cpu": _cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "timm": timm.__version__, "smp": smp.__version__, "device": str(device),
            "torch_threads": torch.get_num_threads(), "load_average": list(os.getloadavg())}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _number(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if abs(value) < 100 else f"{value:.0f}"


def _time(s: dict) -> str:
    return f"{_number(s['median'], 1)} [{_number(s['p25'], 1)}–{_number(s['p75'], 1)}]"


def _ratio_rows(groups: list[dict]) -> list[str]:
    rows = ["| work | ours | reference | time ratio [interval] | verdict | MACs ratio | equal work |",
            "|---|---|---|---|---|---|---|"]
    for g in groups:
        for c in g["comparisons"]:
            ours, ref = g["subjects"][c["ours"]], g["subjects"][c["reference"]]
            rows.append(f"| {g['title']} | {ours['label']} | {ref['label']} | **{c['ratio']:.2f}** "
                        f"[{c['low']:.2f}–{c['high']:.2f}] | {c['verdict']} | {_number(c['work_ratio'])} | "
                        f"{'yes' if c['equal_work'] else 'no'} |")
    return rows


def _group_rows(group: dict) -> list[str]:
    subjects = group["subjects"].values()
    if any("images_per_s" in s for s in subjects):
        what, run = ("loader", "epoch") if group["short"] == "data" else ("model", "step")
        rows = [f"| {what} | images/s | ms per {run} [IQR] |", "|---|---|---|"]
        rows += [f"| {s['label']} | {s['images_per_s']:.1f} | {_time(s)} |" for s in subjects]
        return rows
    with_parts = any("parts" in s for s in subjects)
    rows = ["| model | ms [IQR] |" + (" parts, median ms |" if with_parts else "")
            + " params (M) | GMACs | peak MB |", "|---|---|" + ("---|" if with_parts else "") + "---|---|---|"]
    for s in subjects:
        parts = ", ".join(f"{k} {_number(v['median'], 1)}" for k, v in s.get("parts", {}).items())
        name = f"{s['label']} (reference)" if s["role"] == "reference" else s["label"]
        rows.append(f"| {name} | {_time(s)} |" + (f" {parts} |" if with_parts else "")
                    + f" {_number(s['params_m'])} | {_number(s.get('gmacs'))} | {_number(s.get('peak_mb'), 1)} |")
    return rows


def _confidences(result: dict) -> str:
    levels = [c["confidence"] for g in result["groups"] for c in g["comparisons"]]
    return f"at least {min(levels):.0%}" if levels else "no"


def _header(result: dict) -> list[str]:
    m, s = result["machine"], result["settings"]
    gpu = f", {m['gpu']}" if "gpu" in m else ""
    machine = (f"Machine: {m['cpu']}, {m['cores']} cores{gpu}; device `{m['device']}`, {m['torch_threads']} torch "
               f"thread(s); torch {m['torch']}, torchvision {m['torchvision']}, timm {m['timm']}, smp {m['smp']}; "
               f"load average {m['load_average'][0]:.1f} at the start, {result['load_average_end'][0]:.1f} at the end.")
    rounds = (f"at least {s['reps']} timed rounds, more until a group's rounds took {s['min_seconds']:g} s (at most "
              f"{MAX_ROUNDS})" if s["min_seconds"] else f"{s['reps']} timed rounds")
    method = (f"Command: `{s['command']}`. {s['warmup']} warm-up run(s) and {rounds} of every model, interleaved "
              "(each round runs every model once, alternating order); times are medians with the "
              f"interquartile range, on the {CLOCK_WORDS[s['clock']]}. {MALLOC_WORDS[s['malloc']]} "
              "Random weights, eval mode unless stated. "
              "Time ratio: the median over rounds of ours / reference in the same round (below 1: ours is faster); "
              f"[interval]: it holds the true median ratio with {_confidences(result)} confidence (the sign test's "
              "order-statistic interval); verdict: faster or slower when the interval lies below or above 1 "
              f"with at least {VERDICT_CONFIDENCE:.0%} confidence, else unresolved. MACs ratio: ours / reference "
              "counted multiply-accumulates; equal work: within 10%.")
    return ["# lightdense benchmark", "", machine, "", method]


def markdown(result: dict) -> str:
    """The report as Markdown: how it was measured, every ratio, then one table per group."""
    lines = [*_header(result), "", "## Ratios", "", *_ratio_rows(result["groups"])]
    for g in result["groups"]:
        lines += ["", f"## {g['title']}", "", f"{g['rounds']} timed rounds.", "", *_group_rows(g)]
        lines += [""] + [f"- {n}" for n in g["notes"]] if g["notes"] else []
    if result["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result["notes"]]
    return "\n".join(lines) + "\n"


def ratio_chart(result: dict, path: Path) -> None:
    """Horizontal bars of every time ratio with its interval (equal-work pairs dark, others light), a line at 1."""
    labels, ratios, spread, equal = [], [], [[], []], []
    for g in result["groups"]:
        for c in g["comparisons"]:
            labels.append(f"{g['short']}: {g['subjects'][c['ours']]['label']} / "
                          f"{g['subjects'][c['reference']]['label'].split()[0]}")
            ratios.append(c["ratio"])
            spread[0].append(c["ratio"] - c["low"])
            spread[1].append(c["high"] - c["ratio"])
            equal.append(c["equal_work"])
    fig, ax = plt.subplots(figsize=(13, 0.26 * len(ratios) + 1.2))
    ax.barh(range(len(ratios)), ratios, xerr=spread, error_kw={"lw": 0.8, "capsize": 2},
            color=["tab:blue" if e else "lightsteelblue" for e in equal])
    ax.axvline(1.0, color="black", lw=1)
    ax.set_yticks(range(len(ratios)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("time ours / reference (below 1: ours faster; dark: equal work)")
    fig.tight_layout()
    with open(path, "xb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def write_report(result: dict, out: Path) -> list[Path]:
    """Write the three files into ``out``; raises FileExistsError rather than replace one."""
    out.mkdir(parents=True, exist_ok=True)
    md, js, png = (out / name for name in OUTPUT_FILES)
    with open(md, "x") as f:
        f.write(markdown(result))
    with open(js, "x") as f:
        json.dump(result, f, indent=1)
    ratio_chart(result, png)
    return [md, js, png]
