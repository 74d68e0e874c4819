"""`hydratune import` for TRL: the flat YAML of `trl sft|dpo|kto|reward|grpo --config FILE.yaml` (TRL's
TrlParser fills ScriptArguments, ModelConfig, DatasetMixtureConfig and the trainer's config, e.g.
SFTConfig, which extends transformers' TrainingArguments), and the alignment-handbook recipes written in
the same format (`dataset_mixture`, the older `dataset_mixer`, `chat_template`).

Two things set this format apart from the others `hydratune import` reads:
- The file does not name its trainer: `trl dpo` does, on the command line. The stage is inferred from
  keys only one trainer takes (STAGE_KEYS, loss_type values); `--stage` names it, and must agree with
  such keys; with none, TRL's `sft` is taken and the import says so (a note).
- Where the file is silent, TRL's own defaults train, and they are not hydratune's (full fine-tuning,
  not LoRA; a learning rate per trainer; 3 epochs; a linear schedule; bf16; loss on the whole
  conversation). TRL_DEFAULTS writes them, so the experiment trains what `trl` would have trained.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hydratune.errors import UserError
from hydratune.importer import (
    HF_TRAINER_DEFAULTS,
    LF_AX_UNSUPPORTED,
    QUANTIZATION,
    STAGE_TASKS,
    ImportContext,
    Overlay,
    _attention,
    _common,
    _fsdp,
    _grpo_batch,
    _no_checkpoints,
    _number,
    _rewards,
    _set_task,
    _task,
    hf_evaluation,
    trl_loss_type,
    whole_or_fraction,
)
from hydratune.trl_names import TASK_KEYS, TRL_UNSUPPORTED

# Keys only TRL's dataclasses (or the alignment-handbook's) define: how a flat YAML is recognised as TRL.
TRL_KEYS = {
    "use_peft", "dataset_name", "dataset_config", "dataset_train_split", "dataset_test_split",
    "dataset_streaming", "dataset_text_field", "completion_only_loss", "assistant_only_loss", "lora_task_type",
    "lora_target_parameters", "use_bnb_nested_quant", "dataset_mixture", "dataset_mixer", "dataset_splits",
    "num_generations", "reward_funcs", "reward_model_name_or_path", "rpo_alpha", "desirable_weight",
    "undesirable_weight", "center_rewards_coefficient", "max_prompt_length", "packing_strategy",
    "padding_free", "eval_packing", "model_init_kwargs", "precompute_ref_log_probs", "accelerate_config",
}  # fmt: skip
# TRL keys that share a name with an Axolotl or LLaMA-Factory key: they do not make a TRL file theirs.
TRL_SHARED_KEYS = {"datasets", "do_train"}
# Pairs of generic keys that only a TRL file has together.
TRL_PAIRS = (("max_length", "packing"), ("beta", "loss_type"), ("model_name_or_path", "datasets"))


def looks_like_trl(data: dict) -> bool:
    """TRL by its own keys, or by a pair of generic keys that only TRL's configs hold together."""
    if TRL_KEYS & set(data):
        return True
    return any(a in data and b in data for a, b in TRL_PAIRS) and "base_model" not in data


# -- which trainer ------------------------------------------------------------------------------------
# Keys that only some of TRL's trainers take -> those trainers (orpo: the handbook's ORPO recipes).
PREFERENCE = frozenset({"dpo", "kto", "orpo"})
STAGE_KEYS: dict[str, frozenset[str]] = {
    "dataset_text_field": frozenset({"sft"}),
    "completion_only_loss": frozenset({"sft"}),
    "assistant_only_loss": frozenset({"sft"}),
    "packing": frozenset({"sft"}),
    "packing_strategy": frozenset({"sft"}),
    "eval_packing": frozenset({"sft"}),
    "max_seq_length": frozenset({"sft"}),  # SFTConfig before max_length
    "rpo_alpha": frozenset({"dpo"}),
    "reference_free": frozenset({"dpo"}),
    "f_divergence_type": frozenset({"dpo"}),
    "use_weighting": frozenset({"dpo"}),
    "ld_alpha": frozenset({"dpo"}),
    "discopop_tau": frozenset({"dpo"}),
    "label_smoothing": frozenset({"dpo"}),
    "max_prompt_length": PREFERENCE | {"grpo"},  # GRPOConfig had it too, before max_completion_length alone
    "precompute_ref_log_probs": frozenset({"dpo", "kto"}),
    "desirable_weight": frozenset({"kto"}),
    "undesirable_weight": frozenset({"kto"}),
    "center_rewards_coefficient": frozenset({"reward"}),
    "beta": PREFERENCE | {"grpo"},
    "num_generations": frozenset({"grpo"}),
    "reward_funcs": frozenset({"grpo"}),
    "reward_model_name_or_path": frozenset({"grpo"}),
    "reward_weights": frozenset({"grpo"}),
    "num_iterations": frozenset({"grpo"}),
    "epsilon": frozenset({"grpo"}),
    "epsilon_high": frozenset({"grpo"}),
    "scale_rewards": frozenset({"grpo"}),
    "temperature": frozenset({"grpo"}),
    "use_vllm": frozenset({"grpo"}),
}
# loss_type values -> the trainer whose config takes them.
LOSS_STAGES = {
    **dict.fromkeys(("nll", "dft", "chunked_nll"), "sft"),
    **dict.fromkeys(("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                     "aot_pair", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm"), "dpo"),
    **dict.fromkeys(("kto", "apo_zero_unpaired"), "kto"),
    **dict.fromkeys(("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"), "grpo"),
}  # fmt: skip
# With several trainers possible, the first of these is taken (and the note names the others).
STAGE_ORDER = ("sft", "dpo", "kto", "grpo", "reward", "orpo")


