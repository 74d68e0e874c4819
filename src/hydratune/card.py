"""The model card (README.md) of each exported folder: what was trained from what, the prompt format it was
trained on, its results, and how to load it with plain transformers/peft. peft's own card for an adapter is
an empty template; a merged or full model had none."""

from __future__ import annotations

import json
from pathlib import Path

from hydratune.config import read_json

# The example a generative card renders in the run's prompt format (the default data's kind of instruction).
EXAMPLE = ("Write the word in capital letters.", "hydra")
SHOWN_METRICS = (
    "exported_step",  # load_best_model_at_end: the weights are this step's
    "exported_val_loss",
    "val_loss",
    "best_val_loss",
    "val_acc",
    "val_f1_macro",
    "val_accuracy",
    "val_margin",
    "val_reward",
)


def _base(cfg: dict) -> tuple[str, bool]:
    """(the base model as the run named it, or export.base_model's hub id; whether it is a folder on the
    training machine)."""
    named = (cfg.get("export") or {}).get("base_model")
    if named:
        return str(named), False
    name = str((cfg.get("model") or {}).get("pretrained_model_name_or_path") or "")
    return name, Path(name).expanduser().is_dir()


def _sources(cfg: dict) -> list[str]:
    out = []
    for source in (cfg.get("dataset") or {}).get("sources") or []:
        if source.get("path"):
            out.append(str(source["path"]))
        files = source.get("data_files")
        if isinstance(files, dict):
            out += [f"{split}: {Path(str(f)).name}" for split, f in files.items()]
        elif files:
            out.append(Path(str(files)).name)
    return out


def _prompt(task, cfg: dict, tokenizer) -> str | None:
    """The example instruction in the run's prompt format, or None where the task writes no text."""
    from hydratune.errors import UserError

    try:
        return task.prompt_text(cfg.get("dataset") or {}, tokenizer, *EXAMPLE)
    except (UserError, TypeError, KeyError, ValueError):
        try:
            return task.prompt_text(cfg.get("dataset") or {}, tokenizer, EXAMPLE[0])
        except (UserError, TypeError, KeyError, ValueError):
            return None


def _logged_prompt(run_dir: Path) -> str | None:
    """The first validation prompt the run logged (generations.jsonl, or GRPO's completions.jsonl), for a format
    that reads its prompts as written: the card's own example would be unlike the data (review O11)."""
    for name in ("generations.jsonl", "completions.jsonl"):
        try:
            with open(run_dir / name) as f:
                for line in f:
                    prompt = json.loads(line).get("prompt")
                    if isinstance(prompt, str) and prompt.strip():
                        return prompt
        except (OSError, ValueError, AttributeError):
            continue
    return None


def kind(folder: Path) -> str:
    """What an exported folder holds, from its own files: "causal" (a language model), "classifier" or "reward"
    (a sequence classifier whose one label is the reward). Not from the task: GRPO trains a causal LM and
    writes no generations.jsonl, and its cards were a classifier's (review O1)."""
    from hydratune.tasks.reward.module import REWARD_LABEL

    config = read_json(folder / "config.json") or {}
    architectures = [str(a) for a in config.get("architectures") or []]
    head = (read_json(folder / "adapter_config.json") or {}).get("task_type") == "SEQ_CLS" or any(
        a.endswith("ForSequenceClassification") for a in architectures
    )
    if not head:
        return "causal"
    return "reward" if list((config.get("id2label") or {}).values()) == [REWARD_LABEL] else "classifier"


def _load_snippet(folder: Path, what: str, base: str, chat: bool = False) -> str:
    name = folder.name
    if what != "causal" and name == "adapter":
        snippet = (
            "from peft import PeftModel\n"
            "from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer\n\n"
            f'BASE = "{base}"  # the base model, a hub id or a folder\n'
            f'config = AutoConfig.from_pretrained("{name}")  # labels and head size\n'
            "base = AutoModelForSequenceClassification.from_pretrained(BASE, config=config)\n"
            f'model = PeftModel.from_pretrained(base, "{name}")\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{name}")'
        )
    elif what == "reward":
        snippet = (
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n\n"
            f'model = AutoModelForSequenceClassification.from_pretrained("{name}")\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{name}")'
        )
    elif what == "classifier":
        return (
            f'from transformers import pipeline\n\nclassify = pipeline("text-classification", model="{name}")'
        )
    elif name == "adapter":
        snippet = (
            "from peft import AutoPeftModelForCausalLM\nfrom transformers import AutoTokenizer, GenerationConfig\n\n"
            f'model = AutoPeftModelForCausalLM.from_pretrained("{name}")\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{name}")'
        )
        # peft keeps the base's generation config: its stop ids were lost (O2)
        if (folder / "generation_config.json").is_file():
            snippet += (
                f'\nmodel.generation_config = GenerationConfig.from_pretrained("{name}")  # the trained stop'
            )
        return snippet
    else:
        return (
            "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f'model = AutoModelForCausalLM.from_pretrained("{name}")\n'
            f'tokenizer = AutoTokenizer.from_pretrained("{name}")'
        )
    if what == "reward" and not chat:  # the one logit, no sigmoid; the ids as training laid them out
        snippet += (
            "\n\nimport torch\n\n"
            'prompt, response = "copy: stone -> ", "STONE"\n'
            "ids = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []  # BOS, as in training\n"
            'ids += tokenizer(prompt, add_special_tokens=False)["input_ids"]\n'
            'ids += tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]\n'
            "with torch.no_grad():\n"
            "    reward = model(input_ids=torch.tensor([ids])).logits[0, 0].item()"
        )
    return snippet


