"""The command line both trainers share: one spelling and one meaning per idea, defaults that depend on the mode.

A trainer's parser leaves every option ``None``; :class:`Defaults` then fills what the user did not give, from the
mode (``voc`` with ``--data-root``: the published recipe; ``synthetic`` without it: the built-in sample data) or
from other settings (:class:`Derived`, e.g. a backbone learning-rate multiplier that follows ``--pretrained``).
``--help`` shows the default in effect for each mode, and a resumed run takes every option it is not given from
its checkpoint (see :mod:`tasks.engine.resume`). :func:`run` ends user errors in one line, not a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from backbones import list_backbones
from backbones.weights import DownloadError

__all__ = ["TRAINER_COMMON", "Defaults", "Derived", "Interrupted", "add_device_arguments", "add_eval_arguments",
           "add_predict_arguments", "add_trainer_arguments", "parse_train_args", "positive", "pretrained_arg", "run",
           "uses_pretrained"]

MODES = ("voc", "synthetic")


class Interrupted(Exception):
    """A run stopped by a signal after saving its state; ``code`` is the exit status (128 + signal number)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _one_line(error: BaseException) -> str:
    """The message of ``error``; a DataLoader worker's re-raised error is reduced to the original message."""
    text = str(error)
    if "Original Traceback" in text:  # torch.utils.data re-raises worker errors with the worker's traceback
        last = text.rstrip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    return text


def run(main: Callable[[], object], prog: str) -> None:
    """Call ``main``; a bad path, label, argument or an offline download exits 1 with ``prog: error: ...``, an
    interrupted run exits 128 + signal after its one-line note. Anything else (a bug) keeps its traceback."""
    try:
        main()
    except (ValueError, FileNotFoundError, DownloadError) as e:
        sys.exit(f"{prog}: error: {_one_line(e)}")
    except Interrupted as e:
        print(f"{prog}: {e}", file=sys.stderr)
        sys.exit(e.code)


def pretrained_arg(text: str | None) -> bool | str:
    """A ``--pretrained`` value as ``backbones.create_backbone(pretrained=...)`` takes it: ``none`` (or no value)
    gives ``False``, ``default`` the backbone's default named weights, anything else (a named source, path or URL)
    passes through."""
    if text is None:
        return False
    return {"none": False, "default": True}.get(text.lower(), text)


def uses_cuda(args: argparse.Namespace) -> bool:
    """Whether the run computes on CUDA (``--device cuda``, or no ``--device`` and a GPU is available)."""
    return args.device == "cuda" or (args.device is None and torch.cuda.is_available())


def uses_pretrained(args: argparse.Namespace) -> bool:
    """Whether the backbone starts from pretrained weights (``--pretrained`` other than ``none``)."""
    return pretrained_arg(args.pretrained) is not False


