"""The training loop both tasks share; :class:`tasks.seg_train.SegTrainer` and :class:`tasks.det_train.DetTrainer`
supply data, model, loss and evaluation.

A run is ``total`` optimizer steps over epochs of a :class:`~tasks.engine.sampler.SeededShardSampler`, so it can
stop anywhere and continue exactly. Order of events: every file of both splits is checked before the model is
built (no download before a bad ``--data-root`` is found); a train row every ``--log-interval`` steps; at the end
of an epoch ``last.pt`` first, then, every ``--eval-interval`` epochs and at the end, the evaluation, ``best.pt``,
figures and ``last.pt`` again (a crash during evaluation loses no training, and ``--resume`` redoes the evaluation);
SIGINT/SIGTERM finish the step, save ``last.pt`` and exit 130/143 (:mod:`tasks.engine.signals`).
"""

from __future__ import annotations

import math
import signal
import time
from argparse import Namespace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .amp import Precision
from .checkpoint import CheckpointManager
from .cli import Interrupted
from .cli import Defaults, uses_pretrained
from .distributed import DistInfo, all_reduce_sum, barrier, cleanup_distributed, set_cpu_threads, setup_distributed
from .distributed import wrap_model
from .inference import fused_copy
from .memory import reuse_freed_memory
from .metrics_log import MetricsLog, progress, read_metrics
from .optim import build_optimizer, build_scheduler
from .resume import plain_args
from .rng import seed_everything
from .sampler import SeededShardSampler
from .signals import StopSignals, ignore_interrupts
from .state import restore_training_state, training_state, unwrap

__all__ = ["Trainer", "schedule_length", "train_main"]


def schedule_length(args: Namespace, iters_per_epoch: int) -> tuple[int, int]:
    """``(total, warmup)`` optimizer steps from ``--iters``/``--epochs`` and ``--warmup-iters``/``--warmup-epochs``."""
    total = args.iters or args.epochs * iters_per_epoch
    warmup = args.warmup_iters if args.warmup_iters is not None else round((args.warmup_epochs or 0) * iters_per_epoch)
    if warmup >= total:
        raise ValueError(f"the warmup ({warmup} steps) must be shorter than the run ({total} steps of "
                         f"{iters_per_epoch} per epoch): lower --warmup-iters/--warmup-epochs")
    return total, warmup


