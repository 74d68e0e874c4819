"""Step timing shared by the benchmark runners (scripts/bench.py): wall-clock per optimizer step and
the real (non-pad) tokens each step processed, written as JSON when training ends."""

from __future__ import annotations

import platform
import resource
import statistics
import time

PROCESS_START = time.time()


def process_start() -> float:
    """When this process was created (falls back to this module's import time)."""
    try:
        import psutil

        return psutil.Process().create_time()
    except ImportError:
        return PROCESS_START


def peak_gpu_mb() -> float | None:
    """Peak GPU memory allocated by torch in this process; None when it never used CUDA."""
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    return None


def peak_memory_mb() -> float:
    """Peak GPU memory allocated by torch when on CUDA, else the process's peak resident memory (RSS)."""
    gpu = peak_gpu_mb()
    if gpu is not None:
        return gpu
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def real_tokens(batch: dict, pad_token_id: int | None = None) -> int:
    """Non-pad tokens of a batch: the attention mask's sum, or (packed rows) the count the collator made (the pad
    id may be EOS, which the rows hold too: review Q2), else the non-pad ids."""
    if batch.get("attention_mask") is not None:
        return int(batch["attention_mask"].sum())
    if batch.get("real_tokens") is not None:
        return int(batch["real_tokens"])
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
