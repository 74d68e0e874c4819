"""`hydratune import`, the shared part: `Overlay` (an experiment being built), the key tables and task helpers
every importer uses, and the importers of model-compose YAML, SimpleFoundation JSON, LlamaFarm YAML,
LLaMA-Factory YAML and Axolotl YAML. torchtune, litgpt and TRL have their own modules
(hydratune.importer_torchtune, _litgpt, _trl); hydratune.config_import tells the formats apart and writes
`conf/experiment/NAME.yaml`, with every key that has no counterpart reported.

The mapping is docs/options.md in code: each source key becomes a group choice (`override /peft: lora`)
or a value at a dotted key (`peft.config.r: 16`). Nothing is guessed: a key not in the tables below
is reported as unmapped, with the reason when one is known.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from hydratune.config import REDACTED, is_secret_key, redact
from hydratune.errors import UserError
from hydratune.trl_names import TASK_KEYS

# Source key -> dotted hydratune key, for keys whose value carries over as it is.
VALUES: dict[str, str] = {
    "learning_rate": "optimizer.lr",
    "weight_decay": "optimizer.weight_decay",
    "adam_epsilon": "optimizer.eps",
    "max_grad_norm": "trainer.gradient_clip_val",
    "gradient_accumulation_steps": "trainer.accumulate_grad_batches",
    "logging_steps": "trainer.log_every_n_steps",
    "warmup_steps": "scheduler.warmup_steps",
    "warmup_ratio": "scheduler.warmup_ratio",
    "per_device_train_batch_size": "dataset.batch_size",
    "train_batch_size": "dataset.batch_size",
    "batch_size": "dataset.batch_size",
    "per_device_batch_size": "dataset.batch_size",
    "per_device_eval_batch_size": "dataset.eval_batch_size",
    "max_seq_length": "dataset.max_seq_length",
    "packing": "dataset.packing",
    "group_by_length": "dataset.group_by_length",
    "dataloader_num_workers": "dataset.num_workers",
    "gradient_checkpointing": "model.gradient_checkpointing",
    "torch_dtype": "model.dtype",
    "trust_remote_code": "model.trust_remote_code",
    "cache_dir": "model.cache_dir",  # where the base model's hub files are kept (LlamaFarm, LLaMA-Factory)
    "seed": "seed",
    "eval_on_start": "eval_before_training",
    "tf32": "tf32",
    "lora_r": "peft.config.r",
    "r": "peft.config.r",
    "lora_rank": "peft.config.r",
    "lora_alpha": "peft.config.lora_alpha",
    "alpha": "peft.config.lora_alpha",
    "lora_dropout": "peft.config.lora_dropout",
    "dropout": "peft.config.lora_dropout",
    "lora_target_modules": "peft.config.target_modules",
    "target_modules": "peft.config.target_modules",
    "lora_bias": "peft.config.bias",
    "bias": "peft.config.bias",
    "modules_to_save": "peft.config.modules_to_save",
    "layers_to_transform": "peft.config.layers_to_transform",
    "layers_pattern": "peft.config.layers_pattern",
    "bnb_4bit_compute_dtype": "quantization.config.bnb_4bit_compute_dtype",
    "bnb_4bit_use_double_quant": "quantization.config.bnb_4bit_use_double_quant",
    "double_quantization": "quantization.config.bnb_4bit_use_double_quant",
    "save_steps": "callbacks.model_checkpoint.save_steps",
    "save_total_limit": "callbacks.model_checkpoint.save_total_limit",
    "load_best_model_at_end": "callbacks.model_checkpoint.load_best_model_at_end",
    "greater_is_better": "callbacks.model_checkpoint.greater_is_better",
    "early_stopping_patience": "callbacks.early_stopping.patience",
    "early_stopping_threshold": "callbacks.early_stopping.threshold",
    "wandb_project": "logger.wandb.project",
    "wandb_name": "logger.wandb.name",
}
# The HF Trainer's defaults (TrainingArguments) that decide what trains and what a run costs, for the files
# of the tools built on it (LLaMA-Factory, Axolotl, TRL). Their importers set them first, then the tool's own
# defaults, then the file's keys, so that a key the file leaves out is never one of hydratune's demo values.
HF_TRAINER_DEFAULTS: dict[str, Any] = {
    "trainer.max_epochs": 3,  # num_train_epochs
    "trainer.max_steps": -1,
    "scheduler.warmup_ratio": 0.0,
    "scheduler.warmup_steps": 0,
    "dataset.batch_size": 8,  # per_device_train_batch_size
    "dataset.eval_batch_size": 8,  # per_device_eval_batch_size
    "trainer.accumulate_grad_batches": 1,
    "trainer.gradient_clip_val": 1.0,  # max_grad_norm
    "optimizer.weight_decay": 0.0,
    "seed": 42,
    "eval_before_training": False,  # eval_on_start
    "eval_generations.num_prompts": 0,  # the Trainer samples no answers at an evaluation
}
# Keys with no counterpart, and why (the rest of docs/options.md's "Not supported" table).
UNSUPPORTED: dict[str, str] = {
    "output_dir": "runs go to outputs/<name>/<date>; choose with hydra.run.dir=DIR",
    "resume_from_checkpoint": "a run-time choice: add ckpt_path=PATH (or resume=auto) to the command",
    "device_map": "Lightning places the model; several devices through trainer=ddp",
    "use_cpu_offload": "no CPU offload; use peft=qlora or a paged optimizer",
    "use_ipex": "Intel Extension for PyTorch is not supported",
    "eval_accumulation_steps": "evaluation gathers no predictions",
    "dataloader_pin_memory": "not configurable",
    "length_column_name": "lengths come from the tokenized samples",
    "logging_first_step": "every step's loss is kept in metrics history",
    "data_seed": "one `seed` drives the sampler",
    "push_to_hub": "runs never upload",
    "hub_model_id": "runs never upload",
    "hub_strategy": "runs never upload",
    "hub_token": "runs never upload",
    "use_auth_token": "tokens are read from the HF_TOKEN environment variable only",
    "token": "tokens are read from the HF_TOKEN environment variable only",
    "use_unsloth": "Unsloth is not supported",
    "eval_dataset": "the validation split comes from the dataset's sources or a split op",
    "dataset": "wired by the workflow: the datasets components become dataset.sources",
    "compute_metrics": "val/loss and val/ppl are always computed",
}
# Keys that only say what is implied anyway (the component's type, the task_type of the LoRA config).
IMPLIED = {"type", "task_type", "id", "early_stopping", "eval_strategy", "save_strategy", "stage"}
SCHEDULER_OR_OPTIMIZER = {"lr_scheduler_type": "scheduler", "optimizer": "optimizer", "optim": "optimizer"}
PRECISION = {"fp16": "16-mixed", "bf16": "bf16-mixed", "use_bf16": "bf16-mixed"}
QUANTIZATION = {"nf4": "nf4", "int4": "int4", "int8": "int8", "fp4": "fp4"}
HUB_SOURCE_KEYS = (
    "path",
    "name",
    "split",
    "fraction",
    "revision",
    "streaming",
    "shuffle",
    "trust_remote_code",
)
NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def whole_or_fraction(value: Any) -> int | float:
    """An epoch count as the file gave it: 3.0 -> 3, 1.5 stays 1.5 (hydratune.callbacks.Epochs runs it)."""
    number = float(value)
    return int(number) if number == int(number) else number


class Overlay:
    """An experiment being built: group choices, dotted values, and what could not be mapped."""

    def __init__(self, conf_dir: Path):
        self.conf_dir = conf_dir
        self.choices: dict[str, str] = {}
        self.values: dict[str, Any] = {}
        self.unmapped: list[str] = []

    def choose(self, group: str, option: str, source_key: str) -> None:
        if not (self.conf_dir / group / f"{option}.yaml").is_file():
            self.skip(source_key, option, f"no {group} option named {option!r}")
        else:
            self.choices[group] = option

    def require(self, group: str, option: str, source_key: str) -> None:
        """`choose` for a choice that decides what trains (the adapter method): with no such option the
        import stops, since the group's default would train something else under the same name."""
        if not (self.conf_dir / group / f"{option}.yaml").is_file():
            known = ", ".join(sorted(p.stem for p in (self.conf_dir / group).glob("*.yaml")))
            raise UserError(
                f"{source_key}: {option}: hydratune has no {group} option of that name (known: {known}); "
                "nothing was written"
            )
        self.choices[group] = option

    def set(self, key: str, value: Any) -> None:
        self.values[key] = value

    def skip(self, key: str, value: Any, reason: str) -> None:
        self.unmapped.append(f"{key}: {_short(_shown(key, value))} ({reason})")

    def map_key(self, key: str, value: Any) -> None:
        """One source key: a group choice, a value, a known unsupported key, or unmapped."""
        value = _number(value)
        if key == "warmup_steps" and isinstance(value, float) and value < 1:
            key = "warmup_ratio"  # the Trainer reads a float below 1 as a ratio of the run
        if key in VALUES:
            self.set(VALUES[key], value)
            if key in ("wandb_project", "wandb_name"):
                self.choose("logger", "wandb", key)
        elif key == "lora_target":
            modules = [v.strip() for v in str(value).split(",")] if isinstance(value, str) else list(value)
            # LLaMA-Factory's `all` is every linear layer: peft's word for that is all-linear.
            self.set("peft.config.target_modules", "all-linear" if modules == ["all"] else modules)
        elif key in SCHEDULER_OR_OPTIMIZER:
            self.choose(SCHEDULER_OR_OPTIMIZER[key], str(value), key)
        elif key in PRECISION:
            if value is True:
                chosen = self.values.get("trainer.precision")
                if chosen not in (None, PRECISION[key]):
                    raise UserError(
                        f"{key}: true and fp16/bf16 both set: a run trains in one precision; keep fp16 "
                        "(older GPUs) or bf16 (Ampere and newer)"
                    )
                self.set("trainer.precision", PRECISION[key])
        elif key in ("num_epochs", "num_train_epochs"):
            if int(self.values.get("trainer.max_steps", -1)) <= 0:  # a max_steps read before wins
                self.set("trainer.max_epochs", whole_or_fraction(value))
                self.values.setdefault("trainer.max_steps", -1)
        elif key == "max_steps":
            self.set("trainer.max_steps", int(value))
            if int(value) > 0:  # the Trainer's max_steps overrides the epochs
                self.set("trainer.max_epochs", -1)
        elif key in ("model_name_or_path", "huggingface_id"):
            self.model(str(value))
        elif key in ("peft_adapter", "finetuning_type"):
            self.require("peft", {"full": "none"}.get(str(value), str(value)), key)
        elif key == "use_lora":
            self.choose("peft", "lora" if value else "none", key)
        elif key == "method" and isinstance(value, str):
            self.require("peft", value, key)
        elif key in ("load_in_4bit", "load_in_8bit"):
            if value:
                self.choose("quantization", "nf4" if key == "load_in_4bit" else "int8", key)
        elif key == "quantization_bit":
            self.choose("quantization", {4: "nf4", 8: "int8"}.get(value, str(value)), key)
        elif key in ("quantization", "bnb_4bit_quant_type") and isinstance(value, str):
            self.choose("quantization", QUANTIZATION.get(value, value), key)
        elif key == "task":
            self.choose("task", str(value), key)
        elif key == "text_column":
            self.set("dataset.format", "text")
            self.set("dataset.text_column", value)
        elif key in ("prompt_column", "response_column", "system_column"):
            self.set("dataset.format", "prompt_response")
            self.set(f"dataset.{key}", value)
        elif key == "eval_steps":
            self.set("trainer.val_check_interval", int(value))  # scaled by accumulation in finish()
        elif key == "metric_for_best_model":
            metric = {"loss": "val/loss", "eval_loss": "val/loss", "accuracy": "val/acc"}.get(str(value))
            if metric:
                self.set("callbacks.model_checkpoint.metric_for_best_model", metric)
            else:
                self.skip(key, value, "metrics are val/loss, val/ppl and val/acc")
        elif key == "report_to":
            targets = value if isinstance(value, list) else [value]
            logger = next((t for t in targets if t in ("tensorboard", "wandb", "none")), None)
            if logger:
                self.choose("logger", logger, key)
            else:
                self.skip(key, value, "loggers: tensorboard, wandb, csv, mlflow, none")
        elif key in ("deepspeed_config", "deepspeed"):
            # zero2.json, ds_z3_config.json, ds_z3_offload_config.json, zero3_bf16_cpuoffload_all.json
            stage = re.search(r"(?:zero_?|_z)([0-3])", str(value).lower())
            if stage and stage.group(1) in "23":
                offload = "_offload" if stage.group(1) == "3" and "offload" in str(value).lower() else ""
                self.choose("trainer", f"deepspeed_zero{stage.group(1)}{offload}", key)
            elif stage:
                self.skip(
                    key, value, "no ZeRO-0/1 preset: trainer=ddp (plain data parallel) is the counterpart"
                )
            else:
                self.skip(key, value, "name the ZeRO stage: trainer=deepspeed_zero2|deepspeed_zero3")
        elif key == "use_wandb":
            if value:
                self.choose("logger", "wandb", key)
        elif key == "use_flash_attention":
            if value:
                self.set("model.attn_implementation", "flash_attention_2")
        elif key == "adam_beta1" or key == "adam_beta2":
            betas = list(self.values.get("optimizer.betas", [0.9, 0.999]))
            betas[0 if key == "adam_beta1" else 1] = value
            self.set("optimizer.betas", betas)
        elif key in UNSUPPORTED:
            self.skip(key, value, UNSUPPORTED[key])
        elif key not in IMPLIED:
            self.skip(key, value, "no hydratune counterpart known")

    def model(self, hub_id: str) -> None:
        """A conf/model preset when one names this hub id, else the id on the default preset."""
        for preset in sorted((self.conf_dir / "model").glob("*.yaml")):
            data = yaml.safe_load(preset.read_text()) or {}
            if data.get("pretrained_model_name_or_path") == hub_id:
                self.choices["model"] = preset.stem
                return
        self.set("model.pretrained_model_name_or_path", hub_id)

    def finish(self, name: str) -> dict:
        """The overlay as a config dict: defaults list first, then nested values."""
        # eval_steps counts optimizer steps; val_check_interval counts batches.
        # A float is a fraction of an epoch (Axolotl's evals_per_epoch), not a step count.
        if isinstance(self.values.get("trainer.val_check_interval"), int):
            accumulation = int(self.values.get("trainer.accumulate_grad_batches", 1))
            self.values["trainer.val_check_interval"] *= accumulation
        out: dict[str, Any] = {}
        if self.choices:
            out["defaults"] = [{f"override /{g}": o} for g, o in self.choices.items()]
        out["name"] = name
        for dotted, value in self.values.items():
            node = out
            *parents, leaf = dotted.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return out


