"""hydratune's own Lightning callbacks: the metric history behind metrics.json and loss.png, and throughput."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor

from hydratune.bench import (
    peak_memory_mb,
    process_start,
    real_tokens,
    summarize_steps,
)
from hydratune.generate import stop_ids

log = logging.getLogger(__name__)


class Epochs(L.Callback):
    """Epochs counted on the training loader itself (packed rows, each rank's share, accumulation), once the
    data are ready and before the schedule is built. A fractional `trainer.max_epochs` (1.5, as the HF
    Trainer's num_train_epochs) ends the run after ceil(1.5 x optimizer steps per epoch); Lightning counts
    whole epochs only. A `trainer.max_steps` that ends the run before the epochs asked for is said here."""

    def __init__(self, epochs: float, max_steps: int):
        self.epochs, self.max_steps = epochs, max_steps

    def setup(self, trainer, pl_module, stage: str) -> None:
        datamodule = trainer.datamodule
        if stage != "fit" or datamodule is None or self.epochs <= 0:
            return
        per_epoch = steps_per_epoch(trainer)
        if not per_epoch:
            return
        wanted = epoch_steps(self.epochs, per_epoch)
        if self.epochs != int(self.epochs):
            steps = wanted if self.max_steps <= 0 else min(wanted, self.max_steps)
            trainer.fit_loop.epoch_loop.max_steps = steps
            log.info("trainer.max_epochs=%g: %d optimizer steps (%d an epoch)", self.epochs, steps, per_epoch)
        warn_if_steps_end_epochs_early(self.epochs, self.max_steps, per_epoch)


class EvaluateAfterSteps(L.Callback):
    """A `trainer.val_check_interval` given as a share of an epoch (0.25), in batches once the loader is known,
    moved to the end of an accumulation window (`train.evaluate_after_steps` does it for a count of batches):
    an evaluation mid-window scores the last step's weights again, and a best.ckpt saved there cannot resume
    exactly. Lowered to a whole window (at least one), so an epoch gets at least the evaluations asked for:
    Lightning does not evaluate at an epoch's end with a share, so raising it lost one (0.25 of 125 batches,
    31, raised to 32, evaluated 3 times)."""

    def on_train_start(self, trainer, pl_module) -> None:
        interval, batches = trainer.val_check_interval, trainer.val_check_batch
        accumulate = trainer.accumulate_grad_batches
        if not isinstance(interval, float) or interval >= 1.0 or accumulate <= 1 or batches == float("inf"):
            return
        if batches % accumulate == 0:
            return
        trainer.val_check_batch = max(batches // accumulate, 1) * accumulate
        log.info(
            "trainer.val_check_interval=%g (%d batches) ends inside an accumulation window of %d: evaluating "
            "every %d batches (%d optimizer steps), after an optimizer step",
            interval, batches, accumulate, trainer.val_check_batch, trainer.val_check_batch // accumulate,
        )  # fmt: skip


def steps_per_epoch(trainer) -> int:
    """Optimizer steps in one epoch of this rank's training loader (packed rows, its share of every global
    batch, trainer.limit_train_batches), counted on a loader of the datamodule's own: not the fit loop's,
    whose resumed position is restored later."""
    batches = len(trainer.datamodule.train_dataloader())
    limit = trainer.limit_train_batches
    batches = min(batches, limit) if isinstance(limit, int) else int(batches * limit)
    return -(-batches // trainer.accumulate_grad_batches)  # Lightning steps on a short last window


def epoch_steps(epochs: float, per_epoch: int) -> int:
    """ceil(epochs x optimizer steps per epoch), without float noise (0.1 x 30 is not above 3)."""
    return -(-int(epochs * per_epoch * 1000) // 1000)


def warn_if_steps_end_epochs_early(epochs: float, max_steps: int, per_epoch: int) -> None:
    """trainer.max_epochs set beside the default trainer.max_steps: Lightning stops at whichever comes first,
    so asking for 3 epochs can end in the first. Said before training, with the fix."""
    wanted = epoch_steps(epochs, per_epoch)
    if epochs > 0 and max_steps > 0 and max_steps < wanted:
        log.warning(
            "trainer.max_steps=%d ends the run before trainer.max_epochs=%g (%d optimizer steps, %d an epoch); "
            "add trainer.max_steps=-1 to train the whole epochs",
            max_steps, epochs, wanted, per_epoch,
        )  # fmt: skip


class LRMonitor(LearningRateMonitor):
    """Lightning's LearningRateMonitor, logging once per optimizer step (it logged at every micro-batch of an
    accumulation window, so metrics.csv and TensorBoard held each step's learning rate N times), at the step
    the rate is used for: step N's rate at N, beside its loss (Lightning's was at N - 1)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._logged_at: int | None = None

    def on_train_batch_start(self, trainer, *args, **kwargs) -> None:
        step = trainer.global_step + 1
        if self.logging_interval == "epoch" or step == self._logged_at:
            return
        if not trainer._logger_connector.should_update_logs:
            return
        self._logged_at = step
        stats = self._extract_stats(trainer, "step" if self.logging_interval is None else "any")
        stats = self.renamed(stats)
        for logger in trainer.loggers if stats else ():
            logger.log_metrics(stats, step=step)

    @staticmethod
    def renamed(stats: dict) -> dict:
        """`train/lr` for the first parameter group's rate, `train/lr/pgN` for the others (LoRA+'s B matrices, the
        no-decay group). Lightning's `lr-AdamW/pg1` changed with the optimizer class and the groups, so a sweep
        over optimizers had no common learning-rate curve (review L17)."""
        out, first = {}, True
        for key, value in stats.items():
            if not key.startswith("lr-"):
                out[key] = value
                continue
            out["train/lr" if first else f"train/lr/{key.split('/', 1)[-1]}"] = value
            first = False
        return out