def _evidence(data: dict) -> list[tuple[str, frozenset[str]]]:
    """(key, the trainers that take it) for every key of the file that narrows the trainer down."""
    found = [(key, STAGE_KEYS[key]) for key in data if key in STAGE_KEYS]
    losses = data.get("loss_type")
    for loss in losses if isinstance(losses, list) else [losses] if losses else []:
        if str(loss) in LOSS_STAGES:
            stage = LOSS_STAGES[str(loss)]
            found.append((f"loss_type: {loss}", frozenset({stage, "orpo"} if stage == "dpo" else {stage})))
    columns = _columns(data)
    if {"chosen", "rejected"} <= columns:
        found.append(("columns: [chosen, rejected]", frozenset({"dpo", "reward", "orpo"})))
    elif {"completion", "label"} <= columns:
        found.append(("columns: [prompt, completion, label]", frozenset({"kto"})))
    elif "messages" in columns:
        found.append(("columns: [messages]", frozenset({"sft"})))
    return found


def choose_stage(data: dict, context: ImportContext) -> str:
    """The TRL trainer: `--stage` when given (it must agree with the keys), else what the keys decide,
    else TRL's `sft`. A note says which keys decided, or that none did."""
    evidence = _evidence(data)
    if context.stage:
        against = next(((key, s) for key, s in evidence if context.stage not in s), None)
        if against:
            raise UserError(
                f"--stage {context.stage}: the file has {against[0]}, which trl {context.stage} does not take "
                f"(it belongs to {'/'.join(sorted(against[1]))}); nothing was written"
            )
        return context.stage
    candidates = set(STAGE_ORDER)
    for i, (key, stages) in enumerate(evidence):
        if not candidates & stages:
            before = next(k for k, s in evidence[:i] if not s & stages)
            raise UserError(
                f"{key} and {before}: keys of different TRL trainers ({'/'.join(sorted(stages))} vs "
                f"{'/'.join(sorted(dict(evidence)[before]))}); pass --stage to say which; nothing was written"
            )
        candidates &= stages
    named = _named_stage(data, candidates)
    if named:
        key, stage = named
        keys = ", ".join(k for k, _ in evidence)
        others = "|".join(s for s in STAGE_ORDER if s in candidates and s != stage)
        context.notes.append(
            f"stage: {stage} (from {key}{', ' + keys if keys else ''}); pass --stage {others} for another trainer"
        )
        return stage
    if not evidence:
        context.notes.append(
            "stage: sft (no key names a trainer, TRL's command line does: pass --stage dpo for a file written "
            "for `trl dpo`, or --stage kto|reward|grpo)"
        )
        return "sft"
    stage = next(s for s in STAGE_ORDER if s in candidates)
    others = [s for s in STAGE_ORDER if s in candidates and s != stage]
    hint = f"; pass --stage {'|'.join(others)} for a file written for one of those" if others else ""
    context.notes.append(f"stage: {stage} (from {', '.join(key for key, _ in evidence)}){hint}")
    return stage


# Keys whose values name the run: `zephyr-orpo-141b`, `data/zephyr-7b-dpo-qlora`.
RUN_NAME_KEYS = ("hub_model_id", "output_dir", "run_name")


def _named_stage(data: dict, candidates: set[str]) -> tuple[str, str] | None:
    """(key: value, stage) when the run's own name says which of the still possible trainers it is, as a word
    (the alignment-handbook's ORPO recipes differ from its DPO ones by no key, only by that name)."""
    if len(candidates) < 2:
        return None
    for key in RUN_NAME_KEYS:
        words = set(re.split(r"[^a-z0-9]+", str(data.get(key) or "").lower()))
        named = [stage for stage in STAGE_ORDER if stage in candidates and stage in words]
        if len(named) == 1:
            return f"{key}: {data[key]}", named[0]
    return None


