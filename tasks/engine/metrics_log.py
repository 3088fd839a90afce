"""Run records: a JSON-lines metrics log, optional TensorBoard, and tqdm progress bars on rank 0 only."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from tqdm.auto import tqdm

__all__ = ["MetricsLog", "progress", "read_metrics"]


def _plain(value: object) -> object:
    """Convert tensors / numpy scalars to Python numbers so they serialise as JSON."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Rows of a metrics log (one JSON object per line); an absent file gives no rows."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


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
        row = {"split": split, "step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self._writer is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "step" and math.isfinite(value):
                    self._writer.add_scalar(f"{split}/{key}", value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def progress(iterable: Iterable, *, enabled: bool, total: int | None = None, desc: str = "",
             initial: int = 0) -> Iterator | Iterable:
    """A tqdm bar over ``iterable`` when ``enabled`` (rank 0, interactive), the bare iterable otherwise."""
    if not enabled:
        return iterable
    return tqdm(iterable, total=total, desc=desc, initial=initial, dynamic_ncols=True, leave=False)
