"""Atomic checkpoint files: ``last.pt`` after every epoch, ``best.pt`` when the tracked metric improves.

A crash while writing never leaves a truncated checkpoint: the payload goes to a temporary file in the same
directory, is flushed to disk with fsync, then replaces the target with :func:`os.replace` (atomic on POSIX
and Windows). Checkpoints load with ``weights_only=True``: store tensors and plain Python types only.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import torch

__all__ = ["atomic_save", "load_checkpoint", "CheckpointManager"]


def atomic_save(obj: object, path: str | os.PathLike) -> Path:
    """Write ``obj`` with :func:`torch.save` to ``path`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint written by :func:`atomic_save` with ``weights_only=True``.

    Raises:
        FileNotFoundError: naming the missing file.
        ValueError: when the file is not a readable checkpoint dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for corrupt/unsafe pickles
        raise ValueError(f"cannot read checkpoint {path}: {_reason(e)}") from e
    if not isinstance(obj, dict):
        raise ValueError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict")
    return obj


def _reason(error: Exception) -> str:
    """One line of what torch.load said: the unpickler's own complaint rather than its advice paragraphs."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    marker = next((i for i, line in enumerate(lines) if line.endswith("WeightsUnpickler error:")), None)
    if marker is not None and marker + 1 < len(lines):
        return f"not a plain-tensor checkpoint ({lines[marker + 1]})"
    return lines[0].split(". ")[0] if lines else type(error).__name__


class CheckpointManager:
    """Keeps ``last.pt`` and ``best.pt`` in a directory.

    Args:
        directory: where checkpoints go (created if missing).
        mode: "max" if a larger metric is better (mIoU, mAP), "min" for losses.
    """

    def __init__(self, directory: str | os.PathLike, *, mode: str = "max") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.directory = Path(directory)
        self.mode = mode
        self.best = -math.inf if mode == "max" else math.inf

    @property
    def last_path(self) -> Path:
        return self.directory / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.directory / "best.pt"

    def is_better(self, metric: float) -> bool:
        return metric > self.best if self.mode == "max" else metric < self.best

    def save_last(self, state: dict) -> Path:
        """Write ``state`` (plus the best metric so far, for resuming) as ``last.pt``."""
        return atomic_save({**state, "best_metric": self.best}, self.last_path)

    def update_best(self, state: dict, metric: float) -> bool:
        """Write ``best.pt`` if ``metric`` beats the best so far; returns whether it did."""
        if not self.is_better(metric):
            return False
        self.best = float(metric)
        atomic_save({**state, "best_metric": self.best}, self.best_path)
        return True

    def load_last(self, path: str | os.PathLike | None = None, **kwargs) -> dict:
        """Load ``path`` (default ``last.pt``) and restore the best metric it recorded."""
        state = load_checkpoint(self.last_path if path is None else path, **kwargs)
        self.best = float(state.get("best_metric", self.best))
        return state
