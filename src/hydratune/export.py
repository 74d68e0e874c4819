"""A run's artifacts: export (standard Hugging Face directories that transformers/peft load as-is), finding
and loading them again, merging an adapter into its base, and the adapter-vs-merged parity check."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from hydratune.config import canonical_dtype
from hydratune.generate import stop_ids

log = logging.getLogger(__name__)


def is_peft_model(model) -> bool:
    return hasattr(model, "peft_config")


def export_artifact(model, tokenizer, run_dir: str | Path, stop_token_ids: list[int] | tuple = ()) -> Path:
    """`adapter/` for PEFT models, `model/` for full fine-tuning; tokenizer files beside the weights.
    `stop_token_ids`: tokens that ended the answers training sampled (GRPO's task.stop), so that a plain
    `generate` stops where training did. Written whole or not at all (a sibling folder swapped in at the end)."""
    from hydratune.folders import replace_folder, temporary_sibling

    final = Path(run_dir) / ("adapter" if is_peft_model(model) else "model")
    out = temporary_sibling(final)
    generation = getattr(model, "generation_config", None)
    if generation is not None:  # the base's end-of-turn ids kept (Llama 3 Instruct's <|eot_id|>), EOS added
        ids = list(dict.fromkeys([*stop_ids(model, tokenizer), *stop_token_ids]))
        generation.eos_token_id = ids if len(ids) > 1 else ids[0]
        generation.pad_token_id = tokenizer.pad_token_id
    config = (model.get_base_model() if is_peft_model(model) else model).config
    config.use_cache = (
        True  # off for training (gradient checkpointing); a user's model(**ids) wants its cache
    )
    with warnings.catch_warnings():
        # peft asks the hub whether a hub-id base has a config.json, to see if the vocabulary grew; offline it
        # warns that it could not tell. hydratune never resizes the embeddings, so there is nothing to tell.
        warnings.filterwarnings("ignore", message="Could not find a config file in", category=UserWarning)
        model.save_pretrained(out, safe_serialization=True)
    save_tokenizer(tokenizer, out)
    if is_peft_model(model) and model.peft_config["default"].task_type == "SEQ_CLS":
        # A classifier adapter needs its base rebuilt with the same head: keep num_labels/id2label/pad id,
        # and name the class that has it (the base checkpoint's config says ...ForCausalLM).
        config.architectures = [type(model.get_base_model()).__name__]
        config.save_pretrained(out)
    if is_peft_model(model) and generation is not None:
        generation.save_pretrained(out)
    finish_folder(out)
    replace_folder(out, final)
    return final


def finish_folder(folder: Path) -> None:
    """What every exported folder gets before it is swapped in: transformers 4's names beside transformers 5's in
    config.json (review O8: 4.x read the rope settings as its defaults, silently) and files readable by all (O10)."""
    import json

    from hydratune.folders import readable_by_all

    path = folder / "config.json"
    if path.is_file():
        config = json.loads(path.read_text())
        if legacy_keys(config):
            path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    readable_by_all(folder)


def legacy_keys(config: dict) -> bool:
    """Add `rope_theta` and `rope_scaling` (from transformers 5's `rope_parameters`) and `torch_dtype` (`dtype`)
    where config.json lacks them; whether any was added."""
    added = False
    rope = config.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope and "rope_theta" not in config:
        config["rope_theta"] = rope["rope_theta"]
        added = True
    kind = rope.get("rope_type", rope.get("type")) if isinstance(rope, dict) else None
    if kind not in (None, "default") and not config.get("rope_scaling"):
        config["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
        added = True
    if config.get("dtype") and "torch_dtype" not in config:
        config["torch_dtype"] = config["dtype"]
        added = True
    if isinstance(config.get("text_config"), dict):  # a multimodal config keeps the language model's apart
        added = legacy_keys(config["text_config"]) or added
    return added


def save_tokenizer(tokenizer, folder: str | Path) -> None:
    """`tokenizer.save_pretrained(folder)`, loadable by transformers 4 too: transformers 5 names a tokenizer
    without a model-specific class `TokenizersBackend`, which 4.x does not have; both read the same files as
    `PreTrainedTokenizerFast` (serving stacks often pin 4.x)."""
    import json

    # How this process loaded the tokenizer (offline, from a folder) is not a property of the tokenizer: it was
    # saved into merged/ too (review O3)
    for key in ("local_files_only", "is_local", "_commit_hash"):
        tokenizer.init_kwargs.pop(key, None)
    tokenizer.save_pretrained(folder)
    copy_tokenizer_sources(tokenizer, Path(folder))
    path = Path(folder) / "tokenizer_config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    legacy = dict(config)
    if config.get("tokenizer_class") == "TokenizersBackend":
        legacy["tokenizer_class"] = "PreTrainedTokenizerFast"
    # transformers 5 writes the chat template to chat_template.jinja only; TGI and transformers before the .jinja
    # file read it from tokenizer_config.json (review T9). Both hold the same text; 5 prefers the file.
    if isinstance(getattr(tokenizer, "chat_template", None), str) and "chat_template" not in config:
        legacy["chat_template"] = tokenizer.chat_template
    if legacy != config:
        path.write_text(json.dumps(legacy, indent=2, ensure_ascii=False) + "\n")


# A base's tokenizer files that transformers 5 does not write back (it saves tokenizer.json), which other tools
# read: llama.cpp's converter and SentencePiece runtimes the tokenizer.model, BPE readers vocab.json + merges.txt.
SOURCE_FILES = ("tokenizer.model", "vocab.json", "merges.txt")


def copy_tokenizer_sources(tokenizer, folder: Path) -> None:
    """Copy `SOURCE_FILES` from the folder the tokenizer was loaded from (a local copy, or its snapshot in the hub
    cache) where the export lacks them: merged/ had no tokenizer.model (review T8)."""
    import shutil

    name = str(getattr(tokenizer, "name_or_path", "") or "")
    source = Path(name) if name and Path(name).is_dir() else None
    if source is None and name:
        from huggingface_hub import try_to_load_from_cache

        try:
            found = try_to_load_from_cache(name, "tokenizer_config.json")
        except Exception:  # not a hub id
            found = None
        source = Path(found).parent if isinstance(found, str) else None
    if source is None or source.resolve() == folder.resolve():
        return
    for file in SOURCE_FILES:
        if (source / file).is_file() and not (folder / file).exists():
            shutil.copyfile(source / file, folder / file)


def name_adapter_base(adapter_dir: str | Path, base_id: str) -> None:
    """`export.base_model`: the adapter names `base_id` (a hub id) as its base instead of the folder the run
    loaded, so that it loads on another machine (AutoPeftModel reads base_model_name_or_path)."""
    import json

    path = Path(adapter_dir) / "adapter_config.json"
    config = json.loads(path.read_text())
    config["base_model_name_or_path"] = base_id
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def rebuilt_with(model, state_dict: dict):
    """`model` (a transformers model, or a PEFT model around one) built again outside FSDP's wrappers, on the
    meta device, then given `state_dict`'s tensors (no copy): FSDP shards the weights and renames the module
    paths by which PEFT finds its adapter's weights, so the export of an FSDP run writes this instead."""
    import torch

    base = model.get_base_model() if is_peft_model(model) else model
    with torch.device("meta"):
        fresh = type(base)._from_config(base.config, dtype=base.dtype)
    if getattr(base, "generation_config", None) is not None:  # causal LMs (not classifiers)
        fresh.generation_config = base.generation_config
    if is_peft_model(model):
        from peft import get_peft_model

        fresh = get_peft_model(fresh, model.peft_config["default"])
    missing, unexpected = fresh.load_state_dict(state_dict, strict=False, assign=True)
    if missing or unexpected:
        raise RuntimeError(f"FSDP export: weights missing {missing[:3]}, unexpected {unexpected[:3]}")
    return fresh


# Max |adapter logits - merged logits| allowed, by dtype: merging only reorders float operations. In half
# precision two orders of the same sums differ by a few roundings of the largest logit, so the bound is
# also at least PARITY_ULPS units of the dtype's precision at that logit (fp16: ~0.02 per ulp at 23).
PARITY_TOLERANCE = {"float32": 1e-3, "bfloat16": 1e-1, "float16": 5e-2}
PARITY_ULPS = 8
PARITY_PROMPTS = (
    "Hello",
    "### Instruction:\nReverse the letters of the word.\n\n### Response:\n",
    "0123456789",
)


def is_classifier_adapter(adapter_dir: str | Path) -> bool:
    """Whether an adapter directory holds a sequence-classification adapter (peft task_type SEQ_CLS)."""
    import json

    return json.loads((Path(adapter_dir) / "adapter_config.json").read_text()).get("task_type") == "SEQ_CLS"


def load_adapter_base(adapter_dir: str | Path, dtype: str = "float32"):
    """The base model an adapter was trained on, unquantized in `dtype`, ready for PeftModel.

    For a classifier the adapter's saved config gives the head's size and labels; the base checkpoint
    has no such head, or one for other labels, which is replaced (the adapter holds the trained head).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    from hydratune.errors import UserError

    adapter_dir, dtype = Path(adapter_dir), canonical_dtype(dtype)
    base, hub = base_id(adapter_dir), base_hub_options(adapter_dir)
    try:
        if is_classifier_adapter(adapter_dir):
            from hydratune.model import classifier_from_pretrained

            return classifier_from_pretrained(
                AutoModelForSequenceClassification,
                base,
                head_expected="adapter",
                config=AutoConfig.from_pretrained(adapter_dir),
                dtype=getattr(torch, dtype),
                ignore_mismatched_sizes=True,
                **hub,
            )
        return AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, dtype), **hub)
    except (
        OSError
    ) as err:  # not on this disk, not in the hub cache it looked in, hub unreachable (review T13)
        raise UserError(
            f"{adapter_dir}: its base model {base} cannot be loaded here ({str(err).splitlines()[0]}); point "
            "HF_HUB_CACHE at the cache that holds it, or set base_model_name_or_path in adapter_config.json to a "
            "copy of it"
        ) from None


def base_hub_options(adapter_dir: Path) -> dict:
    """Where the base of a run's adapter was loaded from: the run's model.cache_dir, revision and
    trust_remote_code (its saved .hydra/config.yaml beside adapter/), so that a merge or `hydratune
    generate` reads the same files as training (not the hub's newest revision, nor a download into the
    default cache). An adapter outside a run folder: nothing."""
    from omegaconf import OmegaConf

    saved = adapter_dir.parent / ".hydra" / "config.yaml"
    if not saved.is_file():
        return {}
    model = OmegaConf.load(saved).get("model") or {}
    out = {}
    for key in ("cache_dir", "revision", "trust_remote_code"):
        try:
            value = OmegaConf.select(model, key)  # resolved where it can be (paths move; ${hydra:} cannot)
        except Exception:  # an interpolation that only the launch could resolve
            value = None
        if value not in (None, False, ""):
            out[key] = value
    return out


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path, dtype: str = "float32") -> Path:
    """Fold a LoRA adapter into its base model and save a standalone model + tokenizer.

    The base is reloaded unquantized in `dtype` (`base_dtype`: the base checkpoint's own): merging into 4-bit
    or 8-bit weights would round the adapter away. The adapter's generation_config (its end-of-turn and stop
    ids, pad id) is the merged model's.
    """
    import shutil

    from peft import PeftModel
    from transformers import AutoTokenizer

    from hydratune.errors import UserError
    from hydratune.folders import replace_folder, temporary_sibling

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "config.json").is_file():
        raise UserError(
            f"{out_dir} holds other files (not a model): give a new or empty folder; nothing was written"
        )
    tmp = temporary_sibling(out_dir)  # swapped in whole: an interrupted merge looked complete (review O7)
    merged = PeftModel.from_pretrained(load_adapter_base(adapter_dir, dtype), adapter_dir).merge_and_unload()
    merged.save_pretrained(tmp, safe_serialization=True)
    if (adapter_dir / "generation_config.json").is_file():
        shutil.copyfile(adapter_dir / "generation_config.json", tmp / "generation_config.json")
    save_tokenizer(AutoTokenizer.from_pretrained(adapter_dir), tmp)
    finish_folder(tmp)
    replace_folder(tmp, out_dir)
    return out_dir


def merge_dtype(adapter_dir: str | Path, model_dtype: str | None = None) -> str:
    """The dtype a merged model is stored in: the run's model.dtype (`model_dtype`, else the run's saved
    config beside adapter/) where it names one, for `auto` the base checkpoint's own. Never a QLoRA run's
    compute dtype, nor float32 for a bf16 base loaded with auto (twice its size)."""
    from omegaconf import OmegaConf

    saved = Path(adapter_dir).parent / ".hydra" / "config.yaml"
    if model_dtype is None and saved.is_file():
        model_dtype = OmegaConf.select(OmegaConf.load(saved), "model.dtype", default=None)
    dtype = canonical_dtype(str(model_dtype or "auto"))
    return dtype if dtype != "auto" else (base_dtype(adapter_dir) or "float32")


def base_dtype(adapter_dir: str | Path) -> str | None:
    """The dtype the adapter's base checkpoint is stored in (its config.json); None where it does not say."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(base_id(adapter_dir), **base_hub_options(Path(adapter_dir)))
    except (OSError, ValueError):
        return None
    stored = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    name = canonical_dtype(str(stored).removeprefix("torch.")) if stored else None
    return name if name in ("float32", "bfloat16", "float16") else None


def logit_parity(adapter_dir: str | Path, merged_dir: str | Path, dtype: str = "float32") -> float:
    """Max absolute difference between adapter and merged logits on fixed prompts.

    Raises RuntimeError above `PARITY_TOLERANCE[dtype]`: a merged model that disagrees with its
    adapter must not be shipped silently.
    """
    import torch

    dtype = canonical_dtype(dtype)
    adapter, tokenizer = load_artifact(adapter_dir, dtype)
    merged, _ = load_artifact(merged_dir, dtype)
    worst, largest = 0.0, 0.0
    with torch.no_grad():
        for prompt in PARITY_PROMPTS:
            ids = tokenizer(prompt, return_tensors="pt").input_ids
            expected = adapter(input_ids=ids).logits.float()
            diff = (expected - merged(input_ids=ids).logits.float()).abs().max()
            worst, largest = max(worst, float(diff)), max(largest, float(expected.abs().max()))
    tolerance = max(
        PARITY_TOLERANCE.get(dtype, 1e-3), PARITY_ULPS * torch.finfo(getattr(torch, dtype)).eps * largest
    )
    if worst > tolerance:
        raise RuntimeError(
            f"merged model disagrees with its adapter: max |logit diff| {worst:.3g} > {tolerance:.3g} in {dtype} "
            f"({merged_dir}); keep using {adapter_dir}"
        )
    return worst


def trained_model_gap(adapter_dir: str | Path, merged_dir: str | Path, cfg: dict) -> float | None:
    """Max |logit diff| between a merge and the model its run trained and evaluated, for an adapter trained on a
    quantized base (review O6): the merge folds it into the full-precision base, and `logit_parity` compares it with
    the adapter on that same base, which cannot see the rounding the run's metrics were measured through. The
    adapter on the base quantized as the run's `quantization` says is the trained model. None for an unquantized
    run's or a classifier's adapter."""
    import torch
    from peft import PeftModel

    from hydratune.model import load_model

    quantization = cfg.get("quantization") or {}
    if quantization.get("method", "none") == "none" or is_classifier_adapter(adapter_dir):
        return None
    model_cfg = dict(cfg["model"]) | {"pretrained_model_name_or_path": base_id(adapter_dir)}
    trained = PeftModel.from_pretrained(
        load_model(model_cfg, model_cfg.get("token"), quantization), adapter_dir
    )
    merged, tokenizer = load_artifact(merged_dir)
    trained.eval()
    worst = 0.0
    with torch.no_grad():
        for prompt in PARITY_PROMPTS:
            ids = tokenizer(prompt, return_tensors="pt").input_ids
            diff = trained(input_ids=ids).logits.float() - merged(input_ids=ids).logits.float()
            worst = max(worst, float(diff.abs().max()))
    return worst


def quantized_merge_gap(adapter: Path, merged: Path, cfg: dict) -> dict:
    """For an adapter trained on a quantized base: how far the merge answers from the model the run evaluated
    (`merged_vs_trained_max_abs_logit_diff`, in metrics.json and the card), said once; {} otherwise."""
    gap = trained_model_gap(adapter, merged, cfg)
    if gap is None:
        return {}
    log.warning(
        "merge: the adapter was trained on a quantized base and is merged into the full-precision one, "
        "which answers somewhat differently from the model the run evaluated: max |logit diff| %.3g on the "
        "parity prompts (merged/README.md says so)", gap,
    )  # fmt: skip
    return {"merged_vs_trained_max_abs_logit_diff": gap}


def base_id(adapter_dir: str | Path) -> str:
    """The base model an adapter names (adapter_config.json's base_model_name_or_path)."""
    import json

    return json.loads((Path(adapter_dir) / "adapter_config.json").read_text())["base_model_name_or_path"]


ARTIFACTS = ("merged", "adapter", "model")  # searched in this order


def find_artifact(run_dir: str | Path, prefer: str | None = None) -> Path:
    """The artifact directory of a run: `prefer` if given, else merged/, adapter/ or model/."""
    from hydratune.config import read_json
    from hydratune.locks import LOCK_FILE, training

    run_dir = Path(run_dir)
    names = (prefer,) if prefer else ARTIFACTS
    for name in names:
        if (run_dir / name).is_dir():
            return run_dir / name
    # Why there is none, where that can be told (review K9): each said "is it a finished run?"
    if not run_dir.is_dir():
        why = "it does not exist (give the folder of a run: outputs/<name>/<date>)"
    elif (run_dir / LOCK_FILE).exists() and training(run_dir):
        why = f"it is still training (process {(read_json(run_dir / LOCK_FILE) or {}).get('pid')}); its exports come at the end"
    elif prefer == "merged" and (run_dir / "adapter").is_dir():
        why = f"merge its adapter first: hydratune merge {run_dir}"
    elif prefer == "adapter" and (run_dir / "model").is_dir():
        why = "it is a full fine-tune: model/ is already a whole model"
    elif not (run_dir / ".hydra").is_dir():
        why = "it is not a run folder of python train.py (no .hydra/)"
    else:
        why = (
            "is it a finished run? (a stopped one has only checkpoints/: resume=auto finishes it, and "
            f"hydratune export {run_dir} writes its weights as they are)"
        )
    raise FileNotFoundError(f"{run_dir} has no {' or '.join(n + '/' for n in names)} directory: {why}")


def load_artifact(path: str | Path, dtype: str = "float32"):
    """(model, tokenizer), in eval mode, from an exported adapter/, merged/ or model/ directory with plain
    transformers/peft. An adapter is loaded onto its recorded base model; a classifier (saved as a
    *ForSequenceClassification architecture, or a SEQ_CLS adapter) loads with its head."""
    import torch
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    tokenizer = AutoTokenizer.from_pretrained(path)  # a folder, or a hub id (as text)
    if (Path(path) / "adapter_config.json").exists():
        from peft import PeftModel
        from transformers import GenerationConfig

        model = PeftModel.from_pretrained(load_adapter_base(path, dtype), path)
        # the trained stop ids, not the base's (review T2)
        if (Path(path) / "generation_config.json").is_file():
            model.generation_config = GenerationConfig.from_pretrained(path)
            model.get_base_model().generation_config = model.generation_config
    else:
        architecture = (AutoConfig.from_pretrained(path).architectures or [""])[0]
        classifier = architecture.endswith("ForSequenceClassification")
        auto = AutoModelForSequenceClassification if classifier else AutoModelForCausalLM
        model = auto.from_pretrained(path, dtype=getattr(torch, canonical_dtype(dtype)))
    return model.eval(), tokenizer


def run_settings(run_dir: str | Path) -> tuple[dict, dict]:
    """(task config, dataset config) of a finished run, from its saved .hydra/config.yaml (unresolved:
    paths may have moved since)."""
    from omegaconf import OmegaConf

    from hydratune.errors import UserError

    path = Path(run_dir) / ".hydra" / "config.yaml"
    exported = (
        Path(run_dir) / "export.json"
    )  # `hydratune export --out DIR`: the run it came from (review D11)
    if not path.is_file() and exported.is_file():
        import json

        source = json.loads(exported.read_text()).get("run_dir")
        if source and (Path(source) / ".hydra" / "config.yaml").is_file():
            path = Path(source) / ".hydra" / "config.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir}: no .hydra/config.yaml; give a run directory of python train.py")
    cfg = OmegaConf.load(path)
    plain = lambda key: OmegaConf.to_container(cfg[key], resolve=False) if key in cfg else {}  # noqa: E731
    return plain("task"), plain("dataset")
