"""`hydratune import` for litgpt: the YAML of `litgpt finetune_lora|finetune_full ... --config FILE` becomes
an experiment overlay.

litgpt's config is its command's signature (jsonargparse): flat keys (checkpoint_dir, precision, quantize,
lora_*), and the blocks `data` (a data module: `class_path` + `init_args`), `train` (litgpt.args.TrainArgs),
`eval` (EvalArgs), `log` (LogArgs) and `optimizer` (a name or `class_path` + `init_args`). Read from
litgpt 0.5's finetune/{lora,full,adapter}.py, args.py, data/*.py, lora.py and prompts.py. What the file
leaves out is litgpt's own default (the signature's), written out here because hydratune's defaults
differ (AdamW's weight decay, warmup, clipping, the logger); where that default decides what is trained
(the method, the precision, the data), the import prints a `note:` line saying so.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

from hydratune.errors import UserError
from hydratune.importer import UNSUPPORTED, Overlay, _number

# -- what a litgpt file says by leaving it out: the defaults of finetune_lora's / finetune_full's setup() --
TRAIN_DEFAULTS = {"global_batch_size": 16, "micro_batch_size": 1, "lr_warmup_steps": 100, "epochs": 5,
                  "save_interval": 1000, "log_interval": 1}  # fmt: skip
EVAL_DEFAULTS = {"max_new_tokens": 100, "max_iters": 100, "initial_validation": False}
EVAL_INTERVAL = {"lora": 100, "full": 600}  # finetune_lora's EvalArgs(interval=100); finetune_full's 600
LORA_DEFAULTS = {"lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "lora_query": True, "lora_key": False,
                 "lora_value": True, "lora_projection": False, "lora_mlp": False, "lora_head": False}  # fmt: skip
LORA_FLAGS = ("lora_query", "lora_key", "lora_value", "lora_projection", "lora_mlp", "lora_head")

# -- LoRA targets: litgpt's layer flags -> the Hugging Face module names peft needs, per model family ------
# litgpt keeps q/k/v fused (attn.qkv) and adapts the parts the flags name; Hugging Face Llama-family models
# keep them apart. Families whose HF layers are fused adapt all of q, k and v when any is asked (a note says so).
LLAMA_MODULES = {"lora_query": ["q_proj"], "lora_key": ["k_proj"], "lora_value": ["v_proj"],
                 "lora_projection": ["o_proj"], "lora_mlp": ["gate_proj", "up_proj", "down_proj"],
                 "lora_head": ["lm_head"]}  # fmt: skip
FAMILY_MODULES = {
    "phi": {"lora_query": ["q_proj"], "lora_key": ["k_proj"], "lora_value": ["v_proj"],
            "lora_projection": ["dense"], "lora_mlp": ["fc1", "fc2"], "lora_head": ["lm_head"]},
    "phi3": {"lora_query": ["qkv_proj"], "lora_key": ["qkv_proj"], "lora_value": ["qkv_proj"],
             "lora_projection": ["o_proj"], "lora_mlp": ["gate_up_proj", "down_proj"], "lora_head": ["lm_head"]},
    "falcon": {"lora_query": ["query_key_value"], "lora_key": ["query_key_value"],
               "lora_value": ["query_key_value"], "lora_projection": ["dense"],
               "lora_mlp": ["dense_h_to_4h", "dense_4h_to_h"], "lora_head": ["lm_head"]},
    "gpt_neox": {"lora_query": ["query_key_value"], "lora_key": ["query_key_value"],
                 "lora_value": ["query_key_value"], "lora_projection": ["dense"],
                 "lora_mlp": ["dense_h_to_4h", "dense_4h_to_h"], "lora_head": ["embed_out"]},
}  # fmt: skip
# Hub ids -> family, first match wins; Llama-family names are the fallback (Llama, Mistral, Gemma, Qwen, ...).
FAMILIES = [
    (r"phi-3|phi-4|phi3", "phi3"),
    (r"phi-1|phi-2", "phi"),
    (r"falcon-(7b|40b|180b)|falcon-rw", "falcon"),
    (r"pythia|stablelm-(base|tuned)-alpha|gpt-neox|dolly-v2|redpajama-incite", "gpt_neox"),
]
LLAMA_LIKE = r"llama|mistral|gemma|qwen|smollm|falcon3|olmo|vicuna|longchat|yi-|deepseek|salamandra"

# -- precision and quantization -----------------------------------------------------------------------
# Lightning's aliases, as litgpt passes the string to Fabric.
PRECISION_ALIASES = {"bf16": "bf16-mixed", "16": "16-mixed", "32": "32-true", "64": "64-true"}
# The weights' dtype under each precision: -true keeps them in that dtype, -mixed keeps fp32 weights.
PRECISION_DTYPE = {"bf16-true": "bfloat16", "16-true": "float16", "32-true": "float32", "64-true": "float64",
                   "bf16-mixed": "float32", "16-mixed": "float32"}  # fmt: skip
# quantize -> (hydratune quantization option, bnb_4bit_use_double_quant or None for 8-bit)
QUANTIZE = {"bnb.nf4": ("nf4", False), "bnb.nf4-dq": ("nf4", True), "bnb.fp4": ("fp4", False),
            "bnb.fp4-dq": ("fp4", True), "bnb.int8-training": ("int8", None), "bnb.int8": ("int8", None)}  # fmt: skip

# -- optimizers: litgpt's class_path (or bare torch.optim name) -> hydratune option, and the class's own
# defaults for the arguments the file leaves out (hydratune's options default to other values).
OPTIMIZERS = {
    "torch.optim.AdamW": "adamw_torch",
    "torch.optim.SGD": "sgd",
    "torch.optim.RMSprop": "rmsprop",
    "torch.optim.Adagrad": "adagrad",
    "bitsandbytes.optim.AdamW8bit": "adamw_8bit",
    "bitsandbytes.optim.PagedAdamW": "paged_adamw_32bit",
    "bitsandbytes.optim.PagedAdamW32bit": "paged_adamw_32bit",
    "bitsandbytes.optim.PagedAdamW8bit": "paged_adamw_8bit",
    "grokadamw.GrokAdamW": "grokadamw",
}
ADAMW_DEFAULTS = {"lr": 1e-3, "weight_decay": 1e-2, "betas": [0.9, 0.999], "eps": 1e-8}
OPTIMIZER_DEFAULTS = {
    "adamw_torch": ADAMW_DEFAULTS,
    "adamw_8bit": ADAMW_DEFAULTS,
    "paged_adamw_32bit": ADAMW_DEFAULTS,
    "paged_adamw_8bit": ADAMW_DEFAULTS,
    "sgd": {"momentum": 0.0, "weight_decay": 0.0, "nesterov": False},
    "rmsprop": {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0},
    "adagrad": {"lr": 1e-2, "eps": 1e-10, "weight_decay": 0.0},
}

# -- data modules: litgpt.data.<Class> -> where its rows are on the hub and how they become alpaca rows ----
# `val`: its val_split_fraction default (None: the source has its own validation split);
# `ops`: ops that turn its rows into instruction/input/output, as the module's own format_dataset does.
DATA_MODULES: dict[str, dict[str, Any]] = {
    # litgpt downloads tloen/alpaca-lora's alpaca_data_cleaned_archive.json; the hub copy of the cleaned set:
    "Alpaca": {"path": "yahma/alpaca-cleaned", "val": 0.03865, "style": "alpaca"},
    "Alpaca2k": {"path": "mhenrichsen/alpaca_2k_test", "val": 0.05, "style": "alpaca"},
    "AlpacaGPT4": {"path": "vicgalle/alpaca-gpt4", "val": 0.03847, "style": "alpaca"},
    "Deita": {"path": "HuggingFaceH4/deita-10k-v0-sft", "split": {"train": "train_sft", "validation": "test_sft"},
              "val": None, "style": "alpaca",
              "ops": [{"map": {"instruction": "{{ messages[0].content }}", "output": "{{ messages[1].content }}"}}]},
    "LIMA": {"path": "GAIR/lima", "val": 0.1, "style": "alpaca",
             "ops": [{"map": {"instruction": "{{ conversations[0] }}", "output": "{{ conversations[1] }}"}}]},
    "LongForm": {"path": "akoksal/LongForm", "split": {"train": "train", "validation": "validation"},
                 "val": None, "style": "longform", "ops": [{"rename_columns": {"input": "instruction"}}]},
}  # fmt: skip
PRETRAIN_DATA = {"TextFiles", "TinyLlama", "OpenWebText", "LitData", "TinyStories", "MicroLlama"}
# litgpt prompt styles that are one fixed preamble around the instruction (the input is not shown).
INSTRUCTION_ONLY = "### Instruction:\n{instruction}\n\n### Response:\n"
FIXED_STYLES = {
    "flan": "Below is an instruction that describes a task. Write a response that appropriately completes "
    "the request.\n\n" + INSTRUCTION_ONLY,
    "longform": "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n" + INSTRUCTION_ONLY,
}
# litgpt prompt styles named after a model: its chat markup around one user turn.
CHAT_STYLES = {"llama2", "llama3", "phi-2", "phi-3", "phi-4", "phi-4-mini", "gemma", "tinyllama", "qwen2.5",
               "qwen3", "smollm2", "olmo", "codellama", "stablelm-zephyr", "falcon3", "salamandra", "qwq",
               "qwen2.5-math", "phi-1", "stablecode", "platypus", "freewilly2", "phi-4-reasoning",
               "phi-4-mini-reasoning", "r1-base"}  # fmt: skip

TOP_LEVEL_SKIPS = {
    "out_dir": UNSUPPORTED["output_dir"],
    "access_token": "a secret, never written to a config: hydratune reads HF_TOKEN from the environment",
}


# Keys beside `checkpoint_dir` that only litgpt's finetune commands take (its LoRA layer flags among them).
LITGPT_KEYS = {"logger_name", "quantize", *LORA_FLAGS}


def is_litgpt(data: dict) -> bool:
    """litgpt's shape: `checkpoint_dir` beside a `train:`/`eval:` block or a key only litgpt has (lora_query,
    logger_name, ...), or a jsonargparse `class_path` under `data:`/`optimizer:` (no other imported format
    has any of these)."""
    blocks = any(isinstance(data.get(k), dict) for k in ("train", "eval")) or bool(LITGPT_KEYS & set(data))
    class_path = any(isinstance(data.get(k), dict) and "class_path" in data[k] for k in ("data", "optimizer"))
    return ("checkpoint_dir" in data and blocks) or class_path


def import_litgpt(data: dict, overlay: Overlay) -> None:
    """The whole file into `overlay`; `note:` lines (litgpt defaults that decide the training) go to stderr
    at the end, so a refused file prints its one error line only."""
    notes: list[str] = []
    _refuse_other_commands(data)
    method = _method(data, notes)
    _model(overlay, data.get("checkpoint_dir"), notes)
    precision = _precision(overlay, data.get("precision"), data.get("quantize"), notes)
    if method == "lora":
        _lora(overlay, data, str(data.get("checkpoint_dir") or ""), notes)
        _quantize(overlay, data.get("quantize"), precision)
    else:
        overlay.choose("peft", "none", "lora_r")
    devices = _devices(overlay, data)
    train = _block(overlay, data, "train")
    accumulation = _batches(overlay, train, devices)
    _schedule(overlay, train)
    _train_rest(overlay, train, accumulation, notes)
    _eval(overlay, _block(overlay, data, "eval"), method)
    _optimizer(overlay, data.get("optimizer") or "AdamW", bool(data.get("quantize")))
    _data(overlay, data.get("data"), notes)
    _loggers(overlay, data.get("logger_name") or "csv", _block(overlay, data, "log"))
    # litgpt never stops early: the run is epochs/max_steps long. Its seed defaults to 1337.
    overlay.set("callbacks.early_stopping", None)
    overlay.set("seed", int(data["seed"]) if data.get("seed") is not None else 1337)
    for key, value in data.items():
        _top_level(overlay, key, value)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)


def _refuse_other_commands(data: dict) -> None:
    """Configs of litgpt commands hydratune has no counterpart for stop here, naming the key: never a
    full fine-tune in their place."""
    adapter = sorted(k for k in data if k.startswith("adapter_"))
    out_dir = Path(str(data.get("out_dir") or "")).name
    if adapter or (out_dir.startswith("adapter") and not any(k.startswith("lora_") for k in data)):
        key = adapter[0] if adapter else f"out_dir: {data['out_dir']}"
        raise UserError(
            f"{key}: a litgpt finetune_adapter config (LLaMA-Adapter): hydratune has no adapter method "
            "(conf/peft: lora, qlora, dora, rslora, freeze, none); nothing was written. Import it as LoRA by "
            "adding lora_r to the file"
        )
    if "checkpoint_dir" not in data and (
        {"model_config", "model_name", "initial_checkpoint_dir"} & set(data)
    ):
        key = next(k for k in ("model_name", "model_config", "initial_checkpoint_dir") if k in data)
        raise UserError(
            f"{key}: a `litgpt pretrain` config: pre-training from scratch has no hydratune task; nothing was "
            "written (fine-tune from a checkpoint_dir instead)"
        )


def _method(data: dict, notes: list[str]) -> str:
    """LoRA when the file names a LoRA setting (or quantizes: finetune_full takes no quantize); else full."""
    if any(k.startswith("lora_") for k in data):
        return "lora"
    if data.get("quantize"):
        notes.append(
            "quantize without lora_* keys: litgpt's finetune_full takes no quantize, so this is read as "
            "finetune_lora with its defaults (r=8, alpha=16, dropout 0.05, query and value)"
        )
        return "lora"
    notes.append(
        "no lora_* keys: read as `litgpt finetune_full` (every weight trains, peft=none); for `litgpt finetune` "
        "or finetune_lora, add lora_r to the file (or pass peft=lora)"
    )
    return "full"


def _model(overlay: Overlay, checkpoint_dir: Any, notes: list[str]) -> None:
    """`checkpoints/ORG/NAME` is litgpt's converted copy of the hub model ORG/NAME (lit_model.pth, which
    transformers cannot load): the hub id is the model. A bare ORG/NAME is what litgpt downloads itself."""
    if checkpoint_dir is None:
        notes.append(
            "no checkpoint_dir (given on litgpt's command line?): the model is hydratune's default; set "
            "model.pretrained_model_name_or_path=ORG/NAME"
        )
        return
    parts = Path(str(checkpoint_dir)).parts
    if len(parts) >= 3 and parts[-3] == "checkpoints":
        hub_id = "/".join(parts[-2:])
    elif len(parts) == 2 and not str(checkpoint_dir).startswith(("/", ".")):
        hub_id = "/".join(parts)
    else:
        overlay.skip(
            "checkpoint_dir",
            checkpoint_dir,
            "not checkpoints/ORG/NAME: litgpt's lit_model.pth is not a transformers model; set "
            "model.pretrained_model_name_or_path to the hub id or a Hugging Face folder of that model",
        )
        return
    overlay.model(hub_id)
    notes.append(
        f"checkpoint_dir: {checkpoint_dir} is litgpt's copy of the hub model {hub_id}: loaded from the hub"
    )


def _precision(overlay: Overlay, precision: Any, quantize: Any, notes: list[str]) -> str:
    """trainer.precision as litgpt gives it to Fabric, and model.dtype as the weights are kept under it."""
    if precision is None:
        precision = "bf16-mixed"
        notes.append(
            "no precision: litgpt's default, bf16-mixed (16-mixed on GPUs without bf16); set "
            "trainer.precision to choose another"
        )
    precision = PRECISION_ALIASES.get(str(precision), str(precision))
    if quantize and "mixed" in precision:
        raise UserError(
            f"quantize: {quantize} with precision {precision}: litgpt refuses quantization with mixed precision; "
            "set precision: bf16-true (as litgpt's qlora configs do) and import again; nothing was written"
        )
    if precision not in PRECISION_DTYPE:
        overlay.skip("precision", precision, f"Lightning precisions: {', '.join(PRECISION_DTYPE)}")
        return precision
    overlay.set("trainer.precision", precision)
    overlay.set("model.dtype", PRECISION_DTYPE[precision])
    return precision


def _lora(overlay: Overlay, data: dict, checkpoint_dir: str, notes: list[str]) -> None:
    """LoRA r/alpha/dropout and the target modules, litgpt's defaults for what the file leaves out."""
    overlay.choose("peft", "lora", "lora_r")
    settings = {key: data.get(key, default) for key, default in LORA_DEFAULTS.items()}
    settings = {key: LORA_DEFAULTS[key] if value is None else value for key, value in settings.items()}
    overlay.set("peft.config.r", int(settings["lora_r"]))
    overlay.set("peft.config.lora_alpha", _number(settings["lora_alpha"]))
    overlay.set("peft.config.lora_dropout", float(_number(settings["lora_dropout"])))
    chosen = [flag for flag in LORA_FLAGS if settings[flag]]
    if not chosen:
        raise UserError(
            "lora_query..lora_head: all false, so litgpt's LoRA trains nothing; set one to true (nothing was written)"
        )
    overlay.set("peft.config.target_modules", _target_modules(chosen, checkpoint_dir, notes))


