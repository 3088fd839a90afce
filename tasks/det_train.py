"""Train SSDLite on PASCAL VOC, or with no ``--data-root`` on a generated dataset in the VOC layout.

    python -m tasks.det_train                                    # synthetic VOC-layout data, CPU-sized
    torchrun --nproc_per_node 4 -m tasks.det_train --data-root VOCdevkit/VOC2007 VOCdevkit/VOC2012

Both go through the same code: VOC XML parsing and validation, the SSD augmentation, SGD (or AdamW) with linear
warmup and per-iteration cosine decay, AMP and channels_last on CUDA, DDP under torchrun, VOC and COCO mAP.
``--out`` receives ``last.pt`` (every epoch and on ``--max-steps``), ``best.pt`` (best VOC07 mAP),
``metrics.jsonl``, ``curves.png``, ``predictions.png`` (validation images, ground truth | predictions),
``ap_table.md`` and ``results.json``. ``--resume`` continues exactly where a run stopped, mid-epoch included:
weights, optimizer, schedule, grad scaler, RNG state and the sampler position are restored.
"""

from __future__ import annotations

import json
import logging
import sys
import time

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from heads import create_detector
from tasks import engine
from tasks.engine.cli import pretrained_arg, run
from tasks.det_config import parse_args, plain_args
from tasks.det_data import VOCDetection, collate
from tasks.det_eval import detector_config, eval_loader, evaluate
from tasks.det_synthetic import make_synthetic_voc
from tasks.det_transforms import eval_transforms, train_transforms
from tasks.det_visualize import save_predictions

log = logging.getLogger("tasks.det_train")


def build_optimizer(model: torch.nn.Module, args) -> torch.optim.Optimizer:
    groups = engine.param_groups(model, lr=args.lr, weight_decay=args.weight_decay, decay_norm_and_bias=False)
    if args.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=args.lr)
    return torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum)


def build_data(args, info: engine.DistInfo) -> tuple[VOCDetection, VOCDetection]:
    """Training set (difficult objects dropped unless asked, empty images skipped) and validation set."""
    if args.recipe == "synthetic":
        root = args.out / "synthetic_voc"
        if info.is_main:
            make_synthetic_voc(root, num_train=args.synthetic_images[0], num_val=args.synthetic_images[1],
                               seed=args.seed)
        engine.barrier()
        args.data_root, args.val_root = [root], root
    augment = train_transforms(args.size, photometric=args.photometric, max_zoom_out=args.max_zoom_out,
                               iou_crop=args.iou_crop)
    train = VOCDetection(args.data_root, args.train_split, transforms=augment, keep_difficult=args.train_difficult,
                         skip_empty=True)
    val = VOCDetection(args.val_root, args.val_split, transforms=eval_transforms())
    return train, val