def _number(value: Any) -> Any:
    """YAML 1.1 reads `5e-5` as a string; numbers written that way become floats."""
    if isinstance(value, str) and NUMBER.match(value):
        return float(value) if any(c in value for c in ".eE") else int(value)
    return value


# A key whose value is a credential (hub_token, hf_hub_token, access_token, wandb_api_key, ...): its value is
# never echoed. The tokenizer's special tokens (eos_token, ...) are text, not credentials.
SECRET_KEY = re.compile(r"(^|_)(token|api_key|apikey|password|secret|access_key)$")
SPECIAL_TOKEN = re.compile(r"^(eos|bos|pad|unk|sep|cls|mask)_token$")


def _shown(key: str, value: Any) -> Any:
    """`value` as an unmapped-key line may show it: credentials redacted whatever their type, nested ones too, and
    a URL's user:password masked (review Z4)."""
    name = key.rsplit(".", 1)[-1].lower()
    if value is not None and (
        is_secret_key(name) or (SECRET_KEY.search(name) and not SPECIAL_TOKEN.match(name))
    ):
        return REDACTED
    return redact(value)


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


def load(path: Path) -> dict:
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise UserError(f"{path}: cannot parse ({str(err).splitlines()[0]})") from err
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    return data


# Keys only one project uses: how a flat YAML is recognised (SimpleFoundation's JSON has none of them).
LLAMAFACTORY_KEYS = {"stage", "finetuning_type", "cutoff_len", "lora_target", "template", "pref_beta",
                     "pref_loss", "quantization_bit", "max_samples", "val_size", "do_train", "lora_rank"}  # fmt: skip
AXOLOTL_KEYS = {"base_model", "datasets", "adapter", "sequence_len", "micro_batch_size", "sample_packing",
                "val_set_size", "lora_target_linear", "rl", "lr_scheduler", "evals_per_epoch"}  # fmt: skip


def import_model_compose(data: dict, overlay: Overlay) -> None:
    sources, ops = [], []
    for component in data.get("components") or []:
        kind, cid = component.get("type"), component.get("id", "?")
        if kind == "model-trainer":
            for key, value in component.items():
                if key not in ("id", "type"):
                    overlay.map_key(key, value)
        elif kind == "datasets" and "method" in component:
            op = _dataset_op(component)
            if op:
                ops.append(op)
            else:
                overlay.skip(
                    f"{cid}.method",
                    component["method"],
                    "its arguments come from workflow inputs: write the op in dataset.ops",
                )
        elif kind == "datasets":
            sources.append(_source(component, overlay))
        else:
            overlay.skip(f"{cid}.type", kind, "only model-trainer and datasets components are imported")
    if sources:
        hub = any("path" in s for s in sources)
        overlay.choices["dataset"] = "alpaca" if hub else "local_csv"
        overlay.set("dataset.sources", sources)
    if ops:
        overlay.set("dataset.ops", ops)
    no_data(overlay, "the file has no datasets component")
    for key in ("workflows", "workflow"):
        if key in data:
            overlay.skip(key, "...", "flattened: components become groups, jobs have no counterpart")


def _source(component: dict, overlay: Overlay) -> dict:
    if component.get("provider") == "local":
        source = {"loader": component.get("loader", "json")}
        for key in ("data_files", "data_dir"):
            if key in component:
                source[key] = component[key]
        return source
    source = {key: _number(component[key]) for key in HUB_SOURCE_KEYS if key in component}
    for key in set(component) - {*HUB_SOURCE_KEYS, "id", "type", "provider"}:
        overlay.map_key(f"{component.get('id', 'dataset')}.{key}", component[key])
    return source


def _dataset_op(component: dict) -> dict | None:
    """A dataset-ops component with literal arguments as one op; None when they are workflow inputs."""
    method = component["method"]
    args = {k: v for k, v in component.items() if k not in ("id", "type", "method", "dataset")}
    if any(isinstance(v, str) and "${" in v for v in args.values()) or not args:
        return None
    if method == "filter":
        return {"filter": args.get("condition")}
    if method == "map":
        return {"map": args.get("template")}
    if method == "select" and args.get("axis") == "columns":
        return {"select_columns": args.get("columns")}
    if method == "select":
        return {"select_rows": {"indices": args.get("indices")}}
    return None


def import_llamafarm(data: dict, overlay: Overlay) -> None:
    block = data.get("fine_tuner") or data["components"]["fine_tuner"]
    config = block.get("config") or {}
    if block.get("type") == "llamafactory":
        # LLaMA-Factory's own keys, read as a LLaMA-Factory YAML is (stage, pref_*, lora_target, ...);
        # its dataset is a hydratune dataset option of that name.
        if "dataset" in config:
            overlay.choose("dataset", str(config["dataset"]), "dataset")
        import_llamafactory({k: v for k, v in config.items() if k != "dataset"}, overlay, ImportContext())
        return
    for key, value in (config.get("base_model") or {}).items():
        overlay.map_key(key, value)
    method = config.get("method") or {}
    if "type" in method:
        overlay.require("peft", str(method["type"]), "method.type")
    for key, value in method.items():
        if key == "quantization" and isinstance(value, dict):
            for qkey, qvalue in value.items():
                overlay.map_key(qkey, qvalue)
        elif key != "type":
            overlay.map_key(key, value)
    for key, value in (config.get("training") or {}).items():
        overlay.map_key(key, value)
    for profile, settings in (config.get("optimization") or data.get("optimization") or {}).items():
        overlay.choose("trainer", str(profile), f"optimization.{profile}")
        for key, value in (settings or {}).items():
            overlay.map_key(key, value)
    no_data(overlay, "LlamaFarm takes the data on its command line (--dataset FILE)")


def import_simplefoundation(data: dict, overlay: Overlay) -> None:
    for key, value in data.items():
        overlay.map_key(key, value)
    no_data(overlay, "SimpleFoundation takes train_file and eval_file on its command line")


def no_data(overlay: Overlay, why: str) -> None:
    """A file that names no training data: `dataset.sources: []`, so that the run stops asking for data
    rather than training on hydratune's demo rows (what the sample dataset option would give)."""
    if "dataset.sources" in overlay.values or "dataset" in overlay.choices:
        return
    overlay.set("dataset.sources", [])
    overlay.skip(
        "dataset", "(not in the file)", f"{why}: set dataset.sources (e.g. "
        "'dataset.sources=[{loader:json,data_files:{train:TRAIN.jsonl,validation:EVAL.jsonl}}]'); until then the run stops",
    )  # fmt: skip