def _target_modules(chosen: list[str], checkpoint_dir: str, notes: list[str]) -> str | list[str]:
    """peft's names for the layers litgpt's flags name; every linear layer but the head is `all-linear`."""
    if set(chosen) == set(LORA_FLAGS) - {"lora_head"}:
        return "all-linear"
    name = checkpoint_dir.lower()
    family = next((fam for pattern, fam in FAMILIES if re.search(pattern, name)), None)
    table = FAMILY_MODULES[family] if family else LLAMA_MODULES
    if family is None and not re.search(LLAMA_LIKE, name):
        notes.append(
            f"LoRA targets written with Llama-family module names (q_proj, ..., down_proj) for {checkpoint_dir}: "
            "for another architecture set peft.config.target_modules to its layer names"
        )
    qkv = {"lora_query", "lora_key", "lora_value"}
    if family in ("phi3", "falcon", "gpt_neox") and qkv & set(chosen) and not qkv <= set(chosen):
        notes.append(
            f"{', '.join(sorted(qkv & set(chosen)))}: this model's Hugging Face layers fuse q, k and v, so LoRA "
            "adapts all three (litgpt adapts only the parts named)"
        )
    modules: list[str] = []
    for flag in chosen:
        modules += [m for m in table[flag] if m not in modules]
    return modules


