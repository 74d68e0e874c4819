"""Load tokenizers and models, then apply PEFT. No Hydra, no Lightning: plain dicts in, HF objects out."""

from __future__ import annotations

import logging
import os
import weakref
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
    """The model's tokenizer, with a pad token (`stand_in_pad` when the tokenizer has none)."""
    from transformers import AutoTokenizer

    from hydratune.data.tokenize import stand_in_pad

    name = model_cfg["pretrained_model_name_or_path"]
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, **_hub_kwargs(model_cfg, token))
    except OSError as err:  # a folder without tokenizer files; a hub id no cache has and the hub cannot give
        raise load_error(name, err) from None
    except (ValueError, ImportError) as err:
        # A tokenizer.model with no tokenizer.json (Llama 2 and Mistral v0.1 derivatives): without sentencepiece
        # transformers tries its tiktoken reader and asks for tiktoken (review T6).
        if "tiktoken" not in str(err) and "sentencepiece" not in str(err).lower():
            raise
        from hydratune.errors import UserError

        raise UserError(
            f"model.pretrained_model_name_or_path={name}: its tokenizer is a SentencePiece tokenizer.model with no "
            "tokenizer.json, which needs the sentencepiece package: pip install sentencepiece (or use a copy of "
            "the model that has tokenizer.json)"
        ) from None
    if tokenizer.pad_token is None:
        vocab = tokenizer.get_vocab()
        tokenizer.pad_token = stand_in_pad(tokenizer.eos_token, tokenizer.unk_token, vocab.__contains__)
    return tokenizer


def load_error(name: str, err: OSError):
    """The one line for a model or tokenizer that from_pretrained could not read: its first line, and for a hub id
    how to read the cache without waiting (no network: ~50 s of retries, then a traceback: reviews T13, N1)."""
    from hydratune.errors import UserError

    hub = (
        f" Without a network, set HF_HUB_OFFLINE=1 to read the hub cache only (no waiting); to fetch it: hf "
        f"download {name}"
        if not os.path.isdir(os.path.expanduser(name))
        else ""
    )
    return UserError(f"model.pretrained_model_name_or_path={name}: {str(err).splitlines()[0]}{hub}")


def torch_dtype(name: str):
    import torch

    resolved = canonical_dtype(name)
    return resolved if resolved == "auto" else getattr(torch, resolved)


class _NoLoadReport(logging.Filter):
    """transformers 5 prints a "LOAD REPORT" table for every weight a checkpoint lacks or has spare. A new
    classifier head is meant to be missing (and a causal LM's lm_head spare): `classifier_from_pretrained`
    reads the same facts from `output_loading_info` and says what matters in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in str(record.msg)


def classifier_from_pretrained(auto, name_or_path, head_expected: str = "new", **kwargs):
    """`auto.from_pretrained(name_or_path, **kwargs)` for a *ForSequenceClassification model, without the
    load report. `head_expected`: "new" (training starts a head: one info line), "adapter" (the adapter
    loaded next holds the trained head: nothing to say). Backbone weights the checkpoint lacks are a
    warning either way: they start random, and that is never meant."""
    reporter = logging.getLogger("transformers.modeling_utils")
    quiet = _NoLoadReport()
    reporter.addFilter(quiet)
    try:
        model, info = auto.from_pretrained(name_or_path, output_loading_info=True, **kwargs)
    finally:
        reporter.removeFilter(quiet)
    backbone = f"{model.base_model_prefix}."
    missing = sorted(info.get("missing_keys") or [])
    new_backbone = [key for key in missing if key.startswith(backbone)]
    if new_backbone:
        shown = ", ".join(new_backbone[:4]) + (
            f" and {len(new_backbone) - 4} more" if len(new_backbone) > 4 else ""
        )
        log.warning(
            "%s lacks %d backbone weight(s), which start random: %s", name_or_path, len(new_backbone), shown
        )
    head = sorted({key.split(".")[0] for key in missing if not key.startswith(backbone)})
    head += sorted({str(key[0]).split(".")[0] for key in info.get("mismatched_keys") or []} - set(head))
    if head and head_expected == "new":
        log.info(
            "classifier head %s: %d label(s), randomly initialised (%s has no head of that size)",
            "/".join(head), model.config.num_labels, name_or_path,
        )  # fmt: skip
    return model


def load_model(
    model_cfg: dict, token: str | None = None, quantization: dict | None = None, head: dict | None = None
):
    """`from_pretrained` with the config's dtype, attention and quantization.

    A causal LM, or with `head` a sequence classifier (`AutoModelForSequenceClassification`) with a new
    head: `head` holds `num_labels` (and `id2label`/`label2id`, which the export carries) and
    `pad_token_id`. Decoder classifiers pool the last token that is not the pad id, so it goes into the
    config; a checkpoint's own head of another size is replaced, not an error.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    kwargs = {}
    if quantization and quantization.get("method", "none") != "none":
        kwargs["quantization_config"] = build(quantization["config"])
    head = dict(head or {})
    pad_token_id = head.pop("pad_token_id", None)
    if head:
        kwargs |= head | {"ignore_mismatched_sizes": True}
    load = classifier_from_pretrained if head else AutoModelForCausalLM.from_pretrained
    try:
        model = load(
            *([AutoModelForSequenceClassification] if head else []),
            model_cfg["pretrained_model_name_or_path"],
            dtype=torch_dtype(model_cfg.get("dtype", "float32")),
            attn_implementation=attention(model_cfg),
            **kwargs,
            **_hub_kwargs(model_cfg, token),
        )
    except OSError as err:
        raise load_error(model_cfg["pretrained_model_name_or_path"], err) from None
    if head:
        model.config.pad_token_id = pad_token_id
    # The KV cache is useless in training, and with it transformers ignores packed position ids.
    model.config.use_cache = False
    if "quantization_config" in kwargs:
        for module in model.modules():
            # bitsandbytes repacks a 4-bit layer's weights for its AVX512-BF16 CPU kernel at the first forward
            # without gradients (an evaluation) and keeps that layout back in training, where the kernel has
            # no backward: every gradient through the frozen 4-bit layers would then be dropped, silently.
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
    if "quantization_config" in kwargs and quantization.get("prepare_for_kbit_training", True):
        from peft import prepare_model_for_kbit_training

        # Casts norms to fp32 and makes inputs require grad; checkpointing is set up by the caller.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return model