# -- LLaMA-Factory and Axolotl ------------------------------------------------------------------------
# Their training stages (LLaMA-Factory `stage`, Axolotl `rl`) -> (hydratune task, the task's loss or None).
# A stage is imported only when conf/task/<task>.yaml exists; otherwise the import stops, naming it.
LLAMAFACTORY_STAGES: dict[str, tuple[str, str | None]] = {
    "sft": ("sft", None),
    "pt": ("sft", None),  # pre-training: plain next-token loss on every token (dataset.train_on: all)
    "dpo": ("dpo", None),  # the loss comes from pref_loss
    "kto": ("kto", None),
    "rm": ("reward", None),
    "ppo": ("grpo", None),  # on-policy RL with a group baseline; PPO's value model has no counterpart
}
AXOLOTL_RL: dict[str, tuple[str, str | None]] = {
    "dpo": ("dpo", "sigmoid"),
    "ipo": ("dpo", "ipo"),
    "orpo": ("dpo", "orpo"),
    "simpo": ("dpo", "simpo"),
    "kto": ("kto", None),
    "grpo": ("grpo", None),
}
PREF_LOSSES = {
    "sigmoid": "sigmoid", "robust": "robust", "ipo": "ipo", "hinge": "hinge", "orpo": "orpo", "simpo": "simpo"
}  # fmt: skip
# Source key -> task key, set when the chosen task's YAML defines that key (the task decides what it takes).
TASK_VALUES: dict[str, str] = {
    "pref_beta": "beta",  # LLaMA-Factory: DPO/KTO beta, ORPO's weight of the odds-ratio term, SimPO beta
    "rl_beta": "beta",  # Axolotl
    "orpo_alpha": "beta",  # Axolotl's ORPO weight (TRL's ORPOConfig.beta)
    "pref_ftx": "sft_weight",
    "cpo_alpha": "sft_weight",  # Axolotl's SimPO/CPO NLL term on the chosen answer
    "dpo_label_smoothing": "label_smoothing",
    "simpo_gamma": "simpo_gamma",
    "center_rewards_coefficient": "center_rewards_coefficient",  # Axolotl's reward models (TRL's name)
    "kto_chosen_weight": "desirable_weight",
    "kto_rejected_weight": "undesirable_weight",
    "kto_desirable_weight": "desirable_weight",
    "kto_undesirable_weight": "undesirable_weight",
    "max_new_tokens": "max_new_tokens",  # LLaMA-Factory's generation settings, used by stage: ppo
    "temperature": "temperature",
    "top_p": "top_p",
}
# Axolotl's `trl:` block (GRPO) -> task key.
AXOLOTL_TRL = {
    key: TASK_KEYS[key]  # TRL's own names (hydratune.trl_names)
    for key in ("beta", "num_generations", "max_completion_length", "temperature", "top_p", "epsilon",
                "epsilon_high", "num_iterations")
}  # fmt: skip
# TRL's GRPO loss_type and scale_rewards spellings -> task.aggregation, task.scale_rewards. dapo needs one
# micro-batch per step on one device (rule grpo_dapo_window says so at preflight).
AXOLOTL_GRPO_VALUES = {
    "loss_type": ("aggregation", {"grpo": "grpo", "dr_grpo": "dr_grpo", "bnpo": "bnpo", "dapo": "dapo"}),
    "scale_rewards": (
        "scale_rewards",
        {True: True, "group": True, "batch": "batch", False: False, "none": False},
    ),
}
# Keys of either project that only restate what hydratune does anyway.
LF_AX_IMPLIED = {
    "do_train",
    "plot_loss",  # loss.png is always drawn
    "overwrite_output_dir",  # every run has its own folder
    "overwrite_cache",  # tokenized data is cached by fingerprint: a change re-tokenizes
    "model_type",  # Axolotl: the auto classes pick it
    "tokenizer_type",
    "strict",  # Axolotl: hydratune's schema is always strict
    "pretrain_multipack_attn",  # hydratune's packed rows never attend across samples (true is the only way)
    "fsdp_transformer_layer_cls_to_wrap",  # hydratune wraps the model's decoder layers
    "fsdp_auto_wrap_policy",
    "fsdp_version",
    "eval_strategy",
    "save_strategy",
    "evaluation_strategy",
    "dataset_dir",  # read through --dataset-info
}
# Keys that decide which parameters train, with no hydratune counterpart: the import stops (peft=none or the
# last layers would train something else under the file's name, e.g. every weight of a 141B MoE).
LF_AX_REFUSED: dict[str, str] = {
    "unfrozen_parameters": "Axolotl's regexes over parameter names have no counterpart (peft=freeze trains the "
    "last N layers and modules named by substring: peft.trainable_layers, peft.trainable_modules)",
    "use_llama_pro": "LLaMA Pro's added blocks are not supported (peft=freeze would train the last layers "
    "instead of new ones)",
}
LF_AX_UNSUPPORTED: dict[str, str] = {
    "ddp_timeout": "Lightning's default process-group timeout applies",
    "tokenized_path": "tokenized data is cached by fingerprint under paths.cache_dir",
    "dataset_prepared_path": "tokenized data is cached by fingerprint under paths.cache_dir",
    "neftune_noise_alpha": "NEFTune embedding noise is not supported",
    "enable_liger_kernel": "Liger kernels are not supported",
    "liger_rope": "Liger kernels are not supported",
    "liger_rms_norm": "Liger kernels are not supported",
    "liger_glu_activation": "Liger kernels are not supported",
    "liger_fused_linear_cross_entropy": (
        "Liger kernels are not used; hydratune's own chunked loss from the hidden states (task.fused_loss, "
        "on by default) does this job"
    ),
    "plugins": "Axolotl plugins have no counterpart",
    "xformers_attention": "attention is sdpa, eager or flash_attention_2 (model.attn_implementation)",
    "s2_attention": "shifted sparse attention is not supported",
    "shift_attn": "shifted sparse attention is not supported",
    "rope_scaling": "set it in the model's config.json",
    "special_tokens": "special tokens come from the tokenizer; add them to the tokenizer before training",
    "tokens": "new tokens come from the tokenizer; add them before training",
    "eval_sample_packing": "validation batches are never packed (each sample padded to its batch's longest)",
    "pad_to_sequence_len": "batches are padded to their longest row (packed rows are max_seq_length long)",
    "lora_fan_in_fan_out": "peft infers it for the model's layer type",
    "lora_model_dir": "continuing from an adapter is not supported; resume a hydratune run with ckpt_path=",
    "adapter_name_or_path": "continuing from an adapter is not supported; resume a hydratune run with ckpt_path=",
    "ref_model": "the reference is the base model (adapters off with LoRA, a frozen copy otherwise)",
    "reward_model": "a LLaMA-Factory reward model (a value head on a causal LM) is not a sequence classifier: "
    "train one with task=reward (or take a saved classifier with one label), then task.reward_model=IT",
    "reward_model_type": "a reward model is a task=reward run or a saved sequence classifier (task.reward_model)",
    "ppo_epochs": "read with stage: ppo only (task.num_iterations there)",
    "pref_bco_weight": "BCO's mixing with DPO is not supported: the preference loss is task.loss alone",
    "ld_alpha": "LD-DPO's down-weighting of the answers' verbose tail is not supported: whole answers are scored",
    "ref_model_quantization_bit": "the reference is the base with the adapters off (LoRA) or a frozen copy in "
    "the model's dtype; a quantized base (quantization=nf4) quantizes both",
    "ppo_buffer_size": "read with stage: ppo only (the answers per step there)",
    "ppo_target": "PPO's adaptive KL target is not used; the KL weight is task.beta",
    "ppo_score_norm": "rewards are normalised within each prompt's group",
    "ppo_whiten_rewards": "rewards are normalised within each prompt's group",
    "top_k": "sampling uses temperature and top_p",
    "wandb_watch": "gradients are not watched",
    "wandb_log_model": "checkpoints stay in the run folder (logger.wandb.log_model=false)",
    "loss_watchdog_threshold": "a NaN/inf loss stops or skips (nan_policy); no loss threshold",
    "loss_watchdog_patience": "a NaN/inf loss stops or skips (nan_policy); no loss threshold",
    "debug": "not a training setting",
    "local_rank": "set per process by the launcher (torchrun, SLURM)",
    "torch_compile": "torch.compile is not wired",
    "gptq": "GPTQ models are not supported; use quantization=nf4|int8",
    "lora_on_cpu": "LoRA weights live on the training device",
    "mask_history": "train_on: last_assistant trains the last assistant turn only (chat formats)",
    "include_num_input_tokens_seen": "tokens/s and tokens seen are logged by the throughput callback",
    "use_badam": "BAdam is not supported: every parameter trains at once with the run's optimizer (more memory)",
    "use_apollo": "APOLLO is not supported: the run's optimizer (AdamW) trains instead, with its full state",
    "use_muon": "Muon is not supported: the run's optimizer (AdamW) trains every matrix instead",
    "use_dft_loss": "DFT's probability-weighted loss is not supported: the loss is plain cross-entropy",
    "default_system": "put the system prompt in the data (a system turn or dataset.system_column)",
    "default_system_message": "put the system prompt in the data (a system turn or dataset.system_column)",
    "run_name": "the run is named by `name` (outputs/<name>/<date>)",
    "wandb_entity": "set logger.wandb.entity (WandbLogger's argument) with logger=wandb",
    "shuffle_merged_datasets": "several sources are concatenated; add a shuffle op to mix them",
    "streaming": "streamed sources: dataset.sources.N.streaming=true on a hub source",
    "mix_strategy": "several sources are concatenated; `interleave` as the first op mixes them",
    "cloud_file_name": "only local files and hub datasets are sources",
    "liger_layer_norm": "Liger kernels are not supported",
    "cosine_constant_lr_ratio": "no constant-then-cosine schedule; scheduler=warmup_stable_decay is the nearest",
    "gradient_checkpointing_kwargs": "gradient checkpointing is on or off (model.gradient_checkpointing)",
    "use_reentrant_gc": "gradient checkpointing is on or off (model.gradient_checkpointing)",
    "qat": "quantization-aware training is not supported",
    "fp8": "FP8 training is not supported; trainer.precision=bf16-mixed",
    "fp8_enable_fsdp_float8_all_gather": "FP8 training is not supported",
    "diffusion": "diffusion language models are not supported",
    "llmcompressor": "sparse fine-tuning through llm-compressor is not supported",
    "use_otel_metrics": "OpenTelemetry is not a logger here: tensorboard, wandb, csv, mlflow",
    "otel_metrics_host": "OpenTelemetry is not a logger here: tensorboard, wandb, csv, mlflow",
    "otel_metrics_port": "OpenTelemetry is not a logger here: tensorboard, wandb, csv, mlflow",
    "remove_unused_columns": "only the columns a format reads are tokenized",
    "curriculum_sampling": "batches are shuffled (or grouped by length); no curriculum order",
    "lora_mlp_kernel": "Axolotl's fused LoRA kernels are not used; peft runs the adapters",
    "lora_qkv_kernel": "Axolotl's fused LoRA kernels are not used; peft runs the adapters",
    "lora_o_kernel": "Axolotl's fused LoRA kernels are not used; peft runs the adapters",
    "activation_offloading": "activations stay on the device; model.gradient_checkpointing saves memory",
    "use_ray": "Ray is not used: trainer=ddp, or a submitit launcher for many jobs",
    "ray_num_workers": "Ray is not used: trainer=ddp, or a submitit launcher for many jobs",
    "flex_attn_compile_kwargs": "flex attention is not offered: sdpa, eager, flash_attention_2",
    "image_max_pixels": "vision-language models are not supported (text only)",
    "video_max_pixels": "vision-language models are not supported (text only)",
    "video_fps": "vision-language models are not supported (text only)",
    "video_maxlen": "vision-language models are not supported (text only)",
    "freeze_vision_tower": "vision-language models are not supported (text only)",
    "freeze_multi_modal_projector": "vision-language models are not supported (text only)",
    "freeze_language_model": "vision-language models are not supported (text only)",
}


class ImportContext:
    """What an import reads besides the file (dataset_info.json; `--stage`, the trainer that TRL's command
    line names and its file does not) and the lines it has to say besides the unmapped keys (`notes`: a
    default it took where the file is silent, and how to choose otherwise)."""

    def __init__(self, dataset_info: str | Path | None = None, stage: str | None = None):
        self.dataset_info = Path(dataset_info) if dataset_info else None
        self.stage = stage
        self.notes: list[str] = []


def _task(overlay: Overlay, source_key: str, value: Any, table: dict) -> tuple[str, str | None]:
    """The hydratune task for a stage / rl value; a one-line error when there is none (never SFT instead)."""
    if str(value) not in table:
        raise UserError(
            f"{source_key}: {value}: hydratune has no such task (known: {', '.join(table)}); nothing was written"
        )
    task, loss = table[str(value)]
    if not (overlay.conf_dir / "task" / f"{task}.yaml").is_file():
        raise UserError(
            f"{source_key}: {value}: hydratune has no {task} task yet (no conf/task/{task}.yaml); "
            "nothing was written (import it once that task exists)"
        )
    overlay.choices["task"] = task
    if "sft_weight" in _task_keys(overlay, task):
        # LLaMA-Factory (pref_ftx) and TRL (rpo_alpha) default to no NLL term, as task=dpo does; written out so
        # the experiment says what the source trained (Axolotl's simpo sets its own: CPO's cpo_alpha).
        overlay.set("task.sft_weight", 0.0)
    return task, loss


def trl_loss_type(overlay: Overlay, data: dict, task: str, value: Any) -> None:
    """TRL's loss_type (Axolotl's dpo_loss_type) for the task: a hydratune task.loss, or refused with the list (a
    loss is never swapped silently). `[sigmoid, sft]` (with loss_weights) is DPO plus the NLL term on the chosen answer (task.sft_weight)."""
    losses = [str(v) for v in value] if isinstance(value, list) else [str(value)]
    if _reads_sft_data(task):
        if losses not in (["nll"], ["chunked_nll"]):
            raise UserError(f"loss_type: {value}: hydratune's SFT loss is the NLL; nothing was written")
        return
    if _samples_completions(task):
        if losses[0] in ("grpo", "dr_grpo", "bnpo"):
            overlay.set("task.aggregation", losses[0])
        elif losses[0] != "dapo":  # dapo: _dapo, with TRL's defaults
            overlay.skip(
                "loss_type", value, "task.aggregation is grpo (mean per completion), dr_grpo, bnpo or dapo"
            )
        return
    if _reads_kto_rows(task):
        if losses != ["kto"]:
            raise UserError(f"loss_type: {value}: hydratune's KTO loss is kto; nothing was written")
        return
    weights = [float(w) for w in data.get("loss_weights") or [1.0] * len(losses)]
    if len(losses) == 2 and losses[1] == "sft" and losses[0] in PREF_LOSSES:
        if weights[0] != 1.0:
            raise UserError(
                f"loss_weights: {weights}: the preference term's weight is 1 here; nothing was written"
            )
        overlay.set("task.sft_weight", weights[1])
        losses = losses[:1]
    if len(losses) != 1 or losses[0] not in ("sigmoid", "robust", "ipo", "hinge"):
        raise UserError(
            f"loss_type: {value}: hydratune's DPO losses are sigmoid, robust, ipo, hinge (and [sigmoid, sft]); "
            f"orpo and simpo: --stage orpo or task.loss=simpo; nothing was written"
        )
    overlay.set("task.loss", PREF_LOSSES[losses[0]])


