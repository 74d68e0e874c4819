"""Generate text with a trained model (load it with hydratune.export.load_artifact)."""

from __future__ import annotations

from hydratune.data.tokenize import end_of_turn_id


def stop_ids(model, tokenizer) -> list[int]:
    """The ids that end an answer: the tokenizer's EOS, those of the model's generation_config, where a chat
    model names its end of turn (Llama 3 Instruct's <|eot_id|>, Gemma's <end_of_turn>), and the token the chat
    template ends an answer with, which a base model's config may not name (`end_of_turn_id`)."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = [tokenizer.eos_token_id, *(configured if isinstance(configured, list) else [configured])]
    return list(dict.fromkeys(i for i in [*ids, end_of_turn_id(tokenizer)] if i is not None))


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
    """Completions of `prompts` (already formatted), cut at EOS (or the model's end of turn, `stop_ids`).
    Greedy unless `do_sample`."""
    import torch

    from hydratune.data.pairs import bos_first

    tokenizer.padding_side = "left"  # decoder-only models continue from the right edge
    outputs = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        ids = [
            bos_first(tokenizer(p, add_special_tokens=False)["input_ids"], tokenizer.bos_token_id)
            for p in chunk
        ]
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
                eos_token_id=stop_ids(model, tokenizer),
                pad_token_id=tokenizer.pad_token_id,
                **sampling,
            )
        outputs += tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
    return outputs