def _quantize(overlay: Overlay, quantize: Any, precision: str) -> None:
    """bitsandbytes through litgpt's precision plugin: the 4-bit compute dtype is the precision's dtype."""
    if not quantize:
        return
    if str(quantize) not in QUANTIZE:
        overlay.skip("quantize", quantize, f"known: {', '.join(QUANTIZE)}")
        return
    option, double = QUANTIZE[str(quantize)]
    if option == "int8":
        overlay.choose("quantization", "int8", "quantize")
        return
    overlay.choose("peft", "qlora", "quantize")  # LoRA on a 4-bit base; the LoRA settings above stay
    overlay.choose("quantization", option, "quantize")
    overlay.set("quantization.config.bnb_4bit_use_double_quant", double)
    overlay.set("quantization.config.bnb_4bit_compute_dtype", PRECISION_DTYPE.get(precision, "bfloat16"))


def _devices(overlay: Overlay, data: dict) -> int:
    """Data-parallel processes: litgpt shards the model over them (FSDP), so trainer=fsdp beyond one."""
    devices, nodes = data.get("devices") or 1, int(data.get("num_nodes") or 1)
    if devices in ("auto", -1):
        overlay.skip("devices", devices, "the accumulation needs the device count: set trainer.devices=N")
        devices = 1
    devices = int(devices)
    if devices * nodes > 1:
        overlay.choose("trainer", "fsdp", "devices")
        overlay.set("trainer.devices", devices)
        overlay.set("trainer.num_nodes", nodes)
    return devices * nodes