def _grpo_batch(overlay: Overlay, data: dict, context: ImportContext) -> None:
    """TRL's GRPO batch counts completions (num_generations per prompt); hydratune's counts prompts, each
    sampled task.num_generations times. The prompts per optimizer step stay the same. Axolotl passes its
    micro_batch_size to TRL as the per-device batch."""
    batch_key = "micro_batch_size" if "micro_batch_size" in data else "per_device_train_batch_size"
    per_device = int(data.get(batch_key, 8))
    accumulation = int(data.get("gradient_accumulation_steps", 1))
    group = int(data.get("num_generations", 8))
    if per_device % group == 0:
        prompts = per_device // group
    elif per_device * accumulation % group == 0:
        prompts, accumulation = per_device * accumulation // group, 1
    else:
        raise UserError(
            f"{batch_key}: {per_device} (x gradient_accumulation_steps {accumulation}) completions "
            f"do not split into groups of num_generations {group}; TRL refuses it too; nothing was written"
        )
    overlay.set("dataset.batch_size", prompts)
    overlay.set("trainer.accumulate_grad_batches", accumulation)
    context.notes.append(
        f"{batch_key}: {per_device} completions are {prompts} prompt(s) x {group} generations: "
        f"dataset.batch_size={prompts} (prompts), trainer.accumulate_grad_batches={accumulation}"
    )


def _rewards(overlay: Overlay, funcs: Any, weights: list | None) -> None:
    """TRL's reward functions: a dotted path is a task.rewards entry (hydratune calls it with (prompts,
    completions, **columns), as TRL passes prompts= and completions=), a model id (owner/name, or a
    folder) a reward model entry (RewardModelScorer, as TRL loads one); TRL's built-in names have no
    counterpart. With none carried over, task.rewards is left empty, so the run stops until it is written
    (never hydratune's demo reward instead)."""
    entries = []
    for i, name in enumerate(funcs if isinstance(funcs, list) else [funcs]):
        weight = float(weights[i]) if weights else 1.0
        if "/" in str(name):  # TRL loads a model id as a sequence classifier with one label
            entries.append(
                {"_target_": "hydratune.rewards.RewardModelScorer", "run_dir": str(name), "weight": weight}
            )
        elif "." in str(name):
            entries.append({"_target_": str(name), "weight": weight})
        else:  # its reward_weights entry goes with it, and is said (review G9)
            overlay.skip(
                "reward_funcs", f"{name} (weight {weight})" if weights else name,
                "a reward named in its trainer's or recipe's registry (TRL's, open-r1's): "
                "write a task.rewards entry (_target_: a function (prompts, completions, **columns), weight); "
                "hydratune.rewards has exact_match, regex_match"
            )  # fmt: skip
    overlay.set("task.rewards", entries)


def _no_checkpoints(overlay: Overlay) -> None:
    """The HF Trainer's `save_strategy: no`: no step checkpoints. last.ckpt is still written (what resume and
    a stop by signal need), and best.ckpt where a best metric is tracked."""
    overlay.set("callbacks.model_checkpoint.save_total_limit", 0)


def _reads_preference_data(task: str) -> bool:
    """Whether a hydratune task trains on preference rows (its datasets get the pair columns)."""
    from hydratune.tasks.preference import PreferenceTask
    from hydratune.tasks.registry import TASKS

    return task in TASKS and issubclass(TASKS[task], PreferenceTask)


def _reads_kto_rows(task: str) -> bool:
    """Whether a hydratune task trains on unpaired KTO rows (prompt, completion, desirable flag)."""
    from hydratune.tasks.registry import TASKS

    return _reads_preference_data(task) and bool(TASKS[task].kto)


def _samples_completions(task: str) -> bool:
    """Whether a hydratune task samples completions and scores them (GRPO): its batch counts prompts."""
    from hydratune.tasks.grpo import GRPOTask
    from hydratune.tasks.registry import TASKS

    return task in TASKS and issubclass(TASKS[task], GRPOTask)


def _reads_sft_data(task: str) -> bool:
    """Whether a hydratune task trains on SFT rows (Axolotl's dataset types map to its formats)."""
    from hydratune.tasks.registry import TASKS
    from hydratune.tasks.sft import SFTTask

    return task in TASKS and issubclass(TASKS[task], SFTTask)


def _task_keys(overlay: Overlay, task: str) -> set[str]:
    """The keys of conf/task/<task>.yaml, with those of the options it lists as its own defaults."""
    text = (overlay.conf_dir / "task" / f"{task}.yaml").read_text()
    data = yaml.safe_load(text) or {}
    if "# @package _global_" in text:  # an overlay (task=grpo): its task keys sit under `task:`
        data = {**(data.get("task") or {}), "defaults": data.get("defaults")}
    keys = set(data) - {"defaults"}
    for parent in data.get("defaults") or []:
        if (
            isinstance(parent, str)
            and parent != "_self_"
            and (overlay.conf_dir / "task" / f"{parent}.yaml").is_file()
        ):
            keys |= _task_keys(overlay, parent)
    return keys


def _set_task(overlay: Overlay, task: str, source_key: str, task_key: str, value: Any) -> None:
    """task.<key> when the chosen task has that key; otherwise reported with the task it belongs to."""
    if task_key in _task_keys(overlay, task):
        overlay.set(f"task.{task_key}", _number(value))
    else:
        overlay.skip(source_key, value, f"task={task} has no task.{task_key}")


def _known(overlay: Overlay, dotted: str) -> bool:
    from hydratune.schema import known_keys

    return dotted in known_keys(str(overlay.conf_dir))


def _split_op(overlay: Overlay, size: Any) -> None:
    """Rows held out as the validation split, drawn with the run's seed, as LLaMA-Factory and Axolotl draw
    them with the Trainer's."""
    size = _number(size)
    if size:
        ops = overlay.values.setdefault("dataset.ops", [])
        ops.append({"split": {"eval": size, "seed": "${seed}"}})


def hf_evaluation(
    overlay: Overlay, data: dict, context: ImportContext, tool: str, logging_steps: int
) -> None:
    """The HF Trainer's evaluation schedule (LLaMA-Factory, TRL): only with eval_strategy steps (every
    eval_steps, which defaults to logging_steps) or epoch. Rows held out without one are not evaluated."""
    strategy = str(data.get("eval_strategy") or data.get("evaluation_strategy") or "no")
    if strategy == "epoch":
        overlay.set("trainer.val_check_interval", 1.0)
        overlay.set("trainer.check_val_every_n_epoch", 1)
        return
    if strategy == "steps":
        steps = _number(data.get("eval_steps") or data.get("logging_steps") or logging_steps)
        if isinstance(steps, float) and steps < 1:
            overlay.values.pop("trainer.val_check_interval", None)
            overlay.skip(
                "eval_steps", steps, "a fraction of the run: give trainer.val_check_interval in batches"
            )
        else:
            overlay.set("trainer.val_check_interval", int(steps))  # times the accumulation in finish()
        return
    if strategy != "no":
        overlay.skip("eval_strategy", strategy, "the Trainer's values are no, steps and epoch")
    overlay.values.pop("trainer.val_check_interval", None)
    if "eval_steps" in data:
        overlay.skip("eval_steps", data["eval_steps"], "not used: eval_strategy is no")
    if has_validation_rows(overlay):
        overlay.set("trainer.limit_val_batches", 0)
        context.notes.append(
            f"evaluation: rows are held out but eval_strategy is {strategy}, so {tool} does not evaluate, nor "
            "does this run: trainer.limit_val_batches=0 (remove it to evaluate every trainer.val_check_interval "
            "batches)"
        )


def has_validation_rows(overlay: Overlay) -> bool:
    """Rows held out (a split op), or a validation split among the sources."""
    from hydratune.data.sources import VAL_SPLITS

    if any(isinstance(op, dict) and "split" in op for op in overlay.values.get("dataset.ops") or []):
        return True
    for source in overlay.values.get("dataset.sources") or []:
        for splits in (source.get("data_files"), source.get("split")) if isinstance(source, dict) else ():
            if isinstance(splits, dict) and any(name in splits for name in VAL_SPLITS):
                return True
    return False


def _attention(overlay: Overlay, key: str, value: Any) -> None:
    implementation = {
        True: "flash_attention_2",
        "fa2": "flash_attention_2",
        "sdpa": "sdpa",
        "disabled": "eager",
        "eager": "eager",
        "flash_attention_2": "flash_attention_2",
    }.get(value)
    if implementation:
        overlay.set("model.attn_implementation", implementation)
    elif value not in (False, "auto"):
        overlay.skip(key, value, "model.attn_implementation is sdpa, eager or flash_attention_2")


def _precision(overlay: Overlay, key: str, value: Any) -> None:
    """`bf16: auto` (Axolotl: bf16 where the GPU has it) is bf16-mixed; on a CPU, set trainer.precision=32-true."""
    overlay.map_key(key, True if value == "auto" else value)


def _bf16_weights(overlay: Overlay) -> None:
    """Axolotl, and LLaMA-Factory for adapters, load the base model in bf16 when bf16 is on (only the trained
    weights are float32): model.dtype=bfloat16, unless the file names a dtype."""
    if (
        overlay.values.get("trainer.precision") in ("bf16-mixed", "bf16-true")
        and "model.dtype" not in overlay.values
    ):
        overlay.set("model.dtype", "bfloat16")


# LLaMA-Factory's GaLore keys (read with use_galore: true) -> optimizer=galore_adamw keys.
GALORE = {
    "galore_rank": "rank",
    "galore_scale": "scale",
    "galore_update_interval": "update_proj_gap",
    "galore_proj_type": "proj_type",
    "galore_target": None,
    "galore_layerwise": None,
}


def _galore(overlay: Overlay, data: dict) -> None:
    if not data.get("use_galore"):
        for key in GALORE.keys() & data.keys():
            overlay.skip(key, data[key], "read with use_galore: true only")
        return
    overlay.choose("optimizer", "galore_adamw", "use_galore")
    for key in GALORE.keys() & data.keys():
        if GALORE[key]:
            overlay.set(f"optimizer.galore.{GALORE[key]}", _number(data[key]))
        elif key == "galore_target" and str(data[key]) == "all":
            continue  # every 2-D weight, as optimizer=galore_adamw does
        elif key == "galore_target":
            overlay.skip(key, data[key], "optimizer=galore_adamw projects every 2-D weight")
        elif data[key]:
            overlay.skip(key, data[key], "no per-layer GaLore updates: one optimizer step for all weights")


def _optimizer_keys(overlay: Overlay) -> None:
    """A value set for an optimizer key the chosen optimizer has not (loraplus_lr_ratio on adafactor) is
    reported instead of failing the whole import."""
    if "optimizer.loraplus_lr_ratio" not in overlay.values:
        return
    option = overlay.choices.get("optimizer", "adamw_torch")
    keys = yaml.safe_load((overlay.conf_dir / "optimizer" / f"{option}.yaml").read_text()) or {}
    if "loraplus_lr_ratio" not in keys:
        value = overlay.values.pop("optimizer.loraplus_lr_ratio")
        overlay.skip("loraplus_lr_ratio", value, f"optimizer={option} has no LoRA+ learning rates")


