"""Write the trained artifact as a standard Hugging Face directory that transformers/peft load as-is."""

from __future__ import annotations

from pathlib import Path


def is_peft_model(model) -> bool:
    return hasattr(model, "peft_config")


def export_artifact(model, tokenizer, run_dir: str | Path) -> Path:
    """`adapter/` for PEFT models, `model/` for full fine-tuning; tokenizer files beside the weights."""
    out = Path(run_dir) / ("adapter" if is_peft_model(model) else "model")
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        generation.eos_token_id = tokenizer.eos_token_id
        generation.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    if is_peft_model(model) and generation is not None:
        generation.save_pretrained(out)
    return out