def write_card(folder: Path, cfg: dict, metrics: dict, task, tokenizer, run_dir: Path | None = None) -> Path:
    """Write `folder/README.md` for an exported adapter/, model/ or merged/ folder of `run_dir` (by default the
    folder above it)."""
    base, local = _base(cfg)
    task_name = (cfg.get("task") or {}).get("name", "sft")
    peft = (cfg.get("peft") or {}).get("method", "none")
    what = kind(folder)
    classifier = what != "causal"
    adapter = folder.name == "adapter"
    front = ["---", f"library_name: {'peft' if adapter else 'transformers'}"]
    if base and not local:
        front.append(f"base_model: {base}")
    front += ["tags:", "  - hydratune", f"  - {task_name}", "---", ""]
    lines = [
        f"# {cfg.get('name', 'run')}",
        "",
        f"Trained with hydratune (task={task_name}, peft={peft}) from `{base}`"
        + (" (a folder on the training machine)" if local else "")
        + ".",
        "",
    ]
    if adapter and local:
        lines += [
            "`adapter_config.json` names the base by that folder. Elsewhere, set its `base_model_name_or_path` to "
            "the same model's hub id or folder before loading (or train with `export.base_model=ORG/NAME`).",
            "",
        ]
    data = cfg.get("dataset") or {}
    lines += ["## Data and prompt format", ""]
    if _sources(cfg):
        lines.append("Data: " + ", ".join(f"`{s}`" for s in _sources(cfg)) + ".")
    fmt = data.get("format", "alpaca")
    template = data.get("template") or data.get("chat_template")
    if what == "reward":  # a pair's prompt and each answer, scored as one text
        chat = fmt == "chat_pairs"
        lines.append(
            f"Pairs: `{fmt}`. A response is scored as training read it: "
            + ("the prompt turns and the response as the assistant's turn, in the chat template"
               if chat else "the prompt, the response and EOS (BOS first where the tokenizer adds one)")
            + "; the reward is the one logit, with no sigmoid (`hydratune score RUN --prompt P --response R` "
            "prints it)."
        )  # fmt: skip
    elif classifier:  # a classification run has no prompt format (the card said alpaca): its text columns
        pair = data.get("text_pair_column")
        joined = (
            f" joined with {data.get('pair_separator', chr(10))!r} where the tokenizer has no separator token"
        )
        lines.append(
            f"Text: column `{data.get('text_column')}`" + (f", then `{pair}`{joined}" if pair else "") + "."
        )
    else:
        lines.append(f"Format: `{fmt}`" + (f", template `{template}`" if template else "") + ".")
    prompt = None if classifier else _prompt(task, cfg, tokenizer)
    lead = "Prompt the model as it was trained (the answer follows; BOS first where the tokenizer has one):"
    from hydratune.data.formats import CHAT_FORMATS

    chat = fmt in (*CHAT_FORMATS, "chat_pairs") or data.get("prompt_format") == "chat"  # the chat template's
    if prompt == EXAMPLE[0]:  # the format takes a prompt as written: show one of the run's own
        logged = _logged_prompt(run_dir or folder.parent)
        shown = "A validation prompt of this run:" if logged else "For example:"
        prompt = logged or prompt
        lead = (
            "The model reads its prompts as written, with no template (the answer follows; BOS first where the "
            f"tokenizer has one). {shown}"
        )
    elif prompt is not None and chat and (logged := _logged_prompt(run_dir or folder.parent)):
        # a real conversation's turns, its system turn with them: the example had none, and showed the
        # template's default system prompt, which the data never had (review T10)
        prompt, lead = logged, lead.removesuffix(":") + ". A validation prompt of this run:"
    if prompt is not None:
        lines += [
            "",
            lead,
            "",
            "```text",
            prompt,
            "```",
        ]
        if not chat and getattr(tokenizer, "chat_template", None):
            lines += ["", "The tokenizer's chat template is the base model's: this run did not train on it."]
    quantized = (cfg.get("quantization") or {}).get("method", "none") != "none"
    if quantized and folder.name == "merged":  # review O6: the metrics are the 4-bit base's, not this model's
        q = cfg.get("quantization") or {}
        quant_type = (q.get("config") or {}).get("bnb_4bit_quant_type")
        method = f"{q.get('bits', '')}-bit" + (f" ({quant_type})" if quant_type else "")
        lines += [
            "",
            f"The run trained its adapter on a {method} quantized base, and its metrics are that model's. This merge "
            "folds the adapter into the full-precision base, which answers somewhat differently (more so for a "
            "small model); to reproduce the run's metrics, load adapter/ on the base quantized as the run's "
            "`quantization.config` says."
            + (
                f" Measured: max |logit difference| {gap:.3g} between the two on three test prompts."
                if isinstance(gap := metrics.get("merged_vs_trained_max_abs_logit_diff"), float)
                else ""
            ),
        ]
    # generation_config.json has the stop ids; llama.cpp's GGUF and Ollama keep EOS only (review O5)
    stops = task.stop(cfg) if what == "causal" and callable(getattr(task, "stop", None)) else []
    if stops:
        lines += [
            "",
            f"Trained to end its answers at {', '.join(repr(s) for s in stops)} (generation_config.json's "
            "eos_token_id): a server that does not read that file (llama.cpp, Ollama) needs it as a stop string.",
        ]
    lines += ["", "## Training", ""]
    trainer = cfg.get("trainer") or {}
    optimizer = cfg.get("optimizer") or {}
    settings = {"effective batch": metrics.get("effective_batch_size"), "learning rate": optimizer.get("lr"),
                "precision": metrics.get("precision") or trainer.get("precision")}  # fmt: skip
    # what the launch did not record (hydratune export of an old run) is left out, not printed as None
    known = "".join(f", {k} {v}" for k, v in settings.items() if v is not None)
    lines.append(f"- steps: {metrics.get('steps')}{known}")
    for key in SHOWN_METRICS:
        value = metrics.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            lines.append(f"- {key}: {value}" if isinstance(value, int) else f"- {key}: {value:.4f}")
    snippet = _load_snippet(folder, what, base, chat=fmt == "chat_pairs")
    lines += ["", "## Load", "", "```python", snippet, "```", ""]
    if classifier and adapter:
        id2label = {
            int(k): v for k, v in ((read_json(folder / "config.json") or {}).get("id2label") or {}).items()
        }
        told = (
            f'`AutoPeftModelForSequenceClassification.from_pretrained("adapter", num_labels={len(id2label)}, '
            f"id2label={id2label}, label2id={ {v: k for k, v in id2label.items()} })`, "
            if id2label
            else ""
        )
        lines += [
            "`AutoPeftModelForSequenceClassification` and `pipeline` rebuild the base with two labels, not this "
            f"head's: load as above, or {told + 'or ' if told else ''}use a merged model (`export.merge=true`, or "
            "`hydratune merge RUN_DIR`).",
            "",
        ]
    config = (cfg.get("peft") or {}).get("config") or {}
    if adapter and (config.get("use_dora") or config.get("use_rslora") or peft in ("dora", "rslora")):
        lines += [
            "A DoRA or rsLoRA adapter: llama.cpp's LoRA converter refuses DoRA's magnitude vectors and scales "
            "rsLoRA by alpha/r instead of alpha/sqrt(r). Convert or serve a merged model instead "
            "(`export.merge=true`, or `hydratune merge RUN_DIR`).",
            "",
        ]
    (folder / "README.md").write_text("\n".join(front + lines))
    return folder / "README.md"