def _common(overlay: Overlay, key: str, value: Any) -> bool:
    """Keys that LLaMA-Factory and Axolotl spell alike; True when handled."""
    if key in ("bf16", "fp16"):
        _precision(overlay, key, value)
    elif key in ("pure_bf16",):
        if value:
            overlay.set("trainer.precision", "bf16-true")
    elif key in ("train_on_prompt", "train_on_inputs"):
        overlay.set("dataset.train_on", "all" if value else "response")
    elif key in ("cutoff_len", "sequence_len"):
        overlay.set("dataset.max_seq_length", int(value))
    elif key in ("val_size", "val_set_size"):
        _split_op(overlay, value)
    elif key == "max_samples":
        overlay.values.setdefault("dataset.ops", []).insert(0, {"select_rows": {"first": int(value)}})
    elif key in ("packing", "sample_packing", "neat_packing"):
        if value or key != "neat_packing":
            overlay.set("dataset.packing", bool(value))
    elif key in ("use_dora", "peft_use_dora"):
        if value:
            overlay.set("peft.config.use_dora", True)
    elif key in ("use_rslora", "peft_use_rslora"):
        if value:
            overlay.set("peft.config.use_rslora", True)
    elif key == "pissa_init":
        if value:
            overlay.set("peft.config.init_lora_weights", "pissa")
    elif key in ("additional_target", "lora_modules_to_save"):
        names = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value)
        overlay.set("peft.config.modules_to_save", names)
    elif key in ("flash_attn", "flash_attention", "sdp_attention"):
        _attention(overlay, key, "sdpa" if key == "sdp_attention" and value else value)
    elif key == "preprocessing_num_workers":
        overlay.set("dataset.num_proc", int(value))
    elif key == "eval_max_new_tokens":
        overlay.set("eval_generations.max_new_tokens", int(value))
    elif key == "save_only_model":
        if value:
            overlay.skip(key, value, "checkpoints always hold optimizer and loop state (exact resume)")
    elif key == "attn_implementation":
        _attention(overlay, key, value)
    elif key == "dataset_exact_deduplication":
        if value:
            overlay.values.setdefault("dataset.ops", []).insert(0, {"dedup": True})
    elif key == "sample_packing_sequentially":
        if value:
            overlay.set("dataset.packing_strategy", "greedy")  # rows filled in order
    elif key == "disable_gradient_checkpointing":
        overlay.set("model.gradient_checkpointing", not value)
    elif key == "loraplus_lr_ratio":
        overlay.set("optimizer.loraplus_lr_ratio", _number(value))  # checked against the optimizer at the end
    elif key in GALORE or key == "use_galore":
        pass  # read together by _galore, after the other keys
    elif key in TASK_VALUES:
        return False  # handled with the task
    elif key == "save_strategy" and str(value).lower() == "no":
        _no_checkpoints(overlay)
    elif key == "eval_table_size":  # Axolotl's table of sampled answers at each evaluation
        overlay.set("eval_generations.num_prompts", int(value))
    elif key in LF_AX_REFUSED and value:
        raise UserError(f"{key}: {_short(_shown(key, value))}: {LF_AX_REFUSED[key]}; nothing was written")
    elif key in LF_AX_UNSUPPORTED:
        overlay.skip(key, value, LF_AX_UNSUPPORTED[key])
    elif key in LF_AX_IMPLIED:
        pass
    else:
        return False
    return True


# Which tasks read each preference / RL key (by source key); elsewhere it is reported as not used.
TASK_OF_KEY = {
    "kto_chosen_weight": ("kto",),
    "kto_rejected_weight": ("kto",),
    "kto_desirable_weight": ("kto",),
    "kto_undesirable_weight": ("kto",),
    "pref_ftx": ("dpo",),
    "cpo_alpha": ("dpo",),
    "dpo_label_smoothing": ("dpo",),
    "simpo_gamma": ("dpo",),
    "center_rewards_coefficient": ("reward",),
    "max_new_tokens": ("grpo",),
    "temperature": ("grpo",),
    "top_p": ("grpo",),
}


# Why a key the source tool reads for a task is not carried over (elsewhere: "not used by task=...").
NOT_CARRIED = {
    ("pref_ftx", "kto"): "hydratune's KTO has no NLL term; LLaMA-Factory adds pref_ftx x the NLL of the "
    "desirable answers",
}


def _task_value(overlay: Overlay, task: str, key: str, value: Any) -> None:
    if task not in TASK_OF_KEY.get(key, ("dpo", "kto", "grpo")):
        overlay.skip(key, value, NOT_CARRIED.get((key, task), f"not used by task={task}"))
    else:
        _set_task(overlay, task, key, TASK_VALUES[key], value)


# Keys only a vision (or audio) language model config sets: such a file is refused, not trained as text.
MULTIMODAL_KEYS = ("processor_type", "image_size", "image_resize_algorithm", "image_max_pixels",
                   "video_max_pixels", "freeze_vision_tower", "freeze_multi_modal_projector")  # fmt: skip


def _refuse_multimodal(data: dict) -> None:
    key = next((k for k in MULTIMODAL_KEYS if data.get(k) is not None), None)
    if key:
        raise UserError(
            f"{key}: {_short(data[key])}: multimodal (vision or audio) language models are not supported, "
            "hydratune trains text-only causal LMs; nothing was written"
        )


def import_llamafactory(data: dict, overlay: Overlay, context: ImportContext) -> None:
    _refuse_multimodal(data)
    if "train_dataset" in data or isinstance(data.get("model"), str):
        raise UserError(
            "model, train_dataset: LLaMA-Factory's v1 layout is not read; write the file in its v0 layout "
            "(model_name_or_path, finetuning_type, dataset) and import that; nothing was written"
        )
    chore = next((k for k in ("do_predict", "do_eval", "export_dir", "infer_backend") if data.get(k)), None)
    if chore and not data.get("do_train"):
        raise UserError(
            f"{chore}: {_short(data[chore])} without do_train: a LLaMA-Factory prediction, export or inference config, "
            "not a training one; nothing was written"
        )
    stage = data.get("stage", "sft")
    task, _ = _task(overlay, "stage", stage, LLAMAFACTORY_STAGES)
    if stage == "pt":
        overlay.set("dataset.train_on", "all")
    if stage == "ppo":
        overlay.skip(
            "stage", stage, "mapped to task=grpo: group-normalised rewards, PPO's value model is not used"
        )
    # LLaMA-Factory's (and the HF Trainer's) defaults where the file is silent: the Trainer's learning rate,
    # linear schedule and batch sizes, cutoff_len 2048, no rows held out, gradient checkpointing on
    # (disable_gradient_checkpointing: false), every step checkpoint kept (save_total_limit: None).
    for key, value in HF_TRAINER_DEFAULTS.items():
        overlay.set(key, value)
    overlay.set("optimizer.lr", 5e-5)
    overlay.choose("scheduler", "linear", "lr_scheduler_type")
    overlay.set("dataset.max_seq_length", 2048)
    overlay.set("dataset.ops", [])
    overlay.set("model.gradient_checkpointing", True)
    overlay.set("callbacks.model_checkpoint.save_total_limit", None)
    rows = None  # what the dataset became: "chat", "pairs" or nothing
    eval_files = None  # eval_dataset's files, by the training file whose validation split each is
    for key, value in data.items():
        if stage == "ppo" and key in LF_PPO_KEYS:
            continue  # read with the batch (_llamafactory_ppo)
        if value is None or key == "stage" or _common(overlay, key, value):
            continue
        if key == "pref_loss":
            loss = PREF_LOSSES.get(str(value))
            if "loss" not in _task_keys(overlay, task):
                overlay.skip(key, value, f"not used by task={task}")
            elif loss:
                _set_task(overlay, task, key, "loss", loss)
            else:  # never another loss instead
                hint = "; KTO on pairs: stage: kto with unpaired rows" if value == "kto_pair" else ""
                raise UserError(
                    f"pref_loss: {value}: hydratune's preference losses are {', '.join(PREF_LOSSES)}{hint}; "
                    "nothing was written"
                )
        elif (
            key == "dpo_label_smoothing"
            and value
            and stage == "dpo"
            and data.get("pref_loss", "sigmoid") != "sigmoid"
        ):
            raise UserError(  # LLaMA-Factory refuses such a file itself
                f"dpo_label_smoothing: {value}: LLaMA-Factory reads it with pref_loss: sigmoid only (and refuses "
                f"pref_loss: {data['pref_loss']} with it); nothing was written"
            )
        elif key == "pref_ftx" and value and data.get("pref_loss") == "orpo":
            overlay.skip(key, value, "hydratune's orpo has its own NLL term at weight 1; LLaMA-Factory adds "
                         "pref_ftx x the chosen answers' NLL on top, which is not carried over")  # fmt: skip
        elif key in TASK_VALUES:
            _task_value(overlay, task, key, value)
        elif key == "dataset":
            rows = _llamafactory_datasets(overlay, value, context, task, stage)
        elif key == "eval_dataset":
            eval_files = _llamafactory_eval_dataset(overlay, data, value, context)
        elif key == "template":
            pass  # after the data: its meaning depends on the format
        elif key == "quantization_method" and value in ("bnb", "bitsandbytes"):
            pass  # bitsandbytes is hydratune's quantization
        elif key == "freeze_extra_modules":
            if data.get("finetuning_type") != "freeze":
                overlay.skip(key, value, "used by finetuning_type: freeze only")  # else read after the keys
        elif key in ("freeze_trainable_layers", "freeze_trainable_modules"):
            if value == "all" and data.get("finetuning_type") == "freeze":
                pass  # every module of the trained layers: what peft.trainable_layers trains
            elif key == "freeze_trainable_modules" and data.get("finetuning_type") == "freeze":
                overlay.skip(key, value, "the trained layers train whole; peft.trainable_modules would train "
                             "these names in every layer")  # fmt: skip
            elif data.get("finetuning_type") == "freeze":
                modules = value if key.endswith("layers") else [v.strip() for v in str(value).split(",")]
                overlay.set(f"peft.{key.replace('freeze_', '')}", modules)
            else:
                overlay.skip(key, value, "used by finetuning_type: freeze only")
        else:
            overlay.map_key(key, value)
    for train, validation in (eval_files or {}).items():
        sources = overlay.values.get("dataset.sources") or []
        files = [s.get("data_files") for s in sources if isinstance(s, dict)]
        owner = next((f for f in files if isinstance(f, dict) and f.get("train") == train), None)
        if owner is not None:
            owner["validation"] = validation
        else:
            overlay.skip("eval_dataset", data["eval_dataset"], f"its training file {train} is not a source")
    if "template" in data:
        if rows == "chat":  # the model's own template, which the tokenizer carries
            overlay.set("dataset.chat_template", None)
        else:
            why = {"pairs": "the preference task renders its pairs",
                   "text": "pre-training rows are plain text, never templated"}.get(
                       rows, "no dataset was imported (see dataset)")  # fmt: skip
            overlay.skip("template", data["template"], f"chat templates come from the tokenizer; {why}")
    method = data.get("finetuning_type", "lora")
    if method == "freeze":
        # LLaMA-Factory trains the last layers only; the output layer joins them through freeze_extra_modules.
        extra = data.get("freeze_extra_modules")
        modules = overlay.values.get("peft.trainable_modules", [])
        if extra:
            modules = [*modules, *[m.strip() for m in str(extra).split(",")]]
        overlay.set("peft.trainable_modules", modules)
    if method == "lora":
        # LLaMA-Factory's LoRA defaults where the file is silent: rank 8, alpha twice the rank, no dropout,
        # every linear layer (hydratune's peft=lora preset has r 16, alpha 32).
        rank = overlay.values.setdefault("peft.config.r", 8)
        overlay.values.setdefault("peft.config.lora_alpha", 2 * int(rank))
        overlay.values.setdefault("peft.config.lora_dropout", 0.0)
        overlay.values.setdefault("peft.config.target_modules", "all-linear")
    sources = overlay.values.get("dataset.sources")
    if data.get("max_samples") and isinstance(sources, list) and len(sources) > 1:
        # LLaMA-Factory cuts each dataset to max_samples before mixing them, not the mixture.
        first = {"select_rows": {"first": int(data["max_samples"])}}
        overlay.values["dataset.ops"].remove(first)
        for source in sources:
            source["ops"] = [first, *source.get("ops", [])]
    if stage == "ppo":
        _llamafactory_ppo(overlay, data, context)
    hf_evaluation(overlay, data, context, "LLaMA-Factory", logging_steps=500)
    _galore(overlay, data)
    _optimizer_keys(overlay)
    if method != "full" or overlay.choices.get("trainer", "").startswith("deepspeed_zero3"):
        _bf16_weights(overlay)
    elif overlay.values.get("trainer.precision") != "bf16-true":
        # Full fine-tuning upcasts the trained weights to float32 (pure_bf16 aside), whatever a preset says.
        overlay.values.setdefault("model.dtype", "float32")