# -- TRL's defaults where the file is silent ----------------------------------------------------------
# Per trainer: the learning rate of its config class (SFTConfig 2e-5, DPOConfig 1e-6, ...).
LEARNING_RATES = {"sft": 2e-5, "dpo": 1e-6, "kto": 1e-6, "reward": 1e-4, "grpo": 1e-6, "orpo": 1e-6}
# TrainingArguments' and TRL's base config's defaults that decide what is trained, as hydratune values.
TRL_DEFAULTS: dict[str, Any] = HF_TRAINER_DEFAULTS | {
    "trainer.log_every_n_steps": 10,  # TRL's logging_steps
    "model.dtype": "float32",  # ModelConfig.dtype
    "model.gradient_checkpointing": True,  # TRL's gradient_checkpointing
    "callbacks.model_checkpoint.save_total_limit": None,  # every step checkpoint kept
}
# ModelConfig's LoRA defaults (hydratune's lora/qlora presets differ: dropout 0.0, all-linear, qlora r=64).
LORA_DEFAULTS = {"lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.05}
LORA_KEYS = (*LORA_DEFAULTS, "lora_target_modules", "lora_modules_to_save", "use_rslora", "use_dora")

# -- keys with no counterpart (their reasons: hydratune.trl_names.TRL_UNSUPPORTED) -----------------------------
# Keys that say what hydratune does anyway.
TRL_IMPLIED = {
    "do_train",
    "do_eval",
    "overwrite_output_dir",
    "lora_task_type",
    "dataset_splits",
    "disable_dropout",
}
# TRL's accelerate presets (`accelerate_config: zero2`) -> trainer options; single_gpu is the default.
ACCELERATE = {"zero2": "deepspeed_zero2", "zero3": "deepspeed_zero3", "fsdp1": "fsdp", "fsdp2": "fsdp",
              "multi_gpu": "ddp"}  # fmt: skip


def import_trl(data: dict, overlay: Overlay, context: ImportContext) -> None:
    """TRL's flat YAML into the overlay: the trainer, TRL's defaults, then every key of the file."""
    data = {key: value for key, value in data.items() if value is not None}  # null: the dataclass default
    stage = choose_stage(data, context)
    task, loss = _task(overlay, "--stage" if context.stage else "stage", stage, STAGE_TASKS)
    if loss:
        _set_task(overlay, task, "--stage", "loss", loss)
    _defaults(overlay, data, stage, task, context)
    _peft(overlay, data, task)
    for key, value in data.items():
        if key in DATASET_KEYS or key in LORA_KEYS or key in QUANT_KEYS or key in ("use_peft",):
            continue
        _key(overlay, data, task, key, value)
    _dataset(overlay, data, stage, task, context)
    if task == "grpo":
        _grpo_batch(overlay, data, context)


def _defaults(overlay: Overlay, data: dict, stage: str, task: str, context: ImportContext) -> None:
    """TRL's defaults for what decides the training: the file's own keys, mapped afterwards, win."""
    for key, value in TRL_DEFAULTS.items():
        overlay.set(key, value)
    overlay.set("optimizer.lr", LEARNING_RATES[stage])
    overlay.choose("scheduler", "linear", "lr_scheduler_type")
    if task != "grpo":
        overlay.set("dataset.max_seq_length", 1024)  # max_length
    if task == "grpo":
        overlay.set("task.max_new_tokens", 512)  # max_completion_length
        overlay.set("task.rewards", [])  # TRL's rewards are named in the file; never hydratune's demo reward
        if str(data.get("loss_type", "dapo")) == "dapo":  # TRL's default
            _dapo(overlay, data, context)
    _precision(overlay, data)


def _dapo(overlay: Overlay, data: dict, context: ImportContext) -> None:
    """loss_type: dapo (TRL's default) divides by the completion tokens of the whole accumulated batch on all
    processes. hydratune samples one micro-batch per step, so it has dapo only where that micro-batch is the
    whole batch: one accumulation step after _grpo_batch (which folds the accumulation into the batch where
    the completions of one step do not fill a group) on one device. Elsewhere bnpo, the nearest, and a note."""
    per_device = int(data.get("per_device_train_batch_size", 8))
    accumulation = int(data.get("gradient_accumulation_steps", 1))
    if per_device % int(data.get("num_generations", 8)):
        accumulation = 1  # _grpo_batch makes the accumulated completions one batch of prompts
    processes = data.get("num_processes")
    one_device = (
        int(processes) == 1 if processes is not None else data.get("accelerate_config") not in ACCELERATE
    )
    if accumulation == 1 and one_device:
        overlay.set("task.aggregation", "dapo")
        if "loss_type" not in data:
            context.notes.append(
                "loss_type: TRL's default dapo is task.aggregation=dapo (a token mean over the batch)"
            )
        return
    overlay.set("task.aggregation", "bnpo")
    why = [f"gradient_accumulation_steps {accumulation}"] if accumulation > 1 else []
    why += [] if one_device else ["several processes"]
    context.notes.append(
        f"loss_type: {data.get('loss_type', 'dapo (TRL default)')} divides by the completion tokens of the "
        f"whole accumulated batch ({', '.join(why)}), which hydratune samples one micro-batch at a time: "
        "task.aggregation=bnpo (a token mean per micro-batch) is the nearest; dapo needs "
        "trainer.accumulate_grad_batches=1 on one device"
    )


def _precision(overlay: Overlay, data: dict) -> None:
    """TRL's bf16 defaults to true unless fp16 is set (mixed precision over the model's dtype)."""
    fp16, bf16 = bool(data.get("fp16")), data.get("bf16")
    if fp16 and bf16:
        raise UserError(
            "bf16: true and fp16: true both set: a run trains in one precision; keep fp16 (older GPUs) or bf16"
        )
    overlay.set("trainer.precision", "16-mixed" if fp16 else "32-true" if bf16 is False else "bf16-mixed")


QUANT_KEYS = (
    "load_in_4bit",
    "load_in_8bit",
    "bnb_4bit_quant_type",
    "use_bnb_nested_quant",
    "bnb_4bit_quant_storage",
)


def _peft(overlay: Overlay, data: dict, task: str) -> None:
    """use_peft: LoRA with ModelConfig's values (its defaults where unset); otherwise every weight trains."""
    quantized = data.get("load_in_4bit") or data.get("load_in_8bit")
    if not data.get("use_peft"):
        if quantized:
            key = "load_in_4bit" if data.get("load_in_4bit") else "load_in_8bit"
            raise UserError(
                f"{key}: true without use_peft: true: a quantized base trains through adapters only (TRL "
                "refuses it too); add use_peft: true or drop the key; nothing was written"
            )
        overlay.choose("peft", "none", "use_peft")  # TRL's default: full fine-tuning
        for key in LORA_KEYS:
            if key in data:
                overlay.skip(key, data[key], "used with use_peft: true only (this file trains every weight)")
        return
    quant_type = str(data.get("bnb_4bit_quant_type", "nf4"))
    overlay.choose(
        "peft", "qlora" if data.get("load_in_4bit") and quant_type == "nf4" else "lora", "use_peft"
    )
    values = {**LORA_DEFAULTS, **{k: data[k] for k in LORA_DEFAULTS if k in data}}
    overlay.set("peft.config.r", int(values["lora_r"]))
    overlay.set("peft.config.lora_alpha", _number(values["lora_alpha"]))
    overlay.set("peft.config.lora_dropout", _number(values["lora_dropout"]))
    if task in ("dpo", "kto", "reward") and data.get("disable_dropout", True) and values["lora_dropout"]:
        # DPOConfig/KTOConfig/RewardConfig's disable_dropout (default true) zeroes every dropout, LoRA's too.
        overlay.set("peft.config.lora_dropout", 0.0)
        overlay.skip(
            "lora_dropout", values["lora_dropout"], f"TRL's disable_dropout: true zeroes it for {task}"
        )
    targets = data.get("lora_target_modules")
    if isinstance(targets, list) and len(targets) == 1:
        targets = targets[0]  # ModelConfig: a one-item list is that name (e.g. all-linear)
    overlay.set("peft.config.target_modules", targets)  # None: peft's default modules for the model family
    if "lora_modules_to_save" in data:
        overlay.set("peft.config.modules_to_save", list(data["lora_modules_to_save"]))
    for key in ("use_rslora", "use_dora"):
        if data.get(key):
            overlay.set(f"peft.config.{key}", True)
    if data.get("load_in_4bit"):
        if quant_type != "nf4":
            overlay.choose("quantization", QUANTIZATION.get(quant_type, quant_type), "bnb_4bit_quant_type")
        # TRL: double quantization only with use_bnb_nested_quant; compute in the model's dtype.
        overlay.set("quantization.config.bnb_4bit_use_double_quant", bool(data.get("use_bnb_nested_quant")))
        dtype = data.get("dtype", data.get("torch_dtype", "float32"))
        if dtype in ("float32", "bfloat16", "float16"):
            overlay.set("quantization.config.bnb_4bit_compute_dtype", dtype)
        if "bnb_4bit_quant_storage" in data:
            overlay.set("quantization.config.bnb_4bit_quant_storage", data["bnb_4bit_quant_storage"])
    elif data.get("load_in_8bit"):
        overlay.choose("quantization", "int8", "load_in_8bit")
    if task == "reward" and str(data.get("lora_task_type", "SEQ_CLS")) != "SEQ_CLS":
        overlay.skip(
            "lora_task_type", data["lora_task_type"], "task=reward trains a SEQ_CLS adapter and head"
        )


# -- one key ------------------------------------------------------------------------------------------
def _key(overlay: Overlay, data: dict, task: str, key: str, value: Any) -> None:
    """One key of the file that is not about the data, the adapter or the quantization."""
    if key in ("bf16", "fp16"):
        return  # _precision
    if key in ("dtype", "torch_dtype"):
        overlay.set("model.dtype", str(value))
    elif key == "model_revision":
        overlay.set("model.revision", str(value))
    elif key == "attn_implementation":
        _attention(overlay, key, value)
    elif key in ("max_length", "max_seq_length"):
        if task == "grpo":
            overlay.skip(key, value, "GRPO prompts are kept whole; completions end at task.max_new_tokens")
        else:
            overlay.set("dataset.max_seq_length", int(value))
    elif key == "num_train_epochs":
        if int(data.get("max_steps", -1)) <= 0:  # max_steps > 0 wins over epochs, as in the Trainer
            overlay.set("trainer.max_epochs", whole_or_fraction(value))
    elif key == "max_steps":
        if int(value) > 0:
            overlay.set("trainer.max_steps", int(value))
            overlay.set("trainer.max_epochs", -1)
    elif key == "lr_scheduler_kwargs" and isinstance(value, dict):
        for name, arg in value.items():
            overlay.set(f"scheduler.kwargs.{name}", _number(arg))
    elif key == "packing_strategy":
        if value in ("bfd", "ffd"):  # ffd: older TRL's first-fit decreasing, the same idea as best fit
            overlay.set("dataset.packing_strategy", "bfd")
        else:
            overlay.skip(key, value, "packing is bfd (best fit, a sample longer than a row is cut) or greedy")
    elif key == "report_to":
        _report_to(overlay, value)
    elif key == "save_steps" and isinstance(_number(value), float) and _number(value) < 1:
        overlay.skip(key, value, "a fraction of the run: give callbacks.model_checkpoint.save_steps in steps")
    elif key == "logging_strategy":
        if value != "steps":
            overlay.skip(key, value, TRL_UNSUPPORTED[key])
    elif key == "save_strategy" and str(value).lower() == "no":
        _no_checkpoints(overlay)
    elif key == "save_strategy":
        if value != "steps":
            overlay.skip(
                key, value, "checkpoints: last.ckpt always, step ones every save_steps optimizer steps"
            )
    elif key == "num_processes":
        overlay.set("trainer.devices", int(value))
    elif key == "dataset_num_proc":
        overlay.set("dataset.num_proc", int(value))
    elif key == "eval_on_start":
        overlay.set("eval_before_training", bool(value))
    elif key == "loss_type":
        trl_loss_type(overlay, data, task, value)
    elif key in TASK_KEYS:
        _task_key(overlay, data, task, key, value)
    elif key == "use_vllm" or key.startswith("vllm_"):
        if key != "use_vllm" or value:
            overlay.skip(key, value, "vLLM is not used: GRPO samples inside the training process (KV cache)")
    elif key in ("loss_weights", "reward_weights"):
        pass  # with loss_type / reward_funcs
    elif key == "reward_model_name_or_path" and task == "grpo" and value:
        overlay.set("task.reward_model", str(value))  # a sequence classifier: a folder or a hub id
    elif key == "accelerate_config":
        if value in ACCELERATE:
            overlay.choose("trainer", ACCELERATE[value], key)
        elif value != "single_gpu":
            overlay.skip(key, value, TRL_UNSUPPORTED[key])
    elif key.startswith("hub_") or key == "push_to_hub":
        overlay.skip(key, "***" if key == "hub_token" else value, "runs never upload")
    elif key == "max_prompt_length" and task == "grpo":
        overlay.skip(
            key, value, "GRPO prompts are kept whole: no limit (completions end at task.max_new_tokens)"
        )
    elif key in TRL_UNSUPPORTED:
        shown = sorted(value) if key == "env" and isinstance(value, dict) else value  # names, never values
        overlay.skip(key, shown, TRL_UNSUPPORTED[key])
    elif key in TRL_IMPLIED:
        pass
    elif key == "fsdp":
        _fsdp(overlay, value)
    elif key == "truncation_mode":
        if value != "keep_start":
            overlay.skip(
                key, value, "long samples are cut from the right (dataset.truncation=truncate) or dropped"
            )
    elif key == "system_prompt":  # open-r1's: a system turn put before every prompt
        overlay.skip(key, "...", "hydratune adds no system turn: put it in the data (a system message)")
    elif key == "dataset_prompt_column":  # open-r1's script argument: the column of GRPO's prompts
        if task == "grpo":
            overlay.set("dataset.prompt_column", str(value))
        else:
            overlay.skip(key, value, "read by GRPO recipes (dataset.prompt_column)")
    elif key in LF_AX_UNSUPPORTED or key in ("packing", "save_only_model"):
        _common(overlay, key, value)  # shared names, the same reasons (ddp_timeout, run_name, ...)
    else:
        overlay.map_key(key, value)  # the Trainer's own keys, as every importer maps them


def _report_to(overlay: Overlay, value: Any) -> None:
    """One logger per run here: wandb when listed (it is the remote one), else the Trainer's first."""
    targets = value if isinstance(value, list) else [value]
    if "wandb" in targets:
        overlay.choose("logger", "wandb", "report_to")
        for other in targets:
            if other != "wandb":
                overlay.skip("report_to", other, "one logger per run: logger=wandb was taken")
    else:
        overlay.map_key("report_to", targets[0] if len(targets) == 1 else targets)


def _task_key(overlay: Overlay, data: dict, task: str, key: str, value: Any) -> None:
    if key == "max_completion_length" and task != "grpo":
        overlay.skip(key, value, TRL_UNSUPPORTED[key])
    elif key == "reward_funcs":
        _rewards(overlay, value, data.get("reward_weights"))
    elif key == "scale_rewards" and task == "grpo":
        scale = {True: True, "group": True, False: False, "none": False, "batch": "batch"}.get(value)
        if scale is None:
            overlay.skip(
                key, value, "task.scale_rewards divides by the group's std (group), the batch's or none"
            )
        else:
            overlay.set("task.scale_rewards", scale)
    elif key == "label_smoothing" and str(_first(data.get("loss_type", "sigmoid"))) != "robust":
        # TRL reads it for robust (and losses hydratune does not have); hydratune's sigmoid would read it as
        # conservative DPO, which TRL's sigmoid no longer is.
        overlay.skip(key, value, "TRL reads label_smoothing with loss_type robust only (task.loss=robust)")
    else:
        _set_task(overlay, task, key, TASK_KEYS[key], value)


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) and value else value


