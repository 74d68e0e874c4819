"""hydratune's own Lightning callbacks: the metric history behind metrics.json and loss.png, and throughput."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L


class Throughput(L.Callback):
    """Counts real (non-pad) tokens and trained tokens; logs `train/tokens_per_s` over the last window.

    Time is wall-clock over training batches (validation excluded).
    """

    def __init__(self, window: int = 10):
        self.window = window
        self.tokens = 0  # non-pad tokens seen in training
        self.trained_tokens = 0  # tokens with a label
        self.padded_tokens = 0  # every position, pad included
        self.train_seconds = 0.0
        self._batch_start = 0.0
        self._window_tokens = 0
        self._window_seconds = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        elapsed = time.perf_counter() - self._batch_start
        mask = batch.get("attention_mask")
        real = int(mask.sum()) if mask is not None else batch["input_ids"].numel()
        self.tokens += real
        self.trained_tokens += int((batch["labels"][:, 1:] != -100).sum())
        self.padded_tokens += batch["input_ids"].numel()
        self.train_seconds += elapsed
        self._window_tokens += real
        self._window_seconds += elapsed
        if (batch_idx + 1) % self.window == 0:
            pl_module.log("train/tokens_per_s", self._window_tokens / max(self._window_seconds, 1e-9))
            pl_module.log("train/padding_efficiency", self.tokens / max(self.padded_tokens, 1))
            self._window_tokens, self._window_seconds = 0, 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(self.train_seconds, 1e-9)


class History(L.Callback):
    """Keeps (step, value) curves of train loss, learning rate and validation loss for the end-of-run files."""

    def __init__(self):
        self.train_loss: list[tuple[int, float]] = []
        self.lr: list[tuple[int, float]] = []
        self.val_loss: list[tuple[int, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = trainer.callback_metrics.get("train/loss")
        if loss is None:
            return
        step = trainer.global_step
        self.train_loss.append((step, float(loss)))
        if trainer.optimizers:
            self.lr.append((step, float(trainer.optimizers[0].param_groups[0]["lr"])))

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or "val/loss" not in trainer.callback_metrics:
            return
        self.val_loss.append((trainer.global_step, float(trainer.callback_metrics["val/loss"])))

    def plot(self, path: str | Path) -> None:
        """Write loss.png: train and validation loss on the left, learning rate on the right."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(10, 4))
        if self.train_loss:
            ax_loss.plot(*zip(*self.train_loss), label="train/loss", alpha=0.7)
        if self.val_loss:
            ax_loss.plot(*zip(*self.val_loss), "o-", label="val/loss")
        ax_loss.set_xlabel("optimizer step")
        ax_loss.set_ylabel("loss (nats / token)")
        ax_loss.legend()
        if self.lr:
            ax_lr.plot(*zip(*self.lr))
        ax_lr.set_xlabel("optimizer step")
        ax_lr.set_ylabel("learning rate")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