# LLaMA-Factory's stage: ppo keys read with its batch, and its sampling defaults (GeneratingArguments).
LF_PPO_KEYS = ("ppo_epochs", "ppo_buffer_size", "pref_beta")
LF_GENERATION = {"max_new_tokens": 1024, "temperature": 0.95, "top_p": 0.7}


def _llamafactory_ppo(overlay: Overlay, data: dict, context: ImportContext) -> None:
    """LLaMA-Factory's PPO samples one answer for each of per-device batch x accumulation x ppo_buffer_size
    prompts per step, then makes ppo_epochs passes over them. GRPO samples a group per prompt: the answers per
    step stay the same (fewer prompts, task.num_generations each), each batch of samples makes ppo_epochs
    optimizer steps (task.num_iterations), and LLaMA-Factory's sampling settings stand where the file is silent."""
    per_device = int(data.get("per_device_train_batch_size") or 8)
    accumulation = int(data.get("gradient_accumulation_steps") or 1)
    answers = per_device * accumulation * int(data.get("ppo_buffer_size") or 1)
    group = next((g for g in (8, 4, 2) if answers % g == 0), None)
    if group is None:
        raise UserError(
            f"per_device_train_batch_size: {per_device} x gradient_accumulation_steps {accumulation}: {answers} "
            "answers per PPO step do not split into GRPO groups of 2 or more; make it even; nothing was written"
        )
    passes = int(data.get("ppo_epochs") or 4)
    overlay.set("task.num_generations", group)
    overlay.set("dataset.batch_size", answers // group)
    overlay.set("trainer.accumulate_grad_batches", 1)
    overlay.set("task.num_iterations", passes)
    if int(data.get("max_steps") or -1) > 0:  # PPO steps; hydratune's count optimizer steps
        overlay.set("trainer.max_steps", int(data["max_steps"]) * passes)
    context.notes.append(
        f"stage: ppo samples 1 answer for each of {answers} prompts per step and makes ppo_epochs={passes} passes: "
        f"{answers // group} prompt(s) x task.num_generations={group} keep {answers} answers per step, each batch "
        f"of them {passes} optimizer steps (task.num_iterations; an epoch of prompts takes {group}x the steps)"
    )
    for key, value in LF_GENERATION.items():
        if key not in data:
            overlay.set(f"task.{key}", value)
    if "top_k" not in data:
        context.notes.append("sampling: LLaMA-Factory's defaults max_new_tokens 1024, temperature 0.95, top_p 0.7 "
                             "(its top_k 50 is not applied: hydratune samples with temperature and top_p)")  # fmt: skip
    # PPO's KL weight starts at 0.2 (TRL's PPOConfig, which LLaMA-Factory runs) and adapts toward ppo_target
    overlay.set("task.beta", 0.2)
    context.notes.append("KL: LLaMA-Factory's PPO starts its KL weight at 0.2 and adapts it toward ppo_target; "
                         "task.beta=0.2 holds it there (task.beta=0 trains without a reference)")  # fmt: skip
    if data.get("pref_beta") is not None:
        overlay.skip("pref_beta", data["pref_beta"], "LLaMA-Factory's PPO does not read it (DPO and KTO do)")


def _llamafactory_datasets(
    overlay: Overlay, value: Any, context: ImportContext, task: str, stage: str = "sft"
) -> str | None:
    """`dataset: a,b` through dataset_info.json into dataset.sources. Returns "chat" for SFT rows (rendered
    with the chat template, as LLaMA-Factory renders both of its formats), "text" for pre-training rows
    (stage: pt), "pairs" for preference rows, None when nothing was imported."""
    names = [v.strip() for v in value.split(",")] if isinstance(value, str) else [str(v) for v in value]
    if context.dataset_info is None:
        overlay.skip(
            "dataset", value, "names in LLaMA-Factory's dataset_info.json: pass --dataset-info PATH, "
            "or set dataset.sources and dataset.format"
        )  # fmt: skip
        return None
    if not context.dataset_info.is_file():
        raise UserError(f"--dataset-info {context.dataset_info}: no such file")
    info = load(context.dataset_info)
    sources, formats, columns_of = [], set(), []
    for name in names:
        entry = info.get(name)
        if not isinstance(entry, dict):
            overlay.skip(f"dataset.{name}", name, f"not in {context.dataset_info.name}")
            continue
        source = _info_source(entry, context.dataset_info.parent)
        if source is None:
            overlay.skip(f"dataset.{name}", name, "only file_name and hf_hub_url entries are sources")
            continue
        sources.append(source)
        formats.add((entry.get("formatting", "alpaca"), bool(entry.get("ranking"))))
        columns_of.append(entry)
    if not sources:
        return None
    if len(formats) > 1:
        overlay.skip("dataset", value, "the datasets have different formats; import them one at a time")
        return None
    (formatting, ranking), entry = formats.pop(), columns_of[0]
    if any(_lf_layout(e) != _lf_layout(entry) for e in columns_of):
        overlay.skip("dataset", value, "the datasets name their columns differently; rename them with ops")
        return None
    overlay.set("dataset.sources", sources)
    columns, tags = entry.get("columns") or {}, entry.get("tags") or {}
    if ranking or _reads_preference_data(task):
        return _preference_columns(overlay, formatting, columns, tags, task)
    if stage == "pt":
        # Pre-training: the raw text of each row, an EOS after it, packed into max_seq_length blocks
        # (LLaMA-Factory packs pt by default); no template, every token trained.
        overlay.set("dataset.format", "text")
        overlay.set("dataset.text_column", columns.get("prompt", "text"))
        overlay.values.setdefault("dataset.packing", True)
        overlay.set("dataset.train_on", "all")
        overlay.set("dataset.truncation", "split")  # long documents are cut into blocks, not truncated
        return "text"
    if formatting == "sharegpt":
        overlay.choices["dataset"] = "sharegpt"
        overlay.set("dataset.format", "sharegpt")
        overlay.set("dataset.conversations_column", columns.get("messages", "conversations"))
        overlay.set("dataset.role_key", tags.get("role_tag", "from"))
        overlay.set("dataset.content_key", tags.get("content_tag", "value"))
        roles = {
            tags.get("user_tag", "human"): "user",
            tags.get("assistant_tag", "gpt"): "assistant",
            tags.get("system_tag", "system"): "system",
            tags.get("observation_tag", "observation"): "tool",
        }
        overlay.set("dataset.roles", roles)
        overlay.set("dataset.system_column", columns.get("system"))
        for extra in set(columns) - {"messages", "system"}:
            overlay.skip(f"columns.{extra}", columns[extra], "only the turns and a system column are read")
        return "chat"
    # LLaMA-Factory renders alpaca rows as a user turn and an assistant turn with the chat template.
    overlay.choices["dataset"] = "chat"
    overlay.set("dataset.format", "alpaca_chat")
    overlay.set("dataset.system_column", columns.get("system"))
    renames = {columns[k]: v for k, v in (("prompt", "instruction"), ("query", "input"), ("response", "output"))
               if k in columns and columns[k] != v}  # fmt: skip
    if renames:
        overlay.values.setdefault("dataset.ops", []).insert(0, {"rename_columns": renames})
    for extra in set(columns) - {"prompt", "query", "response", "system"}:
        overlay.skip(
            f"columns.{extra}", columns[extra], "alpaca rows read instruction, input, output, system"
        )
    return "chat"


def _llamafactory_eval_dataset(
    overlay: Overlay, data: dict, value: Any, context: ImportContext
) -> dict[str, str]:
    """eval_dataset: each dataset_info entry read as the validation split of a training source read alike (a
    local file of the same type, columns and tags): {training file: validation file}."""
    why = "hold rows out with val_size (dataset.ops split), or name a validation file"
    info = load(context.dataset_info) if context.dataset_info and context.dataset_info.is_file() else {}
    folder = context.dataset_info.parent if context.dataset_info else Path(".")
    names = [n.strip() for n in str(value).split(",")] if isinstance(value, str) else list(value or [])
    trains = [n.strip() for n in str(data.get("dataset", "")).split(",") if n.strip()]
    pairs: dict[str, str] = {}
    for name in names:
        evaluation = info.get(name)
        source = _info_source(evaluation, folder) if isinstance(evaluation, dict) else None
        if not source or "data_files" not in source:
            overlay.skip(f"eval_dataset.{name}", name, f"not a local file of dataset_info.json ({why})")
            continue
        for train in (info.get(t) for t in trains):
            train_source = _info_source(train, folder) if isinstance(train, dict) else None
            if (
                train_source and "data_files" in train_source and train_source["loader"] == source["loader"]
                and _lf_layout(evaluation) == _lf_layout(train)
                and train_source["data_files"]["train"] not in pairs
            ):  # fmt: skip
                pairs[train_source["data_files"]["train"]] = source["data_files"]["train"]
                break
        else:
            overlay.skip(f"eval_dataset.{name}", name, f"read alike with no training file ({why})")
    return pairs


# dataset_info.json's column and tag names where an entry leaves them out (LLaMA-Factory's DatasetAttr).
LF_COLUMNS = {
    "alpaca": {"prompt": "instruction", "query": "input", "response": "output"},
    "sharegpt": {"messages": "conversations"},
}
LF_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
           "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}  # fmt: skip


def _lf_layout(entry: dict) -> tuple:
    """How LLaMA-Factory reads an entry's rows: its format, ranking, columns and tags, defaults filled in (an
    entry without `columns` reads instruction/input/output)."""
    formatting = entry.get("formatting", "alpaca")
    columns = LF_COLUMNS.get(formatting, {}) | (entry.get("columns") or {})
    tags = (LF_TAGS if formatting == "sharegpt" else {}) | (entry.get("tags") or {})
    return formatting, bool(entry.get("ranking")), sorted(columns.items()), sorted(tags.items())


def _info_source(entry: dict, folder: Path) -> dict | None:
    if "file_name" in entry:
        path = (folder / entry["file_name"]).resolve()
        loader = {".csv": "csv", ".parquet": "parquet", ".txt": "text"}.get(path.suffix, "json")
        if path.is_dir():
            return {"loader": loader, "data_dir": str(path)}
        return {"loader": loader, "data_files": {"train": str(path)}}
    if "hf_hub_url" in entry:
        source = {"path": entry["hf_hub_url"], "split": entry.get("split", "train")}
        if entry.get("subset"):
            source["name"] = entry["subset"]
        return source
    return None


def _preference_columns(overlay: Overlay, formatting: str, columns: dict, tags: dict, task: str) -> str:
    """Preference rows: the column keys the preference tasks read, where this hydratune has them; returns
    what the rows became ("chat" when rendered with the chat template, else "pairs")."""
    if formatting == "sharegpt" and not _reads_kto_rows(task):
        # The prompt turns, then chosen/rejected one {from, value} turn each: chat_pairs with LLaMA-Factory's
        # tags as the turn keys, rendered with the model's chat template as LLaMA-Factory renders them.
        overlay.set("dataset.format", "chat_pairs")
        overlay.set("dataset.prompt_column", columns.get("messages", "conversations"))
        overlay.set("dataset.chosen_column", columns.get("chosen", "chosen"))
        overlay.set("dataset.rejected_column", columns.get("rejected", "rejected"))
        overlay.set("dataset.role_key", tags.get("role_tag", "from"))
        overlay.set("dataset.content_key", tags.get("content_tag", "value"))
        overlay.set("dataset.roles", {tags.get("user_tag", "human"): "user", tags.get("assistant_tag", "gpt"):
                                      "assistant", tags.get("system_tag", "system"): "system"})  # fmt: skip
        for extra in set(columns) - {"messages", "chosen", "rejected"}:
            overlay.skip(
                f"columns.{extra}", columns[extra], "chat_pairs reads the turns, chosen and rejected"
            )
        return "chat"
    if formatting == "sharegpt":
        # KTO rows as {from, value} turns with a tag: hydratune's KTO reads prompt/completion strings.
        overlay.skip(
            "dataset", f"{formatting} rows (tags {tags or 'from/value'})",
            "task=kto reads prompt/completion strings and a label: convert the rows, then set its columns",
        )  # fmt: skip
        return "pairs"
    prompt = columns.get(
        "prompt", "instruction" if formatting == "alpaca" else columns.get("messages", "conversations")
    )
    if _reads_kto_rows(task):
        answers = {
            "completion_column": columns.get("response", "output"),
            "label_column": columns.get("kto_tag", "label"),
        }
    else:
        answers = {
            "chosen_column": columns.get("chosen", "chosen"),
            "rejected_column": columns.get("rejected", "rejected"),
        }
    wanted = {"prompt_column": prompt, **answers}
    for key, column in wanted.items():
        if _known(overlay, f"dataset.{key}"):
            overlay.set(f"dataset.{key}", column)
        else:
            overlay.skip(f"columns.{key.split('_')[0]}", column, f"this hydratune has no dataset.{key}")
    return "pairs"


# fsdp_config keys (with or without the fsdp_ prefix) left to Lightning's FSDPStrategy.
FSDP_DEFAULTS = {
    "sync_module_states",
    "limit_all_gathers",
    "cpu_ram_efficient_loading",
    "backward_prefetch",
    "forward_prefetch",
}
AXOLOTL_DATASET_TYPES = {"alpaca", "chat_template", "completion", "input_output", "sharegpt"}
# Axolotl's preference types read as chat_pairs: the prompt turns in field_messages and one answer turn each
# in field_chosen / field_rejected (default), or whole conversations in both (argilla).
AXOLOTL_PAIR_TYPES = {"chat_template.default", "chat_template.argilla", "chat_template.argilla_chat",
                      "bradley_terry.chat_template"}  # fmt: skip
# Axolotl's speakers for each role when a dataset's roles are not given (its chat_template strategies).
AXOLOTL_ROLES = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "system": "system",
}


