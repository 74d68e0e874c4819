"""Load tokenizers and models, then apply PEFT. No Hydra, no Lightning: plain dicts in, HF objects out."""

from __future__ import annotations

import logging
import os
from typing import Any

from hydratune.config import build

log = logging.getLogger(__name__)

DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "auto": "auto",
}


def _hub_kwargs(model_cfg: dict, token: str | None) -> dict[str, Any]:
    if model_cfg.get("trust_remote_code"):
        log.warning(
            "model.trust_remote_code=true: code from %s will run on this machine",
            model_cfg["pretrained_model_name_or_path"],
        )
    return {
        "revision": model_cfg.get("revision"),
        "cache_dir": model_cfg.get("cache_dir"),
        "trust_remote_code": bool(model_cfg.get("trust_remote_code", False)),
        "token": token or os.environ.get("HF_TOKEN"),
    }


def load_tokenizer(model_cfg: dict, token: str | None = None):
    """The model's tokenizer, with a pad token (EOS stands in when the tokenizer has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        model_cfg["pretrained_model_name_or_path"], **_hub_kwargs(model_cfg, token)
    )
    if tokenizer.pad_token is None:
        # Padding positions carry label -100 and attention 0, so sharing EOS is safe for training.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def torch_dtype(name: str):
    import torch

    resolved = DTYPES[name]
    return resolved if resolved == "auto" else getattr(torch, resolved)


def load_model(model_cfg: dict, token: str | None = None):
    """`AutoModelForCausalLM.from_pretrained` with the config's dtype and attention implementation."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        model_cfg["pretrained_model_name_or_path"],
        dtype=torch_dtype(model_cfg.get("dtype", "float32")),
        attn_implementation=model_cfg.get("attn_implementation", "sdpa"),
        **_hub_kwargs(model_cfg, token),
    )
    # The KV cache is useless in training, and with it transformers ignores packed position ids.
    model.config.use_cache = False
    return model


def apply_peft(model, peft_cfg: dict):
    """Wrap `model` with the configured PEFT method (`method: none` returns it unchanged)."""
    method = peft_cfg.get("method", "none")
    if method == "none":
        return model
    if method == "lora":
        from peft import get_peft_model

        return get_peft_model(model, build(peft_cfg["config"]))
    raise ValueError(f"peft.method={method!r} is not known; use one of: none, lora")


def enable_gradient_checkpointing(model) -> None:
    """Non-reentrant checkpointing; inputs require grad so LoRA layers behind frozen embeddings get one."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
