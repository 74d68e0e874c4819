"""SIGTERM/SIGINT: finish the current optimizer step, write last.ckpt, stop, and say how to resume.

SIGUSR1 under SLURM is left to Lightning's SLURM environment (checkpoint and requeue).
"""

from __future__ import annotations

import logging
import signal
import threading

import lightning as L

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GracefulStop(L.Callback):
    """Turns SIGTERM/SIGINT into `checkpoint.request_stop()`; a second SIGINT aborts at once.

    Handlers are installed when training starts, over the SIGTERM handler that Lightning registers
    (which would raise mid-window, before the checkpoint), and the previous ones are put back at the end.
    """

    def __init__(self, checkpoint=None):
        self.checkpoint = checkpoint  # a StepCheckpoint, or None when checkpointing is off
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def handle(self, signum: int, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum
        name = signal.Signals(signum).name
        if self.checkpoint is None:
            log.warning("received %s: stopping after this step (no checkpointing configured)", name)
        else:
            log.warning("received %s: saving a checkpoint after this optimizer step, then stopping", name)
            self.checkpoint.request_stop(name)

    def on_train_start(self, trainer, pl_module) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self.handle)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.received is not None and self.checkpoint is None:
            trainer.should_stop = True

    def teardown(self, trainer, pl_module, stage: str) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @property
    def signal_name(self) -> str | None:
        return signal.Signals(self.received).name if self.received is not None else None
