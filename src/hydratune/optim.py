"""Optimizers and learning-rate schedules, built on the trainable parameters at the call site.

Every optimizer config is a `_target_` node (the optimizer class and its keyword arguments) plus
hydratune's own keys in `OWN_KEYS`. Three families need more than `cls(param_groups, **kwargs)`:
- LOMO/AdaLomo take the model and update inside backward: the module switches to manual
  optimization (see `is_fused_backward`).
- GaLore projects the gradients of 2-D weight matrices: those go into a group with its settings.
- Schedule-free optimizers keep two weight sequences and must be in eval mode for validation,
  checkpoints and export (see `is_schedule_free`).
"""

from __future__ import annotations

import importlib
import logging
import math

import torch

from hydratune.errors import EXTRAS, install_hint

# Parameters whose name contains one of these get no weight decay.
NO_DECAY_MARKERS = ("bias", "norm", "embed")
# Keys of an optimizer config that hydratune reads itself; the rest go to the optimizer class.
OWN_KEYS = ("galore", "loraplus_lr_ratio")

log = logging.getLogger(__name__)


def optimizer_class(target: str) -> type:
    """Import the class named by `_target_`, naming the extra to install when its package is missing."""
    module_name, _, class_name = target.rpartition(".")
    package = module_name.split(".")[0]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        extra = EXTRAS.get(package)
        hint = install_hint(extra) if extra else f"pip install {package}"
        raise ImportError(f"optimizer._target_={target} needs the {package} package: {hint}") from err
    return getattr(module, class_name)


def is_fused_backward(cfg: dict) -> bool:
    """LOMO and AdaLomo compute gradients and update weights in one backward pass."""
    return cfg["_target_"].startswith("lomo_optim.")


def hand_clipping_to_fused_backward(cfg: dict) -> None:
    """LOMO/AdaLomo update inside backward, before Lightning could clip: `trainer.gradient_clip_val` (the default
    1.0 included) becomes their own `clip_grad_norm` (or `clip_grad_value` with gradient_clip_algorithm=value), so
    `optimizer=lomo` clips as any other optimizer does. In place, on the run's plain config."""
    trainer, optimizer = cfg["trainer"], cfg["optimizer"]
    value = trainer.get("gradient_clip_val")
    if not is_fused_backward(optimizer) or value in (None, 0, 0.0):
        return
    key = "clip_grad_value" if trainer.get("gradient_clip_algorithm") == "value" else "clip_grad_norm"
    if optimizer.get(key) is None:
        optimizer[key] = float(value)
        log.info(
            "trainer.gradient_clip_val=%s: clipped inside LOMO's fused backward (optimizer.%s)", value, key
        )
    trainer["gradient_clip_val"] = None


def is_schedule_free(cfg: dict) -> bool:
    return cfg["_target_"].startswith("schedulefree.")


def optimizer_kwargs(cfg: dict) -> dict:
    kwargs = {k: v for k, v in cfg.items() if not k.startswith("_") and k not in OWN_KEYS}
    for key in ("betas", "eps"):
        if isinstance(kwargs.get(key), list):
            kwargs[key] = tuple(kwargs[key])
    return kwargs


def parameter_groups(
    named_parameters,
    weight_decay: float,
    lr: float,
    loraplus_lr_ratio: float | None = None,
    galore: dict | None = None,
) -> list[dict]:
    """Trainable parameters in groups: decayed, not decayed (biases, norms, embeddings, 1-D), and

    - with `loraplus_lr_ratio`, LoRA B matrices at `lr * ratio` (LoRA+),
    - with `galore`, the 2-D weight matrices of linear layers in a GaLore-projected group.
    """
    groups: dict[str, dict] = {
        "decay": {"params": [], "weight_decay": weight_decay},
        "no_decay": {"params": [], "weight_decay": 0.0},
        "lora_b": {"params": [], "weight_decay": weight_decay, "lr": lr * (loraplus_lr_ratio or 1.0)},
        "galore": {"params": [], "weight_decay": weight_decay, **(galore or {})},
    }
    for name, param in named_parameters:
        if not param.requires_grad:
            continue
        lowered = name.lower()
        if param.ndim < 2 or any(marker in lowered for marker in NO_DECAY_MARKERS):
            groups["no_decay"]["params"].append(param)
        elif loraplus_lr_ratio and "lora_b" in lowered:
            groups["lora_b"]["params"].append(param)
        elif galore and "lm_head" not in lowered:
            groups["galore"]["params"].append(param)
        else:
            groups["decay"]["params"].append(param)
    return [group for group in groups.values() if group["params"]]


def build_optimizer(cfg: dict, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The configured optimizer over `model`'s trainable parameters."""
    cls = optimizer_class(cfg["_target_"])
    kwargs = optimizer_kwargs(cfg)
    if is_fused_backward(cfg):
        return fused_backward_optimizer(cls)(model, **kwargs)
    groups = parameter_groups(
        model.named_parameters(),
        weight_decay=kwargs.get("weight_decay", 0.0),
        lr=kwargs["lr"],
        loraplus_lr_ratio=cfg.get("loraplus_lr_ratio"),
        galore=cfg.get("galore"),
    )
    return cls(groups, **kwargs)


def fused_backward_optimizer(cls: type) -> type:
    """A LOMO-family class whose `step(closure)` runs the closure (the fused backward).

    LOMO has no `step`: it updates inside `fused_backward`. Lightning counts optimizer steps through
    `step`, so the module calls `optimizer.step(closure)` with a closure that does the fused backward.
    """

    class FusedBackward(cls):
        def step(self, closure=None):
            return closure() if closure is not None else None

    FusedBackward.__name__ = cls.__name__
    return FusedBackward


def warmup_steps(cfg: dict, total_steps: int) -> int:
    """`warmup_steps` when set, otherwise `warmup_ratio` of the total optimizer steps (rounded up)."""
    if cfg.get("warmup_steps"):
        return int(cfg["warmup_steps"])
    return math.ceil(total_steps * float(cfg.get("warmup_ratio") or 0.0))


# Schedules with no warmup phase (transformers' factory ignores num_warmup_steps for them).
NO_WARMUP = ("constant", "reduce_lr_on_plateau")


def build_scheduler(cfg: dict, optimizer: torch.optim.Optimizer, total_steps: int):
    """A schedule from transformers' scheduler factory, stepped once per optimizer step.

    `reduce_lr_on_plateau` is the exception: it is stepped after each evaluation, on val/loss.
    """
    from transformers import get_scheduler

    kwargs = dict(cfg.get("kwargs") or {})
    warmup = warmup_steps(cfg, total_steps)
    if (
        warmup and cfg["name"] in NO_WARMUP
    ):  # transformers' schedule takes no warmup: it was dropped unsaid (X7)
        log.warning(
            "scheduler=%s has no warmup: its %d warmup steps are not used (scheduler=constant_with_warmup warms up, "
            "then holds the learning rate)", cfg["name"], warmup,
        )  # fmt: skip
    if cfg["name"] == "warmup_stable_decay" and "num_decay_steps" not in kwargs:
        kwargs["num_decay_steps"] = math.ceil(total_steps * float(cfg.get("decay_ratio", 0.2)))
    return get_scheduler(
        cfg["name"],
        optimizer=optimizer,
        num_warmup_steps=warmup,
        num_training_steps=total_steps,
        scheduler_specific_kwargs=kwargs or None,
    )