def positive(kind: type, *, allow_zero: bool = False) -> Callable[[str], Any]:
    """An argparse ``type`` accepting numbers > 0 (>= 0 with ``allow_zero``); argparse names the flag."""
    def parse(text: str):
        value = kind(text)
        if value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(f"must be {'>= 0' if allow_zero else 'positive'}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


@dataclass(frozen=True)
class Derived:
    """A default computed from the other settings once they are known; ``text`` describes it in ``--help``."""

    compute: Callable[[argparse.Namespace], Any]
    text: str


class Defaults:
    """Defaults of one command: ``common`` for every mode, ``modes[mode]`` where they differ.

    Args:
        common: option -> default (a value or a :class:`Derived`).
        modes: ``{"voc": {...}, "synthetic": {...}}``, each option -> default.
        exclusive: pairs of options of which the user gives at most one; a default applies to neither once
            the user gave one (``--iters`` / ``--epochs``).
    """

    def __init__(self, common: Mapping[str, Any], modes: Mapping[str, Mapping[str, Any]],
                 exclusive: tuple[tuple[str, str], ...] = ()) -> None:
        self.common, self.modes, self.exclusive = dict(common), {m: dict(modes[m]) for m in MODES}, exclusive

    @staticmethod
    def mode(args: argparse.Namespace) -> str:
        return "voc" if args.data_root else "synthetic"

    def _text(self, key: str) -> str | None:
        def show(value: Any) -> str:
            if isinstance(value, (list, tuple)):
                return " ".join(map(str, value))
            return value.text if isinstance(value, Derived) else "unset" if value is None else str(value)

        if key in self.common:
            return f"(default: {show(self.common[key])})"
        values = {m: self.modes[m].get(key) for m in MODES}
        if all(v is None for v in values.values()):
            return None
        if values["voc"] == values["synthetic"]:
            return f"(default: {show(values['voc'])})"
        if values["voc"] is None:
            return f"(default without --data-root: {show(values['synthetic'])})"
        return f"(default with --data-root: {show(values['voc'])}; without: {show(values['synthetic'])})"

    def annotate(self, parser: argparse.ArgumentParser) -> None:
        """Append each option's default, per mode where it differs, to its ``--help`` text."""
        for action in parser._actions:  # argparse offers no public accessor for its actions
            text = self._text(action.dest)
            if text and action.help is not argparse.SUPPRESS:
                action.help = f"{action.help or ''} {text}".strip()

    def table(self, args: argparse.Namespace) -> dict[str, Any]:
        """Option -> default (a value or a :class:`Derived`) in ``args``' mode, the mode's options first."""
        return {**self.modes[self.mode(args)], **self.common}

    def derived(self, args: argparse.Namespace) -> dict[str, Derived]:
        """The options whose default in ``args``' mode follows other settings."""
        return {key: value for key, value in self.table(args).items() if isinstance(value, Derived)}

    def value(self, key: str, args: argparse.Namespace) -> Any:
        """The default of ``key`` in ``args``' mode (a :class:`Derived` is computed from ``args``)."""
        value = self.table(args)[key]
        return value.compute(args) if isinstance(value, Derived) else value

    def fill(self, args: argparse.Namespace) -> argparse.Namespace:
        """Set every option still ``None`` to its default for ``args``' mode; :class:`Derived` ones last."""
        table = self.table(args)
        given = {key for key, value in vars(args).items() if value is not None}
        skip = {b if a in given else a for a, b in self.exclusive if a in given or b in given}
        derived = []
        for key, value in table.items():
            if getattr(args, key, None) is not None or key in skip:
                continue
            if isinstance(value, Derived):
                derived.append((key, value))
            else:
                setattr(args, key, value)
        for key, value in derived:
            setattr(args, key, value.compute(args))
        for a, b in self.exclusive:
            if getattr(args, a, None) is not None and getattr(args, b, None) is not None:
                raise ValueError(f"give --{a.replace('_', '-')} or --{b.replace('_', '-')}, not both")
        return args


def add_trainer_arguments(parser: argparse.ArgumentParser, *, data_root_help: str,
                          data_root_nargs: str | None = None) -> dict[str, argparse._ArgumentGroup]:
    """Add the options both trainers share, all defaulting to ``None``; returns the groups for task options."""
    groups = {name: parser.add_argument_group(name) for name in ("data", "model", "optimisation", "run")}
    data, model, optim, run_ = groups.values()
    data.add_argument("--data-root", nargs=data_root_nargs, help=f"{data_root_help}; omitted: the built-in sample "
                                                                 "data, written under --out")
    data.add_argument("--train-split", help="split list to train on")
    data.add_argument("--val-split", help="split list to evaluate on")
    data.add_argument("--synthetic-images", type=positive(int), nargs=2, metavar=("TRAIN", "VAL"),
                      help="number of built-in sample images (without --data-root)")
    data.add_argument("--workers", type=positive(int, allow_zero=True), help="DataLoader worker processes per process")
    model.add_argument("--backbone", choices=list_backbones(), metavar="NAME",
                       help=f"backbone, one of: {', '.join(list_backbones())}")
    model.add_argument("--pretrained", help="backbone weights: 'default' (the named ImageNet weights), 'none', "
                                            "a named source, a file path or a URL")
    optim.add_argument("--batch-size", type=positive(int), help="global batch, split evenly over the processes")
    optim.add_argument("--iters", type=positive(int), help="total optimizer steps (or give --epochs)")
    optim.add_argument("--epochs", type=positive(int), help="total epochs (or give --iters)")
    optim.add_argument("--warmup-iters", type=positive(int, allow_zero=True), help="linear warmup steps")
    optim.add_argument("--warmup-epochs", type=positive(float, allow_zero=True), help="linear warmup, in epochs")
    optim.add_argument("--schedule", choices=("poly", "cosine"), help="per-step decay after warmup")
    optim.add_argument("--optimizer", choices=("sgd", "adamw"))
    optim.add_argument("--lr", type=positive(float), help="peak learning rate (head; after warmup)")
    optim.add_argument("--backbone-lr-mult", type=positive(float, allow_zero=True), help="backbone lr = lr x this")
    optim.add_argument("--momentum", type=positive(float, allow_zero=True), help="SGD momentum")
    optim.add_argument("--weight-decay", type=positive(float, allow_zero=True), help="on conv/linear weights")
    optim.add_argument("--freeze-bn", action=argparse.BooleanOptionalAction,
                       help="keep the backbone's BatchNorm in eval mode (frozen statistics)")
    optim.add_argument("--amp", action=argparse.BooleanOptionalAction, help="float16 autocast + GradScaler on CUDA")
    optim.add_argument("--channels-last", action=argparse.BooleanOptionalAction,
                       help="train in the NHWC memory format (faster convs with AMP on CUDA)")
    optim.add_argument("--sync-bn", action=argparse.BooleanOptionalAction,
                       help="SyncBatchNorm under DDP on CUDA (torch has no CPU kernel for it)")
    run_.add_argument("--out", help="run directory: checkpoints, metrics.jsonl, figures (and built-in data)")
    run_.add_argument("--resume", nargs="?", const="last",
                      help="continue --out/last.pt (or the given checkpoint) exactly; options not given are taken "
                           "from the checkpoint")
    run_.add_argument("--stop-after", type=positive(int),
                      help="save last.pt and exit after this many total steps (as if stopped; --resume continues)")
    run_.add_argument("--eval-interval", type=positive(int), help="evaluate every N epochs, and at the end")
    run_.add_argument("--log-interval", type=positive(int), help="log the mean training loss every N steps")
    run_.add_argument("--num-visualize", type=positive(int, allow_zero=True), help="val images drawn in figures")
    run_.add_argument("--seed", type=int, help="seed of initialisation, shuffling and augmentation")
    add_device_arguments(run_)
    run_.add_argument("--dist-timeout", type=positive(float),
                      help="seconds a collective waits for the other torchrun processes before failing")
    run_.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, help="also write TensorBoard scalars")
    run_.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                      help="no progress bars or progress lines")
    return groups