class Throughput(L.Callback):
    """Counts real (non-pad) tokens and trained tokens; logs `train/tokens_per_s` over the last `window`
    batches at every logged step (a rate logged once per window was repeated by Lightning at every logged
    step until the next one).

    Time is wall-clock over training batches (validation excluded). Each launch's first batch is its warm-up
    (kernels picked, memory first allocated, lazy imports): the run's rate leaves it out and `warmup_seconds`
    says how long it took, so a run resumed once reads as fast as one that never stopped (review Q3).
    """

    def __init__(self, window: int = 10):
        from collections import deque

        self.window = window
        self.tokens = 0  # non-pad tokens seen in training
        self.trained_tokens = 0  # tokens with a label
        self.token_labels = False  # the task trains tokens (a classifier's labels are one class per row)
        self.padded_tokens = 0  # every position, pad included
        self.samples = 0  # training samples (a packed row's each counted)
        self.train_seconds = 0.0
        self.warmup_seconds = 0.0  # the first batch of each launch, in train_seconds too
        self.warmup_tokens = 0
        self.warmup_samples = 0
        self._launch_batches = 0  # batches this process has trained (not saved: a resume warms up again)
        self._batch_start = 0.0
        self._recent: deque = deque(maxlen=window)  # (real tokens, samples, seconds) of the last batches

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        elapsed = time.perf_counter() - self._batch_start
        if "input_ids" not in batch:  # the task built its rows in the step (GRPO samples them): it counts
            counts = getattr(pl_module, "step_tokens", None) or {}
            real, rows = counts.get("real", 0), counts.get("rows", 0)
            self.trained_tokens += counts.get("trained", 0)
            self.token_labels = self.token_labels or "trained" in counts
            self.padded_tokens += counts.get("padded", real)
        else:
            mask = batch.get("attention_mask")
            if mask is not None:
                real = int(mask.sum())
            elif "real_tokens" in batch:  # packed rows carry no attention mask (hydratune.data.collate)
                real = int(batch["real_tokens"])
            else:
                real = batch["input_ids"].numel()
            if batch["labels"].dim() == 2:  # token labels; a classifier's labels are one class id per row
                self.trained_tokens += int((batch["labels"][:, 1:] != -100).sum())
                self.token_labels = True
            self.padded_tokens += batch["input_ids"].numel()
            # samples, not rows: a packed row holds several (packing read as 5x slower: review Q1)
            rows = int(batch["num_samples"]) if "num_samples" in batch else batch["input_ids"].size(0)
        self.tokens += real
        self.samples += rows
        self.train_seconds += elapsed
        if self._launch_batches == 0:
            self.warmup_seconds += elapsed
            self.warmup_tokens += real
            self.warmup_samples += rows
        self._launch_batches += 1
        self._recent.append((real, rows, elapsed))
        if not trainer._logger_connector.should_update_logs:  # only a logged step's values reach the loggers
            return
        seconds = max(sum(r[2] for r in self._recent), 1e-9)
        pl_module.log("train/tokens_per_s", sum(r[0] for r in self._recent) / seconds, prog_bar=True)
        pl_module.log("train/samples_per_s", sum(r[1] for r in self._recent) / seconds)
        if self.token_labels:
            pl_module.log("train/trained_tokens", float(self.trained_tokens))
        pl_module.log("train/padding_efficiency", self.tokens / max(self.padded_tokens, 1))
        pl_module.log("train/peak_memory_mb", peak_memory_mb())

    def _rate(self, count: int, warmup: int) -> float:
        """Per second over the batches after each launch's warm-up; over all of them when there are none."""
        seconds = self.train_seconds - self.warmup_seconds
        if count - warmup > 0 and seconds > 0:
            return (count - warmup) / seconds
        return count / max(self.train_seconds, 1e-9)

    @property
    def tokens_per_second(self) -> float:
        return self._rate(self.tokens, self.warmup_tokens)

    @property
    def samples_per_second(self) -> float:
        return self._rate(self.samples, self.warmup_samples)

    # Saved in checkpoints, so a resumed run's totals count the whole run.
    COUNTERS = (
        "tokens",
        "trained_tokens",
        "padded_tokens",
        "samples",
        "train_seconds",
        "token_labels",
        "warmup_seconds",
        "warmup_tokens",
        "warmup_samples",
    )

    def state_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.COUNTERS}

    def load_state_dict(self, state_dict: dict) -> None:
        for name in self.COUNTERS:
            setattr(self, name, state_dict.get(name, getattr(self, name)))