class Trainer:
    """One training run: model, optimisation state, data and records, for ``info``'s process."""

    def __init__(self, args, info: engine.DistInfo) -> None:
        if args.batch_size % info.world_size:
            raise ValueError(f"--batch-size {args.batch_size} must divide over {info.world_size} processes")
        self.args, self.info, self.batch = args, info, args.batch_size // info.world_size
        engine.seed_everything(args.seed)
        self.train_set, self.val_set = build_data(args, info)
        self.class_names = self.train_set.class_names
        self.precision = engine.Precision(info.device, amp=args.amp, channels_last=args.channels_last)
        self.model = self._build_model()
        self._build_loaders()
        total = self.steps_per_epoch * args.epochs
        warmup = min(round(args.warmup_epochs * self.steps_per_epoch), total - 1)
        self.optimizer = build_optimizer(self.model, args)
        self.scheduler = engine.cosine_scheduler(self.optimizer, total_iters=total, warmup_iters=warmup)
        self.checkpoints = engine.CheckpointManager(args.out, mode="max")
        self.metrics = engine.MetricsLog(args.out, enabled=info.is_main, tensorboard=args.tensorboard)
        self.iteration, self.epoch = 0, 0

    def _build_model(self) -> torch.nn.Module:
        args, info = self.args, self.info
        model = create_detector(args.backbone, len(self.class_names) + 1, size=args.size,
                                pretrained_backbone=pretrained_arg(args.pretrained_backbone))
        model = self.precision.prepare_model(model)
        if not info.distributed:
            return model
        return DistributedDataParallel(model, device_ids=[info.local_rank] if info.device.type == "cuda" else None)

    def _build_loaders(self) -> None:
        args, info = self.args, self.info
        self.sampler = engine.SeededShardSampler(len(self.train_set), seed=args.seed, rank=info.rank,
                                                 world_size=info.world_size)
        self.steps_per_epoch = len(self.sampler) // self.batch
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(self.train_set)} training images are fewer than one batch of {args.batch_size}")
        self.loader = DataLoader(self.train_set, batch_size=self.batch, sampler=self.sampler, drop_last=True,
                                 num_workers=args.workers, collate_fn=collate, pin_memory=info.device.type == "cuda",
                                 generator=torch.Generator())  # keeps the global RNG untouched: exact resume
        self.val_loader = eval_loader(self.val_set, batch_size=max(self.batch, 8), workers=args.workers, info=info)

    def state(self) -> dict:
        return engine.training_state(
            self.model, self.optimizer, scheduler=self.scheduler, precision=self.precision,
            iteration=self.iteration, epoch=self.epoch, args=plain_args(self.args),
            detector=detector_config(backbone=self.args.backbone, class_names=self.class_names, size=self.args.size),
        )  # fmt: skip

    def resume(self, path: str) -> None:
        auto = path == "auto"
        target = self.checkpoints.last_path if auto else path
        if auto and not self.checkpoints.last_path.is_file():
            log.info("no %s to resume from: starting from scratch", target)
            return
        state = self.checkpoints.load_last(target)
        self.iteration, self.epoch = engine.restore_training_state(
            state, self.model, self.optimizer, scheduler=self.scheduler, precision=self.precision
        )
        self.metrics.truncate_after(self.iteration)
        log.info("resumed %s at iteration %d (epoch %d)", target, self.iteration, self.epoch)

    def train_step(self, images: list[torch.Tensor], targets: list[dict]) -> torch.Tensor:
        """One optimizer step; returns ``[total, box regression, classification]`` loss (detached)."""
        device = self.info.device
        batch = self.precision.prepare_input(torch.stack(images))
        targets = [{"boxes": t["boxes"].as_subclass(torch.Tensor).to(device), "labels": t["labels"].to(device)}
                   for t in targets]
        with self.precision.autocast():
            losses = self.model(batch, targets)
        loss = losses["bbox_regression"] + losses["classification"]
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite loss {({k: v.item() for k, v in losses.items()})} at iteration {self.iteration} "
                f"(dataset indices {[t.get('index') for t in targets]}); try a lower --lr"
            )
        self.precision.backward_step(loss, self.optimizer)
        self.scheduler.step()
        return torch.stack([loss, losses["bbox_regression"], losses["classification"]]).detach().float().cpu()

    def train_epoch(self, max_steps: int | None) -> bool:
        """Train the rest of ``self.epoch``; returns False when ``max_steps`` stopped it early."""
        done = self.iteration - self.epoch * self.steps_per_epoch
        self.sampler.set_epoch(self.epoch, skip=done * self.batch)
        sums, start = torch.zeros(4), time.perf_counter()
        bar = engine.progress(self.loader, enabled=self.info.is_main and not self.args.no_progress,
                              total=self.steps_per_epoch, initial=done, desc=f"epoch {self.epoch + 1}")
        for images, targets in bar:
            sums += torch.cat([self.train_step(images, targets), torch.ones(1)])
            self.iteration += 1
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{sums[0] / sums[3]:.3f}")
            if max_steps is not None and self.iteration >= max_steps:
                break
        sums = engine.all_reduce_sum(sums)
        finished = self.iteration == (self.epoch + 1) * self.steps_per_epoch
        self.metrics.log("train", self.iteration, epoch=self.epoch + 1, loss=sums[0] / sums[3],
                         bbox_loss=sums[1] / sums[3], cls_loss=sums[2] / sums[3],
                         lr=self.optimizer.param_groups[0]["lr"], seconds=time.perf_counter() - start)
        return finished

    def validate(self) -> dict:
        metrics = evaluate(engine.unwrap(self.model), self.val_loader, class_names=self.class_names,
                           device=self.info.device, coco=not self.args.no_coco, autocast=self.precision.autocast)
        scalars = {k: v for k, v in metrics.items() if isinstance(v, float)}
        self.metrics.log("val", self.iteration, epoch=self.epoch, **scalars)
        log.info("epoch %d: %s", self.epoch, "  ".join(f"{k} {100 * v:.2f}" for k, v in scalars.items()))
        return metrics

    def fit(self) -> dict | None:
        """Train to the end (or ``--max-steps``); returns the last evaluation's metrics."""
        args, metrics = self.args, None
        while self.epoch < args.epochs:
            if args.max_steps is not None and self.iteration >= args.max_steps:
                break
            if not self.train_epoch(args.max_steps):
                if self.info.is_main:
                    self.checkpoints.save_last(self.state())
                break
            self.epoch += 1
            if self.epoch % args.eval_every == 0 or self.epoch == args.epochs:
                metrics = self.validate()
                if self.info.is_main:
                    self.checkpoints.update_best(self.state(), metrics["map07"])
                    self._plot()
            if self.info.is_main:
                self.checkpoints.save_last(self.state())
        if self.epoch < args.epochs:
            log.info("stopped at --max-steps %d (iteration %d); continue with --resume", args.max_steps, self.iteration)
        return metrics

    def _plot(self) -> None:
        rows = engine.read_metrics(self.metrics.path)
        curves = [("train", "loss"), ("train", "lr"), ("val", "map07"), ("val", "coco_map")]
        engine.plot_curves(rows, self.args.out / "curves.png", curves=curves[: 3 if self.args.no_coco else 4])


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args(argv)
    info = engine.setup_distributed(args.device)
    engine.set_cpu_threads(info, workers=args.workers)
    logging.basicConfig(level=logging.INFO if info.is_main else logging.WARNING, stream=sys.stdout,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        log.info("recipe %s: %s", args.recipe, json.dumps(plain_args(args)))
        trainer = Trainer(args, info)
        if args.resume:
            trainer.resume(args.resume)
        start = time.perf_counter()
        metrics = trainer.fit()
        if info.is_main and metrics is not None:
            write_results(trainer, metrics, seconds=time.perf_counter() - start)
        return metrics
    finally:
        engine.cleanup_distributed()


def write_results(trainer: Trainer, metrics: dict, *, seconds: float) -> None:
    """Final records on rank 0: the per-class table, a JSON summary and images with predicted boxes."""
    out = trainer.args.out
    (out / "ap_table.md").write_text(metrics["table"] + "\n")
    summary = {k: v for k, v in metrics.items() if k != "table"}
    summary.update(iteration=trainer.iteration, train_seconds=round(seconds, 1), best_map07=trainer.checkpoints.best)
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    if trainer.args.num_visualize > 0:
        save_predictions(engine.unwrap(trainer.model), trainer.val_set, out / "predictions.png",
                         class_names=trainer.class_names, count=trainer.args.num_visualize)
    log.info("%s\ntrained %d iterations in %.0f s; results in %s", metrics["table"], trainer.iteration, seconds, out)


if __name__ == "__main__":
    run(main, "python -m tasks.det_train")