def attention(model_cfg: dict) -> str:
    """model.attn_implementation, but eager where it asks for sdpa and the model's class has none in this
    transformers (Gemma 2: its soft-capped attention is eager or flash only), said once: from_pretrained raised
    deep in loading, and preflight had said ok (review T5)."""
    wanted = model_cfg.get("attn_implementation", "sdpa")
    # remote code: its own classes, not the mapping's
    if wanted != "sdpa" or model_cfg.get("trust_remote_code"):
        return wanted
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    try:
        config = AutoConfig.from_pretrained(
            model_cfg["pretrained_model_name_or_path"], **_hub_kwargs(model_cfg, model_cfg.get("token"))
        )
    except (OSError, ValueError):  # not found: loading says so
        return wanted
    mappings = (AutoModelForCausalLM._model_mapping, AutoModelForSequenceClassification._model_mapping)
    model_class = next((m[type(config)] for m in mappings if type(config) in m), None)  # a family's share one
    if model_class is None:
        return wanted
    if getattr(model_class, "_supports_sdpa", True):
        return wanted
    if model_class.__name__ not in _SAID_EAGER:
        _SAID_EAGER.add(model_class.__name__)
        log.warning(
            "model.attn_implementation=sdpa: %s has no sdpa attention in this transformers, so eager is used "
            "(set model.attn_implementation=eager to choose it)", model_class.__name__,
        )  # fmt: skip
    return "eager"


_SAID_EAGER: set[str] = set()


def classifier_head(labels: list[str], pad_token_id: int | None) -> dict:
    """`load_model`'s `head` for a classifier of these labels (names by class id)."""
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {name: i for i, name in enumerate(labels)},
        "pad_token_id": pad_token_id,
    }


def classifier_peft(peft_cfg: dict) -> dict:
    """The peft config group adapted to a classifier: LoRA with task_type SEQ_CLS (peft then trains and
    saves the `score`/`classifier` head as modules_to_save); `freeze` keeps the head trainable."""
    import json

    peft_cfg = json.loads(json.dumps(peft_cfg))  # a deep copy of plain values
    if peft_cfg.get("method") == "lora":
        peft_cfg["config"]["task_type"] = "SEQ_CLS"
    elif peft_cfg.get("method") == "freeze":
        peft_cfg["trainable_modules"] = [*(peft_cfg.get("trainable_modules") or []), "score", "classifier"]
    return peft_cfg


def apply_peft(model, peft_cfg: dict):
    """Apply the configured PEFT method: LoRA-family adapters, partial freezing, or nothing."""
    method = peft_cfg.get("method", "none")
    if method == "none":
        adapted = model
    elif method == "lora":
        from peft import get_peft_model

        config = dict(peft_cfg["config"])
        if "target_modules" in config:
            config["target_modules"] = lora_targets(config["target_modules"])
        if config.get("layers_to_transform") is not None and config.get("target_modules") == "all-linear":
            config["target_modules"] = linear_module_names(model)  # peft takes layers of named modules only
        adapted = skip_needless_input_casts(get_peft_model(model, build(config)))
    elif method == "freeze":
        adapted = freeze_all_but(
            model, peft_cfg.get("trainable_layers", 0), peft_cfg.get("trainable_modules") or []
        )
    else:
        raise ValueError(f"peft.method={method!r} is not known; use one of: none, lora, freeze")
    return cast_shared_inputs_once(adapted)