# -- the data -----------------------------------------------------------------------------------------
DATASET_KEYS = {
    "dataset_name", "dataset_config", "dataset_train_split", "dataset_test_split", "dataset_streaming",
    "datasets", "streaming", "test_split_size", "dataset_mixture", "dataset_mixer", "dataset_splits",
    "dataset_text_field", "completion_only_loss", "assistant_only_loss", "chat_template", "eval_strategy",
    "eval_steps",
}  # fmt: skip
# TRL's `datasets:` entries name a builder for local files: {path: json, data_files: x.jsonl}.
LOADERS = ("json", "csv", "parquet", "text")


def _columns(data: dict) -> set[str]:
    """The columns a mixture selects (TRL's `datasets`, the handbook's `dataset_mixture`), or those of the first
    row of a `dataset_name` on this disk: the row layout."""
    entries = data.get("datasets") if isinstance(data.get("datasets"), list) else []
    mixture = data.get("dataset_mixture")
    if isinstance(mixture, dict) and isinstance(mixture.get("datasets"), list):
        entries = entries + mixture["datasets"]
    selected = {str(c) for e in entries if isinstance(e, dict) for c in e.get("columns") or []}
    return selected or set(_first_row(data))


# Files of a local dataset folder whose first row tells the layout, by the loader that reads them.
LOCAL_LOADERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def _first_row(data: dict) -> dict:
    """The first row of `dataset_name` when it is a folder or file on this disk (TRL reads it as a hub-style
    folder); {} when it is a hub id or cannot be read."""
    from hydratune.data.peek import read_file

    name = data.get("dataset_name")
    path = Path(str(name)).expanduser() if isinstance(name, str) else None
    if path is None or not path.exists():
        return {}
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in LOCAL_LOADERS)
    train = [f for f in files if "train" in f.name] or files
    if not train or train[0].suffix not in LOCAL_LOADERS:
        return {}
    try:
        rows = read_file(str(train[0]), LOCAL_LOADERS[train[0].suffix], 1).rows
    except (UserError, OSError, ValueError):
        return {}
    return rows[0] if rows and isinstance(rows[0], dict) else {}


