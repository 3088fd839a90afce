"""Train DeepLabV3+ for semantic segmentation on PASCAL VOC 2012, or on generated data in the VOC layout.

    python -m tasks.seg_train                                   # synthetic data, a few minutes on CPU
    python -m tasks.seg_train --data-root VOCdevkit/VOC2012      # the published recipe
    torchrun --nproc_per_node 4 -m tasks.seg_train --data-root VOCdevkit/VOC2012 --amp

Writes to ``--out``: ``last.pt`` (every epoch), ``best.pt`` (best val mIoU), ``metrics.jsonl``, ``curves.png``,
``overlays.png``. ``--resume`` continues a run exactly where its last checkpoint left it.
"""

from __future__ import annotations

import time
from argparse import Namespace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from .engine import (CheckpointManager, DistInfo, MetricsLog, Precision, SeededShardSampler, all_reduce_sum,
                     barrier, cleanup_distributed, load_checkpoint, param_groups, plot_curves, poly_lr_scheduler,
                     progress, read_metrics, restore_training_state, seed_everything, set_cpu_threads,
                     setup_distributed, training_state, unwrap)
from .engine.cli import run
from .seg_config import parse_args
from .seg_eval import eval_loader, evaluate, save_overlays
from .seg_model import build_model, model_config, preprocessing_of
from .seg_synthetic import SYNTHETIC_CLASSES, make_synthetic_voc
from .seg_transforms import eval_transform, train_transform
from .seg_voc import IGNORE_INDEX, VOC_CLASSES, VOCSegmentation

__all__ = ["main", "seg_loss"]


