"""`hydratune import`: a model-compose YAML, a SimpleFoundation JSON or a LlamaFarm YAML config becomes
a `conf/experiment/NAME.yaml` overlay, with every key that has no counterpart reported.

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

from hydratune.errors import UserError

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
    "seed": "seed",
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

    def set(self, key: str, value: Any) -> None:
        self.values[key] = value

    def skip(self, key: str, value: Any, reason: str) -> None:
        self.unmapped.append(f"{key}: {_short(value)} ({reason})")

    def map_key(self, key: str, value: Any) -> None:
        """One source key: a group choice, a value, a known unsupported key, or unmapped."""
        value = _number(value)
        if key in VALUES:
            self.set(VALUES[key], value)
            if key in ("wandb_project", "wandb_name"):
                self.choose("logger", "wandb", key)
        elif key == "lora_target":
            self.set("peft.config.target_modules", [v.strip() for v in str(value).split(",")])
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
            self.set("trainer.max_epochs", int(value))
            self.values.setdefault("trainer.max_steps", -1)
        elif key == "max_steps":
            self.set("trainer.max_steps", int(value))
        elif key in ("model_name_or_path", "huggingface_id"):
            self.model(str(value))
        elif key in ("peft_adapter", "finetuning_type"):
            self.choose("peft", {"full": "none"}.get(str(value), str(value)), key)
        elif key == "use_lora":
            self.choose("peft", "lora" if value else "none", key)
        elif key == "method" and isinstance(value, str):
            self.choose("peft", value, key)
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
        elif key == "deepspeed_config":
            stage = re.search(r"zero_?([23])", str(value).lower())
            if stage:
                offload = "_offload" if stage.group(1) == "3" and "offload" in str(value).lower() else ""
                self.choose("trainer", f"deepspeed_zero{stage.group(1)}{offload}", key)
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
        if "trainer.val_check_interval" in self.values:
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


def detect(data: dict) -> str:
    """model-compose (a list of components), LlamaFarm (a fine_tuner block) or SimpleFoundation (flat)."""
    components = data.get("components")
    if isinstance(components, list):
        return "model-compose"
    if "fine_tuner" in data or (isinstance(components, dict) and "fine_tuner" in components):
        return "llamafarm"
    if "model_name_or_path" in data or "use_lora" in data:
        return "simplefoundation"
    raise UserError(
        "cannot tell the format: expected model-compose `components:` (a list), a LlamaFarm "
        "`fine_tuner:` block, or a SimpleFoundation JSON with model_name_or_path"
    )


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
        for key, value in config.items():
            if key == "dataset":
                overlay.choose("dataset", str(value), key)
            elif key == "template":
                overlay.skip(key, value, "chat templates come from the tokenizer: dataset=chat")
            else:
                overlay.map_key(key, value)
        return
    for key, value in (config.get("base_model") or {}).items():
        overlay.map_key(key, value)
    method = config.get("method") or {}
    if "type" in method:
        overlay.choose("peft", str(method["type"]), "method.type")
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


def import_simplefoundation(data: dict, overlay: Overlay) -> None:
    for key, value in data.items():
        overlay.map_key(key, value)


IMPORTERS = {
    "model-compose": import_model_compose,
    "llamafarm": import_llamafarm,
    "simplefoundation": import_simplefoundation,
}


def convert(path: str | Path, name: str, conf_dir: str | Path) -> tuple[dict, str, list[str]]:
    """(the experiment config, the detected format, the unmapped keys) for the file at `path`."""
    path, conf_dir = Path(path), Path(conf_dir)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    data = load(path)
    fmt = detect(data)
    overlay = Overlay(conf_dir)
    IMPORTERS[fmt](data, overlay)
    return overlay.finish(name), fmt, overlay.unmapped


def render(experiment: dict, source: str, fmt: str) -> str:
    header = (
        "# @package _global_\n"
        f"# Imported by `hydratune import` from {source} ({fmt}); see docs/options.md for the mapping.\n"
    )
    return header + yaml.safe_dump(experiment, sort_keys=False, default_flow_style=False)


def write_experiment(
    path: str | Path, name: str, conf_dir: str | Path, force: bool = False
) -> tuple[Path, list[str]]:
    """Write conf_dir/experiment/NAME.yaml; returns its path and the unmapped keys."""
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_-]*$", name):
        raise UserError(f"--name {name!r}: use letters, digits, _ and - (it becomes experiment={name})")
    experiment, fmt, unmapped = convert(path, name, conf_dir)
    out = Path(conf_dir) / "experiment" / f"{name}.yaml"
    if out.exists() and not force:
        raise UserError(f"{out} exists; choose another --name or pass --force")
    out.write_text(render(experiment, Path(path).name, fmt))
    return out, unmapped