class ProgressLines(L.Callback):
    """With no progress bar (a batch job, SLURM, output to a file), one log line every `every` optimizer steps:
    the step, its train/loss, learning rate and tokens/s. train.log showed nothing between the parameter count
    and the summary (review L8). The tasks log a line at each evaluation themselves."""

    def __init__(self, every: int):
        self.every = max(int(every or 1), 1)
        self._said = -1
        self._step_lr: float | None = None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if optimizer is trainer.optimizers[0]:  # the rate the step uses, as the LR monitor logs it
            self._step_lr = float(optimizer.param_groups[0]["lr"])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        last = step == trainer.max_steps
        if step == self._said or not trainer.is_global_zero or not (step % self.every == 0 or last):
            return
        metrics = trainer.callback_metrics
        if "train/loss" not in metrics:
            return
        self._said = step
        parts = [f"train/loss {float(metrics['train/loss']):.4f}"]
        lr = self._step_lr if self._step_lr is not None else None
        if lr is None and trainer.optimizers:
            lr = float(trainer.optimizers[0].param_groups[0]["lr"])
        if lr is not None:
            parts.append(f"lr {lr:.3g}")
        if "train/tokens_per_s" in metrics:
            parts.append(f"{float(metrics['train/tokens_per_s']):.0f} tokens/s")
        total = f"/{trainer.max_steps}" if trainer.max_steps and trainer.max_steps > 0 else ""
        log.info("step %d%s: %s", step, total, ", ".join(parts))


class GradNorm(L.Callback):
    """Logs `train/grad_norm`: the global L2 norm of the gradients before clipping, at each optimizer step."""

    def __init__(self):
        self._params: list | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        # Listed once, after the strategy has set the model up: walking every module of a PEFT model
        # at each step costs more than the norm itself.
        self._params = [p for p in pl_module.parameters() if p.requires_grad]

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        from hydratune.sharding import grad_norm, shard_layout

        params = self._params if self._params is not None else list(pl_module.parameters())
        grads = [p.grad for p in params if p.grad is not None]
        if grads:  # under FSDP, the norm over every rank's shard, as the clipping uses
            norm = grad_norm(grads, *shard_layout(trainer))
            pl_module.log("train/grad_norm", norm, on_step=True, on_epoch=False)