def _conversational(row: dict, column: str) -> bool:
    value = row.get(column)
    return isinstance(value, list) and all(isinstance(m, dict) and "content" in m for m in value)


def _dataset(overlay: Overlay, data: dict, stage: str, task: str, context: ImportContext) -> None:
    """The sources (dataset_name, TRL's `datasets`, the handbook's mixtures), validation, and the row layout."""
    evaluate = str(data.get("eval_strategy", "no")) in ("steps", "epoch")
    sources, ops = _sources(overlay, data, evaluate)
    if sources:
        overlay.set("dataset.sources", sources)
        overlay.set("dataset.ops", ops)
        if "dataset_name" in data and not str(sources[0].get("path")) == str(data["dataset_name"]):
            overlay.skip(
                "dataset_name", data["dataset_name"], "ignored: the mixture is read instead, as TRL does"
            )
    elif "dataset_name" not in data:
        overlay.skip("dataset_name", None, "the file names no dataset: set dataset.sources")
    hf_evaluation(overlay, data, context, "TRL", logging_steps=10)
    if task == "sft":
        _sft_rows(overlay, data, context)
    elif task in ("dpo", "reward"):
        _pair_rows(overlay, data, context)
    sft_keys = ["dataset_text_field", "completion_only_loss", "assistant_only_loss"]
    if task not in ("dpo", "reward"):  # the pair rows read chat_template (mapped or reported once there)
        sft_keys.append("chat_template")
    for key in sft_keys:
        if key in data and task != "sft":
            overlay.skip(key, data[key], f"an SFT key: task={task} reads its own rows")


