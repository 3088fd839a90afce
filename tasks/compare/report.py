"""The comparison's record: one markdown table (printed and written to ``compare.md``) and ``compare.json``."""

from __future__ import annotations

import statistics
from pathlib import Path

from tasks.engine.metrics_log import write_json

__all__ = ["METRICS", "table", "write_report", "write_summary"]

METRICS = {"seg": (("mIoU", "miou"), ("pixel acc", "pixel_acc")), "det": (("mAP VOC07", "map07"), ("mAP area", "map"))}
"""Per task, the (shown name, key) of each score, the first being the one the trainer selects ``best.pt`` by."""
HEADER = ("| task | dataset | budget | metric | reference | ours | ours − ref | reference wall s | ours wall s |\n"
          "|---|---|---|---|---:|---:|---:|---:|---:|")


def _pct(value: float | None) -> str:
    return "–" if value is None or value != value else f"{100 * value:.2f}"


def table(record: dict) -> str:
    """The header and one row per metric of a :func:`write_report` record (rows of several runs can be stacked
    under one header)."""
    rows = [HEADER]
    for name, key in METRICS[record["task"]]:
        ref, ours = record["reference"]["metrics"][key], record["ours"]["metrics"][key]
        diff = None if ref is None or ours is None else ours - ref
        sign = "+" if diff is not None and diff >= 0 else ""
        rows.append(f"| {record['task']} | {record['dataset']} | {record['budget_text']} | {name} | {_pct(ref)} | "
                    f"{_pct(ours)} | {sign}{_pct(diff)} | {record['reference']['wall_s']:.0f} | "
                    f"{record['ours']['wall_s']:.0f} |")
    return "\n".join(rows)


def write_report(out: Path, record: dict) -> str:
    """Write ``compare.json`` (``record`` plus the differences) and ``compare.md``; return the markdown."""
    keys = [key for _, key in METRICS[record["task"]]]
    record = {**record, "difference": {k: record["ours"]["metrics"][k] - record["reference"]["metrics"][k]
                                       for k in keys if None not in (record["ours"]["metrics"][k],
                                                                     record["reference"]["metrics"][k])}}
    text = (f"{table(record)}\n\nreference: {record['reference']['model']}\n\nours: {record['ours']['model']}\n\n"
            f"command: `{record['command']}`\n")
    write_json(out / "compare.json", record)
    (out / "compare.md").write_text(text)
    return text


def _signed(value: float) -> str:
    return f"{100 * value:+.2f}"


def _mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def write_summary(out: Path, records: list[dict]) -> tuple[dict, str]:
    """Several seeds' records (of :func:`write_report`): every seed's scores, their mean and sample standard
    deviation, and the seeds ours wins, in ``compare.json`` and ``compare.md`` under ``out``."""
    first = records[0]
    rows = ["| metric | seed | reference | ours | ours − ref |", "|---|---|---:|---:|---:|"]
    metrics = {}
    for name, key in METRICS[first["task"]]:
        ref = [r["reference"]["metrics"][key] for r in records]
        ours = [r["ours"]["metrics"][key] for r in records]
        if None in ref or None in ours:
            continue
        diff = [o - r for o, r in zip(ours, ref)]
        for r, o, d, record in zip(ref, ours, diff, records):
            rows.append(f"| {name} | {record['budget']['seed']} | {_pct(r)} | {_pct(o)} | {_signed(d)} |")
        (rm, rs), (om, os_), (dm, ds) = _mean_sd(ref), _mean_sd(ours), _mean_sd(diff)
        rows.append(f"| {name} | mean ± sd | {_pct(rm)} ± {_pct(rs)} | {_pct(om)} ± {_pct(os_)} | "
                    f"{_signed(dm)} ± {_pct(ds)} |")
        metrics[key] = {"reference": ref, "ours": ours, "difference": diff, "reference_mean": rm, "ours_mean": om,
                        "difference_mean": dm, "difference_sd": ds, "ours_wins": sum(d >= 0 for d in diff)}
    seeds = [r["budget"]["seed"] for r in records]
    summary = {"task": first["task"], "dataset": first["dataset"], "budget_text": first["budget_text"],
               "seeds": seeds, "metrics": metrics, "command": first["command"],
               "reference_model": first["reference"]["model"], "ours_model": first["ours"]["model"],
               "runs": [f"seed_{seed}" for seed in seeds]}
    head = METRICS[first["task"]][0][1]
    wins = f"ours ≥ reference on {metrics[head]['ours_wins']} of {len(seeds)} seeds" if head in metrics else ""
    text = (f"{first['task']} on {first['dataset']}, {first['budget_text']}, seeds {seeds} ({wins}; each seed's "
            f"run and report: seed_<N>/)\n\n" + "\n".join(rows) +
            f"\n\nreference: {first['reference']['model']}\n\nours: {first['ours']['model']}\n\n"
            f"command: `{first['command']}`\n")
    write_json(out / "compare.json", summary)
    (out / "compare.md").write_text(text)
    return summary, text
