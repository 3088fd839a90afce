"""Run records: a JSON-lines metrics log, optional TensorBoard, and progress on rank 0 only (tqdm bars in a
terminal; plain lines otherwise, since tqdm's carriage returns pile up into one huge line in log files)."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from tqdm.auto import tqdm

__all__ = ["TIMING_KEYS", "MetricsLog", "json_safe", "progress", "read_metrics", "without_timing", "write_json"]


def _plain(value: object) -> object:
    """Convert tensors / numpy scalars to Python numbers so they serialise as JSON."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def json_safe(value: object) -> object:
    """``value`` with tensors as numbers and NaN/inf as ``None`` (JSON has no NaN: a class absent from a split has
    no score, ``null``), recursively through dicts and lists."""
    value = _plain(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json(path: str | os.PathLike, obj: object) -> Path:
    """Write ``obj`` as indented, valid JSON (see :func:`json_safe`) atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Rows of a metrics log (one JSON object per line); an absent file gives no rows."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


TIMING_KEYS = frozenset({"images_per_s"})
"""Fields of a row measured by the wall clock: a resumed or repeated run reproduces every other field exactly."""


def without_timing(rows: list[dict]) -> list[dict]:
    """``rows`` without their :data:`TIMING_KEYS`, to compare two runs of the same configuration."""
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


class MetricsLog:
    """Appends ``{"split": ..., "step": ..., **metrics}`` rows to ``metrics.jsonl`` (rank 0 only).

    Args:
        directory: run directory.
        enabled: False on ranks other than 0; every call is then a no-op.
        tensorboard: also write scalars with ``torch.utils.tensorboard`` (requires the tensorboard package).
    """

    def __init__(self, directory: str | os.PathLike, *, enabled: bool = True, tensorboard: bool = False) -> None:
        self.path = Path(directory) / "metrics.jsonl"
        self.enabled = enabled
        self._writer = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ValueError("--tensorboard needs the tensorboard package: pip install tensorboard") from e
            self._writer = SummaryWriter(log_dir=str(Path(directory) / "tensorboard"))

    def truncate_after(self, step: int) -> None:
        """Drop rows logged after ``step`` (a resumed run redoes them)."""
        if not self.enabled:
            return
        rows = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        os.replace(tmp, self.path)

    def log(self, split: str, step: int, **metrics: object) -> None:
        """Record ``metrics`` (numbers, lists, tensors) for ``split`` ("train", "val", ...) at ``step``."""
        if not self.enabled:
            return
        row = json_safe({"split": split, "step": int(step), **metrics})
        with self.path.open("a") as f:
            f.write(json.dumps(row, allow_nan=False) + "\n")
        if self._writer is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "step":
                    self._writer.add_scalar(f"{split}/{key}", value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def progress(iterable: Iterable, *, enabled: bool, total: int | None = None, desc: str = "",
             initial: int = 0) -> Iterator | Iterable:
    """``iterable`` with progress when ``enabled`` (rank 0): a tqdm bar if stderr is a terminal, else a plain line
    about every tenth of ``total`` (``initial`` items were done before)."""
    if not enabled:
        return iterable
    if sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, initial=initial, dynamic_ncols=True, leave=False)
    return _lines(iterable, total=total if total is not None else _len(iterable), desc=desc, initial=initial)


def _len(iterable: Iterable) -> int | None:
    try:
        return len(iterable)  # type: ignore[arg-type]
    except TypeError:
        return None


def _lines(iterable: Iterable, *, total: int | None, desc: str, initial: int, min_seconds: float = 10.0) -> Iterator:
    """Yield from ``iterable``, printing ``desc: done/total (rate)`` at tenths of ``total`` at most every
    ``min_seconds``, and once at the end when the loop took that long."""
    every = max(1, total // 10) if total else 100
    start = last = time.perf_counter()
    done = initial
    for item in iterable:
        yield item
        done += 1
        now = time.perf_counter()
        if (done % every == 0 and now - last >= min_seconds) or (done == total and now - start >= min_seconds):
            last = now
            rate = (done - initial) / max(now - start, 1e-9)
            print(f"{desc}: {done}/{total if total else '?'} ({rate:.2f}/s)", file=sys.stderr, flush=True)
