"""Cross-group rules: combinations of options that cannot work together, each with its fix.

One registry, checked right after composition and before any weights or data are loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec

from hydratune.config import canonical_dtype
from hydratune.errors import UserError, install_hint


@dataclass(frozen=True)
class Rule:
    name: str
    keys: str  # the config keys involved, for the message and the docs table
    applies: Callable[[dict], bool]
    message: str


def _target(cfg: dict) -> str:
    return (cfg.get("optimizer") or {}).get("_target_", "")


def _fused_backward(cfg: dict) -> bool:
    return _target(cfg).startswith("lomo_optim.")


def _fused_clip_key(cfg: dict) -> str:
    return "clip_grad_value" if _trainer(cfg, "gradient_clip_algorithm") == "value" else "clip_grad_norm"


def _trainer(cfg: dict, key: str, default=None):
    return (cfg.get("trainer") or {}).get(key, default)


def _lora_init(cfg: dict):
    return ((cfg.get("peft") or {}).get("config") or {}).get("init_lora_weights")


def _peft_method(cfg: dict) -> str:
    return (cfg.get("peft") or {}).get("method", "none")


RULES: list[Rule] = [
    Rule(
        "lomo_accumulation",
        "optimizer, trainer.accumulate_grad_batches",
        lambda c: _fused_backward(c) and (_trainer(c, "accumulate_grad_batches", 1) or 1) > 1,
        "LOMO/AdaLomo update weights inside backward, so gradients cannot accumulate: "
        "set trainer.accumulate_grad_batches=1",
    ),
    Rule(
        "lomo_clipping",
        "optimizer, trainer.gradient_clip_val",
        lambda c: (
            _fused_backward(c)
            and _trainer(c, "gradient_clip_val") not in (None, 0, 0.0)
            and (c.get("optimizer") or {}).get(_fused_clip_key(c)) is not None
        ),
        "LOMO/AdaLomo clip inside their fused backward, where trainer.gradient_clip_val is handed to them: set "
        "one of the two (trainer.gradient_clip_val=null keeps the optimizer's own)",
    ),
    Rule(
        "fused_fp16_clipping",
        "optimizer.fused, trainer.precision, trainer.gradient_clip_val",
        lambda c: (
            (c.get("optimizer") or {}).get("fused") is True
            and str(_trainer(c, "precision", "")) in ("16-mixed", "16")
            and _trainer(c, "gradient_clip_val") not in (None, 0, 0.0)
        ),
        "a fused optimizer unscales fp16 gradients inside its step, after clipping would have run: set "
        "trainer.gradient_clip_val=null, or use optimizer=adamw_torch (bf16-mixed clips a fused one)",
    ),
    Rule(
        "galore_full_finetune",
        "optimizer, peft",
        lambda c: _target(c).startswith("galore_torch.") and _peft_method(c) != "none",
        "GaLore projects the gradients of full weight matrices: use it with peft=none "
        "(LoRA already trains low-rank matrices)",
    ),
    Rule(
        "quantization_needs_peft",
        "quantization, peft",
        lambda c: (
            (c.get("quantization") or {}).get("method", "none") != "none"
            and _peft_method(c) in ("none", "freeze")
        ),
        "quantized weights cannot be trained directly (peft=freeze trains the last layers' own weights): add "
        "adapters (peft=lora or peft=qlora) or set quantization=none",
    ),
    Rule(
        "freeze_trains_nothing",
        "peft.trainable_layers, peft.trainable_modules",
        lambda c: (
            _peft_method(c) == "freeze"
            and not (c.get("peft") or {}).get("trainable_layers")
            and not (c.get("peft") or {}).get("trainable_modules")
        ),
        "peft=freeze with peft.trainable_layers=0 and no peft.trainable_modules trains nothing: set "
        "peft.trainable_layers=2 (the last 2 decoder layers) or name modules in peft.trainable_modules",
    ),
    Rule(
        "lora_init_unquantized",
        "peft.config.init_lora_weights, quantization",
        lambda c: (
            str(_lora_init(c)).startswith(("loftq", "pissa", "olora", "corda", "eva"))
            and (c.get("quantization") or {}).get("method", "none") != "none"
        ),
        "peft.config.init_lora_weights (loftq, pissa, olora, ...) initialises the adapters from the full-precision "
        "weights, which a quantized base does not have (peft refuses it): set quantization=none, or "
        "peft.config.init_lora_weights=true",
    ),
    Rule(
        "loftq_needs_scipy",
        "peft.config.init_lora_weights",
        lambda c: _lora_init(c) == "loftq" and find_spec("scipy") is None,
        "peft.config.init_lora_weights=loftq needs scipy, which is not installed: pip install -c constraints.txt "
        "scipy, or use init_lora_weights=pissa (no scipy) or true",
    ),
    Rule(
        "loraplus_needs_lora",
        "optimizer.loraplus_lr_ratio, peft",
        lambda c: (
            bool((c.get("optimizer") or {}).get("loraplus_lr_ratio"))
            and _peft_method(c) in ("none", "freeze")
        ),
        "optimizer.loraplus_lr_ratio raises the learning rate of LoRA's B matrices, and this run has none: use "
        "peft=lora, or remove optimizer.loraplus_lr_ratio",
    ),
    Rule(
        "adafactor_relative_step",
        "optimizer.relative_step",
        lambda c: bool((c.get("optimizer") or {}).get("relative_step")),
        "optimizer.relative_step=true is Adafactor's own learning-rate schedule, with no lr to give it; hydratune's "
        "schedulers need one: keep optimizer.relative_step=false and set optimizer.lr (scheduler=constant for none)",
    ),
    Rule(
        "wsd_decay_type",
        "scheduler.kwargs.decay_type",
        lambda c: (
            (((c.get("scheduler") or {}).get("kwargs") or {}).get("decay_type", "cosine"))
            not in ("linear", "cosine", "1-sqrt")
        ),
        "scheduler.kwargs.decay_type is linear, cosine or 1-sqrt (warmup_stable_decay's decay): set "
        "scheduler.kwargs.decay_type=cosine",
    ),
    Rule(
        "best_weights_under_fsdp",
        "callbacks.model_checkpoint.load_best_model_at_end, trainer.strategy",
        lambda c: (
            uses_fsdp(c)
            and bool(((c.get("callbacks") or {}).get("model_checkpoint") or {}).get("load_best_model_at_end"))
        ),
        "FSDP's checkpoints are sharded folders, which the export does not read back: set "
        "callbacks.model_checkpoint.load_best_model_at_end=false (the export is the final weights; "
        "best.ckpt stays for ckpt_path=), or use trainer=ddp",
    ),
]


def uses_fsdp(cfg: dict) -> bool:
    """Whether the run's trainer.strategy is FSDP (the preset or any FSDPStrategy class)."""
    strategy = _trainer(cfg, "strategy")
    name = strategy.get("_target_", "") if isinstance(strategy, dict) else str(strategy)
    return "FSDP" in name or name.startswith("fsdp")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _sharded_strategy(cfg: dict) -> bool:
    strategy = _trainer(cfg, "strategy")
    name = strategy.get("_target_", "") if isinstance(strategy, dict) else str(strategy)
    return name.endswith(("FSDPStrategy", "DeepSpeedStrategy")) or name.startswith(("fsdp", "deepspeed"))