ALL_LINEAR = ("all", "all-linear", "all_linear")
# Output layers that peft's all-linear leaves out (a classifier's head trains whole, as modules_to_save).
OUTPUT_LAYERS = ("lm_head", "score", "classifier")


def linear_module_names(model) -> list[str]:
    """What peft's `all-linear` targets, by name: every linear layer's last name but the output layer's."""
    import torch

    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return sorted({
        name.rpartition(".")[2] for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not output
        and name.rpartition(".")[2] not in OUTPUT_LAYERS
    })  # fmt: skip


def lora_targets(value):
    """peft's `target_modules`, with `all` (a list of one, or a string) spelled as peft spells it:
    `all-linear` (every linear layer but the output one)."""
    if isinstance(value, list | tuple) and len(value) == 1 and value[0] in ALL_LINEAR:
        value = value[0]
    return "all-linear" if isinstance(value, str) and value in ALL_LINEAR else value


def skip_needless_input_casts(model):
    """No input casts in the adapter layers of an all-float32 model.

    peft casts each LoRA layer's input to the adapter weights' dtype. With every weight in float32 that
    cast fires only under bf16 autocast (bf16-mixed), where autocast casts the input straight back to
    bf16 for the matmul: a round trip per adapter, ~4% of a bf16 step on CPU. Outside autocast the
    input is already float32, so switching the cast off changes nothing there.
    """
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer

    if all(p.dtype == torch.float32 for p in model.parameters()):
        for module in model.modules():
            if isinstance(module, BaseTunerLayer):
                module.cast_input_dtype_enabled = False
    return model


class _CastOnce:
    """A forward pre-hook shared by linear layers: under bf16 autocast, a float32 input is cast to bf16 once
    and the copy handed to every layer that reads the same tensor next (until that tensor is freed or
    changed in place, or gradient mode changes: a copy made without gradients carries none)."""

    def __init__(self):
        self.source = None  # weak reference to the float32 input last cast
        self.version = -1
        self.grad_mode = False
        self.cast = None

    def __call__(self, module, args):
        import torch

        x = args[0] if args else None
        if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
            return None
        device = x.device.type
        if not torch.is_autocast_enabled(device):
            return None
        dtype = torch.get_autocast_dtype(device)
        if dtype != torch.bfloat16:  # fp16: the readers' gradients summed in fp16 could overflow
            return None
        version = None if x.is_inference() else x._version  # inference_mode's tensors have no counter
        grad_mode = torch.is_grad_enabled()
        cast = self.cast
        if not (
            self.source is not None
            and self.source() is x
            and (self.version, self.grad_mode) == (version, grad_mode)
        ):
            cast = x.to(dtype)
            self.source, self.version, self.grad_mode = weakref.ref(x, self._forget), version, grad_mode
            self.cast = cast
        return (cast, *args[1:])

    def _forget(self, ref) -> None:
        if self.source is ref:
            self.source, self.cast = None, None

    def __deepcopy__(self, memo):  # a copied model (a reference model) gets its own, empty cache
        return _CastOnce()

    def __reduce__(self):
        return (_CastOnce, ())


def cast_shared_inputs_once(model):
    """One autocast copy of each float32 input that several linear layers read, in an all-float32 model.

    Under bf16 autocast every linear layer casts its float32 input to bf16 by itself: in a decoder
    layer, the normed hidden states are cast for q, k and v and again for each of their LoRA adapters, then
    for gate and up and theirs, and each cast's gradient is cast back in the backward. The cast values are
    identical, so the layers now share one copy; the gradients the readers send back are summed in bf16
    before the one cast back to float32. Without bf16 autocast (float32, fp16's `16-mixed`) the hook does
    nothing.
    """
    import torch
    from peft.tuners.tuners_utils import BaseTunerLayer

    if not all(p.dtype == torch.float32 for p in model.parameters()):
        return model  # a bf16 or quantized model has no float32 inputs to share
    hook, inside = _CastOnce(), set()
    for module in model.modules():  # parents before children
        if id(module) in inside:
            continue
        if isinstance(module, BaseTunerLayer):
            inside.update(id(m) for m in module.modules())
            if isinstance(module.get_base_layer(), torch.nn.Linear):
                module.register_forward_pre_hook(hook)
        elif isinstance(module, torch.nn.Linear):
            module.register_forward_pre_hook(hook)
    return model


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
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x: the old name warns
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
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
