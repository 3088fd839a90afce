"""Training and inference infrastructure shared by the segmentation and detection tasks.

The shared loop is :class:`~tasks.engine.trainer.Trainer` (checkpoints, exact resume, Ctrl-C, evaluation order);
its pieces: torchrun/DDP setup and the one DDP wrap, CPU thread and allocator settings, atomic checkpoints with
RNG state, a seeded shard sampler, SGD/AdamW groups with poly or cosine schedules, mixed precision, a metrics log
with plots, and the command line both tasks speak (:mod:`tasks.engine.cli`). Datasets receive ``(index, seed)``
keys from the sampler and seed their augmentation with ``seed``; with the DataLoader's own ``generator`` nothing
else draws from the global RNG, so a resumed run is bit-identical to an uninterrupted one.
"""

from .amp import Precision
from .checkpoint import CheckpointManager, atomic_save, load_checkpoint
from .distributed import (DistInfo, all_gather_objects, all_reduce_sum, barrier, cleanup_distributed,
                          set_cpu_threads, setup_distributed, wrap_model)
from .files import IMAGE_SUFFIXES, list_images
from .memory import reuse_freed_memory
from .metrics_log import MetricsLog, progress, read_metrics, without_timing
from .optim import build_optimizer, build_scheduler, cosine_scheduler, param_groups, poly_lr_scheduler
from .plots import plot_curves, save_panels
from .rng import capture_rng_state, derive_seed, restore_rng_state, seed_everything
from .sampler import SeededShardSampler, eval_loader, eval_shard
from .state import restore_training_state, training_state, unwrap

__all__ = [
    "atomic_save", "all_gather_objects", "all_reduce_sum", "barrier", "build_optimizer", "build_scheduler",
    "capture_rng_state", "CheckpointManager", "cleanup_distributed", "cosine_scheduler", "derive_seed", "DistInfo",
    "eval_loader", "eval_shard", "IMAGE_SUFFIXES", "list_images", "load_checkpoint", "MetricsLog", "param_groups",
    "plot_curves", "poly_lr_scheduler", "Precision", "progress", "read_metrics", "restore_rng_state",
    "restore_training_state", "reuse_freed_memory", "save_panels", "seed_everything", "SeededShardSampler",
    "set_cpu_threads", "setup_distributed", "training_state", "unwrap", "without_timing", "wrap_model",
]