def _block(overlay: Overlay, data: dict, name: str) -> dict:
    block = data.get(name) or {}
    if not isinstance(block, dict):
        overlay.skip(name, block, "expected a mapping of litgpt's arguments")
        return {}
    return block


def _value(block: dict, key: str, defaults: dict) -> Any:
    """The file's value, or litgpt's default when the key is absent or left empty."""
    value = block.get(key)
    return _number(value) if value is not None else defaults.get(key)


def _batches(overlay: Overlay, train: dict, processes: int) -> int:
    """litgpt: global_batch_size samples per optimizer step across all ranks, micro_batch_size per forward;
    accumulation = global_batch_size / processes / micro_batch_size (TrainArgs.gradient_accumulation_iters)."""
    global_batch = int(_value(train, "global_batch_size", TRAIN_DEFAULTS))
    micro = int(_value(train, "micro_batch_size", TRAIN_DEFAULTS))
    accumulation = global_batch // processes // micro
    if accumulation < 1:
        raise UserError(
            f"train.global_batch_size: {global_batch} is less than micro_batch_size {micro} x {processes} "
            "device(s); litgpt refuses it too"
        )
    overlay.set("dataset.batch_size", micro)
    overlay.set(
        "dataset.eval_batch_size", micro
    )  # litgpt validates in micro batches: eval.max_iters counts them
    overlay.set("trainer.accumulate_grad_batches", accumulation)
    return accumulation


