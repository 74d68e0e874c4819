"""Optimizers and learning-rate schedules, built on the trainable parameters at the call site."""

from __future__ import annotations

import math

import torch

# Parameters whose name contains one of these get no weight decay.
NO_DECAY_MARKERS = ("bias", "norm", "embed")


def parameter_groups(named_parameters, weight_decay: float) -> list[dict]:
    """Trainable parameters split into decayed and not-decayed groups (biases, norms, embeddings)."""
    decay, no_decay = [], []
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        lowered = name.lower()
        (no_decay if param.ndim < 2 or any(m in lowered for m in NO_DECAY_MARKERS) else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(cfg: dict, named_parameters) -> torch.optim.Optimizer:
    """The optimizer class named by `_target_`, given parameter groups and the node's other keys."""
    from hydra.utils import get_class

    kwargs = {k: v for k, v in cfg.items() if not k.startswith("_")}
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    groups = parameter_groups(named_parameters, kwargs.get("weight_decay", 0.0))
    return get_class(cfg["_target_"])(groups, **kwargs)


def warmup_steps(cfg: dict, total_steps: int) -> int:
    """`warmup_steps` when set, otherwise `warmup_ratio` of the total optimizer steps (rounded up)."""
    if cfg.get("warmup_steps"):
        return int(cfg["warmup_steps"])
    return math.ceil(total_steps * float(cfg.get("warmup_ratio") or 0.0))


def build_scheduler(cfg: dict, optimizer: torch.optim.Optimizer, total_steps: int):
    """A per-optimizer-step schedule from transformers' scheduler factory."""
    from transformers import get_scheduler

    return get_scheduler(
        cfg["name"],
        optimizer=optimizer,
        num_warmup_steps=warmup_steps(cfg, total_steps),
        num_training_steps=total_steps,
        scheduler_specific_kwargs=cfg.get("kwargs") or None,
    )
