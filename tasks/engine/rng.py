"""Seeding and capture/restore of every random number generator a training step touches.

The captured state holds only tensors and plain Python types so a checkpoint carrying it loads with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["seed_everything", "capture_rng_state", "restore_rng_state", "derive_seed"]

_MASK64 = (1 << 63) - 1


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device)."""
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed determined by ``parts`` alone (e.g. base seed, epoch, sample index).

    Uses NumPy's SeedSequence hashing, so nearby inputs give unrelated seeds.
    """
    words = np.random.SeedSequence([int(p) & _MASK64 for p in parts]).generate_state(2, dtype=np.uint32)
    return (int(words[0]) << 31 ^ int(words[1])) & _MASK64


def capture_rng_state() -> dict[str, object]:
    """Snapshot the Python, NumPy, torch CPU and CUDA generators as tensors and plain types."""
    version, mt, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, object] = {
        "python": {"version": version, "mt": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, object]) -> None:
    """Restore generators from :func:`capture_rng_state` output (CUDA only if both sides have it)."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["mt"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["kind"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