def _runs_on_cpu(cfg: dict) -> bool:
    """The trainer will run on CPU: asked for, or `auto` on a machine without CUDA."""
    accelerator = _trainer(cfg, "accelerator", "auto")
    return accelerator == "cpu" or (accelerator in ("auto", None) and not _cuda_available())


# Optimizers whose libraries call `.cuda()` or `torch.cuda.synchronize()` unconditionally.
CUDA_ONLY_OPTIMIZERS = ("lomo_optim.AdaLomo", "galore_torch.GaLoreAdamW8bit")


def _regex_targets_by_layer(cfg: dict) -> bool:
    """peft.config.layers_to_transform with a regex target_modules: peft refuses the pair (all-linear is
    spelled out as the model's linear layers, which it accepts)."""
    config = (cfg.get("peft") or {}).get("config") or {}
    targets = config.get("target_modules")
    return (
        _peft_method(cfg) == "lora"
        and config.get("layers_to_transform") is not None
        and isinstance(targets, str)
        and targets not in ("all", "all-linear", "all_linear")
    )


RULES += [
    Rule(
        "layers_need_named_targets",
        "peft.config.layers_to_transform, peft.config.target_modules",
        _regex_targets_by_layer,
        "peft picks layers (layers_to_transform) of named modules only: set peft.config.target_modules to a "
        "list of names (e.g. [q_proj,v_proj]) or all-linear, not a regex",
    ),
    Rule(
        "qlora_needs_4bit",
        "peft, quantization",
        lambda c: (
            (c.get("peft") or {}).get("name") == "qlora" and (c.get("quantization") or {}).get("bits") != 4
        ),
        "peft=qlora trains LoRA on a 4-bit base: use quantization=nf4 (or fp4), or peft=lora",
    ),
    Rule(
        "cuda_only_optimizer",
        "optimizer, trainer.accelerator",
        lambda c: _target(c) in CUDA_ONLY_OPTIMIZERS and _runs_on_cpu(c),
        "this optimizer's library runs on CUDA only (adalomo, galore_adamw_8bit): on CPU use "
        "optimizer=lomo or optimizer=galore_adamw",
    ),
]


def _dataset(cfg: dict) -> dict:
    return cfg.get("dataset") or {}


