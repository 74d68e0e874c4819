"""Load tokenizers and models, then apply PEFT. No Hydra, no Lightning: plain dicts in, HF objects out."""

from __future__ import annotations

import logging
import os
from typing import Any

from hydratune.config import build, canonical_dtype

log = logging.getLogger(__name__)


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

    resolved = canonical_dtype(name)
    return resolved if resolved == "auto" else getattr(torch, resolved)


def load_model(model_cfg: dict, token: str | None = None, quantization: dict | None = None):
    """`AutoModelForCausalLM.from_pretrained` with the config's dtype, attention and quantization."""
    from transformers import AutoModelForCausalLM

    kwargs = {}
    if quantization and quantization.get("method", "none") != "none":
        kwargs["quantization_config"] = build(quantization["config"])
    model = AutoModelForCausalLM.from_pretrained(
        model_cfg["pretrained_model_name_or_path"],
        dtype=torch_dtype(model_cfg.get("dtype", "float32")),
        attn_implementation=model_cfg.get("attn_implementation", "sdpa"),
        **kwargs,
        **_hub_kwargs(model_cfg, token),
    )
    # The KV cache is useless in training, and with it transformers ignores packed position ids.
    model.config.use_cache = False
    if kwargs and quantization.get("prepare_for_kbit_training", True):
        from peft import prepare_model_for_kbit_training

        # Casts norms to fp32 and makes inputs require grad; checkpointing is set up by the caller.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model


def load_classifier(
    model_cfg: dict,
    labels: list[str],
    pad_token_id: int | None,
    token: str | None = None,
    quantization: dict | None = None,
):
    """`AutoModelForSequenceClassification.from_pretrained` with a new head of `len(labels)` outputs.

    id2label/label2id go into the config (so the export carries them). Decoder models pool the last
    token that is not `pad_token_id`, so the pad id must be set in the config; encoders use their own
    pooler.
    """
    from transformers import AutoModelForSequenceClassification

    kwargs = {}
    if quantization and quantization.get("method", "none") != "none":
        kwargs["quantization_config"] = build(quantization["config"])
    model = AutoModelForSequenceClassification.from_pretrained(
        model_cfg["pretrained_model_name_or_path"],
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        dtype=torch_dtype(model_cfg.get("dtype", "float32")),
        attn_implementation=model_cfg.get("attn_implementation", "sdpa"),
        ignore_mismatched_sizes=True,  # a checkpoint's own head (other labels) is replaced, not an error
        **kwargs,
        **_hub_kwargs(model_cfg, token),
    )
    model.config.pad_token_id = pad_token_id
    model.config.use_cache = False
    if kwargs and quantization.get("prepare_for_kbit_training", True):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model


def apply_peft(model, peft_cfg: dict):
    """Apply the configured PEFT method: LoRA-family adapters, partial freezing, or nothing."""
    method = peft_cfg.get("method", "none")
    if method == "none":
        return model
    if method == "lora":
        from peft import get_peft_model

        config = dict(peft_cfg["config"])
        if "target_modules" in config:
            config["target_modules"] = lora_targets(config["target_modules"])
        return get_peft_model(model, build(config))
    if method == "freeze":
        return freeze_all_but(
            model, peft_cfg.get("trainable_layers", 0), peft_cfg.get("trainable_modules") or []
        )
    raise ValueError(f"peft.method={method!r} is not known; use one of: none, lora, freeze")


ALL_LINEAR = ("all", "all-linear", "all_linear")


def lora_targets(value):
    """peft's `target_modules`, with `all` (a list of one, or a string) spelled as peft spells it:
    `all-linear` (every linear layer but the output one)."""
    if isinstance(value, list | tuple) and len(value) == 1 and value[0] in ALL_LINEAR:
        value = value[0]
    return "all-linear" if isinstance(value, str) and value in ALL_LINEAR else value


def freeze_all_but(model, last_layers: int, module_names: list[str]):
    """Freeze every parameter except those of the last `last_layers` decoder layers and of named modules."""
    layers = decoder_layers(model)
    keep = (
        {id(p) for layer in layers[len(layers) - last_layers :] for p in layer.parameters()}
        if last_layers
        else set()
    )
    for name, param in model.named_parameters():
        param.requires_grad = id(param) in keep or any(m in name for m in module_names)
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(
            f"peft=freeze left nothing to train: raise peft.trainable_layers (got {last_layers}) "
            f"or fix peft.trainable_modules (got {module_names})"
        )
    return model


def decoder_layers(model) -> list:
    """The list of decoder blocks of a causal LM (the longest ModuleList inside it)."""
    import torch

    lists = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    return list(max(lists, key=len)) if lists else []


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


def decoder_layer_classes(model_cfg: dict) -> set[type]:
    """The model's decoder block classes (transformers' `_no_split_modules`), read from its config only."""
    import sys

    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(
        model_cfg["pretrained_model_name_or_path"], **_hub_kwargs(model_cfg, model_cfg.get("token"))
    )
    model_class = AutoModelForCausalLM._model_mapping[type(config)]
    module = sys.modules[model_class.__module__]
    return {getattr(module, name) for name in model_class._no_split_modules or [] if hasattr(module, name)}
