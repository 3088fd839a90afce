"""Ctrl-C and ``kill`` stop a run after the current step instead of losing it.

While :class:`StopSignals` is active, SIGINT and SIGTERM only set a flag; the training loop checks it after every
step, saves ``last.pt`` (mid-epoch state, so ``--resume`` continues exactly) and exits with 128 + the signal
number (130 for SIGINT, 143 for SIGTERM). A second signal stops at once. Under torchrun every rank receives the
signal at a slightly different step, so :meth:`StopSignals.agreed` takes the maximum over ranks after each step:
all ranks stop after the same one. DataLoader workers ignore SIGINT (:func:`ignore_interrupts`), so a Ctrl-C in the
terminal reaches the loop, not the workers.
"""

from __future__ import annotations

import signal
import sys
import threading

import torch
import torch.distributed as dist

__all__ = ["StopSignals", "ignore_interrupts"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def ignore_interrupts(worker_id: int = 0) -> None:
    """``worker_init_fn`` of training DataLoaders: the main process alone decides what SIGINT means."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class StopSignals:
    """Context manager turning SIGINT/SIGTERM into a stop request (handlers restored on exit).

    Attributes:
        received: the signal number received so far, 0 if none.
    """

    def __init__(self, *, verbose: bool = True) -> None:
        self.received, self.verbose, self._previous = 0, verbose, {}

    def _handle(self, signum: int, frame: object) -> None:
        if self.received:
            raise KeyboardInterrupt
        self.received = signum
        if self.verbose:
            print(f"\n{signal.Signals(signum).name}: stopping after this step and saving last.pt "
                  "(press Ctrl-C again to quit without saving)", file=sys.stderr, flush=True)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def agreed(self, device: torch.device) -> int:
        """The signal any process received (0 if none); a collective call under torchrun, made by every rank."""
        if not dist.is_initialized():
            return self.received
        flag = torch.tensor([self.received], dtype=torch.int64, device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())
