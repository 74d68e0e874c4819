"""`hydratune import` for torchtune configs (`tune run RECIPE --config FILE.yaml`).

A torchtune config nests components, `{_component_: dotted.path, arg: value}` (model, tokenizer,
checkpointer, dataset, optimizer, lr_scheduler, loss, metric_logger, profiler), beside flat recipe keys
(batch_size, epochs, gradient_accumulation_steps, dtype, ...). The components decide what is trained,
so they are read first: the loss names the stage (cross-entropy: SFT, DPOLoss: DPO, PPOLoss: the
nearest hydratune task), the model builder the method (`lora_*`: LoRA, `qlora_*`: QLoRA, plain: full
fine-tuning), the checkpointer's folder the model. The recipe itself is named on the command line, not
in the file: a config is read as a single-device recipe unless its keys are ones only torchtune's
distributed recipes read (the import says so either way).

Defaults are torchtune's where they differ from hydratune's (torch's AdamW weight decay of 0.01, no
gradient clipping, LoRA rank 8 / alpha 16 in every `lora_*` builder, Alpaca trained on its prompts),
so a key the file leaves out trains as it did under torchtune. Sources: torchtune's recipes/*.py,
torchtune/models/*/_model_builders.py, torchtune/datasets/*.py, torchtune/models/convert_weights.py.
"""

from __future__ import annotations

import os
import re
from typing import Any

from hydratune.errors import UserError
from hydratune.importer import LF_AX_UNSUPPORTED, UNSUPPORTED, Overlay, _number, _set_task, _task