class Trainer:
    """One run of a task on this process. Subclasses set the class attributes and implement the hooks."""

    task = ""  # "seg" / "det": stored in checkpoints and checked on resume and load
    command = ""  # "python -m tasks.seg_train", for messages
    metric = ""  # the validation score best.pt tracks (larger is better)
    decay_norm_and_bias = True  # weight decay on 1-d parameters too
    collate = None  # DataLoader collate_fn of training batches
    defaults: Defaults  # the command's defaults (their descriptions explain the run's first line)

    # ---- hooks -----------------------------------------------------------------------------------------------
    def build_datasets(self) -> tuple[Dataset, Dataset]:
        """Train and val datasets, their files listed and annotations parsed (transforms may come later)."""
        raise NotImplementedError

    def build_model(self, pretrained: str | None, preprocessing: dict | None) -> nn.Module:
        """The model, from ``pretrained`` weights (``--pretrained`` words) or, resuming, with the checkpoint's
        ``preprocessing`` (its weights then come from the checkpoint)."""
        raise NotImplementedError

    def preprocessing_of(self, model: nn.Module) -> dict:
        """The input normalisation the model expects, as plain types (stored in every checkpoint)."""
        raise NotImplementedError

    def attach_transforms(self, preprocessing: dict) -> None:
        """Give the datasets their transforms once the preprocessing is known."""

    def model_config(self) -> dict:
        raise NotImplementedError

    def data_record(self) -> dict:
        """Where the data came from (absolute paths, splits), for evaluation from any folder."""
        raise NotImplementedError

    def losses(self, batch: object) -> dict[str, torch.Tensor]:
        """The loss terms of one batch (summed for the step), computed under autocast."""
        raise NotImplementedError

    def evaluate(self) -> dict:
        """Scores of ``self.eval_model`` (the current model on its inference fast path) on the val split, as
        JSON-able values with ``self.metric`` among them; they are logged, and the last ones reach
        :meth:`write_results` (called on every rank)."""
        raise NotImplementedError

    def write_figures(self) -> None:
        """PNG figures of the run so far, predictions by ``self.eval_model`` (rank 0)."""

    def write_results(self, metrics: dict) -> None:
        """Final records after the last evaluation (rank 0)."""

    # ---- setup -----------------------------------------------------------------------------------------------
    def __init__(self, args: Namespace, info: DistInfo, state: dict | None = None) -> None:
        self.args, self.info, self.out = args, info, Path(args.out)
        self.checkpoints = CheckpointManager(self.out, mode="max", clean=info.is_main)
        seed_everything(args.seed)
        self.train_set, self.val_set = self.build_datasets()
        for dataset in (self.train_set, self.val_set):
            dataset.verify(show_progress=info.is_main and args.progress)
        if state:  # the checkpoint replaces the weights: no download
            model = self.build_model("none", state["preprocessing"])
        else:
            model = self.build_model(args.pretrained, None)
        self.preprocessing = state["preprocessing"] if state else self.preprocessing_of(model)
        self.attach_transforms(self.preprocessing)
        self.loader = self._train_loader()
        self.iters_per_epoch = len(self.loader)
        self.total, warmup = schedule_length(args, self.iters_per_epoch)
        self.precision = Precision(info.device, amp=args.amp, channels_last=args.channels_last)
        self.model = wrap_model(model, info, self.precision, sync_bn=args.sync_bn)
        self.optimizer = build_optimizer(self.model, name=args.optimizer, lr=args.lr, momentum=args.momentum,
                                         weight_decay=args.weight_decay, backbone_lr_mult=args.backbone_lr_mult,
                                         decay_norm_and_bias=self.decay_norm_and_bias)
        self.scheduler = build_scheduler(self.optimizer, name=args.schedule, total_iters=self.total,
                                         warmup_iters=warmup)
        self.log = MetricsLog(self.out, enabled=info.is_main, tensorboard=args.tensorboard)
        self.iteration, self.evaluated, self.last_metrics = 0, True, None
        self.running: torch.Tensor | None = None  # per loss term: sum since the last train row; then the count
        if state:
            self._restore(state)

    def _train_loader(self) -> DataLoader:
        args, info = self.args, self.info
        if args.batch_size % info.world_size:
            raise ValueError(f"--batch-size {args.batch_size} must be divisible by the {info.world_size} processes")
        per_rank = args.batch_size // info.world_size
        sampler = SeededShardSampler(len(self.train_set), seed=args.seed, rank=info.rank, world_size=info.world_size)
        if len(sampler) < per_rank:
            raise ValueError(f"{len(self.train_set)} training images give {len(sampler)} per process, fewer than "
                             f"one batch of {per_rank} (--batch-size {args.batch_size})")
        # Its own generator: worker seeding must not draw from the global RNG that dropout uses (exact resume).
        return DataLoader(self.train_set, batch_size=per_rank, sampler=sampler, drop_last=True,
                          num_workers=args.workers, persistent_workers=args.workers > 0, collate_fn=self.collate,
                          pin_memory=info.device.type == "cuda", worker_init_fn=ignore_interrupts,
                          generator=torch.Generator())

    def state(self) -> dict:
        """Everything to continue the run exactly, and to rebuild and normalise its model for inference."""
        return training_state(
            self.model, self.optimizer, scheduler=self.scheduler, precision=self.precision,
            iteration=self.iteration, epoch=self.iteration // self.iters_per_epoch, task=self.task,
            model_config=self.model_config(), preprocessing=self.preprocessing, class_names=list(self.class_names),
            data=self.data_record(), args=plain_args(self.args), evaluated=self.evaluated,
            running=None if self.running is None else self.running.cpu())  # fmt: skip

    def _restore(self, state: dict) -> None:
        self.checkpoints.best = state.get("best_metric", self.checkpoints.best)
        self.iteration, _ = restore_training_state(state, self.model, self.optimizer, scheduler=self.scheduler,
                                                   precision=self.precision)
        self.evaluated = state.get("evaluated", True)
        if state.get("running") is not None:
            self.running = state["running"].to(self.info.device)
        self.log.truncate_after(self.iteration)

    # ---- the loop --------------------------------------------------------------------------------------------
    def step(self, batch: object) -> torch.Tensor:
        """One optimizer step; returns the detached loss terms, total first."""
        with self.precision.autocast():
            terms = self.losses(batch)
        loss = sum(terms.values())
        if not torch.isfinite(loss):
            raise ValueError(f"the loss became {loss.item()} at step {self.iteration + 1} "
                             f"({ {k: round(v.item(), 4) for k, v in terms.items()} }); lower --lr or check the data")
        self.precision.backward_step(loss, self.optimizer)
        self.scheduler.step()
        self.loss_names = ["loss", *terms] if len(terms) > 1 else ["loss"]
        values = [loss, *terms.values()] if len(terms) > 1 else [loss]
        return torch.stack([v.detach().double() for v in values])

    def _accumulate(self, values: torch.Tensor) -> None:
        if self.running is None:
            self.running = torch.zeros(len(values) + 1, dtype=torch.float64, device=self.info.device)
        self.running += torch.cat([values, values.new_ones(1)])

    def _log_train(self) -> None:
        totals = all_reduce_sum(self.running.clone()).tolist()
        self.running.zero_()
        means = {name: value / max(totals[-1], 1) for name, value in zip(self.loss_names, totals)}
        now, (since, step) = time.perf_counter(), self._last_log
        rate = (self.iteration - step) * self.args.batch_size / max(now - since, 1e-9)
        self._last_log = now, self.iteration
        self.log.log("train", self.iteration, **means, lr=self.optimizer.param_groups[-1]["lr"],
                     epoch=self.iteration / self.iters_per_epoch, images_per_s=round(rate, 2))

    def train_epoch(self, limit: int, signals: StopSignals) -> None:
        """Steps until the epoch ends, ``self.iteration`` reaches ``limit`` or a stop signal arrives."""
        self.model.train()
        epoch, done = divmod(self.iteration, self.iters_per_epoch)
        self.loader.sampler.set_epoch(epoch, skip=done * self.loader.batch_size)
        self._last_log = time.perf_counter(), self.iteration  # a train row's images/s: since the last row
        bar = progress(self.loader, enabled=self.info.is_main and self.args.progress, total=self.iters_per_epoch,
                       initial=done, desc=f"epoch {epoch + 1}")
        for batch in bar:
            self._accumulate(self.step(batch))
            self.iteration += 1
            if self.iteration % self.args.log_interval == 0 or self.iteration == self.total:
                self._log_train()
            if self.iteration >= limit or signals.agreed(self.info.device):
                break

    def _evaluate_and_save(self) -> None:
        self.eval_model = fused_copy(self.bare_model)  # what seg_eval/det_eval will run on the checkpoint
        metrics = self.evaluate()
        scalars = {k: v for k, v in metrics.items() if isinstance(v, float)}
        self.log.log("val", self.iteration, epoch=self.iteration / self.iters_per_epoch, **metrics)
        self.evaluated, self.last_metrics = True, metrics
        if self.info.is_main:
            improved = self.checkpoints.update_best(self.state(), metrics[self.metric])
            self.write_figures()
            shown = "  ".join(f"{k} {100 * v:.2f}" for k, v in scalars.items())
            print(f"step {self.iteration}/{self.total}: {shown}{' (best)' if improved else ''}", flush=True)
            self.checkpoints.save_last(self.state())
        del self.eval_model

    def _stop(self, signum: int) -> None:
        if self.info.is_main:
            path = self.checkpoints.save_last(self.state())
            raise Interrupted(f"stopped by {signal.Signals(signum).name} at step {self.iteration}/{self.total}; "
                              f"saved {path}. Continue with: {self.command} --out {self.out} --resume", 128 + signum)
        raise Interrupted("", 128 + signum)

    def fit(self) -> dict:
        """Train to ``total`` steps (or ``--stop-after``); returns a summary of the run, the last evaluation's
        scores under ``"metrics"``."""
        start, stop = time.perf_counter(), min(self.total, self.args.stop_after or self.total)
        if self.iteration >= self.total and self.evaluated and self.info.is_main:
            print(f"{self.out} already finished its {self.total} steps: nothing to resume (start a new run with "
                  f"another --out)", flush=True)
        with StopSignals(verbose=self.info.is_main) as signals:
            if not self.evaluated:  # resumed between an epoch's last.pt and its evaluation
                self._evaluate_and_save()
            while self.iteration < stop:
                self.train_epoch(stop, signals)
                boundary = self.iteration % self.iters_per_epoch == 0 or self.iteration == self.total
                epoch = math.ceil(self.iteration / self.iters_per_epoch)
                if boundary:
                    self.evaluated = not (epoch % self.args.eval_interval == 0 or self.iteration == self.total)
                received = signals.agreed(self.info.device)
                if received:
                    self._stop(received)
                if self.info.is_main:
                    self.checkpoints.save_last(self.state())
                if not self.evaluated:
                    self._evaluate_and_save()
                barrier()
        if self.info.is_main and self.iteration >= self.total and self.last_metrics is not None:
            self.write_results(self.last_metrics)
        self.log.close()
        rows = [r for r in read_metrics(self.log.path) if r["split"] == "val"] if self.info.is_main else []
        return {"iterations": self.iteration, "seconds": time.perf_counter() - start, "best": self.checkpoints.best,
                f"final_{self.metric}": rows[-1][self.metric] if rows else None, "metrics": self.last_metrics}

    def describe(self) -> str:
        """One line with the settings in effect, and why for those that follow ``--pretrained``."""
        a = self.args
        data = f"--data-root {a.data_root}" if a.data_root else "the built-in sample data"
        start = f"pretrained ({a.pretrained})" if uses_pretrained(a) else "from scratch"
        given = getattr(a, "_given", ())
        derived = [f"--{key.replace('_', '-')} {getattr(a, key)} ({value.text})"
                   for key, value in self.defaults.derived(a).items()
                   if key not in given and getattr(a, key) is not None]
        why = f" [defaults that follow other options: {'; '.join(derived)}]" if derived else ""
        return (f"{self.task}: {data}; {a.backbone} {start}, backbone lr x{a.backbone_lr_mult:g}; batch "
                f"{a.batch_size}; {self.total} steps = {self.total / self.iters_per_epoch:g} epochs of "
                f"{self.iters_per_epoch}; {a.optimizer} lr {a.lr:g} {a.schedule}; {self.info.world_size} process(es) "
                f"x {torch.get_num_threads()} threads + {a.workers} loader workers; out {self.out}{why}")

    @property
    def bare_model(self) -> nn.Module:
        """The model without its DDP wrapper."""
        return unwrap(self.model)


def train_main(trainer_cls: type[Trainer], parse_args, argv: list[str] | None) -> dict:
    """The ``main`` of both trainers: parse, join the process group, set threads, train, release the group."""
    args, state = parse_args(argv)
    info = setup_distributed(args.device, timeout=args.dist_timeout)
    set_cpu_threads(info, threads=args.threads, workers=args.workers)
    if info.device.type == "cpu":
        reuse_freed_memory()  # a step's activations reuse the last step's pages instead of faulting in new ones
    try:
        trainer = trainer_cls(args, info, state)
        if info.is_main:
            print(trainer.describe(), flush=True)
        summary = trainer.fit()
    finally:
        cleanup_distributed()
    if info.is_main:
        final = summary[f"final_{trainer.metric}"]
        print(f"done: {summary['iterations']} steps in {summary['seconds']:.0f} s; val {trainer.metric} final "
              f"{'-' if final is None else f'{100 * final:.2f}'}, best {100 * summary['best']:.2f}; outputs in "
              f"{args.out}", flush=True)
    return summary
