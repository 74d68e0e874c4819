"""The boundary between Hydra configs and plain Python: conversion, redaction, building `_target_` nodes."""

from __future__ import annotations

import re
from typing import Any

# Keys whose values are secrets. They are read from the environment and never saved or logged.
SECRET_KEYS = frozenset({"token", "hub_token", "api_key", "password", "secret", "wandb_api_key"})
REDACTED = "<redacted>"
# Every dtype name a config may use, to the one torch spells (`torch.<name>`); "auto": the checkpoint's.
DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "auto": "auto",
}


def read_json(path) -> dict | None:
    """A JSON file of a run or sweep folder (metrics.json, a lock, a study's record), or None when it is missing
    or half written."""
    import json
    from pathlib import Path

    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def canonical_dtype(name: str | None, default: str = "float32") -> str:
    """`bf16` -> `bfloat16`, `fp16`/`half` -> `float16`, ...: the name torch knows. Unknown names pass
    through (the schema reports them with the valid ones)."""
    if name is None:
        return default
    return DTYPES.get(str(name).removeprefix("torch."), str(name))


def to_plain(node: Any) -> Any:
    """Resolve an OmegaConf node into plain dicts and lists (plain values pass through)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(node, DictConfig | ListConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node


# A key that holds a credential, by its last word (`token`, `hf_token`, `openai_api_key`, `HF_TOKEN`, ...), and the
# tokenizer settings that only share the word (`eos_token`).
SECRET_NAME = re.compile(r"(^|_)(token|api_key|apikey|password|passwd|secret|secret_key|access_key|auth)$")
SPECIAL_TOKEN = re.compile(r"^(eos|bos|pad|unk|sep|cls|mask|stop|additional_special)_tokens?$")
URL_USERINFO = re.compile(r"(?<=://)[^/@\s:]+:[^/@\s]+@")


def is_secret_key(name: Any) -> bool:
    """Whether a config key holds a credential (any case; SECRET_KEYS and whatever ends like one)."""
    text = str(name).lower()
    return text in SECRET_KEYS or (bool(SECRET_NAME.search(text)) and not SPECIAL_TOKEN.match(text))


def mask_url(text: str) -> str:
    """`https://user:pass@host/...` as `https://***@host/...`: a URL's credentials are no part of what is shown."""
    return URL_USERINFO.sub("***@", text) if "@" in text else text


def redact(value: Any) -> Any:
    """A copy of `value` with every secret key's value replaced (None stays None), and URL credentials masked in
    every text (review Z1, Z8: a key named otherwise, a basic-auth URL)."""
    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_key(k) and v is not None else redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return mask_url(value)
    return value


def build(node: dict, **call_site_kwargs: Any) -> Any:
    """Instantiate a `_target_` node (a third-party leaf object) with runtime arguments added."""
    from hydra.utils import instantiate

    return instantiate(node, **call_site_kwargs)


LOWER_IS_BETTER = ("loss", "ppl", "perplexity")


def greater_is_better(model_checkpoint: dict) -> bool:
    """`greater_is_better` as set, or, when null, from the metric's name as the Hugging Face Trainer reads it: a
    loss is better lower, anything else (accuracy, F1, reward, margin) higher; perplexity is a loss here too.
    A fixed `false` kept the lowest accuracy as the best checkpoint (review L18)."""
    given = model_checkpoint.get("greater_is_better")
    if given is not None:
        return bool(given)
    name = str(model_checkpoint.get("metric_for_best_model") or "val/loss").rsplit("/", 1)[-1].lower()
    return not name.endswith(LOWER_IS_BETTER)