def import_axolotl(data: dict, overlay: Overlay, context: ImportContext) -> None:
    task, loss = ("sft", None)
    if data.get("process_reward_model"):
        raise UserError(
            "process_reward_model: true: hydratune has no process (per-step) reward model task; task=reward "
            "scores whole answers; nothing was written"
        )
    if data.get("rl"):
        task, loss = _task(overlay, "rl", data["rl"], AXOLOTL_RL)
        if loss:
            _set_task(overlay, task, "rl", "loss", loss)
        if data["rl"] == "simpo" and data.get("cpo_alpha") is None:
            # Axolotl trains SimPO with TRL's CPO trainer, whose cpo_alpha (default 1.0) weighs an NLL term
            overlay.set("task.sft_weight", 1.0)
            context.notes.append(
                "cpo_alpha: Axolotl's rl: simpo runs TRL's CPO trainer, which adds the chosen answers' NLL at its "
                "default weight 1.0: task.sft_weight=1.0 (cpo_alpha: 0 in the file trains SimPO alone)"
            )
    elif data.get("reward_model"):  # Axolotl's reward_model: true trains a Bradley-Terry scorer
        task, loss = _task(overlay, "reward_model", "true", {"true": ("reward", None)})
    _refuse_multimodal(data)
    # Axolotl's defaults where the file is silent (its config schema; the HF Trainer's for the rest): one
    # epoch, a micro-batch of 1, cosine, sequence_len 512, no rows held out, rows longer than it dropped.
    for key, value in HF_TRAINER_DEFAULTS.items():
        overlay.set(key, value)
    overlay.set("trainer.max_epochs", 1)
    overlay.set("dataset.batch_size", 1)
    overlay.choose("scheduler", "cosine", "lr_scheduler")
    overlay.set("dataset.max_seq_length", 512)
    overlay.set("dataset.ops", [])
    if _reads_sft_data(task):
        overlay.set("dataset.truncation", "drop")
    if data.get("warmup_steps") is None and data.get("warmup_ratio") is None:
        overlay.set("scheduler.warmup_ratio", 0.03)
        context.notes.append(
            "warmup: Axolotl's default is 3% of the optimizer steps, at most 100: scheduler.warmup_ratio=0.03 "
            "(above 3,333 steps, set scheduler.warmup_steps=100)"
        )
    overlay.set("callbacks.model_checkpoint.save_total_limit", 4)  # Axolotl's when the file is silent
    if not data.get("adapter"):
        overlay.choose("peft", "none", "adapter")  # no adapter: Axolotl trains every weight
    for key, value in data.items():
        if (
            value is None
            or key in ("rl", "datasets", "reward_model", "pretraining_dataset")
            or _common(overlay, key, value)
        ):
            continue
        if key == "base_model":
            overlay.model(str(value))
        elif key == "adapter":
            overlay.require("peft", str(value), key)
        elif key == "lora_target_linear":
            if value:
                overlay.set("peft.config.target_modules", "all-linear")
        elif key == "num_labels" and value == 1 and _reads_preference_data(task):
            pass  # a reward model has one output
        elif key == "micro_batch_size":
            overlay.set("dataset.batch_size", int(value))
        elif key == "eval_batch_size":
            overlay.set("dataset.eval_batch_size", int(value))
        elif key == "lr_scheduler":
            overlay.choose("scheduler", str(value), key)
        elif key == "cosine_min_lr_ratio":
            overlay.choose("scheduler", "cosine_with_min_lr", key)
            overlay.set("scheduler.kwargs.min_lr_rate", _number(value))
        elif key == "evals_per_epoch":
            if int(value) > 0:
                overlay.set("trainer.val_check_interval", 1.0 / int(value))
                overlay.set("trainer.check_val_every_n_epoch", 1)
            else:
                overlay.skip(key, value, "0 sets no evaluation schedule: Axolotl then evaluates only at "
                             "eval_steps or an eval_strategy")  # fmt: skip
        elif key == "saves_per_epoch":
            if data.get("evals_per_epoch") and int(value) == int(data["evals_per_epoch"]):
                overlay.set("callbacks.model_checkpoint.save_steps", None)  # at each evaluation
            else:
                overlay.skip(key, value, "checkpoints are written at each evaluation, or every "
                             "callbacks.model_checkpoint.save_steps optimizer steps")  # fmt: skip
        elif key == "chat_template":
            from hydratune.data.formats import CHAT_TEMPLATES

            if value in CHAT_TEMPLATES:
                overlay.set("dataset.chat_template", value)
            elif value == "tokenizer_default":
                overlay.set("dataset.chat_template", None)
            else:
                overlay.skip(key, value, "built-in templates: chatml, tiny; null is the tokenizer's own")
        elif key == "trl" and isinstance(value, dict):
            for trl_key, trl_value in value.items():
                if trl_key in AXOLOTL_TRL:  # reported by _set_task when the task has no such key
                    _set_task(overlay, task, f"trl.{trl_key}", AXOLOTL_TRL[trl_key], trl_value)
                elif trl_key in AXOLOTL_GRPO_VALUES and _samples_completions(task):
                    name, values = AXOLOTL_GRPO_VALUES[trl_key]
                    if isinstance(trl_value, bool | str) and trl_value in values:
                        overlay.set(f"task.{name}", values[trl_value])
                    else:
                        overlay.skip(
                            f"trl.{trl_key}",
                            trl_value,
                            f"task.{name} is one of {', '.join(map(str, values))}",
                        )
                elif trl_key == "reward_funcs" and _samples_completions(task):
                    _rewards(overlay, trl_value, value.get("reward_weights"))
                elif trl_key == "reward_weights" and _samples_completions(task):
                    continue  # read with reward_funcs
                elif trl_key == "log_completions" and _samples_completions(task):
                    overlay.skip(f"trl.{trl_key}", trl_value, "TRL logs training completions; task.log_completions "
                                 "sets how many validation prompts' groups go to completions.jsonl")  # fmt: skip
                elif trl_value is not None:
                    why = "rewards are task.rewards entries" if trl_key.startswith("reward") else (
                        "vLLM is not used: sampling runs in the training process" if "vllm" in trl_key
                        else f"no task.{trl_key} counterpart for task={task}")  # fmt: skip
                    overlay.skip(f"trl.{trl_key}", trl_value, why)
        elif key in ("dpo_loss_type", "dpo_loss_weights", "dpo_label_smoothing"):
            _axolotl_dpo_key(overlay, data, task, key, value)
        elif key in TASK_VALUES:
            _task_value(overlay, task, key, value)
        elif key == "fsdp":
            _fsdp(overlay, value)
        elif key == "fsdp_config" and isinstance(value, dict):
            for fkey, fvalue in value.items():
                if fkey in ("fsdp_offload_params", "offload_params"):
                    overlay.set("trainer.strategy.cpu_offload", bool(fvalue))
                elif fkey in ("fsdp_state_dict_type", "state_dict_type"):
                    overlay.set(
                        "trainer.strategy.state_dict_type", "full" if "FULL" in str(fvalue) else "sharded"
                    )
                elif fkey.replace("fsdp_", "") in (
                    "transformer_layer_cls_to_wrap",
                    "auto_wrap_policy",
                    "version",
                ):
                    continue  # hydratune wraps each decoder layer
                elif fkey.replace("fsdp_", "") == "sharding_strategy":
                    names = {1: "FULL_SHARD", 2: "SHARD_GRAD_OP", 3: "NO_SHARD", 4: "HYBRID_SHARD"}
                    overlay.set("trainer.strategy.sharding_strategy", names.get(fvalue, str(fvalue).upper()))
                elif fkey.replace("fsdp_", "") == "activation_checkpointing":
                    overlay.set("model.gradient_checkpointing", bool(fvalue))
                elif fkey.replace("fsdp_", "") == "use_orig_params":
                    continue  # always on: LoRA trains only some parameters
                elif fkey.replace("fsdp_", "") in FSDP_DEFAULTS:
                    overlay.skip(f"fsdp_config.{fkey}", fvalue, "Lightning's FSDPStrategy chooses it")
                elif fkey.replace("fsdp_", "") == "reshard_after_forward":
                    overlay.set(
                        "trainer.strategy.sharding_strategy", "FULL_SHARD" if fvalue else "SHARD_GRAD_OP"
                    )
                else:
                    overlay.skip(f"fsdp_config.{fkey}", fvalue, "no hydratune counterpart known")
        elif key == "wandb_project":
            overlay.map_key(key, value)
        elif key == "use_tensorboard":
            if value:
                overlay.choose("logger", "tensorboard", key)
        elif key == "excess_length_strategy":
            if not _reads_sft_data(task):
                overlay.skip(
                    key, value, f"task={task} cuts long answers and drops pairs whose prompt fills the length"
                )
            elif value in ("drop", "truncate"):
                overlay.set("dataset.truncation", value)
            else:
                overlay.skip(key, value, "long rows are dropped (dataset.truncation=drop) or cut (truncate)")
        else:
            overlay.map_key(key, value)
    if "fsdp_config" in data and "fsdp" not in data and data["fsdp_config"]:
        overlay.choose("trainer", "fsdp", "fsdp_config")
    if _samples_completions(task):
        trl = data.get("trl") or {}
        _grpo_batch(overlay, {"micro_batch_size": data.get("micro_batch_size", 1),
                              "gradient_accumulation_steps": data.get("gradient_accumulation_steps", 1),
                              "num_generations": trl.get("num_generations", 8)}, context)  # fmt: skip
        # TRL's GRPOConfig defaults where the trl block is silent (the others equal conf/task/grpo.yaml's)
        if "max_completion_length" not in trl:
            overlay.set("task.max_new_tokens", 512)
        if "loss_type" not in trl:
            overlay.set(
                "task.aggregation", "dapo"
            )  # bnpo where the window is not one micro-batch (config_import)
            context.notes.append(
                "trl.loss_type: TRL's default dapo is task.aggregation=dapo (a token mean over the batch)"
            )
    if _reads_preference_data(task) or _reads_kto_rows(task):
        # TRL's DPO, KTO, ORPO, CPO and reward configs zero every dropout (disable_dropout, which Axolotl never
        # sets), LoRA's included; GRPO's keeps it
        dropout = overlay.values.get("peft.config.lora_dropout")
        if dropout:
            overlay.set("peft.config.lora_dropout", 0.0)
            overlay.skip("lora_dropout", dropout, f"TRL's disable_dropout: true zeroes it for task={task}")
    if "eval_batch_size" not in data:  # Axolotl evaluates in micro-batches
        overlay.set("dataset.eval_batch_size", overlay.values["dataset.batch_size"])
    _bf16_weights(overlay)  # Axolotl loads the base model in bf16 whenever bf16 is on
    if data.get("lora_target_linear"):
        # Axolotl adds every linear layer to lora_target_modules, in whichever order the keys come.
        overlay.set("peft.config.target_modules", "all-linear")
    if data.get("pretraining_dataset"):
        _pretraining_dataset(overlay, data["pretraining_dataset"], data, context)
    else:
        _axolotl_datasets(overlay, data.get("datasets") or [], task)
    scheduled = (
        data.get("eval_steps") or data.get("evals_per_epoch") or data.get("eval_strategy") not in (None, "no")
    )
    if (data.get("val_set_size") or data.get("test_datasets")) and not scheduled:
        # Axolotl evaluates at eval_steps, evals_per_epoch or an eval_strategy only: held-out rows alone do not.
        overlay.set("trainer.limit_val_batches", 0)
        overlay.set("eval_before_training", False)
        context.notes.append(
            "evaluation: no eval_steps, evals_per_epoch or eval_strategy, so Axolotl does not evaluate, nor does "
            "this run: trainer.limit_val_batches=0 (the held-out rows are kept; remove it to evaluate every "
            "trainer.val_check_interval batches)"
        )


