"""Load a finished run's artifact (adapter, merged or full model) and generate from it."""

from __future__ import annotations

from pathlib import Path

from hydratune.config import canonical_dtype

ARTIFACTS = ("merged", "adapter", "model")  # searched in this order


def find_artifact(run_dir: str | Path, prefer: str | None = None) -> Path:
    """The artifact directory of a run: `prefer` if given, else merged/, adapter/ or model/."""
    run_dir = Path(run_dir)
    names = (prefer,) if prefer else ARTIFACTS
    for name in names:
        if (run_dir / name).is_dir():
            return run_dir / name
    raise FileNotFoundError(
        f"{run_dir} has no {' or '.join(n + '/' for n in names)} directory; is it a finished run?"
    )


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

    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if (path / "adapter_config.json").exists():
        from peft import PeftModel

        from hydratune.export import load_adapter_base

        model = PeftModel.from_pretrained(load_adapter_base(path, dtype), path)
    else:
        architecture = (AutoConfig.from_pretrained(path).architectures or [""])[0]
        classifier = architecture.endswith("ForSequenceClassification")
        auto = AutoModelForSequenceClassification if classifier else AutoModelForCausalLM
        model = auto.from_pretrained(path, dtype=getattr(torch, canonical_dtype(dtype)))
    return model.eval(), tokenizer


def generate(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int = 64,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    batch_size: int = 16,
) -> list[str]:
    """Completions of `prompts` (already formatted), cut at EOS. Greedy unless `do_sample`."""
    import torch

    tokenizer.padding_side = "left"  # decoder-only models continue from the right edge
    outputs = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        ids = [bos + tokenizer(p, add_special_tokens=False)["input_ids"] for p in chunk]
        width = max(len(x) for x in ids)
        input_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(x)) + x for x in ids])
        attention_mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
        sampling = {"temperature": temperature, "top_p": top_p} if do_sample else {}
        with torch.no_grad():
            out = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=max_new_tokens,
                do_sample=do_sample,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                **sampling,
            )
        outputs += tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    return outputs