# The loss component's class -> (hydratune task, task.loss). torchtune's recipe for each loss is the stage.
LOSSES: dict[str, tuple[str, str | None]] = {
    "LinearCrossEntropyLoss": ("sft", None),
    "CEWithChunkedOutputLoss": ("sft", None),
    "CrossEntropyLoss": ("sft", None),
    "DPOLoss": ("dpo", "sigmoid"),
    "RSOLoss": ("dpo", "hinge"),  # "hinge" loss of SLiC/RSO
    "IPOLoss": ("dpo", "ipo"),  # older torchtune releases
    "SimPOLoss": ("dpo", "simpo"),  # older torchtune releases
    "PPOLoss": ("grpo", None),  # PPO's value model has no counterpart: the group baseline replaces it
    "GRPOLoss": ("grpo", None),  # a token mean over the whole batch: task.aggregation=bnpo (_stage)
    "GRPOSimpleLoss": ("grpo", None),
    "GRPOCompletionLoss": ("grpo", None),
}
# (loss class, its argument) -> the task key it becomes.
LOSS_ARGS: dict[tuple[str, str], str] = {
    ("DPOLoss", "beta"): "beta",
    ("DPOLoss", "label_smoothing"): "label_smoothing",
    ("RSOLoss", "gamma"): "beta",  # RSO's temperature is DPO's beta
    ("IPOLoss", "tau"): "beta",
    ("SimPOLoss", "beta"): "beta",
    ("SimPOLoss", "gamma"): "simpo_gamma",
    ("SimPOLoss", "label_smoothing"): "label_smoothing",
    ("PPOLoss", "epsilon"): "epsilon",
    ("GRPOLoss", "epsilon"): "epsilon",
    ("GRPOLoss", "kl_coeff"): "beta",
    ("GRPOSimpleLoss", "epsilon"): "epsilon",
    ("GRPOSimpleLoss", "kl_coeff"): "beta",
    ("GRPOCompletionLoss", "epsilon"): "epsilon",
    ("GRPOCompletionLoss", "kl_coeff"): "beta",
}
# Recipe keys of the RL recipes (PPO, the dev GRPO recipes) -> task keys of task=grpo.
RL_VALUES = {
    "temperature": "temperature",
    "max_generated_tokens": "max_new_tokens",
    "kl_coeff": "beta",  # PPO's KL penalty weight; GRPO puts the KL term in the loss
    "ppo_epochs": "num_iterations",  # optimisation passes over each batch of samples
    "grpo_samples": "num_generations",
}
# torchtune module names -> Hugging Face (peft) module names (torchtune's own _TO_PEFT_TARGET_MODULES).
TO_PEFT = {"q_proj": "q_proj", "k_proj": "k_proj", "v_proj": "v_proj", "output_proj": "o_proj"}
MLP = ["gate_proj", "down_proj", "up_proj"]  # w1, w2, w3
FUSED_FAMILIES = ("phi3", "phi4")  # Hugging Face Phi-3/Phi-4 fuse q/k/v (qkv_proj) and w1/w3 (gate_up_proj)
# The defaults of every `lora_*` builder in torchtune.models.
LORA_DEFAULTS = {"lora_rank": 8, "lora_alpha": 16, "lora_dropout": 0.0}
LORA_KEYS = {
    "lora_attn_modules", "apply_lora_to_mlp", "apply_lora_to_output", "lora_rank", "lora_alpha",
    "lora_dropout", "use_dora", "quantize_base",
}  # fmt: skip
# Optimizer component -> (conf/optimizer option, the component's own defaults where hydratune's differ).
OPTIMIZERS: dict[str, tuple[str, dict[str, Any]]] = {
    "torch.optim.AdamW": ("adamw_torch", {"weight_decay": 0.01}),
    "torch.optim.SGD": ("sgd", {"momentum": 0.0}),
    "bitsandbytes.optim.PagedAdamW": ("paged_adamw_32bit", {"weight_decay": 0.01}),
    "bitsandbytes.optim.PagedAdamW32bit": ("paged_adamw_32bit", {"weight_decay": 0.01}),
    "bitsandbytes.optim.PagedAdamW8bit": ("paged_adamw_8bit", {"weight_decay": 0.01}),
    "bitsandbytes.optim.AdamW8bit": ("adamw_8bit", {"weight_decay": 0.01}),
}
OPTIMIZER_ARGS = {"lr", "weight_decay", "betas", "eps", "momentum", "nesterov"}
LOGGERS = {
    "DiskLogger": "csv",  # metrics to a local file
    "TensorBoardLogger": "tensorboard",
    "WandBLogger": "wandb",
    "MLFlowLogger": "mlflow",
    "StdoutLogger": "none",  # the progress bar and train.log show the loss
}
LOGGER_ARGS = {
    ("WandBLogger", "project"): "logger.wandb.project",
    ("WandBLogger", "name"): "logger.wandb.name",
    ("MLFlowLogger", "experiment_name"): "logger.mlflow.experiment_name",
    ("MLFlowLogger", "tracking_uri"): "logger.mlflow.tracking_uri",
}
PRECISION = {"bf16": "bf16-true", "fp32": "32-true", "fp16": "16-true"}  # weights and compute in that dtype
DEVICES = {"cuda": "cuda", "cpu": "cpu", "mps": "mps"}
# Built-in dataset builders: their hub source (and configuration), the rows they read, and defaults.
DATASETS: dict[str, dict[str, Any]] = {
    "alpaca_dataset": {"source": "tatsu-lab/alpaca", "rows": "alpaca", "train_on_input": True},
    "alpaca_cleaned_dataset": {"source": "yahma/alpaca-cleaned", "rows": "alpaca", "train_on_input": True},
    "slimorca_dataset": {"source": "Open-Orca/SlimOrca-Dedup", "rows": "sharegpt"},
    "chat_dataset": {"rows": "chat"},
    "instruct_dataset": {"rows": "instruct"},
    "text_completion_dataset": {"rows": "text", "column": "text", "split_across_pack": True},
    "cnn_dailymail_articles_dataset": {
        "source": "ccdv/cnn_dailymail", "name": "3.0.0", "rows": "text", "column": "article"},
    "wikitext_dataset": {
        "source": "EleutherAI/wikitext_document_level", "name": "wikitext-103-v1", "rows": "text", "column": "page"},
    # torchtune renders question and answers as a user and an assistant turn with the model's chat format
    "stack_exchange_paired_dataset": {
        "source": "lvwerra/stack-exchange-paired", "data_dir": "data/rl", "rows": "chat_pairs",
        "columns": {"prompt": "question", "chosen": "response_j", "rejected": "response_k"}},
    "preference_dataset": {"rows": "chat_pairs"},
    "hh_rlhf_helpful_dataset": {"source": "RLHFlow/HH-RLHF-Helpful-standard", "rows": "chat_pairs"},
}  # fmt: skip
LOCAL_LOADERS = ("json", "csv", "parquet", "text")
MASKING = {"train_on_all": "all", "train_on_assistant": "assistant", "train_on_last": "last_assistant"}
# Keys that only distributed recipes read: their presence makes the run an FSDP one.
DISTRIBUTED_KEYS = ("fsdp_cpu_offload", "fsdp_reshard_after_forward", "custom_sharded_layers", "fsdp")
# Keys that restate what hydratune does anyway (the value is not reported).
IMPLIED = {
    "log_peak_memory_stats",  # train/peak_memory_mb is always logged
    "enable_kv_cache",  # GRPO sampling always uses the KV cache
    "data_parallel_shard_dim",  # FSDP shards over every process
    "recipe_checkpoint",  # resume state lives in Lightning checkpoints
    "checkpoint_files",  # transformers reads the folder's own index
    "model_type",  # transformers reads config.json
    "collate_fn",  # batches are padded (or packed) per format
}
# Recipe keys with no counterpart, and why (docs/options.md's torchtune "Not supported" table).
TT_UNSUPPORTED: dict[str, str] = {
    "output_dir": UNSUPPORTED["output_dir"],
    "resume_from_checkpoint": UNSUPPORTED["resume_from_checkpoint"],
    "compile": "torch.compile is not wired",
    "enable_activation_offloading": LF_AX_UNSUPPORTED["activation_offloading"],
    "optimizer_in_bwd": "the optimizer steps after the whole backward pass (no per-parameter step in backward)",
    "log_level": "logging goes to the console and <run>/train.log at INFO",
    "low_cpu_ram": "weights are loaded by transformers (low_cpu_mem_usage) on every process",
    "enable_async_checkpointing": "checkpoints are written synchronously",
    "ac_mode": "activation checkpointing is on or off (model.gradient_checkpointing)",
    "ac_option": "activation checkpointing is on or off (model.gradient_checkpointing)",
    "tensor_parallel_dim": "tensor parallelism is not supported: trainer=fsdp shards the model",
    "tensor_parallel_plan": "tensor parallelism is not supported: trainer=fsdp shards the model",
    "context_parallel_dim": "context parallelism is not supported: trainer=fsdp shards the model",
    "data_parallel_replicate_dim": "hybrid sharding: trainer.strategy.sharding_strategy=HYBRID_SHARD",
    "quantizer": "quantization-aware training is not supported",
    "resize_token_embeddings": "the embeddings keep the tokenizer's size; add tokens to the tokenizer first",
    "save_every_n_epochs": "checkpoints are written every callbacks.model_checkpoint.save_steps steps",
    "ppo_batch_size": "each batch of prompts is one step (task.num_iterations passes over it)",
    "forward_batch_size": "sampling runs on the whole batch of prompts",
    "top_k": LF_AX_UNSUPPORTED["top_k"],
    "min_response_length": "completions end at EOS or task.stop; no minimum length",
    "penalise_no_eos": "rewards come from task.rewards entries; write a penalty as a reward function",
    "reward_penalty": "rewards come from task.rewards entries; write a penalty as a reward function",
    "stop_token_ids": "stop strings are task.stop (one token each)",
    "whiten_rewards": LF_AX_UNSUPPORTED["ppo_whiten_rewards"],
    "gamma": "no value model: advantages are group-normalised rewards (no GAE discount)",
    "lmbda": "no value model: advantages are group-normalised rewards (no GAE lambda)",
    "value_coeff": "no value model: advantages are group-normalised rewards",
    "value_clip_range": "no value model: advantages are group-normalised rewards",
    "reward_and_value_model": "no value model (the group baseline replaces it); the reward model is the folder of "
    "reward_checkpointer (task.reward_model)",
    "value_checkpointer": "no value model: advantages are group-normalised rewards",
    "reward_checkpointer": "not a Hugging Face folder (FullModelHFCheckpointer): set task.reward_model to a "
    "task=reward run or a saved sequence classifier",
    "reward_functions": "rewards are task.rewards entries (a _target_ and a weight each); write them by hand",
    "ref_checkpointer": LF_AX_UNSUPPORTED["ref_model"],
    "ref_policy_checkpointer": LF_AX_UNSUPPORTED["ref_model"],
    "adapter_checkpoint": LF_AX_UNSUPPORTED["lora_model_dir"],
    "new_system_prompt": LF_AX_UNSUPPORTED["default_system"],
    "filter_fn": "write the filter as a dataset op: dataset.ops=[{filter: EXPR}]",
    "prompt_template": "the chat template comes from the tokenizer, or dataset.chat_template=chatml",
    "split_across_pack": "packing keeps each sample whole in one row (longer ones are cut at max_seq_length)",
    "add_eos": "EOS always ends a trained sample",
    "shuffle": "training batches are always shuffled (by seed)",
}