def add_device_arguments(group: argparse._ActionsContainer) -> None:
    """``--device`` and ``--threads``, shared by every command that computes."""
    group.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    group.add_argument("--threads", type=positive(int),
                       help="torch CPU threads per process (default on CPU: the cores per process, less one per "
                            "loader worker up to a quarter of them)")


def parse_train_args(parser: argparse.ArgumentParser, defaults: Defaults, argv: list[str] | None, *,
                     task: str) -> tuple[argparse.Namespace, dict | None]:
    """Parse a trainer's command line: ``(args, checkpoint to resume or None)``.

    Options the user gave win; with ``--resume`` the checkpoint's settings fill the others, and then the
    defaults of the mode. Raises ValueError/FileNotFoundError for contradictions (see :mod:`tasks.engine.resume`).
    """
    from .resume import start_or_resume  # resume reads checkpoints; the parser alone does not need it

    args = parser.parse_args(argv)
    args._given = frozenset(key for key, value in vars(args).items() if value is not None)
    if args.out is None:
        args.out = defaults.value("out", args)
    state = start_or_resume(args, task=task)
    return defaults.fill(args), state


def add_eval_arguments(parser: argparse.ArgumentParser, *, batch_size: int = 1) -> None:
    """The options of ``seg_eval`` and ``det_eval``: ``MODEL`` and where to score it."""
    parser.add_argument("model", metavar="MODEL", help="a training checkpoint (best.pt or last.pt of a run), or the "
                                                       ".onnx file tasks.export wrote from one")
    parser.add_argument("--data-root", help="dataset folder (default: the one the run was trained on)")
    parser.add_argument("--split", help="split list to score (default: the run's validation split)")
    parser.add_argument("--batch-size", type=positive(int), default=batch_size, help="images per forward pass")
    parser.add_argument("--workers", type=positive(int, allow_zero=True), default=2, help="DataLoader workers")
    parser.add_argument("--json", help="also write the scores to this JSON file (which must not exist)")
    _add_inference_arguments(parser)


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``seg_predict`` and ``det_predict``: ``MODEL INPUT... --out DIR``."""
    parser.add_argument("model", metavar="MODEL", help="a training checkpoint (best.pt or last.pt of a run), or the "
                                                       ".onnx file tasks.export wrote from one")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders of images")
    parser.add_argument("--out", default="predictions",
                        help="folder for the outputs; existing files are never overwritten")
    parser.add_argument("--visualize", action=argparse.BooleanOptionalAction, default=True,
                        help="also write a picture of each prediction")
    _add_inference_arguments(parser)


def _add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fuse", action=argparse.BooleanOptionalAction, default=True,
                        help="run a checkpoint on its fast path: BatchNorm folded into the convs (exact), the "
                             "device's faster memory format (model.fuse())")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                        help="float16 autocast (CUDA only)")
    add_device_arguments(parser)
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress output")


TRAINER_COMMON: dict[str, Any] = dict(
    momentum=0.9, freeze_bn=False, amp=True, channels_last=True, sync_bn=True,
    stop_after=None, log_interval=20, num_visualize=4, seed=0, device=None, dist_timeout=None,
    tensorboard=False, progress=True, resume=None)
"""Defaults of the shared options that are the same for both tasks and both modes."""