def _schedule(overlay: Overlay, train: dict) -> None:
    """litgpt's finetune schedule: linear warmup over lr_warmup_steps optimizer steps, then a cosine to 0
    at the last step (its min_lr is not read by finetune): hydratune's `cosine`."""
    overlay.choose("scheduler", "cosine", "train.lr_warmup_steps")
    warmup = int(_value(train, "lr_warmup_steps", TRAIN_DEFAULTS) or 0)
    overlay.set("scheduler.warmup_steps", warmup)
    overlay.set(
        "scheduler.warmup_ratio", 0.0
    )  # warmup_steps decides (hydratune's ratio applies when it is 0)


# train.* keys litgpt's finetune scripts refuse when set (validate_args), or do not read.
TRAIN_REFUSED = {
    "lr_warmup_fraction": "litgpt's finetune scripts refuse it (use lr_warmup_steps)",
    "max_tokens": "litgpt's finetune scripts refuse it (a pretrain setting)",
    "tie_embeddings": "litgpt's finetune scripts refuse it; the model's config.json decides tying",
    "max_norm": "litgpt's finetune scripts refuse it; trainer.gradient_clip_val clips in hydratune",
    "min_lr": "litgpt's finetune scripts decay to 0 and do not read it (litgpt pretrain does)",
}