def seg_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Pixel-wise cross-entropy ``(N, C, H, W)`` vs ``(N, H, W)`` averaged over non-ignored pixels (0 if none)."""
    total = F.cross_entropy(logits.float(), target, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / (target != IGNORE_INDEX).sum().clamp(min=1)


def _class_names(num_classes: int, *, synthetic: bool) -> list[str]:
    known = SYNTHETIC_CLASSES if synthetic else VOC_CLASSES if num_classes == len(VOC_CLASSES) else ()
    return [known[i] if i < len(known) else f"class_{i}" for i in range(num_classes)]


def _datasets(args: Namespace, dist: DistInfo, preprocessing: dict) -> tuple[VOCSegmentation, VOCSegmentation]:
    if args.data_root is None:
        if dist.is_main:
            make_synthetic_voc(Path(args.out) / "data", num_train=args.synthetic_images[0],
                               num_val=args.synthetic_images[1], seed=args.seed)
        barrier()
        args.data_root = str(Path(args.out) / "data" / "VOC2012")
    train_set = VOCSegmentation(args.data_root, args.train_split, num_classes=args.num_classes,
                                sbd_root=args.sbd_root, transform=train_transform(args.crop_size, **preprocessing))
    val_set = VOCSegmentation(args.data_root, args.val_split, num_classes=args.num_classes,
                              transform=eval_transform(**preprocessing))
    return train_set, val_set


def _train_loader(args: Namespace, dist: DistInfo, dataset: VOCSegmentation) -> DataLoader:
    if args.batch_size % dist.world_size:
        raise ValueError(f"--batch-size {args.batch_size} must be divisible by the {dist.world_size} processes")
    per_rank = args.batch_size // dist.world_size
    sampler = SeededShardSampler(len(dataset), seed=args.seed, rank=dist.rank, world_size=dist.world_size)
    if len(sampler) < per_rank:
        raise ValueError(f"{len(dataset)} training images give {len(sampler)} per process, fewer than the "
                         f"per-process batch {per_rank}")
    # Own generator: worker seeding must not draw from the global RNG that dropout uses (exact resume).
    return DataLoader(dataset, batch_size=per_rank, sampler=sampler, drop_last=True, num_workers=args.workers,
                      persistent_workers=args.workers > 0, pin_memory=dist.device.type == "cuda",
                      generator=torch.Generator())


def _wrap(model: nn.Module, args: Namespace, dist: DistInfo, precision: Precision) -> nn.Module:
    """SyncBN (CUDA only: torch's SyncBatchNorm has no CPU kernel) and DDP when launched by torchrun."""
    if dist.distributed and args.sync_bn and dist.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = precision.prepare_model(model)
    if dist.distributed:
        model = DistributedDataParallel(model, device_ids=[dist.local_rank] if dist.device.type == "cuda" else None)
    return model


class Trainer:
    """The state of one run and its loop: steps, end-of-epoch evaluation, checkpoints, plots."""

    def __init__(self, args: Namespace, dist: DistInfo, *, resume: dict | None = None) -> None:
        self.args, self.dist, self.out = args, dist, Path(args.out)
        self.class_names = _class_names(args.num_classes, synthetic=args.data_root is None)
        seed_everything(args.seed)
        pretrained = "none" if resume else args.pretrained  # the checkpoint replaces the weights anyway
        model = build_model(model_config(args), pretrained=pretrained, freeze_bn=args.freeze_bn)
        self.preprocessing = resume["preprocessing"] if resume else preprocessing_of(model)
        self.train_set, self.val_set = _datasets(args, dist, self.preprocessing)
        self.loader = _train_loader(args, dist, self.train_set)
        self.iters_per_epoch = len(self.loader)
        self.total = args.iters or args.epochs * self.iters_per_epoch
        self.precision = Precision(dist.device, amp=args.amp, channels_last=args.channels_last)
        self.model = _wrap(model, args, dist, self.precision)
        groups = param_groups(self.model, lr=args.lr, weight_decay=args.weight_decay,
                              backbone_lr_mult=args.backbone_lr_mult)
        self.optimizer = torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum)
        self.scheduler = poly_lr_scheduler(self.optimizer, total_iters=self.total, warmup_iters=args.warmup_iters)
        self.checkpoints = CheckpointManager(self.out, mode="max")
        self.log = MetricsLog(self.out, enabled=dist.is_main, tensorboard=args.tensorboard)
        self.val_loader = eval_loader(self.val_set, dist, workers=min(args.workers, 2))
        self.iteration = 0
        self.running = torch.zeros(2, dtype=torch.float64, device=dist.device)  # loss sum, steps since last log
        if resume:
            self._restore(resume)

    def state(self) -> dict:
        return training_state(self.model, self.optimizer, scheduler=self.scheduler, precision=self.precision,
                              iteration=self.iteration, epoch=self.iteration // self.iters_per_epoch,
                              model_config=model_config(self.args), preprocessing=self.preprocessing,
                              class_names=self.class_names, data_root=self.args.data_root,
                              running_loss=self.running.cpu(),
                              args={k: v for k, v in vars(self.args).items() if k != "resume"})

    def _restore(self, state: dict) -> None:
        self.checkpoints.best = state.get("best_metric", self.checkpoints.best)
        self.iteration, _ = restore_training_state(state, self.model, self.optimizer, scheduler=self.scheduler,
                                                   precision=self.precision)
        self.running.copy_(state["running_loss"])
        self.log.truncate_after(self.iteration)

    def train_epoch(self, limit: int) -> None:
        """Steps until the epoch ends or ``self.iteration`` reaches ``limit``."""
        self.model.train()
        done = self.iteration % self.iters_per_epoch
        self.loader.sampler.set_epoch(self.iteration // self.iters_per_epoch, skip=done * self.loader.batch_size)
        bar = progress(self.loader, enabled=self.dist.is_main and self.args.progress, total=self.iters_per_epoch,
                       initial=done, desc=f"epoch {self.iteration // self.iters_per_epoch + 1}")
        for batch in bar:
            images = self.precision.prepare_input(batch["image"])
            with self.precision.autocast():
                loss = seg_loss(self.model(images), batch["mask"].to(self.dist.device, non_blocking=True))
            self.precision.backward_step(loss, self.optimizer)
            self.scheduler.step()
            self.iteration += 1
            self.running += torch.stack([loss.detach().double(), self.running.new_ones(())])
            if self.iteration % self.args.log_interval == 0 or self.iteration == self.total:
                self._log_train()
            if self.iteration >= limit:
                break

    def _log_train(self) -> None:
        loss_sum, count = all_reduce_sum(self.running.clone()).tolist()
        self.running.zero_()
        lr = self.optimizer.param_groups[-1]["lr"]
        self.log.log("train", self.iteration, loss=loss_sum / max(count, 1), lr=lr,
                     epoch=self.iteration / self.iters_per_epoch)

    def end_epoch(self) -> None:
        """Evaluate when due, then write checkpoints and plots (rank 0)."""
        epoch = -(-self.iteration // self.iters_per_epoch)
        if epoch % self.args.eval_interval == 0 or self.iteration >= self.total:
            scores = evaluate(unwrap(self.model), self.val_loader, num_classes=self.args.num_classes,
                              precision=self.precision, show_progress=self.dist.is_main and self.args.progress)
            self.log.log("val", self.iteration, epoch=epoch, **scores.as_dict(self.class_names))
            if self.dist.is_main:
                improved = self.checkpoints.update_best(self.state(), scores.miou)
                self._plots()
                print(f"epoch {epoch} step {self.iteration}/{self.total}: val mIoU {100 * scores.miou:.2f} "
                      f"pixel acc {100 * scores.pixel_acc:.2f}{' (best)' if improved else ''}", flush=True)
        if self.dist.is_main:
            self.checkpoints.save_last(self.state())
        barrier()

    def _plots(self) -> None:
        plot_curves(read_metrics(self.log.path), self.out / "curves.png",
                    curves=[("train", "loss"), ("train", "lr"), ("val", "miou")])
        count = min(self.args.overlays, len(self.val_set))
        if count:
            save_overlays(unwrap(self.model), self.val_set, range(count), self.out / "overlays.png",
                          precision=self.precision)

    def fit(self) -> dict:
        """Train to ``self.total`` steps (or ``--stop-after``); returns a summary of the run."""
        start = time.perf_counter()
        stop = min(self.total, self.args.stop_after or self.total)
        while self.iteration < stop:
            self.train_epoch(stop)
            if self.iteration % self.iters_per_epoch == 0 or self.iteration == self.total:
                self.end_epoch()
            elif self.dist.is_main:  # stopped mid-epoch by --stop-after: keep the exact position
                self.checkpoints.save_last(self.state())
        self.log.close()
        val = [r for r in read_metrics(self.log.path) if r["split"] == "val"] if self.dist.is_main else []
        return {"iterations": self.iteration, "seconds": time.perf_counter() - start,
                "final_miou": val[-1]["miou"] if val else None, "best_miou": self.checkpoints.best}


def _read_resume(args: Namespace) -> dict | None:
    """The checkpoint ``--resume`` names (``last`` = ``--out/last.pt``), checked to fit this run's model.

    Without ``--resume`` the run directory must not hold a run already (it would mix two runs' logs).
    """
    if not args.resume:
        if (Path(args.out) / "last.pt").exists():
            raise ValueError(f"{args.out} already holds a run (last.pt): pass --resume to continue it, or --out "
                             f"with a new folder to start another")
        return None
    path = Path(args.out) / "last.pt" if args.resume == "last" else Path(args.resume)
    state = load_checkpoint(path)
    if state.get("model_config") != model_config(args):
        raise ValueError(f"{path} was trained with {state.get('model_config')}, this run asks for "
                         f"{model_config(args)}; pass the same model options to resume")
    return state


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    dist = setup_distributed(args.device)
    set_cpu_threads(dist, threads=args.threads, workers=args.workers)
    try:
        summary = Trainer(args, dist, resume=_read_resume(args)).fit()
    finally:
        cleanup_distributed()
    if dist.is_main:
        print(f"done: {summary['iterations']} iterations in {summary['seconds']:.0f} s; val mIoU "
              f"final {summary['final_miou']} best {summary['best_miou']:.4f}; outputs in {args.out}")
    return summary


if __name__ == "__main__":
    run(main, "python -m tasks.seg_train")