def _sources(overlay: Overlay, data: dict, evaluate: bool) -> tuple[list[dict], list[dict]]:
    """(dataset.sources, dataset.ops). TRL and the handbook read `datasets` / a mixture before dataset_name."""
    if isinstance(data.get("datasets"), list):
        return _trl_mixture(overlay, data)
    if isinstance(data.get("dataset_mixture"), dict):
        return _handbook_mixture(overlay, data["dataset_mixture"])
    if isinstance(data.get("dataset_mixer"), dict):
        return _handbook_mixer(overlay, data)
    if "dataset_name" not in data:
        return [], []
    split = str(data.get("dataset_train_split", "train"))
    source: dict[str, Any] = {"path": str(data["dataset_name"]), "split": split}
    if evaluate:  # TRL: dataset[dataset_test_split] is the eval set only when it evaluates
        source["split"] = {"train": split, "validation": str(data.get("dataset_test_split", "test"))}
    elif "dataset_test_split" in data:
        overlay.skip("dataset_test_split", data["dataset_test_split"], TRL_UNSUPPORTED["dataset_test_split"])
    if data.get("dataset_config"):
        source["name"] = str(data["dataset_config"])
    if data.get("dataset_streaming"):
        source["streaming"] = True
    return [source], []


def _trl_mixture(overlay: Overlay, data: dict) -> tuple[list[dict], list[dict]]:
    """TRL's DatasetMixtureConfig: `datasets: [{path, name, data_dir, data_files, split, columns, fraction}]`,
    `streaming`, `test_split_size`. Fractions are shares of the mix: an interleave op with those
    probabilities (it ends when the first source runs out, so none is oversampled, as in TRL)."""
    sources, fractions = [], []
    for i, entry in enumerate(data["datasets"]):
        if not isinstance(entry, dict) or "path" not in entry:
            overlay.skip(f"datasets.{i}", entry, "a dataset needs a path")
            continue
        path = str(entry["path"])
        if path in LOADERS:
            source: dict[str, Any] = {"loader": path}
            for key in ("data_files", "data_dir"):
                if entry.get(key):
                    source[key] = entry[key]
        else:
            source = {"path": path, "split": str(entry.get("split", "train"))}
            if entry.get("name"):
                source["name"] = str(entry["name"])
            for key in ("data_files", "data_dir"):
                if entry.get(key):
                    overlay.skip(
                        f"datasets.{i}.{key}",
                        entry[key],
                        "hub sources are read by split; local files: path: json",
                    )
        if entry.get("columns"):
            source["ops"] = [{"select_columns": list(entry["columns"])}]
        if data.get("streaming"):
            source["streaming"] = True
        if entry.get("fraction") is not None:
            fractions.append(float(entry["fraction"]))
        sources.append(source)
    ops: list[dict] = []
    if fractions and len(fractions) == len(sources) and len(sources) > 1:
        total = sum(fractions)
        probabilities = [round(f / total, 6) for f in fractions]
        ops.append(
            {
                "interleave": {
                    "probabilities": probabilities,
                    "seed": 0,
                    "stopping_strategy": "first_exhausted",
                }
            }
        )
    elif fractions:
        overlay.skip(
            "datasets.fraction", fractions, "give a fraction for every dataset of the mixture, or none"
        )
    if data.get("test_split_size"):
        ops.append({"split": {"eval": _number(data["test_split_size"]), "seed": 0}})
    return sources, ops


