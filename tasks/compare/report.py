"""The comparison's record: one markdown table (printed and written to ``compare.md``) and ``compare.json``."""

from __future__ import annotations

from pathlib import Path

from tasks.engine.metrics_log import write_json

__all__ = ["METRICS", "table", "write_report"]

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
