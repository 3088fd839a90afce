"""Training infrastructure shared by the segmentation and detection tasks.

Distributed setup, atomic checkpoints with RNG state, seeded/sharded sampling, SGD groups with poly decay,
mixed precision, a metrics log with plots. A training loop built on it (see ``tasks/seg_train.py``)::

    dist = setup_distributed()                          # torchrun env vars, or one process
    seed_everything(seed)
    sampler = SeededShardSampler(len(dataset), seed=seed, rank=dist.rank, world_size=dist.world_size)
    loader = DataLoader(dataset, batch_size=b, sampler=sampler, drop_last=True, generator=torch.Generator())
    precision = Precision(dist.device, amp=amp, channels_last=channels_last)
    model = precision.prepare_model(model)              # then DDP when dist.distributed
    optimizer = torch.optim.SGD(param_groups(model, lr=lr, weight_decay=wd, backbone_lr_mult=0.1), lr=lr,
                                momentum=0.9)
    scheduler = poly_lr_scheduler(optimizer, total_iters=total)
    for step in ...:  # sampler.set_epoch(epoch, skip=done_in_epoch * b) once per epoch
        with precision.autocast():
            loss = criterion(model(precision.prepare_input(images)), targets)
        precision.backward_step(loss, optimizer); scheduler.step()
    CheckpointManager(out).save_last(training_state(model, optimizer, scheduler=scheduler,
                                                    precision=precision, iteration=it, epoch=ep))

Datasets receive ``(index, seed)`` keys from the sampler and seed their augmentation with ``seed``; with the
DataLoader's own ``generator`` nothing else draws from the global RNG, so resuming is exact.
"""

from .amp import Precision
from .checkpoint import CheckpointManager, atomic_save, load_checkpoint
from .distributed import (DistInfo, all_reduce_sum, barrier, broadcast_object, cleanup_distributed, set_cpu_threads,
                          setup_distributed)
from .files import IMAGE_SUFFIXES, list_images
from .metrics_log import MetricsLog, progress, read_metrics
from .optim import cosine_scheduler, param_groups, poly_lr_scheduler
from .plots import plot_curves, save_panels
from .rng import capture_rng_state, derive_seed, restore_rng_state, seed_everything
from .sampler import SeededShardSampler, eval_shard
from .state import restore_training_state, training_state, unwrap

__all__ = [
    "all_reduce_sum", "atomic_save", "barrier", "broadcast_object", "capture_rng_state", "CheckpointManager",
    "cleanup_distributed", "cosine_scheduler", "derive_seed", "DistInfo", "eval_shard", "IMAGE_SUFFIXES",
    "list_images", "load_checkpoint", "MetricsLog", "param_groups", "plot_curves", "poly_lr_scheduler", "Precision",
    "progress", "read_metrics", "restore_rng_state", "restore_training_state", "save_panels", "seed_everything",
    "SeededShardSampler", "set_cpu_threads", "setup_distributed", "training_state", "unwrap",
]
