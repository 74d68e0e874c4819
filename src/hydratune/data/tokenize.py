"""Tokenize (prompt, response) pairs into input ids and labels with the prompt masked out."""

from __future__ import annotations

IGNORE_INDEX = -100  # label value that cross-entropy skips


def tokenize_pair(
    prompt: str, response: str, tokenizer, max_seq_length: int, train_on: str = "response"
) -> dict[str, list[int]]:
    """`[BOS] prompt response EOS`, labels -100 on BOS and the prompt (unless `train_on == "all"`).

    Prompt and response are tokenized separately so the boundary between them is exact. Sequences
    longer than `max_seq_length` are cut from the right.
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    input_ids = bos + prompt_ids + response_ids
    if train_on == "all":
        labels = [IGNORE_INDEX] * len(bos) + prompt_ids + response_ids
    else:
        labels = [IGNORE_INDEX] * (len(bos) + len(prompt_ids)) + response_ids
    return {"input_ids": input_ids[:max_seq_length], "labels": labels[:max_seq_length]}
