"""The comparison's record: one markdown table (printed and written to ``compare.md``) and ``compare.json``."""

from __future__ import annotations

import statistics
from pathlib import Path

from tasks.engine.metrics_log import write_json
from tasks.voc import VOC_CLASSES

__all__ = ["METRICS", "per_class", "table", "write_report", "write_summary"]

METRICS = {"seg": (("mIoU", "miou"), ("pixel acc", "pixel_acc")), "det": (("mAP VOC07", "map07"), ("mAP area", "map"))}
"""Per task, the (shown name, key) of each score, the first being the one the trainer selects ``best.pt`` by."""
PER_CLASS = {"seg": ("IoU", "iou"), "det": ("AP VOC07", "ap07")}
"""Per task, the (shown name, key) of the per-class score: seg a dict by class name, det a list in VOC order."""
HEADER = ("| task | dataset | budget | metric | reference | ours | ours − ref | reference wall s | ours wall s |\n"
          "|---|---|---|---|---:|---:|---:|---:|---:|")


def _pct(value: float | None) -> str:
    return "–" if value is None or value != value else f"{100 * value:.2f}"


def _signed(value: float) -> str:
    return f"{100 * value:+.2f}"


def per_class(task: str, metrics: dict) -> dict[str, float]:
    """The per-class scores in a trainer's or reference's ``metrics``, by class name, of the classes that have one
    (a class absent from the val split has none)."""
    values = metrics.get(PER_CLASS[task][1]) or {}
    if not isinstance(values, dict):
        values = dict(zip(VOC_CLASSES, values))
    return {name: value for name, value in values.items() if value is not None and value == value}


def _class_rows(task: str, pairs: dict[str, tuple[float | None, float | None]]) -> str:
    rows = [f"| class | reference {PER_CLASS[task][0]} | ours | ours − ref |", "|---|---:|---:|---:|"]
    for name, (ref, ours) in pairs.items():
        diff = "–" if ref is None or ours is None else _signed(ours - ref)
        rows.append(f"| {name} | {_pct(ref)} | {_pct(ours)} | {diff} |")
    return "\n".join(rows)


def _pairs(record: dict) -> dict[str, tuple[float | None, float | None]]:
    ref, ours = record["reference"]["per_class"], record["ours"]["per_class"]
    return {name: (ref.get(name), ours.get(name)) for name in {**ref, **ours}}


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
    text = (f"{table(record)}\n\n{_class_rows(record['task'], _pairs(record))}\n\n"
            f"reference: {record['reference']['model']}\n\nours: {record['ours']['model']}\n\n"
            f"command: `{record['command']}`\n")
    write_json(out / "compare.json", record)
    (out / "compare.md").write_text(text)
    return text


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
    scored: dict[str, list[tuple[float, float]]] = {}
    for record in records:
        for name, (ref, ours) in _pairs(record).items():
            if ref is not None and ours is not None:
                scored.setdefault(name, []).append((ref, ours))
    class_means = {name: (statistics.fmean(r for r, _ in pairs), statistics.fmean(o for _, o in pairs))
                   for name, pairs in scored.items()}
    seeds = [r["budget"]["seed"] for r in records]
    summary = {"task": first["task"], "dataset": first["dataset"], "budget_text": first["budget_text"],
               "seeds": seeds, "metrics": metrics, "command": first["command"],
               "reference_model": first["reference"]["model"], "ours_model": first["ours"]["model"],
               "per_class_mean": {name: {"reference": r, "ours": o, "seeds": len(scored[name])}
                                  for name, (r, o) in class_means.items()},
               "runs": [f"seed_{seed}" for seed in seeds]}
    head = METRICS[first["task"]][0][1]
    wins = f"ours ≥ reference on {metrics[head]['ours_wins']} of {len(seeds)} seeds" if head in metrics else ""
    text = (f"{first['task']} on {first['dataset']}, {first['budget_text']}, seeds {seeds} ({wins}; each seed's "
            f"run and report: seed_<N>/)\n\n" + "\n".join(rows) + "\n\nper class, mean over the seeds that score "
            f"it:\n\n{_class_rows(first['task'], class_means)}\n\nreference: {first['reference']['model']}\n\n"
            f"ours: {first['ours']['model']}\n\ncommand: `{first['command']}`\n")
    write_json(out / "compare.json", summary)
    (out / "compare.md").write_text(text)
    return summary, text