def is_number(value) -> bool:
    """An int or float (not a bool, not a number written as text): a range rule's first test, so that a
    null or a quoted value is refused by the rule rather than crashing it."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _has(value) -> bool:
    return value not in (None, "", [])


RULES += [
    Rule(
        "text_or_prompt_columns",
        "dataset.text_column, dataset.prompt_column",
        lambda c: _has(_dataset(c).get("text_column")) and _has(_dataset(c).get("prompt_column")),
        "set either dataset.text_column (plain text, every token trained) or dataset.prompt_column + "
        "dataset.response_column, not both",
    ),
    Rule(
        "packing_needs_max_length",
        "dataset.packing, dataset.max_seq_length",
        lambda c: bool(_dataset(c).get("packing")) and not _dataset(c).get("max_seq_length"),
        "packing fills rows of dataset.max_seq_length tokens: set it (e.g. dataset.max_seq_length=2048)",
    ),
    Rule(
        "deepspeed_quantization",
        "trainer.strategy, quantization",
        lambda c: (
            "deepspeed" in str(_trainer(c, "strategy", "")).lower()
            and (c.get("quantization") or {}).get("method", "none") != "none"
        ),
        "DeepSpeed ZeRO shards full-precision weights and cannot hold bitsandbytes-quantized ones: "
        "use trainer=ddp (or fsdp) with QLoRA, or quantization=none",
    ),
    Rule(
        "fp16_with_bf16",
        "trainer.precision, model.dtype, peft",
        lambda c: (
            str(_trainer(c, "precision")).startswith("16")
            and canonical_dtype((c.get("model") or {}).get("dtype")) == "bfloat16"
            and _peft_method(c) in ("none", "freeze")
        ),
        "fp16 training (trainer.precision=16-mixed) of bfloat16 weights mixes two half precisions "
        "(LoRA adapters are float32, full fine-tuning trains the weights themselves): "
        "use trainer.precision=bf16-mixed, or model.dtype=float16",
    ),
    Rule(
        "sharded_strategy_needs_cuda",
        "trainer.strategy, trainer.accelerator",
        lambda c: _sharded_strategy(c) and _runs_on_cpu(c),
        "FSDP and DeepSpeed shard the model over CUDA GPUs (Lightning refuses them on CPU): on CPU use "
        "trainer=ddp; for GPU nodes reached from here (SLURM) set trainer.accelerator=gpu",
    ),
    Rule(
        "flash_attention_needs_cuda",
        "model.attn_implementation",
        lambda c: (
            (c.get("model") or {}).get("attn_implementation") in ("flash_attention_2", "flash_attention_3")
            and _runs_on_cpu(c)
        ),
        "flash attention runs on CUDA only: on CPU use model.attn_implementation=sdpa "
        "(for GPU nodes reached from here, set trainer.accelerator=gpu)",
    ),
]


def _missing(package: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(package) is None


RULES.append(
    Rule(
        "deepspeed_installed",
        "trainer.strategy",
        lambda c: "deepspeed" in str(_trainer(c, "strategy", "")).lower() and _missing("deepspeed"),
        f"trainer=deepspeed_* needs DeepSpeed: {install_hint('deepspeed')} (CUDA machines), "
        "or use trainer=ddp or trainer=fsdp",
    )
)


def violations(cfg: dict, task_rules: tuple[Rule, ...] = ()) -> list[str]:
    """Messages of every rule the plain-dict config breaks (RULES and the run's task's own), each
    prefixed with its keys."""
    return [f"{rule.keys}: {rule.message}" for rule in (*RULES, *task_rules) if rule.applies(cfg)]


def check(cfg: dict, task_rules: tuple[Rule, ...] = ()) -> None:
    """Raise a one-line UserError for the first broken rule (all of them are listed after it)."""
    found = violations(cfg, task_rules)
    if found:
        raise UserError(" | ".join(found))


def markdown_table(rules: list[Rule]) -> str:
    """The README's compatibility table (tests/test_rules_doc.py keeps it equal to
    hydratune.tasks.registry.all_rules(): RULES and every built-in task's own)."""
    lines = ["| rule | keys | what to do |", "|---|---|---|"]
    lines += [f"| {rule.name} | {rule.keys} | {rule.message} |" for rule in rules]
    return "\n".join(lines)


START, END = "<!-- rules:start -->", "<!-- rules:end -->"


def update_readme(path: str, rules: list[Rule]) -> None:
    """Rewrite the table between the README's rules markers."""
    from pathlib import Path

    text = Path(path).read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    Path(path).write_text(f"{head}{START}\n{markdown_table(rules)}\n{END}{tail}")


if __name__ == "__main__":
    import sys

    from hydratune.tasks.registry import all_rules

    if sys.argv[1:2] == ["--update"]:
        update_readme(sys.argv[2], all_rules())
    else:
        print(markdown_table(all_rules()))
