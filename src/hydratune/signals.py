"""Stop signals: finish the current optimizer step, write last.ckpt, stop, and say how to resume.

SIGTERM/SIGINT stop the run. Under SLURM, the requeue signals (SIGUSR2: submitit's, sent before the
time limit or on preemption; SIGUSR1: Lightning's) stop it the same way, then the job is requeued:
by the handler that was there before training (submitit's, which resubmits the same job), or else by
`scontrol requeue $SLURM_JOB_ID`. A requeued job resumes from that checkpoint (`train.resume_checkpoint`
treats SLURM_RESTART_COUNT > 0 as resume=auto).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading

import lightning as L

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)
REQUEUE_SIGNALS = (signal.SIGUSR2, signal.SIGUSR1)


def slurm_job_id() -> str | None:
    """The id that `scontrol requeue` takes (array jobs: JOBID_TASKID), or None outside SLURM."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


class Stopped(BaseException):
    """A stop signal before training started (data, model load, the evaluation before training): there is
    nothing to checkpoint yet. Not a KeyboardInterrupt, which Lightning turns into exit 1 with its own words."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopBeforeTraining:
    """SIGTERM/SIGINT raise `Stopped` from now until `restore()` (`GracefulStop` takes over while training
    runs). Installed only in the main thread."""

    def __init__(self):
        self._previous: dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self.handle) for sig in SIGNALS}

    @staticmethod
    def handle(signum: int, frame) -> None:
        raise Stopped(signum)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


class Aborted(BaseException):
    """A second SIGINT during training: stop at once, without the checkpoint the first one asked for (not a
    KeyboardInterrupt, which Lightning turns into exit 1 with its own words)."""


class GracefulStop(L.Callback):
    """Turns SIGTERM/SIGINT (and, under SLURM, SIGUSR1/SIGUSR2) into `checkpoint.request_stop()`.

    Handlers are installed when training starts, over the ones that Lightning registers (which would
    raise or save mid-window, before the checkpoint), and the previous ones are put back at the end.
    A second SIGINT aborts at once.
    """

    def __init__(self, checkpoint=None):
        self.checkpoint = checkpoint  # a StepCheckpoint, or None when checkpointing is off
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requeue(self) -> bool:
        return self.received in REQUEUE_SIGNALS

    def handle(self, signum: int, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise Aborted()
        self.received = signum
        name = signal.Signals(signum).name
        then = "requeueing the SLURM job" if self.requeue else "stopping"
        if self.checkpoint is None:
            log.warning("received %s: %s after this step (no checkpointing configured)", name, then)
        else:
            log.warning("received %s: saving a checkpoint after this optimizer step, then %s", name, then)
            self.checkpoint.request_stop(name)

    def on_train_start(self, trainer, pl_module) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for sig in SIGNALS + (REQUEUE_SIGNALS if slurm_job_id() else ()):
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

    def requeue_job(self) -> None:
        """After the checkpoint: hand the signal to the handler that was there before training
        (submitit's requeues the job and exits), or requeue with scontrol; then exit."""
        handler = signal.getsignal(self.received)
        if callable(handler) and handler is not self.handle:
            log.warning("handing %s to %s", self.signal_name, getattr(handler, "__qualname__", handler))
            handler(self.received, None)  # submitit: requeue, then sys.exit
        else:
            job = slurm_job_id()
            try:
                done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
            except OSError as err:  # no scontrol inside the job's container (Pyxis/enroot, Apptainer)
                log.error(
                    "could not requeue SLURM job %s (%s); the checkpoint is written: resubmit the job with "
                    "resume=auto", job, err.strerror or err,
                )  # fmt: skip
                raise SystemExit(128 + self.received) from None
            if done.returncode != 0:
                log.error("scontrol requeue %s failed: %s", job, (done.stderr or done.stdout).strip())
            else:
                log.warning("requeued SLURM job %s; it resumes from the checkpoint", job)
        raise SystemExit(128 + self.received)
