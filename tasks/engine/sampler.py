"""A sharded, resumable sampler that hands each sample its own augmentation seed.

Each item is ``(index, seed)``: the dataset seeds its augmentation from ``seed``, so a sample's augmentation
depends on (base seed, epoch, position) only -- not on the number of DataLoader workers, on the process that
loads it, or on whether the run was interrupted and resumed. Sharding follows
:class:`torch.utils.data.DistributedSampler`: one permutation per epoch, padded to a multiple of the world
size, rank ``r`` takes positions ``r, r + world_size, ...``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from .rng import derive_seed

__all__ = ["SeededShardSampler", "eval_loader", "eval_shard"]


class SeededShardSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, seed)`` pairs for this rank.

    Args:
        num_samples: dataset length.
        shuffle: draw a new permutation each epoch.
        seed: base seed shared by all ranks.
        rank: this process's rank.
        world_size: number of processes.
    """

    def __init__(self, num_samples: int, *, shuffle: bool = True, seed: int = 0, rank: int = 0,
                 world_size: int = 1) -> None:
        if num_samples <= 0:
            raise ValueError(f"the dataset is empty (num_samples={num_samples})")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, *, skip: int = 0) -> None:
        """Select the epoch's permutation and drop this rank's first ``skip`` items (to resume mid-epoch)."""
        if not 0 <= skip <= len(self):
            raise ValueError(f"skip must be in [0, {len(self)}], got {skip}")
        self.epoch = epoch
        self.skip = skip

    def __len__(self) -> int:
        return -(-self.num_samples // self.world_size)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        total = len(self) * self.world_size
        order = (order * -(-total // len(order)))[:total]
        for pos in range(self.rank + self.skip * self.world_size, total, self.world_size):
            yield order[pos], derive_seed(self.seed, self.epoch, pos)


def eval_shard(n: int, rank: int, world_size: int) -> list[int]:
    """This process's disjoint, unpadded share of ``n`` evaluation samples (padding would count some twice)."""
    return list(range(rank, n, world_size))


def eval_loader(dataset: Dataset, *, rank: int, world_size: int, batch_size: int, workers: int,
                collate_fn: Callable | None = None, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over this process's :func:`eval_shard` of ``dataset``, in order.

    It has its own generator, so evaluating in the middle of a run draws nothing from the global RNG (exact resume).
    """
    return DataLoader(dataset, batch_size=batch_size, sampler=eval_shard(len(dataset), rank, world_size),
                      num_workers=workers, persistent_workers=workers > 0, collate_fn=collate_fn,
                      pin_memory=pin_memory, generator=torch.Generator())
