"""Training infrastructure shared by the segmentation and detection tasks.

Distributed setup, atomic checkpoints with RNG state, seeded/sharded sampling, SGD groups with poly decay,
mixed precision, a metrics log with plots.
"""

from .amp import Precision
from .checkpoint import CheckpointManager, atomic_save, load_checkpoint
from .distributed import DistInfo, all_reduce_sum, barrier, broadcast_object, cleanup_distributed, setup_distributed
from .metrics_log import MetricsLog, progress, read_metrics
from .optim import param_groups, poly_lr_scheduler
from .plots import plot_curves, save_panels
from .rng import capture_rng_state, derive_seed, restore_rng_state, seed_everything
from .sampler import SeededShardSampler
from .state import restore_training_state, training_state, unwrap

__all__ = [
    "CheckpointManager", "DistInfo", "MetricsLog", "Precision", "SeededShardSampler", "all_reduce_sum",
    "atomic_save", "barrier", "broadcast_object", "capture_rng_state", "cleanup_distributed", "derive_seed",
    "load_checkpoint", "param_groups", "plot_curves", "poly_lr_scheduler", "progress", "read_metrics",
    "restore_rng_state", "restore_training_state", "save_panels", "seed_everything", "setup_distributed",
    "training_state", "unwrap",
]