def _handbook_mixture(overlay: Overlay, mixture: dict) -> tuple[list[dict], list[dict]]:
    """The handbook's `dataset_mixture`: each entry's split (all concatenated into training), a shuffled
    `weight` share of it, its `columns`; then `test_split_size` rows held out, with the mixture's seed."""
    seed = int(mixture.get("seed", 0))
    sources = []
    for i, entry in enumerate(mixture.get("datasets") or []):
        if not isinstance(entry, dict) or not entry.get("id"):
            overlay.skip(f"dataset_mixture.datasets.{i}", entry, "a dataset needs an id")
            continue
        source: dict[str, Any] = {"path": str(entry["id"]), "split": str(entry.get("split", "train"))}
        if entry.get("config") and entry["config"] != "default":
            source["name"] = str(entry["config"])
        weight = float(entry.get("weight", 1.0))
        if 0 < weight < 1:
            source.update(fraction=weight, shuffle=True, seed=seed)
        elif weight != 1:
            overlay.skip(f"dataset_mixture.datasets.{i}.weight", weight, "a share of a dataset is in (0, 1]")
        if entry.get("columns"):
            source["ops"] = [{"select_columns": list(entry["columns"])}]
        sources.append(source)
    ops = []
    if mixture.get("test_split_size"):
        ops.append({"split": {"eval": _number(mixture["test_split_size"]), "seed": seed}})
    return sources, ops