def import_torchtune(data: dict, overlay: Overlay) -> None:
    variables = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", str(data)))  # keys other keys read: ${key}
    _refuse_what_has_no_task(data)
    data = _resolve(data)
    task = _stage(data, overlay)
    _model(data, overlay)
    _tokenizer(data, overlay)
    handled = {"model", "policy_model", "tokenizer", "checkpointer", "loss", "dataset", "dataset_val"}
    handled |= {"kd_loss", "teacher_model", "teacher_checkpointer"}
    for key, value in data.items():
        if key not in handled:
            _recipe_key(overlay, data, task, key, value, variables)
    _defaults(data, overlay)
    _distribution(data, overlay)
    _data(data, overlay, task)
    if "PPOLoss" in str(data.get("loss")):
        _ppo_batch(data, overlay)
    if data.get("max_steps_per_epoch"):
        # Lightning counts batches per epoch, torchtune optimizer steps: scaled by the accumulation.
        accumulation = int(data.get("gradient_accumulation_steps") or 1)
        overlay.set("trainer.limit_train_batches", int(data["max_steps_per_epoch"]) * accumulation)


def _ppo_batch(data: dict, overlay: Overlay) -> None:
    """PPO samples one completion for each of `batch_size` prompts per step, `num_steps` completions in all;
    GRPO samples groups of task.num_generations for each prompt. The completions per step and the number of
    sampling steps stay what the file says: batch_size / G prompts, num_steps / batch_size rounds, each
    `ppo_epochs` optimizer steps (task.num_iterations)."""
    batch = int(data.get("batch_size") or 64)  # the PPO recipes' batch_size
    group = next((g for g in (8, 4, 2) if batch % g == 0 and batch // g >= 1), None)
    if group is None:
        overlay.skip("batch_size", batch, "GRPO samples groups of task.num_generations >= 2 per prompt: an odd "
                     "batch of completions does not split; set dataset.batch_size (prompts) x task.num_generations")  # fmt: skip
        return
    overlay.set("task.num_generations", group)
    overlay.set("dataset.batch_size", batch // group)
    overlay.skip(
        "batch_size", batch, f"PPO samples 1 completion for each of {batch} prompts per step; GRPO compares a "
        f"group per prompt: {batch // group} prompts x task.num_generations={group} keep {batch} completions per "
        "step (dataset.batch_size counts prompts)",
    )  # fmt: skip
    if data.get("num_steps"):
        passes = int(data.get("ppo_epochs") or 1)
        rounds = max(int(data["num_steps"]) // batch, 1)
        overlay.set("trainer.max_steps", rounds * passes)
        overlay.set("trainer.max_epochs", -1)
        overlay.skip(
            "num_steps", data["num_steps"], f"{rounds} sampling steps of {batch} completions, each "
            f"{passes} optimizer step(s) over the whole batch (task.num_iterations; PPO also splits it into "
            f"ppo_batch_size minibatches): trainer.max_steps={rounds * passes}",
        )  # fmt: skip


def _defaults(data: dict, overlay: Overlay) -> None:
    """torchtune's recipe defaults for keys the file leaves out, where hydratune's differ."""
    if "dtype" not in data:
        overlay.set("trainer.precision", "32-true")  # training.get_dtype(None): fp32
    if "clip_grad_norm" not in data:
        overlay.set("trainer.gradient_clip_val", None)  # no clipping
    if "lr_scheduler" not in data:
        overlay.choose("scheduler", "constant", "lr_scheduler")  # no scheduler: the optimizer's lr throughout
    # the checkpointer keeps every checkpoint unless keep_last_n_checkpoints says otherwise
    overlay.values.setdefault("callbacks.model_checkpoint.save_total_limit", None)


def _resolve(data: dict) -> dict:
    """OmegaConf interpolations (`${output_dir}/logs`) resolved as `tune run` resolves them; one that cannot be
    (a missing key, a resolver of the recipe's own such as `${eval:...}`) stops the import, naming its key."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    config = OmegaConf.create(data)
    for key, node in _leaves(config):
        try:
            OmegaConf.select(config, key, throw_on_resolution_failure=True)
        except OmegaConfBaseException as err:
            raise UserError(
                f"{key}: {node}: cannot resolve an interpolation ({str(err).splitlines()[0]}); nothing was written"
            ) from err
    try:
        return OmegaConf.to_container(config, resolve=True)
    except OmegaConfBaseException as err:
        raise UserError(f"cannot resolve an interpolation: {str(err).splitlines()[0]}") from err


def _leaves(config, prefix: str = ""):
    """(dotted key, raw value) of every interpolated leaf of an OmegaConf node."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    items = config.items_ex(resolve=False) if isinstance(config, DictConfig) else enumerate(config)
    for key, _ in items:
        dotted = f"{prefix}{key}"
        node = config._get_node(key)
        if isinstance(node, DictConfig | ListConfig):
            yield from _leaves(node, f"{dotted}.")
        elif OmegaConf.is_interpolation(config, key):
            yield dotted, node._value()


def _name(component: Any) -> str:
    """`torchtune.modules.loss.LinearCrossEntropyLoss` -> LinearCrossEntropyLoss."""
    return str(component.get("_component_", "") if isinstance(component, dict) else component).rsplit(".")[-1]


def _args(component: dict) -> dict:
    return {k: _number(v) for k, v in component.items() if k != "_component_"}


def _refuse_what_has_no_task(data: dict) -> None:
    """Knowledge distillation and vision models have no hydratune counterpart: one line, nothing written."""
    for key in ("kd_loss", "teacher_model"):
        if key in data:
            raise UserError(
                f"{key}: {_name(data[key])}: knowledge distillation (a teacher's logits as targets) has no "
                "hydratune task; nothing was written (drop the teacher and kd_loss to fine-tune the student "
                "with SFT)"
            )
    if "orchestration" in data and isinstance(data.get("training"), dict):
        raise UserError(
            "orchestration, training: torchtune's asynchronous GRPO recipe (vLLM workers and Ray actors) is not "
            "imported; import a synchronous GRPO recipe (recipes/configs/dev/3B_full_grpo.yaml) instead; nothing "
            "was written"
        )
    if "optimizer" not in data and "dataset" not in data:
        raise UserError(
            "optimizer, dataset: not in the file: a torchtune generation, evaluation or quantization config, "
            "not a fine-tuning one; nothing was written"
        )
    builder = str((data.get("model") or {}).get("_component_", ""))
    if "vision" in builder or ".llama4." in builder or "multimodal" in str(data.get("dataset")):
        raise UserError(
            f"model: {builder}: vision-language models are not supported (hydratune trains text-only "
            "causal LMs); nothing was written"
        )


def _stage(data: dict, overlay: Overlay) -> str:
    """The task from the loss component; a loss with no hydratune task stops the import."""
    loss = data.get("loss")
    if not isinstance(loss, dict):
        overlay.skip("loss", "(not in the file)", "read as SFT, the loss of torchtune's fine-tuning recipes")
        overlay.choices["task"] = "sft"
        return "sft"
    name = _name(loss)
    task, task_loss = _task(overlay, "loss", name, LOSSES)
    if task_loss:
        _set_task(overlay, task, "loss", "loss", task_loss)
    # masked_mean over every token of the batch; GRPOSimpleLoss's per sequence is grpo's
    if name == "GRPOLoss":
        overlay.set("task.aggregation", "bnpo")
    if name == "PPOLoss":
        overlay.skip(
            "loss", name, "mapped to task=grpo: group-normalised rewards, PPO's value model is not used"
        )
    for arg, value in _args(loss).items():
        if (name, arg) in LOSS_ARGS:
            _set_task(overlay, task, f"loss.{arg}", LOSS_ARGS[(name, arg)], value)
        elif arg in TT_UNSUPPORTED:
            overlay.skip(f"loss.{arg}", value, TT_UNSUPPORTED[arg])
        elif arg != "num_output_chunks":  # the loss is computed in chunks anyway (task.fused_loss)
            overlay.skip(f"loss.{arg}", value, "no hydratune counterpart known")
    if task == "grpo":
        # Nothing in the file names hydratune reward functions: the task's own example reward must not
        # score these completions unseen; the run's checks ask for task.rewards or task.reward_model.
        overlay.set("task.rewards", [])
    return task


def _model(data: dict, overlay: Overlay) -> None:
    """The checkpointer's folder is the model; the builder decides the method and the LoRA layers."""
    _checkpointer(data, overlay)
    key = "model" if "model" in data else "policy_model"
    model = data.get(key)
    if not isinstance(model, dict):
        overlay.skip(key, "(not in the file)", "the method comes from the model builder; peft=lora kept")
        return
    builder = str(model.get("_component_", ""))
    name, family = _name(model), builder.split(".")[-2] if builder.count(".") >= 1 else ""
    args = _args(model)
    quantized = name.startswith("qlora_") or bool(args.get("quantize_base"))
    if name.startswith(("lora_", "qlora_")):
        method = "qlora" if quantized else "dora" if args.get("use_dora") else "lora"
        overlay.choose("peft", method, f"{key}._component_")
        _lora(overlay, key, family, {**LORA_DEFAULTS, **args})
    else:
        overlay.choose("peft", "none", f"{key}._component_")  # a plain builder: every weight trains
    for arg, value in args.items():
        if arg not in LORA_KEYS:
            overlay.skip(f"{key}.{arg}", value, "the architecture comes from the checkpoint's config.json")


def _lora(overlay: Overlay, key: str, family: str, args: dict) -> None:
    overlay.set("peft.config.r", int(args["lora_rank"]))
    overlay.set("peft.config.lora_alpha", args["lora_alpha"])
    overlay.set("peft.config.lora_dropout", args["lora_dropout"])
    if args.get("use_dora"):
        overlay.set("peft.config.use_dora", True)
    fused = family in FUSED_FAMILIES
    modules: list[str] = []
    attention = list(args.get("lora_attn_modules") or [])
    for module in attention:
        if module not in TO_PEFT:
            overlay.skip(
                f"{key}.lora_attn_modules", module, "attention modules: q_proj, k_proj, v_proj, output_proj"
            )
        else:
            modules.append("qkv_proj" if fused and module != "output_proj" else TO_PEFT[module])
    if fused and 0 < len({"q_proj", "k_proj", "v_proj"} & set(attention)) < 3:
        overlay.skip(
            f"{key}.lora_attn_modules", attention,
            f"{family} fuses q/k/v into qkv_proj in Hugging Face weights: the adapter covers all three",
        )  # fmt: skip
    if args.get("apply_lora_to_mlp"):
        modules += ["gate_up_proj", "down_proj"] if fused else MLP
    if args.get("apply_lora_to_output"):
        modules.append("lm_head")
    overlay.set("peft.config.target_modules", list(dict.fromkeys(modules)))


def _hf_folder(checkpointer: Any) -> bool:
    """A checkpointer that reads a Hugging Face folder (which transformers loads as it is)."""
    return (
        isinstance(checkpointer, dict)
        and "checkpoint_dir" in checkpointer
        and _name(checkpointer) == "FullModelHFCheckpointer"
    )


def _checkpointer(data: dict, overlay: Overlay) -> None:
    checkpointer = data.get("checkpointer")
    if not isinstance(checkpointer, dict) or "checkpoint_dir" not in checkpointer:
        raise UserError(
            "checkpointer.checkpoint_dir: missing: it names the model's folder; nothing was written (add the "
            "checkpointer, or import and then set model.pretrained_model_name_or_path=ORG/NAME)"
        )
    name, folder = _name(checkpointer), str(checkpointer["checkpoint_dir"])
    overlay.model(folder)  # a Hugging Face folder (config.json + weights) loads with from_pretrained
    if name != "FullModelHFCheckpointer":
        overlay.skip(
            "checkpointer._component_", name,
            "a Meta/torchtune-format checkpoint, which transformers cannot load: convert it to a Hugging Face "
            "folder, or set model.pretrained_model_name_or_path=ORG/NAME (the hub id of the same model)",
        )  # fmt: skip
    for arg, value in _args(checkpointer).items():
        if arg == "keep_last_n_checkpoints":
            overlay.set("callbacks.model_checkpoint.save_total_limit", int(value))
        elif arg in ("output_dir", "adapter_checkpoint"):
            if value and not (arg == "output_dir" and value == data.get("output_dir")):  # reported once
                overlay.skip(f"checkpointer.{arg}", value, TT_UNSUPPORTED[arg])
        elif arg == "should_load_recipe_state":
            if value:
                overlay.skip(f"checkpointer.{arg}", value, TT_UNSUPPORTED["resume_from_checkpoint"])
        elif arg not in ("checkpoint_dir", "safe_serialization") and arg not in IMPLIED:
            overlay.skip(f"checkpointer.{arg}", value, "no hydratune counterpart known")


# torchtune's configs say in a comment how their checkpoint folder is made:
# `tune download ORG/NAME --output-dir FOLDER [--ignore-patterns ...]`.
_DOWNLOAD = re.compile(r"tune download\s+(\S+/\S+)\b[^\n]*?--output-dir[\s=]+(\S+)")


def missing_checkpoint_note(text: str, folder: str | None) -> str | None:
    """When the file's checkpoint folder (the imported model path) is not on this machine: the hub id the
    file's own `tune download` comment fetches into it, to train from instead (or to download first)."""
    if not folder or os.path.isdir(os.path.expanduser(folder)):
        return None
    hub_id = next(
        (repo for repo, out in _DOWNLOAD.findall(text) if out.strip("'\"").rstrip("/") == folder.rstrip("/")),
        None,
    )
    if hub_id is None:
        return (
            f"checkpointer.checkpoint_dir={folder} is not on this machine: the run loads the model from there; "
            "copy the model's Hugging Face folder there, or set model.pretrained_model_name_or_path=ORG/NAME"
        )
    return (
        f"checkpointer.checkpoint_dir={folder} is not on this machine; the file fills it with `tune download "
        f"{hub_id}`: run that, or train from the hub with model.pretrained_model_name_or_path={hub_id}"
    )


def _tokenizer(data: dict, overlay: Overlay) -> None:
    tokenizer = data.get("tokenizer") or {}
    folder = str((data.get("checkpointer") or {}).get("checkpoint_dir", "")).rstrip("/")
    for arg, value in _args(tokenizer).items():
        if arg == "max_seq_len":
            if value is None:
                overlay.skip(
                    "tokenizer.max_seq_len", None,
                    "torchtune does not cut samples; hydratune cuts at dataset.max_seq_length: set it to the "
                    "longest sample's length",
                )  # fmt: skip
            else:
                overlay.set("dataset.max_seq_length", int(value))
        elif arg in ("path", "merges_file", "vocab_path", "merges_path", "special_tokens_path"):
            if folder and not str(value).startswith(folder):
                overlay.skip(f"tokenizer.{arg}", value, "the tokenizer is read from the model's folder")
        elif arg in TT_UNSUPPORTED:
            if value is not None:
                overlay.skip(f"tokenizer.{arg}", value, TT_UNSUPPORTED[arg])
        elif arg == "truncation_type" and value == "right":
            continue  # samples are cut from the right
        else:
            overlay.skip(f"tokenizer.{arg}", value, "no hydratune counterpart known")


def _recipe_key(overlay: Overlay, data: dict, task: str, key: str, value: Any, variables=frozenset()) -> None:
    """One flat recipe key, or one of the other components (optimizer, scheduler, logger, profiler);
    `variables`: the keys the file's interpolations read."""
    value = _number(value)
    if value is None and key not in ("clip_grad_norm", "seed"):
        return  # torchtune's default (no limit, no validation, every step, ...): nothing to set
    if key == "batch_size":
        overlay.set("dataset.batch_size", int(value))
    elif key == "batch_size_val":
        overlay.set("dataset.eval_batch_size", int(value))
    elif key == "epochs":
        overlay.set("trainer.max_epochs", int(value))
        overlay.values.setdefault("trainer.max_steps", -1)
    elif key == "max_steps_per_epoch":
        pass  # after the accumulation is known (import_torchtune)
    elif key == "num_steps" and task == "grpo":
        if "PPOLoss" not in str(data.get("loss")):  # PPO's counts completions: _ppo_batch
            overlay.set(
                "trainer.max_steps", int(value)
            )  # the GRPO recipe's optimizer-step limit (epochs too)
    elif key == "gradient_accumulation_steps":
        overlay.set("trainer.accumulate_grad_batches", int(value))
    elif key == "clip_grad_norm":
        # null: no clipping (torchtune's default); "inf": the norm is logged, nothing is clipped.
        overlay.set("trainer.gradient_clip_val", None if value in (None, "inf") else float(value))
    elif key == "dtype":
        if str(value) in PRECISION:
            overlay.set("trainer.precision", PRECISION[str(value)])
        else:
            overlay.skip(key, value, "dtypes: bf16, fp32, fp16")
    elif key == "device":
        if str(value) in DEVICES:
            overlay.choose("trainer", DEVICES[str(value)], key)
        else:
            overlay.skip(key, value, "devices: trainer=cuda, cpu or mps")
    elif key == "cudnn_deterministic_mode":
        overlay.set("trainer.deterministic", bool(value))  # torch's deterministic algorithms, cuDNN's too
    elif key == "enable_activation_checkpointing":
        overlay.set("model.gradient_checkpointing", bool(value))
    elif key == "seed":
        if value is None:
            overlay.skip(
                key, None, "torchtune draws a random seed; this run uses seed=42: choose with seed=N"
            )
        else:
            overlay.set("seed", int(value))
    elif key == "log_every_n_steps":
        overlay.set("trainer.log_every_n_steps", int(value))
    elif key == "run_val_every_n_steps":
        if value is not None:
            overlay.set("trainer.val_check_interval", int(value))  # scaled by accumulation in finish()
    elif key == "save_every_n_steps":
        if value is not None:
            overlay.set("callbacks.model_checkpoint.save_steps", int(value))
    elif key == "save_adapter_weights_only":
        # torchtune also writes the merged model unless told not to; hydratune's adapter/ is always written.
        if not str(overlay.choices.get("peft", "lora")) == "none":
            overlay.set("export.merge", not value)
    elif key == "optimizer":
        _optimizer(overlay, value)
    elif key == "lr_scheduler":
        _scheduler(overlay, value)
    elif key == "metric_logger":
        _logger(overlay, value)
    elif key == "profiler":
        if isinstance(value, dict) and value.get("enabled"):
            overlay.skip(
                "profiler", "enabled", "no profiler is wired; torch.profiler around a run: see BENCHMARKS.md"
            )
    elif key in RL_VALUES and task == "grpo":
        _set_task(overlay, task, key, RL_VALUES[key], value)
    elif key == "reward_checkpointer" and task == "grpo" and _hf_folder(value):
        overlay.set("task.reward_model", str(value["checkpoint_dir"]))  # a saved sequence classifier
    elif key in ("fsdp_cpu_offload", "fsdp_reshard_after_forward", "custom_sharded_layers", "fsdp"):
        pass  # _distribution
    elif key in (
        "shuffle",
        "compile",
        "optimizer_in_bwd",
        "enable_activation_offloading",
        "resume_from_checkpoint",
    ):
        if bool(value) != (key == "shuffle"):  # only a value other than torchtune's default changes the run
            overlay.skip(key, value, TT_UNSUPPORTED[key])
    elif key in TT_UNSUPPORTED:
        overlay.skip(key, _short_component(value), TT_UNSUPPORTED[key])
    elif key in variables:
        pass  # the file's own variable (base_model_path: ...): its value went where ${key} reads it
    elif key not in IMPLIED:
        overlay.skip(key, _short_component(value), "no hydratune counterpart known")


def _short_component(value: Any) -> Any:
    return _name(value) if isinstance(value, dict) and "_component_" in value else value


def _optimizer(overlay: Overlay, component: Any) -> None:
    target = str(component.get("_component_", "")) if isinstance(component, dict) else str(component)
    if target not in OPTIMIZERS:
        overlay.skip("optimizer", target, f"optimizers with a counterpart: {', '.join(OPTIMIZERS)}")
        return
    option, defaults = OPTIMIZERS[target]
    overlay.choose("optimizer", option, "optimizer._component_")
    args = {**defaults, **_args(component)}
    for arg, value in args.items():
        if arg in OPTIMIZER_ARGS:
            overlay.set(f"optimizer.{arg}", list(value) if arg == "betas" else value)
        elif arg not in ("fused", "foreach", "capturable"):  # how the step is computed, not what it computes
            overlay.skip(f"optimizer.{arg}", value, "no hydratune counterpart known")


def _scheduler(overlay: Overlay, component: Any) -> None:
    name = _name(component)
    if name != "get_cosine_schedule_with_warmup":
        overlay.skip("lr_scheduler", name, "schedulers with a counterpart: get_cosine_schedule_with_warmup")
        return
    overlay.choose("scheduler", "cosine", "lr_scheduler._component_")
    args = _args(component)
    overlay.set("scheduler.warmup_steps", int(args.pop("num_warmup_steps", 0)))
    overlay.set("scheduler.warmup_ratio", 0.0)  # the warmup is a step count; 0 steps is no warmup
    for arg, value in args.items():
        if arg == "num_cycles":
            overlay.set("scheduler.kwargs.num_cycles", value)
        else:
            overlay.skip(f"lr_scheduler.{arg}", value, "no hydratune counterpart known")


def _logger(overlay: Overlay, component: Any) -> None:
    name = _name(component)
    if name not in LOGGERS:
        overlay.skip("metric_logger", name, f"loggers with a counterpart: {', '.join(LOGGERS)}")
        return
    overlay.choose("logger", LOGGERS[name], "metric_logger._component_")
    for arg, value in _args(component).items():
        if (name, arg) in LOGGER_ARGS:
            overlay.set(LOGGER_ARGS[(name, arg)], value)
        elif arg not in ("log_dir", "organize_logs", "filename"):  # logs go under the run folder
            overlay.skip(f"metric_logger.{arg}", value, "no hydratune counterpart known")


def _distribution(data: dict, overlay: Overlay) -> None:
    """FSDP when the file has keys only torchtune's distributed recipes read; otherwise say how to choose."""
    present = [key for key in DISTRIBUTED_KEYS if key in data]
    if not present:
        overlay.skip(
            "recipe", "(named on the tune run command line)",
            "read as a single-device recipe; for a *_distributed recipe add trainer=fsdp (or trainer=ddp)",
        )  # fmt: skip
        return
    overlay.choose("trainer", "fsdp", present[0])
    fsdp = data.get("fsdp") if isinstance(data.get("fsdp"), dict) else {}
    if data.get("fsdp_cpu_offload") or fsdp.get("cpu_offload"):
        overlay.set("trainer.strategy.cpu_offload", True)
    if "fsdp_reshard_after_forward" in data:
        reshard = data["fsdp_reshard_after_forward"]
        overlay.set("trainer.strategy.sharding_strategy", "FULL_SHARD" if reshard else "SHARD_GRAD_OP")
    if data.get("custom_sharded_layers"):
        overlay.skip(
            "custom_sharded_layers", data["custom_sharded_layers"], "each decoder layer is one FSDP unit"
        )


# -- data -------------------------------------------------------------------------------------------------


def _data(data: dict, overlay: Overlay, task: str) -> None:
    """`dataset` (one builder or a list) becomes dataset.sources and the format; `dataset_val` the
    validation split."""
    specs = data.get("dataset")
    specs = specs if isinstance(specs, list) else [specs] if isinstance(specs, dict) else []
    if not specs:
        overlay.skip("dataset", "(not in the file)", "the default data is used; set dataset.sources")
        return
    read = [
        _builder(overlay, spec, f"dataset.{i}" if len(specs) > 1 else "dataset", task)
        for i, spec in enumerate(specs)
    ]
    read = [r for r in read if r]
    if not read:
        return
    kinds = {(r["rows"], repr(r["settings"])) for r in read}
    if len(kinds) > 1:
        overlay.skip(
            "dataset",
            [r["name"] for r in read],
            "the datasets read different rows; import them one at a time",
        )
        return
    rows, settings = read[0]["rows"], read[0]["settings"]
    sources = [r["source"] for r in read]
    if isinstance(data.get("dataset_val"), dict):
        _validation(overlay, data["dataset_val"], sources, read[0], task)
        if not data.get("run_val_every_n_steps"):  # torchtune's recipes then never validate
            overlay.set("trainer.limit_val_batches", 0)
            overlay.set("eval_before_training", False)
            overlay.skip(
                "run_val_every_n_steps", data.get("run_val_every_n_steps"),
                "unset, torchtune never validates, nor does this run: trainer.limit_val_batches=0 (the "
                "dataset_val rows are kept; remove it to evaluate every trainer.val_check_interval batches)",
            )  # fmt: skip
    elif data.get("run_val_every_n_steps"):
        overlay.skip(
            "run_val_every_n_steps", data["run_val_every_n_steps"], "no dataset_val: nothing to validate on"
        )
    if not _rows_fit_task(overlay, rows, task):
        return
    overlay.set("dataset.sources", sources)
    _format(overlay, rows, settings, task)


def _builder(overlay: Overlay, spec: dict, where: str, task: str, train: bool = True) -> dict | None:
    """One dataset component: {name, rows, source, settings} or None (reported). Only the train
    dataset's packing and length settings are applied (`train`), not dataset_val's."""
    name = _name(spec)
    info = DATASETS.get(name)
    if info is None:
        overlay.skip(
            f"{where}._component_", name, f"built-in builders with a counterpart: {', '.join(DATASETS)}"
        )
        return None
    args = _args(spec)
    if info.get("split_across_pack") and args.get("packed"):
        args.setdefault("split_across_pack", True)  # the builder's default: reported below
    source = _source(overlay, args, info, where)
    if source is None:
        return None
    rows = info["rows"]
    if rows == "chat":
        style = args.pop("conversation_style", None)
        if style not in ("sharegpt", "openai"):
            overlay.skip(f"{where}.conversation_style", style, "styles: sharegpt, openai")
            return None
        rows = "sharegpt" if style == "sharegpt" else "messages"
    settings: dict[str, Any] = {
        "columns": {**info.get("columns", {}), **(args.pop("column_map", None) or {})}
    }
    column = args.pop("conversation_column", None) or args.pop("column", None) or info.get("column")
    if column:
        settings["column"] = column
    masking = args.pop("masking_strategy", None)
    train_on_input = args.pop("train_on_input", info.get("train_on_input", False))
    settings["train_on"] = MASKING.get(masking) or (
        "all" if train_on_input else ("response" if rows == "alpaca" else "assistant")
    )
    for arg, value in args.items():
        if not train and arg in ("packed", "max_seq_len", "split_across_pack", "add_eos"):
            continue  # validation batches are never packed; lengths follow the train settings
        if arg == "packed":
            overlay.set("dataset.packing", bool(value))
        elif arg == "max_seq_len":
            if value is not None:
                overlay.set("dataset.max_seq_length", int(value))
        elif arg == "split_across_pack":
            if value and args.get("packed"):
                overlay.skip(f"{where}.{arg}", value, TT_UNSUPPORTED[arg])
        elif arg == "add_eos":
            if not value and task != "grpo":  # GRPO prompts are continued: no EOS is right
                overlay.skip(f"{where}.{arg}", value, TT_UNSUPPORTED[arg])
        elif arg in TT_UNSUPPORTED:
            if value is not None:
                overlay.skip(f"{where}.{arg}", value, TT_UNSUPPORTED[arg])
        else:
            overlay.skip(f"{where}.{arg}", value, "no hydratune counterpart known")
    if rows == "text" and settings["train_on"] != "all" and "train_on_input" in spec:
        overlay.skip(f"{where}.train_on_input", spec["train_on_input"], "text rows train on every token")
    return {"name": name, "rows": rows, "source": source, "settings": settings}


def _source(overlay: Overlay, args: dict, info: dict, where: str) -> dict | None:
    """A hub dataset ({path, split, name}) or local files (`source: json` + data_files/data_dir).
    Pops the keys it reads from `args`."""
    path = args.pop("source", info.get("source"))
    split = args.pop("split", "train")
    data_files, data_dir = args.pop("data_files", None), args.pop("data_dir", info.get("data_dir"))
    name = args.pop("name", None) or args.pop("subset", None) or info.get("name")
    if path is None:
        overlay.skip(
            f"{where}.source", None, "a source is needed: a hub id, or json/csv/parquet/text with data_files"
        )
        return None
    if path in LOCAL_LOADERS:
        if data_files is None and data_dir is None:
            overlay.skip(f"{where}.data_files", None, f"source: {path} reads local files: give data_files")
            return None
        if split != "train":
            overlay.skip(
                f"{where}.split", split, "local files are the train split; hold rows out with a split op"
            )
        return (
            {"loader": path, "data_files": data_files}
            if data_files is not None
            else {"loader": path, "data_dir": data_dir}
        )
    source = {"path": str(path), "split": split}
    if name:
        source["name"] = name
    if data_dir is not None:
        source["data_dir"] = str(data_dir)  # a folder of the hub repository
    if data_files is not None:
        overlay.skip(
            f"{where}.data_files", data_files,
            "a hub dataset is loaded by split (and data_dir), not by file: download it and give local data_files",
        )  # fmt: skip
    return source


def _validation(overlay: Overlay, spec: dict, sources: list[dict], train: dict, task: str) -> None:
    """`dataset_val` as the validation split of the same source: a hub split spec or a validation file."""
    read = _builder(overlay, spec, "dataset_val", task, train=False)
    if read is None:
        return
    val, first = read["source"], sources[0]
    if read["rows"] != train["rows"] or len(sources) > 1:
        overlay.skip("dataset_val", read["name"], "a validation set of other rows: import it on its own")
    elif "path" in val and val.get("path") == first.get("path") and val.get("name") == first.get("name"):
        first["split"] = {"train": first["split"], "validation": val["split"]}
    elif (
        "loader" in val
        and val.get("loader") == first.get("loader")
        and "data_files" in val
        and "data_files" in first
    ):
        first["data_files"] = {"train": first["data_files"], "validation": val["data_files"]}
    else:
        overlay.skip(
            "dataset_val",
            read["name"],
            "the validation rows come from the train source (split) or a validation file of the same loader",
        )


def _rows_fit_task(overlay: Overlay, rows: str, task: str) -> bool:
    from hydratune.importer import _reads_preference_data

    preference = rows in ("pairs", "chat_pairs")
    if task == "grpo":
        if rows != "text":
            overlay.skip("dataset", rows, "task=grpo reads prompts: a text_completion_dataset column")
            return False
        return True
    if preference != _reads_preference_data(task):
        overlay.skip("dataset", rows, f"these rows do not fit task={task}: set dataset.* by hand")
        return False
    return True


def _format(overlay: Overlay, rows: str, settings: dict, task: str) -> None:
    """The rows as a hydratune format: columns, masking (dataset.train_on) and the dataset option."""
    columns, train_on = settings["columns"], settings["train_on"]
    if task == "grpo":
        overlay.choices["dataset"] = "grpo"
        overlay.set("dataset.prompt_column", settings.get("column", "text"))
    elif rows == "alpaca":
        # torchtune's Alpaca prompt, word for word (hydratune's `alpaca` template).
        overlay.choices["dataset"] = "alpaca"
        overlay.set("dataset.format", "alpaca")
        overlay.set("dataset.template", "alpaca")
        overlay.set("dataset.ops", _renames(columns, ("instruction", "input", "output")))
    elif rows == "instruct":
        # torchtune renders `input` as the user turn and `output` as the assistant turn with the model's
        # chat format: alpaca_chat's user turn is its instruction column, so `input` is renamed to it.
        overlay.choices["dataset"] = "chat"
        overlay.set("dataset.format", "alpaca_chat")
        wanted = {columns.get("input", "input"): "instruction", columns.get("output", "output"): "output"}
        renames = {actual: name for actual, name in wanted.items() if actual != name}
        overlay.set("dataset.ops", [{"rename_columns": renames}] if renames else [])
        overlay.set("dataset.system_column", columns.get("system"))
    elif rows == "sharegpt":
        overlay.choices["dataset"] = "sharegpt"
        overlay.set("dataset.format", "sharegpt")
        overlay.set(
            "dataset.conversations_column",
            settings.get("column", columns.get("conversations", "conversations")),
        )
        overlay.set("dataset.roles", {"system": "system", "human": "user", "gpt": "assistant"})
    elif rows == "messages":
        overlay.choices["dataset"] = "chat"
        overlay.set("dataset.format", "messages")
        overlay.set("dataset.messages_column", settings.get("column", columns.get("messages", "messages")))
    elif rows == "text":
        overlay.choices["dataset"] = "sample"
        overlay.set("dataset.format", "text")
        overlay.set("dataset.text_column", settings.get("column", "text"))
        overlay.set("dataset.ops", [])
        train_on = "all"
    elif rows == "pairs":
        overlay.set("dataset.format", "pairs")
        for key in ("prompt", "chosen", "rejected"):
            overlay.set(f"dataset.{key}_column", columns.get(key, key))
    elif rows == "chat_pairs":
        overlay.set("dataset.format", "chat_pairs")
        # the prompt turns sit inside both conversations, or a text prompt is the user turn of its own column
        overlay.set("dataset.prompt_column", columns.get("prompt"))
        overlay.set("dataset.chosen_column", columns.get("chosen", "chosen"))
        overlay.set("dataset.rejected_column", columns.get("rejected", "rejected"))
    if rows not in ("pairs", "chat_pairs") and task != "grpo":
        overlay.set("dataset.train_on", train_on)


def _renames(columns: dict, expected: tuple[str, ...]) -> list[dict]:
    """column_map {expected: actual} as a rename op {actual: expected}; no op when the names agree."""
    renames = {
        actual: wanted for wanted, actual in columns.items() if wanted in expected and actual != wanted
    }
    return [{"rename_columns": renames}] if renames else []
