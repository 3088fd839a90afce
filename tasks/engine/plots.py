"""PNG figures of a run: metric curves from the metrics log and side-by-side image panels (matplotlib Agg)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

__all__ = ["plot_curves", "save_panels"]


def plot_curves(rows: Sequence[dict], path: str | os.PathLike, *, curves: Sequence[tuple[str, str]]) -> Path:
    """One subplot per ``(split, key)``: ``key`` against ``step`` over the rows of that split.

    Args:
        rows: metrics-log rows (see :class:`tasks.engine.metrics_log.MetricsLog`).
        path: PNG to write.
        curves: e.g. ``[("train", "loss"), ("val", "miou")]``; curves without data are drawn empty.
    """
    fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3.4), squeeze=False)
    for ax, (split, key) in zip(axes[0], curves):
        pts = [(r["step"], r[key]) for r in rows if r.get("split") == split and isinstance(r.get(key), (int, float))]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o" if len(pts) < 30 else None, markersize=3)
        ax.set_title(f"{split} {key}")
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def save_panels(rows: Sequence[Sequence[np.ndarray]], path: str | os.PathLike, *,
                titles: Sequence[str]) -> Path:
    """A grid of RGB ``(H, W, 3)`` uint8 images, one figure row per sample, ``titles`` over the columns."""
    if not rows:
        raise ValueError("save_panels needs at least one row of images")
    n_rows, n_cols = len(rows), len(rows[0])
    if len(titles) != n_cols:
        raise ValueError(f"{len(titles)} titles given for {n_cols} columns")
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.2 * n_cols, 2.6 * n_rows), squeeze=False)
    for r, images in enumerate(rows):
        for c, image in enumerate(images):
            axes[r][c].imshow(image)
            axes[r][c].axis("off")
            if r == 0:
                axes[r][c].set_title(titles[c])
    fig.tight_layout()
    return _save(fig, path)


def _save(fig: plt.Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path