def _handbook_mixer(overlay: Overlay, data: dict) -> tuple[list[dict], list[dict]]:
    """The handbook's older `dataset_mixer: {hub_id: fraction}` with `dataset_splits`: the splits named
    train* train, the test* ones validate; a fraction takes that share of each split."""
    splits = [str(s) for s in data.get("dataset_splits") or ["train", "test"]]
    spec = {("train" if "train" in s else "validation"): s for s in splits}
    sources = []
    for hub_id, fraction in data["dataset_mixer"].items():
        source: dict[str, Any] = {"path": str(hub_id), "split": spec}
        if 0 < float(fraction) < 1:
            source.update(fraction=float(fraction), shuffle=True, seed=int(data.get("seed", 42)))
        sources.append(source)
    return sources, []


def _sft_rows(overlay: Overlay, data: dict, context: ImportContext) -> None:
    """SFT rows as TRL reads them, and the tokens it trains: language modeling (a text column, every
    token), prompt-completion (the completion: completion_only_loss defaults to true there) or
    conversational (every token, the assistant turns only with assistant_only_loss)."""
    columns = _columns(data)
    if "dataset_text_field" in data or "text" in columns:
        layout = "text"
    elif data.get("assistant_only_loss") or "messages" in columns or data.get("chat_template"):
        layout = "messages"  # a chat template in the file is for conversational rows (the handbook's)
    elif data.get("completion_only_loss") or {"prompt", "completion"} <= columns:
        layout = "prompt_completion"
    else:
        layout = "text"
        context.notes.append(
            "dataset: rows taken as TRL's language-modeling layout (a `text` column, every token trained); "
            "for conversations (a `messages` column, every token trained as TRL does) add dataset.format=messages "
            "to the command"
        )
    if layout == "text":
        overlay.set("dataset.format", "text")
        overlay.set("dataset.text_column", str(data.get("dataset_text_field", "text")))
        overlay.set("dataset.train_on", "all")
    elif layout == "messages":
        overlay.choices["dataset"] = "chat"
        overlay.set("dataset.format", "messages")
        overlay.set("dataset.messages_column", "messages")
        overlay.set("dataset.train_on", "assistant" if data.get("assistant_only_loss") else "all")
        _chat_template(overlay, data)
    else:
        overlay.set("dataset.format", "prompt_response")
        overlay.set("dataset.prompt_column", "prompt")
        overlay.set("dataset.response_column", "completion")
        overlay.set("dataset.train_on", "all" if data.get("completion_only_loss") is False else "response")
    if "chat_template" in data and layout != "messages":
        overlay.skip("chat_template", "...", "used by conversational rows only")
    if data.get("completion_only_loss") and layout != "prompt_completion":
        overlay.skip("completion_only_loss", True, "TRL applies it to prompt-completion rows only")


def _pair_rows(overlay: Overlay, data: dict, context: ImportContext) -> None:
    """Preference rows: chosen/rejected conversations without a prompt column are TRL's conversational
    layout with an implicit prompt (the handbook's); otherwise prompt/chosen/rejected strings."""
    columns, row = _columns(data), _first_row(data)
    if {"chosen", "rejected"} <= columns and "prompt" not in columns or _conversational(row, "chosen"):
        overlay.set("dataset.format", "chat_pairs")
        _chat_template(overlay, data)
    elif {"prompt", "chosen", "rejected"} <= set(row):  # strings, read from the rows themselves
        overlay.set("dataset.format", "pairs")
    elif "chat_template" in data:
        # a recipe that sets a chat template renders conversations: its rows are (the handbook's recipes)
        overlay.set("dataset.format", "chat_pairs")
        _chat_template(overlay, data)
        context.notes.append(
            "dataset: rows taken as conversations (the file sets a chat_template), rendered with it; for "
            "prompt/chosen/rejected strings add dataset.format=pairs to the command"
        )
    else:
        overlay.set("dataset.format", "pairs")  # strings or conversations: only the rows tell
        context.notes.append(
            "dataset: rows taken as prompt/chosen/rejected strings (TRL's standard layout); for "
            "conversations add dataset.format=chat_pairs to the command"
        )


def _chat_template(overlay: Overlay, data: dict) -> None:
    """The handbook's `chat_template` (Jinja text): a built-in template's name when it is one of them (spacing
    aside), else the Jinja text itself (dataset.chat_template takes a template)."""
    from hydratune.data.formats import CHAT_TEMPLATES, is_jinja

    overlay.set("dataset.chat_template", None)
    template = data.get("chat_template")
    if template is None:
        return
    squeezed = "".join(str(template).split())
    name = next((n for n, t in CHAT_TEMPLATES.items() if "".join(t.split()) == squeezed), None)
    if name:
        overlay.set("dataset.chat_template", name)
    elif is_jinja(template):
        overlay.set("dataset.chat_template", str(template))
    else:
        overlay.skip("chat_template", template, "neither a built-in template's text nor a Jinja template")
