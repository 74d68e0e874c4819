"""Step timing shared by the benchmark runners (scripts/bench.py): wall-clock per optimizer step and
the real (non-pad) tokens each step processed, written as JSON when training ends."""

from __future__ import annotations

import json
import platform
import resource
import statistics
import time
from pathlib import Path

import lightning as L

from hydratune.callbacks import peak_gpu_mb

PROCESS_START = time.time()


def process_start() -> float:
    """When this process was created (falls back to this module's import time)."""
    try:
        import psutil

        return psutil.Process().create_time()
    except ImportError:
        return PROCESS_START


def real_tokens(batch: dict, pad_token_id: int | None = None) -> int:
    """Non-pad tokens of a batch: the attention mask's sum, or (packed rows) the non-pad ids."""
    if batch.get("attention_mask") is not None:
        return int(batch["attention_mask"].sum())
    ids = batch["input_ids"]
    return int((ids != pad_token_id).sum()) if pad_token_id is not None else ids.numel()


def summarize_steps(
    step_ends: list[float], tokens: list[int], losses: list[float], warmup: int = 5, window: int = 5
) -> dict:
    """Median real-token throughput over windows of `window` steps after `warmup` steps."""
    rates = []
    for start in range(warmup, len(step_ends) - window, window):
        seconds = step_ends[start + window] - step_ends[start]
        rates.append(sum(tokens[start + 1 : start + window + 1]) / seconds)
    tail = losses[-window:] if losses else []
    result = {
        "tokens_per_s": round(statistics.median(rates), 1) if rates else None,
        "steps": len(step_ends),
        "final_loss": round(sum(tail) / len(tail), 4) if tail else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    gpu = peak_gpu_mb()  # every runner alike
    if gpu is not None:
        result["peak_gpu_mb"] = round(gpu, 1)
    return result


class StepTimer(L.Callback):
    """Records each optimizer step's end time, real tokens and loss; writes `out` at the end of training."""

    def __init__(self, out: str, pad_token_id: int = 0):
        self.out = out
        self.pad_token_id = pad_token_id
        self.step_ends: list[float] = []
        self.tokens: list[int] = []
        self.padded: list[int] = []
        self.losses: list[float] = []
        self.data_ready = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self.data_ready = time.time()  # Lightning runs datamodule.setup() just before this

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
            "data_prep_s": round(self.data_ready - PROCESS_START, 2) if self.data_ready else None,
        }
        Path(self.out).write_text(json.dumps(result, indent=2))


def versions() -> dict:
    """Versions of the libraries a benchmark result depends on ("missing" where not installed)."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "peft", "lightning", "trl", "datasets"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "missing"
    return out
