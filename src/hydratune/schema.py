"""Config schema: every key of the composed config must be one the project knows, and values in range.

The known keys are read from the YAML options themselves (the union over all options of a group),
so a new option documents its keys by existing. Keys of a `_target_` node that no YAML option
names are checked against the target's signature (imported only then). Range rules live in
`RANGES`. Everything here runs on the plain-dict config, before any model or data is loaded.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path

import yaml

from hydratune import config
from hydratune.errors import UserError, did_you_mean

# Groups whose options are `# @package _global_` overlays; their keys count as top-level keys.
GLOBAL_GROUPS = ("experiment", "debug", "hparams_search")
# Subtrees not checked here: Hydra's own config, and paths (interpolations only).
UNCHECKED = ("hydra", "paths")


def _flatten(node, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "defaults" and not prefix:
                continue
            path = f"{prefix}.{key}" if prefix else str(key)
            yield path
            yield from _flatten(value, path)


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


@lru_cache(maxsize=4)
def known_keys(conf_dir: str) -> frozenset[str]:
    """Every dotted key path that some YAML file under `conf_dir` defines."""
    conf = Path(conf_dir)
    keys: set[str] = set(_flatten(_load(conf / "train.yaml")))
    for group_dir in sorted(p for p in conf.iterdir() if p.is_dir() and p.name != "hydra"):
        for option in group_dir.rglob("*.yaml"):
            keys |= _option_keys(option, group_dir.name)
    return frozenset(keys)


def _option_keys(option: Path, group: str) -> set[str]:
    """The dotted keys one option file of `group` sets: a `_global_` overlay's as written, else under the
    group (the group's own name too)."""
    text = option.read_text()
    data = yaml.safe_load(text) or {}
    if "# @package _global_" in text or group in GLOBAL_GROUPS:
        return set(_flatten(data))
    return {group, *_flatten(data, group)}


@lru_cache(maxsize=64)
def options_setting(conf_dir: str, key: str) -> tuple[str, ...]:
    """The options of `key`'s group whose files set it ("task=dpo", ...), in name order."""
    group = key.split(".")[0]
    folder = Path(conf_dir) / group
    if not folder.is_dir() or group in GLOBAL_GROUPS:
        return ()
    return tuple(
        f"{group}={option.stem}"
        for option in sorted(folder.glob("*.yaml"))
        if key in _option_keys(option, group)
    )


@lru_cache(maxsize=16)
def _task_settings(conf_dir: str, name: str) -> frozenset[str]:
    """The keys the task option files of task `name` set (`name: dpo` in conf/task/dpo.yaml)."""
    own: set[str] = set()
    for option in sorted((Path(conf_dir) / "task").glob("*.yaml")):
        data = _load(option)
        node = (
            data["task"] if isinstance(data.get("task"), dict) else data
        )  # a _global_ overlay's, or the file
        if node.get("name") == name:
            own |= _option_keys(option, "task")
    return frozenset(own)


def check_task_settings(cfg: dict, conf_dir: str | Path) -> None:
    """A built-in task reads the settings its option file lists (hydratune.tasks.task): one that only
    another task's option sets (`+task.beta` with task=sft) would be carried and never read."""
    task = cfg.get("task") or {}
    if not isinstance(task, dict) or task.get("_target_"):
        return  # a user's own Task subclass reads what it likes
    name = task.get("name", "sft")
    own = _task_settings(str(conf_dir), name)
    if not own:
        return
    for key in task:
        path = f"task.{key}"
        if path in own or str(key).startswith("_"):
            continue
        others = [o for o in options_setting(str(conf_dir), path) if o != f"task={name}"]
        if others:
            raise UserError(
                f"{path}: task={name} has no such setting ({', '.join(others)} read it); "
                f"choose that task (e.g. {others[0]}) or drop the key"
            )


def _target_accepts(target: str, key: str) -> bool:
    """Whether the class or function named by `target` takes a keyword argument `key`."""
    import inspect

    from hydra.utils import get_class, get_method

    try:
        fn = get_class(target).__init__
    except Exception:
        try:
            fn = get_method(target)
        except Exception:
            return False
    params = inspect.signature(fn).parameters
    return key in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _walk(node: dict, prefix: str = "") -> Iterator[tuple[str, dict, str]]:
    """(dotted path, parent node, key) for every key of the config."""
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        yield path, node, key
        if isinstance(value, dict):
            yield from _walk(value, path)


def _trl_hint(key: str) -> str | None:
    """What a TRL trainer's name for a task setting is here (users bring TRL's names: review G8)."""
    from hydratune.trl_names import TASK_KEYS, TRL_UNSUPPORTED

    if key == "loss_type":
        return "TRL's loss_type is task.aggregation with task=grpo (grpo, bnpo, dr_grpo, dapo), task.loss with task=dpo"
    if key == "max_length":
        return "TRL's max_length (prompt plus answer) is dataset.max_seq_length here"
    if key == "truncation_mode":
        return (
            "TRL's truncation_mode: prompts are kept whole and answers cut from the right (TRL's keep_start); a "
            "pair whose prompt fills dataset.max_seq_length is dropped and counted"
        )
    if key in TASK_KEYS and TASK_KEYS[key] != key:
        return f"TRL's {key} is task.{TASK_KEYS[key]} here"
    if key in TRL_UNSUPPORTED:
        return f"TRL's {key} has no counterpart here: {TRL_UNSUPPORTED[key]}"
    return None


def unknown_key_error(path: str, known: frozenset[str]) -> UserError:
    if path.startswith("task.") and path.count(".") == 1 and (hint := _trl_hint(path.split(".")[1])):
        return UserError(f"{path}: unknown config key; {hint}")
    parent = path.rpartition(".")[0]
    siblings = [k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == parent]
    guess = difflib.get_close_matches(path.rpartition(".")[2], siblings, n=1, cutoff=0.6)
    if not siblings and parent:  # the section itself is misspelt (optimzer.lr): match the whole dotted path
        whole = difflib.get_close_matches(path, sorted(known), n=1, cutoff=0.8)
        if whole:
            return UserError(f"{path}: unknown config key; did you mean {whole[0]}?")
    hint = (
        f"did you mean {parent + '.' if parent else ''}{guess[0]}?"
        if guess
        else (f"known keys here: {', '.join(sorted(siblings))}" if siblings else "remove it")
    )
    return UserError(f"{path}: unknown config key; {hint}")


def check_keys(cfg: dict, conf_dir: str | Path) -> None:
    """Raise UserError for the first key that no config option defines (with a did-you-mean)."""
    known = known_keys(str(conf_dir))
    for path, parent, key in _walk(cfg):
        if path.split(".")[0] in UNCHECKED or path in known or key.startswith("_"):
            continue  # `_target_`, `_convert_`: Hydra's instantiate keys
        target = parent.get("_target_") if isinstance(parent, dict) else None
        if target and _target_accepts(target, key):
            continue
        value = parent.get(key)
        if (
            path.count(".") == 1
            and path.split(".")[0] in NAMED_TARGETS
            and isinstance(value, dict)
            and "_target_" in value
        ):
            continue  # a user's own callback or logger: its keys are checked against its _target_
        if _inside_free_mapping(path, known):
            continue
        raise unknown_key_error(path, known)


# Groups that are collections of named `_target_` nodes: users may add their own.
NAMED_TARGETS = ("callbacks", "logger")
# Mappings whose keys are data, not schema (e.g. data_files split names, scheduler kwargs).
FREE_MAPPINGS = (
    "kwargs",
    "data_files",
    "label2id",
    "id2label",
    "setup",
    "tags",
    "params",
    "additional_parameters",
    "roles",  # dataset.roles: a chat data set's speaker names -> chat roles
)


def _inside_free_mapping(path: str, known: frozenset[str]) -> bool:
    parts = path.split(".")
    return any(part in FREE_MAPPINGS for part in parts[:-1]) or parts[0].startswith("_")


def is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


Check = tuple[str, Callable[[object], bool], str]
PRECISIONS = {
    "auto",  # hydratune.precision: bf16-mixed on a CPU with native bf16, else 32-true
    "32-true",
    "32",
    "bf16-mixed",
    "bf16-true",
    "16-mixed",
    "16-true",
    "64-true",
    "transformer-engine",
}
DTYPES = set(config.DTYPES)
ATTENTION = {"sdpa", "eager", "flash_attention_2", "flash_attention_3", "flex_attention"}

# (dotted key, accepts(value), what is allowed). A missing key is not checked.
RANGES: list[Check] = [
    ("optimizer.lr", lambda v: is_number(v) and v > 0, "a number > 0"),
    ("optimizer.weight_decay", lambda v: is_number(v) and v >= 0, "a number >= 0"),
    (
        "optimizer.betas",
        lambda v: isinstance(v, list) and len(v) == 2 and all(is_number(b) and 0 <= b < 1 for b in v),
        "two numbers in [0, 1), e.g. [0.9, 0.999]",
    ),
    ("optimizer.eps", lambda v: is_number(v) and v > 0 or isinstance(v, list), "a number > 0"),
    ("optimizer.momentum", lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    ("scheduler.warmup_steps", lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    ("scheduler.warmup_ratio", lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    ("peft.config.r", lambda v: isinstance(v, int) and v > 0, "an integer > 0"),
    ("peft.config.lora_alpha", lambda v: is_number(v) and v > 0, "a number > 0"),
    ("peft.config.lora_dropout", lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    ("peft.trainable_layers", lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    ("dataset.max_seq_length", lambda v: isinstance(v, int) and v >= 16, "an integer >= 16"),
    ("dataset.batch_size", lambda v: isinstance(v, int) and v > 0, "an integer > 0"),
    ("dataset.eval_batch_size", lambda v: isinstance(v, int) and v > 0, "an integer > 0"),
    ("dataset.fraction", lambda v: is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    (
        "trainer.max_steps",
        lambda v: isinstance(v, int) and (v > 0 or v == -1),
        "an integer > 0 (or -1: no limit)",
    ),
    (
        "trainer.max_epochs",
        lambda v: v is None or v == -1 or is_number(v) and v > 0,
        "a number > 0 (1.5: half of the second epoch too) or -1",
    ),
    ("trainer.accumulate_grad_batches", lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    ("trainer.gradient_clip_val", lambda v: v is None or is_number(v) and v > 0, "a number > 0 or null"),
    (
        "trainer.val_check_interval",
        lambda v: isinstance(v, int) and v > 0 or is_number(v) and 0 < v <= 1,
        "an integer > 0 (batches) or a fraction in (0, 1]",
    ),
    ("trainer.log_every_n_steps", lambda v: isinstance(v, int) and v > 0, "an integer > 0"),
    (
        "trainer.precision",
        lambda v: str(v) in PRECISIONS,
        "one of " + ", ".join(sorted({"auto", "32-true", "bf16-mixed", "bf16-true", "16-mixed"})),
    ),
    (
        "callbacks.model_checkpoint.save_steps",
        lambda v: v is None or isinstance(v, int) and v > 0,
        "an integer > 0 or null",
    ),
    ("nan_policy", lambda v: v in ("stop", "skip"), "stop or skip"),
    ("resume", lambda v: v in (None, False, "auto"), "auto or null (or ckpt_path=PATH)"),
    (
        "callbacks.model_checkpoint.save_total_limit",
        lambda v: v is None or isinstance(v, int) and v >= 0,
        "an integer >= 0 (0: no step checkpoints, last.ckpt only) or null",
    ),
    ("callbacks.early_stopping.patience", lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    ("seed", lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    (
        "model.dtype",
        lambda v: v in DTYPES,
        "one of " + ", ".join(sorted({"float32", "bfloat16", "float16", "auto"})),
    ),
    ("model.attn_implementation", lambda v: v in ATTENTION, "one of " + ", ".join(sorted(ATTENTION))),
]


def _get(cfg: dict, dotted: str):
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


_MISSING = object()


# Keys whose value picks code by name (hydratune.model): the names it knows.
CHOICES = {
    "peft.method": ("lora", "freeze", "none"),
    "quantization.method": ("bnb", "none"),
}


def check_choices(cfg: dict) -> None:
    for key, valid in CHOICES.items():
        value = _get(cfg, key)
        if value is _MISSING or value in valid:
            continue
        hint = did_you_mean(value, valid, prefix=f"{key}=")
        raise UserError(f"{key}={value!r} is not known; {hint}use one of: {', '.join(valid)}")


def check_ranges(cfg: dict) -> None:
    for key, accepts, allowed in RANGES:
        value = _get(cfg, key)
        if value is _MISSING:
            continue
        if isinstance(value, bool) and allowed.startswith(("an integer", "a number")) or not accepts(value):
            raise UserError(f"{key}={value!r} {_what_is_wrong(key, value, allowed)}")


def _what_is_wrong(key: str, value, allowed: str) -> str:
    """'out of range' only for a number of the right kind; a word, a list or a true where a number goes (a
    typo, or an unquoted override that Hydra read as another type) is called what it is."""
    if not allowed.startswith(("an integer", "a number", "two numbers")):
        return f"is not allowed: use {allowed}"
    if not allowed.startswith("two numbers") and not is_number(value):
        kind = "an integer" if allowed.startswith("an integer") else "a number"
        return f"is not {kind}: use {allowed}"
    if allowed.startswith("an integer") and "fraction" not in allowed and not isinstance(value, int):
        if float(value).is_integer() and _accepts_int(key, int(value)):
            return f"is not an integer: write {key}={int(value)}"
        return f"is not an integer: use {allowed}"
    return f"is out of range: use {allowed}"


def _accepts_int(key: str, value: int) -> bool:
    return any(name == key and accepts(value) for name, accepts, _ in RANGES)


def validate(cfg: dict, conf_dir: str | Path) -> None:
    """Keys, then named choices, then ranges. Raises UserError with one line."""
    check_keys(cfg, conf_dir)
    check_task_settings(cfg, conf_dir)
    check_loggers(cfg)
    check_choices(cfg)
    check_ranges(cfg)


def check_loggers(cfg: dict) -> None:
    """Every `logger.NAME` node names its class. Settings left without one come from an experiment that set
    `logger.wandb.project` (say) under a command line that chose another logger group option."""
    for name, node in (cfg.get("logger") or {}).items():
        if isinstance(node, dict) and "_target_" not in node:
            raise UserError(
                f"logger.{name}: settings for a logger that is not chosen ({', '.join(sorted(node)) or 'empty'}); "
                f"choose it with logger={name}, or drop them with ~logger.{name}"
            )