def _train_rest(overlay: Overlay, train: dict, accumulation: int, notes: list[str]) -> None:
    """Length, cadence and sequence length; litgpt's finetune never clips gradients."""
    overlay.set("trainer.gradient_clip_val", None)
    overlay.set("trainer.max_epochs", int(_value(train, "epochs", TRAIN_DEFAULTS)))
    max_steps = train.get("max_steps")
    overlay.set("trainer.max_steps", int(max_steps) if max_steps else -1)  # both limits apply, as in litgpt
    save = train["save_interval"] if "save_interval" in train else TRAIN_DEFAULTS["save_interval"]
    if save is None:
        overlay.skip("train.save_interval", None, "step checkpoints are written at each evaluation")
    else:
        overlay.set("callbacks.model_checkpoint.save_steps", int(save))
    # log_interval counts micro-batches (iterations); log_every_n_steps counts optimizer steps.
    log_interval = int(_value(train, "log_interval", TRAIN_DEFAULTS))
    overlay.set("trainer.log_every_n_steps", max(1, log_interval // accumulation))
    if train.get("max_seq_length") is not None:
        overlay.set("dataset.max_seq_length", int(train["max_seq_length"]))
    else:
        notes.append(
            "train.max_seq_length unset: litgpt truncates at the model's context length; hydratune cuts samples "
            "at dataset.max_seq_length, set it to the context you want"
        )
    if train.get("max_time") is not None:
        seconds = int(train["max_time"])
        overlay.set("trainer.max_time", f"{seconds // 86400:02d}:{seconds % 86400 // 3600:02d}:"
                    f"{seconds % 3600 // 60:02d}:{seconds % 60:02d}")  # fmt: skip
    known = {"global_batch_size", "micro_batch_size", "lr_warmup_steps", "epochs", "max_steps", "save_interval",
             "log_interval", "max_seq_length", "max_time"}  # fmt: skip
    for key, value in train.items():
        if key in known or value is None:
            continue
        overlay.skip(f"train.{key}", value, TRAIN_REFUSED.get(key, "not a litgpt TrainArgs field"))


def _eval(overlay: Overlay, block: dict, method: str) -> None:
    """eval.interval counts optimizer steps (scaled to batches by Overlay.finish); max_iters caps the
    validation batches; litgpt generates one example (the first validation instruction) at each evaluation."""
    interval = block.get("interval")
    overlay.set(
        "trainer.val_check_interval", int(interval if interval is not None else EVAL_INTERVAL[method])
    )
    overlay.set("trainer.limit_val_batches", int(_value(block, "max_iters", EVAL_DEFAULTS)))
    overlay.set("eval_generations.max_new_tokens", int(_value(block, "max_new_tokens", EVAL_DEFAULTS)))
    overlay.set("eval_generations.num_prompts", 1)
    overlay.set("eval_before_training", bool(_value(block, "initial_validation", EVAL_DEFAULTS)))
    for key, value in block.items():
        if key in ("interval", "max_iters", "max_new_tokens", "initial_validation") or value is None:
            continue
        if key == "final_validation":
            if (
                not value
            ):  # true is hydratune's way: the final weights are evaluated when no evaluation fell there
                overlay.skip("eval.final_validation", value, "the final weights are evaluated whenever the run "
                             "ends between two evaluations")  # fmt: skip
        elif key == "evaluate_example":
            if value != "first":
                overlay.skip("eval.evaluate_example", value, "the example is the first validation sample")
        else:
            overlay.skip(f"eval.{key}", value, "not a litgpt EvalArgs field")


def _optimizer(overlay: Overlay, spec: Any, quantized: bool) -> None:
    """`AdamW` or {class_path, init_args}; arguments left out take the class's defaults. A quantized run's
    optimizer is bitsandbytes' PagedAdamW with the same arguments (litgpt's instantiate_bnb_optimizer)."""
    class_path, args = (
        (spec, {}) if isinstance(spec, str) else (spec.get("class_path", ""), spec.get("init_args") or {})
    )
    class_path = class_path if "." in class_path else f"torch.optim.{class_path}"
    if quantized:
        if "AdamW" not in class_path:
            raise UserError(
                f"optimizer: {class_path} with quantize: litgpt allows AdamW only; nothing was written"
            )
        class_path = "bitsandbytes.optim.PagedAdamW"
    option = OPTIMIZERS.get(class_path)
    if option is None:
        overlay.skip("optimizer", class_path, f"optimizers with a counterpart: {', '.join(OPTIMIZERS)}")
        return
    overlay.choose("optimizer", option, "optimizer")
    # The arguments the option's YAML names are the ones its class takes here.
    accepted = set(yaml.safe_load((overlay.conf_dir / "optimizer" / f"{option}.yaml").read_text()))
    for key, value in {**OPTIMIZER_DEFAULTS.get(option, {}), **args}.items():
        value = [_number(v) for v in value] if isinstance(value, list | tuple) else _number(value)
        if key in accepted - {"_target_", "loraplus_lr_ratio"}:
            overlay.set(f"optimizer.{key}", value)
        else:
            overlay.skip(f"optimizer.init_args.{key}", value, f"optimizer={option} has no {key}")


def _data(overlay: Overlay, spec: Any, notes: list[str]) -> None:
    """A litgpt data module -> dataset.sources, ops, format and train_on."""
    if spec is None:
        notes.append(
            "no data: litgpt's default, litgpt.data.Alpaca (the cleaned Alpaca set, yahma/alpaca-cleaned)"
        )
        spec = {"class_path": "litgpt.data.Alpaca"}
    if isinstance(spec, str):
        spec = {"class_path": spec}
    name = str(spec.get("class_path", "")).rsplit(".", 1)[-1]
    args = dict(spec.get("init_args") or {})
    for key in set(spec) - {"class_path", "init_args"}:
        overlay.skip(f"data.{key}", spec[key], "a data module is class_path and init_args")
    if name in PRETRAIN_DATA:
        raise UserError(
            f"data.class_path: {spec['class_path']}: pre-training text for `litgpt pretrain`, not SFT rows; "
            "nothing was written"
        )
    if name == "JSON":
        ops = _json_source(overlay, args)
        style = "alpaca"
    elif name in DATA_MODULES:
        module = DATA_MODULES[name]
        overlay.set("dataset.sources", [{"path": args.pop("repo_id", module["path"]),
                                         "split": module.get("split", "train")}])  # fmt: skip
        ops = list(module.get("ops", []))
        if module["val"] is not None or args.get("val_split_fraction") is not None:
            ops.append({"split": {"eval": _number(args.get("val_split_fraction", module["val"])),
                                  "seed": int(args.get("seed", 42))}})  # fmt: skip
        style = module["style"]
        if name == "Alpaca":
            notes.append("litgpt.data.Alpaca downloads tloen/alpaca-lora's archive of the cleaned Alpaca set; "
                         "the hub copy of that set, yahma/alpaca-cleaned, is read instead (a later cleaning "
                         "may differ in a few rows)")  # fmt: skip
    else:
        overlay.skip("data.class_path", spec.get("class_path"), "data modules with a counterpart: JSON, "
                     f"{', '.join(DATA_MODULES)}; FLAN: list its jsonl files as dataset.sources")  # fmt: skip
        return
    overlay.set("dataset.ops", ops)
    _prompt_style(overlay, str(args.get("prompt_style", style)), bool(args.get("mask_prompt", False)), notes)
    for key, value in args.items():
        _data_arg(overlay, key, value)


def _json_source(overlay: Overlay, args: dict) -> list:
    """litgpt.data.JSON: one file (split by val_split_fraction, 0.05 when unset) or a folder with
    train.json(l) and val.json(l) (datasets names the second split validation)."""
    path = str(args.get("json_path", ""))
    if not path:
        overlay.skip("data.init_args.json_path", None, "JSON needs json_path")
        return []
    if Path(path).suffix in (".json", ".jsonl"):
        overlay.set("dataset.sources", [{"loader": "json", "data_files": {"train": path}}])
        fraction = args.get("val_split_fraction")
        return [{"split": {"eval": _number(fraction if fraction is not None else 0.05),
                           "seed": int(args.get("seed", 42))}}]  # fmt: skip
    overlay.set("dataset.sources", [{"loader": "json", "data_dir": path}])
    if args.get("val_split_fraction") is not None:
        overlay.skip(
            "data.init_args.val_split_fraction", args["val_split_fraction"], "a folder has its own val file"
        )
    return []


def _prompt_style(overlay: Overlay, style: str, mask_prompt: bool, notes: list[str]) -> None:
    """litgpt renders `prompt_style.apply(instruction, **row)` then the output + EOS; mask_prompt (False
    by default in every data module) decides whether the prompt's tokens are trained."""
    train_on = "response" if mask_prompt else "all"
    if style == "alpaca":  # hydratune's alpaca template is the same text, with and without an input
        overlay.set("dataset.format", "alpaca")
        overlay.set("dataset.template", "alpaca")
    elif style in FIXED_STYLES or style == "default":
        # The prompt text as litgpt builds it, as a column; the output follows it.
        if style in FIXED_STYLES:
            overlay.values.setdefault("dataset.ops", []).append({"map": {"prompt": FIXED_STYLES[style]}})
        overlay.set("dataset.format", "prompt_response")
        overlay.set("dataset.prompt_column", "prompt" if style in FIXED_STYLES else "instruction")
        overlay.set("dataset.response_column", "output")
        overlay.set("dataset.template", None)
    elif style in CHAT_STYLES:
        overlay.choices["dataset"] = "chat"
        overlay.set("dataset.format", "alpaca_chat")
        overlay.set("dataset.chat_template", None)
        train_on = "assistant" if mask_prompt else "all"
        notes.append(
            f"prompt_style: {style}: one user turn rendered with the tokenizer's own chat template "
            "(dataset.format=alpaca_chat), litgpt's markup for that model; litgpt leaves the input column out"
        )
    else:
        overlay.skip("data.init_args.prompt_style", style, "styles with a counterpart: alpaca, flan, longform, "
                     "default, and the model chat styles (llama3, phi-3, ...)")  # fmt: skip
    overlay.set("dataset.train_on", train_on)


def _data_arg(overlay: Overlay, key: str, value: Any) -> None:
    where = f"data.init_args.{key}"
    if key in ("prompt_style", "mask_prompt", "seed", "val_split_fraction", "json_path", "repo_id"):
        return  # read above
    if key == "num_workers":
        overlay.set("dataset.num_workers", int(value))
    elif key == "ignore_index":
        if int(value) != -100:
            overlay.skip(where, value, "masked labels are always -100")
    elif key == "include_multiturn_conversations":
        if value:
            overlay.skip(where, value, "each conversation's first exchange is one row; for every turn use "
                         "dataset=chat with the messages as they are")  # fmt: skip
    elif key == "download_dir":
        overlay.skip(
            where, value, "hub data is cached by datasets (HF_DATASETS_CACHE); paths.cache_dir holds tokens"
        )
    elif key == "access_token":
        overlay.skip(where, "***", TOP_LEVEL_SKIPS["access_token"])
    else:
        overlay.skip(where, value, "no hydratune counterpart known")


def _loggers(overlay: Overlay, logger_name: Any, log: dict) -> None:
    """logger_name (litgpt's default: csv) and the `log:` block, which only W&B reads among the loggers here."""
    if logger_name in ("csv", "tensorboard", "wandb", "mlflow"):
        overlay.choose("logger", str(logger_name), "logger_name")
    else:
        overlay.skip("logger_name", logger_name, "loggers: csv, tensorboard, wandb, mlflow")
    for key, value in log.items():
        target = {"project": "project", "run": "name", "group": "group"}.get(key)
        if value is None:
            continue
        if target and logger_name == "wandb":
            overlay.set(f"logger.wandb.{target}", value)
        else:
            overlay.skip(f"log.{key}", value, "read by the W&B logger only (logger_name: wandb)"
                         if target else "Lightning's LitLogger is not offered: csv, tensorboard, wandb, mlflow")  # fmt: skip


HANDLED = {"checkpoint_dir", "seed", "precision", "quantize", "devices", "num_nodes", "data", "train", "eval", "log",
           "optimizer", "logger_name", *LORA_DEFAULTS}  # fmt: skip


def _top_level(overlay: Overlay, key: str, value: Any) -> None:
    if key in HANDLED or value is None:
        return
    if key == "resume":
        if value in (True, "auto"):
            overlay.set("resume", "auto")  # the newest run of this name, from its last.ckpt
        elif value is not False:
            overlay.skip(
                key, value, "a litgpt checkpoint folder; hydratune resumes its own runs (resume=auto)"
            )
    elif key in TOP_LEVEL_SKIPS:
        overlay.skip(key, "***" if key == "access_token" else value, TOP_LEVEL_SKIPS[key])
    else:
        overlay.skip(key, value, "not an argument of litgpt finetune_lora / finetune_full")