def _axolotl_dpo_key(overlay: Overlay, data: dict, task: str, key: str, value: Any) -> None:
    """Axolotl hands dpo_loss_type / dpo_loss_weights / dpo_label_smoothing to TRL's DPO trainer with rl: dpo
    only; TRL's sigmoid loss has no label smoothing (hydratune's sigmoid would read it as conservative DPO)."""
    losses = data.get("dpo_loss_type") or ["sigmoid"]
    if data.get("rl") != "dpo":
        overlay.skip(key, value, "Axolotl passes it to TRL with rl: dpo only")
    elif key == "dpo_loss_type":
        trl_loss_type(overlay, {"loss_weights": data.get("dpo_loss_weights")}, task, value)
    elif key == "dpo_loss_weights":
        if not data.get("dpo_loss_type"):
            overlay.skip(key, value, "read with dpo_loss_type only")
    elif "robust" in losses:
        _task_value(overlay, task, key, value)
    else:
        overlay.skip(
            key, value, "TRL reads label_smoothing with loss_type robust only (dpo_loss_type: [robust])"
        )


def _pretraining_dataset(overlay: Overlay, value: Any, data: dict, context: ImportContext) -> None:
    """Axolotl's pre-training stream: hub datasets read as they stream, their raw text packed into
    sequence_len rows, every token trained (Axolotl needs max_steps then: a stream has no length)."""
    sources, columns = [], set()
    for i, spec in enumerate(value if isinstance(value, list) else [value]):
        spec = {"path": spec} if isinstance(spec, str) else spec
        if not isinstance(spec, dict) or "path" not in spec:
            overlay.skip(f"pretraining_dataset.{i}", spec, "a dataset needs a path")
            continue
        source = {"path": str(spec["path"]), "split": spec.get("split", "train"), "streaming": True}
        if spec.get("name"):
            source["name"] = spec["name"]
        sources.append(source)
        columns.add(spec.get("text_column", "text"))
        for key in set(spec) - {"path", "name", "split", "text_column", "type"}:
            overlay.skip(f"pretraining_dataset.{i}.{key}", spec[key], "no hydratune counterpart known")
    if not sources:
        return
    if len(columns) > 1:
        overlay.skip("pretraining_dataset", sorted(columns), "the streams name their text column differently")
        return
    overlay.set("dataset.sources", sources)
    overlay.set("dataset.format", "text")
    overlay.set("dataset.text_column", columns.pop())
    overlay.set("dataset.train_on", "all")
    overlay.set("dataset.truncation", "split")  # long documents are cut into blocks, not truncated
    overlay.values.setdefault("dataset.packing", True)
    if data.get("datasets"):
        overlay.skip(
            "datasets", "...", "pretraining_dataset is read; import the fine-tuning datasets separately"
        )
    context.notes.append(
        "pretraining_dataset: hydratune collects a streamed source's rows before training (Axolotl reads them "
        "as it trains): set dataset.sources.N.max_rows to the documents the run needs, or the whole stream is read"
    )


def _fsdp(overlay: Overlay, value: Any) -> None:
    words = value.split() if isinstance(value, str) else list(value)
    if not words:
        return
    overlay.choose("trainer", "fsdp", "fsdp")
    sharding = {"full_shard": "FULL_SHARD", "shard_grad_op": "SHARD_GRAD_OP", "hybrid_shard": "HYBRID_SHARD"}
    for word in words:
        if word in sharding:
            overlay.set("trainer.strategy.sharding_strategy", sharding[word])
        elif word == "offload":
            overlay.set("trainer.strategy.cpu_offload", True)
        elif word != "auto_wrap":
            overlay.skip(
                "fsdp", word, "FSDP options: full_shard, shard_grad_op, hybrid_shard, offload, auto_wrap"
            )


def _axolotl_datasets(overlay: Overlay, datasets: list, task: str) -> None:
    """`datasets: [{path, type, ...}]` into dataset.sources and dataset.format (one format for all)."""
    sources, kinds = [], set()
    chat_keys: dict[str, Any] = {}
    for i, spec in enumerate(datasets):
        where = f"datasets.{i}"
        if not isinstance(spec, dict) or "path" not in spec:
            overlay.skip(where, spec, "a dataset needs a path")
            continue
        kind = spec.get("type", "alpaca")
        if isinstance(kind, dict):
            overlay.skip(f"{where}.type", kind, "a custom prompt format: write it as a map op (dataset.ops)")
            continue
        kind = str(kind)
        pairs = _reads_preference_data(task) and kind in AXOLOTL_PAIR_TYPES
        if not (_reads_sft_data(task) or pairs):
            overlay.skip(f"{where}.type", kind, f"write dataset.* columns for task={task} by hand")
        elif not pairs and kind.split(".")[0] not in AXOLOTL_DATASET_TYPES:
            overlay.skip(
                f"{where}.type",
                kind,
                "types with a counterpart: alpaca, chat_template, completion, input_output",
            )
            continue
        path = str(spec["path"])
        if (
            spec.get("ds_type")
            or spec.get("data_files")
            or Path(path).suffix in (".json", ".jsonl", ".csv", ".parquet")
        ):
            loader = spec.get("ds_type") or {".csv": "csv", ".parquet": "parquet"}.get(
                Path(path).suffix, "json"
            )
            source = {"loader": loader, "data_files": {"train": spec.get("data_files") or path}}
        else:
            source = {"path": path, "split": spec.get("split", "train")}
            if spec.get("name"):
                source["name"] = spec["name"]
        sources.append(source)
        kinds.add(kind if pairs else kind.split(".")[0])
        for key, value in spec.items():
            if key in ("path", "type", "split", "name", "ds_type", "data_files"):
                continue
            if not (_reads_sft_data(task) or pairs):  # the type was not mapped for this task: nor its fields
                overlay.skip(f"{where}.{key}", value, f"a field of {where}.type, unmapped for task={task}")
                continue
            if key == "field_messages":
                chat_keys["messages_column"] = value
            elif key in ("field_chosen", "field_rejected") and pairs:
                chat_keys[key.replace("field_", "") + "_column"] = value
            elif key == "message_property_mappings" and isinstance(value, dict):
                chat_keys["role_key"], chat_keys["content_key"] = (
                    value.get("role", "role"),
                    value.get("content", "content"),
                )
            elif key == "message_field_role":
                chat_keys["role_key"] = value
            elif key == "message_field_content":
                chat_keys["content_key"] = value
            elif key == "roles" and isinstance(value, dict):
                chat_keys["roles"] = {name: role for role, names in value.items() for name in names}
            elif key == "field" and kind == "completion":
                chat_keys["text_column"] = value
            elif key == "roles_to_train" and value == ["assistant"]:
                continue
            elif key == "train_on_eos" and value in ("turn", "all"):
                continue  # every trained turn ends with its end-of-turn token
            else:
                overlay.skip(f"{where}.{key}", value, "no hydratune counterpart known")
    if not sources or not (_reads_sft_data(task) or kinds <= AXOLOTL_PAIR_TYPES):
        if sources:
            overlay.set("dataset.sources", sources)
        return
    if len(kinds) > 1:
        overlay.skip(
            "datasets", sorted(kinds), "the datasets have different types; import them one at a time"
        )
        return
    overlay.set("dataset.sources", sources)
    kind = kinds.pop()
    if kind in AXOLOTL_PAIR_TYPES:
        _axolotl_pairs(overlay, kind, chat_keys, sources)
    elif kind in ("chat_template", "sharegpt"):
        role_key = chat_keys.get("role_key", "role" if kind == "chat_template" else "from")
        content_key = chat_keys.get("content_key", "content" if kind == "chat_template" else "value")
        column = chat_keys.get("messages_column", "messages" if kind == "chat_template" else "conversations")
        roles = chat_keys.get("roles")
        if (role_key, content_key, roles) == ("role", "content", None):
            overlay.choices["dataset"] = "chat"
            overlay.set("dataset.format", "messages")
            overlay.set("dataset.messages_column", column)
        else:
            overlay.choices["dataset"] = "sharegpt"
            overlay.set("dataset.format", "sharegpt")
            overlay.set("dataset.conversations_column", column)
            overlay.set("dataset.role_key", role_key)
            overlay.set("dataset.content_key", content_key)
            default_roles = {"human": "user", "gpt": "assistant", "system": "system"} if kind == "sharegpt" else {
                "user": "user", "assistant": "assistant", "system": "system", "tool": "tool"}  # fmt: skip
            overlay.set("dataset.roles", roles or default_roles)
    elif kind == "alpaca":
        overlay.set("dataset.format", "alpaca")
        overlay.set("dataset.template", "alpaca")
    elif kind == "completion":
        overlay.set("dataset.format", "text")
        overlay.set("dataset.text_column", chat_keys.get("text_column", "text"))
    elif kind == "input_output":
        overlay.set("dataset.format", "segments")  # [{label, text}]: trained where label is true


def _axolotl_pairs(overlay: Overlay, kind: str, chat_keys: dict, sources: list[dict]) -> None:
    """Axolotl's chat_template preference types as dataset.format=chat_pairs (rendered with the chat template,
    as Axolotl renders them)."""
    overlay.set("dataset.format", "chat_pairs")
    chosen, rejected = chat_keys.get("chosen_column", "chosen"), chat_keys.get("rejected_column", "rejected")
    overlay.set("dataset.chosen_column", chosen)
    overlay.set("dataset.rejected_column", rejected)
    if kind == "chat_template.default":
        overlay.set("dataset.prompt_column", chat_keys.get("messages_column", "messages"))
    elif kind == "bradley_terry.chat_template":
        # Axolotl's reward-model rows: text columns system, input, chosen, rejected, rendered as
        # [system, user: input, assistant: chosen | rejected] with the chat template
        overlay.set("dataset.prompt_column", "input")
        overlay.set("dataset.system_column", "system")
    else:  # argilla: the prompt turns are those chosen and rejected share; a prompt column beside them is not read
        for source in sources:
            source["ops"] = [{"select_columns": [chosen, rejected]}, *source.get("ops", [])]
    keys = (chat_keys.get("role_key", "role"), chat_keys.get("content_key", "content"))
    if keys != ("role", "content") or chat_keys.get("roles"):
        overlay.set("dataset.role_key", keys[0])
        overlay.set("dataset.content_key", keys[1])
        overlay.set("dataset.roles", chat_keys.get("roles") or AXOLOTL_ROLES)


# --stage values as (hydratune task, task.loss or None).
STAGE_TASKS = {"sft": ("sft", None), "dpo": ("dpo", None), "kto": ("kto", None), "reward": ("reward", None),
               "grpo": ("grpo", None), "orpo": ("dpo", "orpo")}  # fmt: skip