class History(L.Callback):
    """Keeps (step, value) curves of train loss, learning rate and validation loss for the end-of-run files."""

    def __init__(self):
        self.train_loss: list[tuple[int, float]] = []
        self.lr: list[tuple[int, float]] = []
        self.val_loss: list[tuple[int, float]] = []
        # The task's own validation curves (its module's `plot_metrics`, e.g. DPO's val/accuracy).
        self.val_metrics: dict[str, list[tuple[int, float]]] = {}
        self.last_step_evaluation = False  # train.evaluate_last_step's validate(): a curve point too

    def on_train_start(self, trainer, pl_module) -> None:
        self._recorded_step = trainer.global_step  # a resumed run's curves go on after its checkpoint's step
        self._step_lr: float | None = None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        # The rate this step uses, as Lightning's LR monitor logs it: read after the step, the scheduler had
        # already moved it on, and loss.png's curve ran one step ahead of the loggers' (review L19).
        if optimizer is trainer.optimizers[0]:
            self._step_lr = float(optimizer.param_groups[0]["lr"])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = trainer.callback_metrics.get("train/loss")
        step = trainer.global_step
        # One point per optimizer step, at its last micro-batch (whose logged loss is the step's): the others
        # drew a second point at the previous step's x (review L11).
        if loss is None or step <= getattr(self, "_recorded_step", -1):
            return
        self._recorded_step = step
        self.train_loss.append((step, float(loss)))
        lr = getattr(self, "_step_lr", None)
        if lr is None and trainer.optimizers:  # a fused-backward optimizer (LOMO) steps inside training_step
            lr = float(trainer.optimizers[0].param_groups[0]["lr"])
        if lr is not None:
            self.lr.append((step, lr))

    def state_dict(self) -> dict:
        # Saved in checkpoints, so loss.png and metrics.json of a resumed run cover the whole run.
        return {
            "train_loss": self.train_loss, "lr": self.lr, "val_loss": self.val_loss, "val_metrics": self.val_metrics
        }  # fmt: skip

    def load_state_dict(self, state_dict: dict) -> None:
        for name in ("train_loss", "lr", "val_loss"):
            setattr(self, name, [tuple(point) for point in state_dict.get(name, [])])
        self.val_metrics = {k: [tuple(p) for p in v] for k, v in state_dict.get("val_metrics", {}).items()}

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or "val/loss" not in trainer.callback_metrics:
            return
        if trainer.state.fn == "validate" and trainer.global_step > 0 and not self.last_step_evaluation:
            return  # a check of the exported weights after training (classification), not a curve point
        self.val_loss.append((trainer.global_step, float(trainer.callback_metrics["val/loss"])))
        for name in getattr(pl_module, "plot_metrics", ()):
            if name in trainer.callback_metrics:
                value = float(trainer.callback_metrics[name])
                self.val_metrics.setdefault(name, []).append((trainer.global_step, value))

    def plot(self, path: str | Path) -> None:
        """Write loss.png: train and validation loss, learning rate, and the task's own validation curves
        (a third panel, when the task has any)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = 3 if self.val_metrics else 2
        fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4))
        ax_loss, ax_lr = axes[0], axes[1]
        if self.val_metrics:
            for name, points in self.val_metrics.items():
                axes[2].plot(*zip(*points), "o-", label=name)
            axes[2].set_xlabel("optimizer step")
            axes[2].set_title("validation")
            axes[2].legend()
        if self.train_loss:
            ax_loss.plot(*zip(*self.train_loss), label="train/loss", alpha=0.7)
        if self.val_loss:
            ax_loss.plot(*zip(*self.val_loss), "o-", label="val/loss")
        ax_loss.set_xlabel("optimizer step")
        ax_loss.set_ylabel("loss")
        ax_loss.legend()
        if self.lr:
            ax_lr.plot(*zip(*self.lr))
        ax_lr.set_xlabel("optimizer step")
        ax_lr.set_ylabel("learning rate")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)


class SampleGenerations(L.Callback):
    """Greedy answers to the first `num_prompts` validation prompts after each evaluation.

    Appended to `<run>/generations.jsonl` (step, prompt, generation, reference) and sent to the loggers
    that take text (TensorBoard, W&B, MLflow). Causal-LM tasks only: samples whose labels are not
    token ids (classification) are skipped.
    """

    def __init__(self, tokenizer, path: str | Path, num_prompts: int = 4, max_new_tokens: int = 32):
        self.tokenizer = tokenizer
        self.path = Path(path)
        self.num_prompts = num_prompts
        self.max_new_tokens = max_new_tokens
        self._said_unsafe = False

    def _prompts(self, trainer) -> list[tuple[list[int], str]]:
        data = getattr(trainer.datamodule, "val_dataset", None)
        out = []
        for row in (data[i] for i in range(min(self.num_prompts, len(data)))) if data is not None else []:
            if "prompt_ids" in row:  # preference data: the prompt, and the chosen answer as the reference
                answer = row.get("chosen_ids") or row.get("completion_ids") or []
                out.append((row["prompt_ids"], self.tokenizer.decode(answer, skip_special_tokens=True)))
                continue
            labels = row.get("labels")
            if not isinstance(labels, list) or "position_ids" in row:  # a class id, or a packed row
                return []
            start = next((i for i, label in enumerate(labels) if label != -100), len(labels))
            # The answer: the trained run from there (a conversation's later turns are not its reference).
            end = next((i for i in range(start, len(labels)) if labels[i] == -100), len(labels))
            reference = self.tokenizer.decode(row["input_ids"][start:end], skip_special_tokens=True)
            out.append((row["input_ids"][:start], reference))
        return out

    def prompt_text(self, ids: list[int]) -> str:
        """A prompt as the model read it: the chat template's markers kept (they were stripped, so a chat
        prompt read "system\n\nBe brief.user\n\n...": review T12), the BOS the tokenizer adds left out."""
        return self.tokenizer.decode(
            ids[1:] if ids[:1] == [self.tokenizer.bos_token_id] else ids, skip_special_tokens=False
        )

    def on_validation_end(self, trainer, pl_module) -> None:
        import json

        import torch

        if trainer.sanity_checking or not trainer.is_global_zero or self.num_prompts <= 0:
            return
        if samples_unsafe(trainer):
            if not self._said_unsafe:
                log.info("samples: not generated during training under FSDP or DeepSpeed ZeRO-3 (it would break "
                         "the run); generate from the export instead: hydratune generate RUN_DIR")  # fmt: skip
                self._said_unsafe = True
            return
        prompts = self._prompts(trainer)
        if not prompts:
            return
        model, was_training = pl_module.model, pl_module.model.training
        model.eval()
        rows = []
        # In the trainer's precision context (autocast for *-mixed), as the validation step ran.
        with torch.no_grad(), trainer.precision_plugin.forward_context():
            for ids, reference in prompts:
                ids = [int(i) for i in ids]  # a prepared split's rows are arrays
                input_ids = torch.tensor([ids], device=pl_module.device)
                out = model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    eos_token_id=stop_ids(model, self.tokenizer),
                    pad_token_id=self.tokenizer.pad_token_id,
                )
                rows.append(
                    {
                        "step": trainer.global_step,
                        "prompt": self.prompt_text(ids),
                        "generation": self.tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True),
                        "reference": reference,
                    }
                )
        model.train(was_training)
        with open(self.path, "a") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
        for logger in trainer.loggers:
            log_table(logger, rows, trainer.global_step)


def samples_unsafe(trainer) -> bool:
    """Whether a generate() between steps would break the run. Under FSDP it calls the wrapped decoder layers
    outside the root module's forward: each layer then takes itself for an FSDP root, and the next state dict
    (checkpoint, export) fails; on several ranks rank 0 alone would also wait forever for the others' shards.
    DeepSpeed ZeRO-3 on several processes: the same wait."""
    from lightning.pytorch.strategies import DeepSpeedStrategy

    from hydratune.sharding import is_fsdp

    strategy = trainer.strategy
    if is_fsdp(trainer):
        return True
    if isinstance(strategy, DeepSpeedStrategy) and trainer.world_size > 1:
        return (strategy.config or {}).get("zero_optimization", {}).get("stage") == 3
    return False


def log_table(logger, rows: list[dict], step: int) -> None:
    """Send a generations table to a logger that takes text; others keep only generations.jsonl."""
    kind = type(logger).__name__
    columns = ["prompt", "generation", "reference"]
    if kind == "TensorBoardLogger":
        cell = lambda text: text.replace("|", "\\|").replace("\n", "<br>")  # noqa: E731
        lines = ["| " + " | ".join(columns) + " |", "|---|---|---|"]
        lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
        logger.experiment.add_text("val/generations", "\n".join(lines), step)
    elif kind == "WandbLogger":
        logger.log_text(
            key="val/generations", columns=columns, data=[[row[c] for c in columns] for row in rows]
        )
    elif kind == "MLFlowLogger":
        logger.experiment.log_dict(logger.run_id, rows, f"generations/step={step:06d}.json")


class StepTimer(L.Callback):
    """Records each optimizer step's end time, real tokens and loss; writes `out` at the end of training."""

    def __init__(self, out: str, pad_token_id: int = 0):
        self.out = out
        self.pad_token_id = pad_token_id
        self.step_ends: list[float] = []
        self.tokens: list[int] = []
        self.padded: list[int] = []
        self.losses: list[float] = []
        self.data_prep = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        # Seconds hydratune.train.prepare_data took (read, tokenize, pack, or read the prepared rows).
        self.data_prep = getattr(trainer.datamodule, "prepare_seconds", None)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = trainer.callback_metrics.get("train/loss")
        self.losses.append(float(loss) if loss is not None else float("nan"))  # on a GPU: waits for the step
        self.step_ends.append(time.time())
        self.tokens.append(real_tokens(batch, self.pad_token_id))
        self.padded.append(batch["input_ids"].numel())

    def on_train_end(self, trainer, pl_module) -> None:
        result = summarize_steps(self.step_ends, self.tokens, self.losses)
        result |= {
            "padding_efficiency": round(sum(self.tokens) / max(sum(self.padded), 1), 4),
            "time_to_first_step_s": round(self.step_ends[0] - process_start(), 2) if self.step_ends else None,
            "data_prep_s": round(self.data_prep, 2) if self.data_prep is not None else None,
        }
        Path(self.out).write_text(json.dumps(result, indent=2))