def cards(
    run_dir: Path, cfg: dict, metrics: dict, task, tokenizer, logged_in: Path | None = None
) -> list[Path]:
    """A card in every exported folder of a run (adapter/ or model/, and merged/); `logged_in`: the run folder
    whose logs the cards read, where the exports are elsewhere (`hydratune export --out`)."""
    written = []
    for name in ("adapter", "model", "merged"):
        folder = run_dir / name
        if (folder / "config.json").is_file() or (folder / "adapter_config.json").is_file():
            written.append(write_card(folder, cfg, metrics, task, tokenizer, logged_in or run_dir))
    return written


def write_merged_card(run_dir: Path, folder: Path, extra: dict) -> Path | None:
    """The card of a folder `hydratune merge` wrote, from the run's saved config and metrics.json (as
    export.merge writes it); None for an adapter outside a run folder."""
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    from hydratune.tasks.registry import get_task

    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        return None
    loaded = OmegaConf.load(saved)
    cfg = OmegaConf.to_container(loaded, resolve=False)
    for key in cfg:  # resolved where it can be; ${hydra:...} only the launch could resolve
        try:
            node = OmegaConf.select(loaded, str(key))
            cfg[key] = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        except Exception:
            pass
    metrics = (
        json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
    )
    task = get_task(cfg.get("task"))
    return write_card(folder, cfg, metrics | extra, task, AutoTokenizer.from_pretrained(folder), run_dir)


def card_metadata(folder: Path) -> dict:
    """The front matter of a card as a dict (for tests and tools)."""
    import yaml

    text = (folder / "README.md").read_text()
    return yaml.safe_load(text.split("---")[1]) if text.startswith("---") else {}
