"""Scoring with an exported reward model: prompts and responses rendered as the run's training data was."""

from __future__ import annotations

import torch

from hydratune.data.pairs import PAIR_FORMATS, column, scoring_ids


def render(
    prompt: str, response: str, dataset_cfg: dict, tokenizer, prompt_turns: list | None = None
) -> tuple[str, str]:
    """(prompt text, answer text) of one prompt and response in the run's pair format. `prompt_turns`: the
    prompt as a conversation, which the chat format reads instead of the prompt text as one user turn."""
    fmt = dataset_cfg.get("format", "pairs")
    chosen, rejected = column(dataset_cfg, "chosen_column"), column(dataset_cfg, "rejected_column")
    if fmt == "chat_pairs":
        turns = [
            *(prompt_turns or [{"role": "user", "content": prompt}]),
            {"role": "assistant", "content": response},
        ]
        row = {chosen: turns, rejected: turns}
    elif fmt == "alpaca_pairs":
        row = {"instruction": prompt, "input": "", chosen: response, rejected: response}
    else:
        row = {column(dataset_cfg, "prompt_column"): prompt, chosen: response, rejected: response}
    prompt_text, answer, _ = PAIR_FORMATS[fmt](row, dataset_cfg, tokenizer)
    return prompt_text, answer


def scoring_row(
    tokenizer,
    prompt: str,
    response: str,
    dataset_cfg: dict,
    max_length: int | None = None,
    prompt_turns: list | None = None,
) -> list[int]:
    """The token ids a reward model reads for one (prompt, response): rendered in the run's pair format,
    `[BOS] prompt answer EOS`, cut to `max_length` (default: the run's dataset.max_seq_length). `score`
    and GRPO's reward-model scorer (hydratune.rewards.RewardModelScorer) both use it."""
    limit = max_length or dataset_cfg.get("max_seq_length")
    return scoring_ids(tokenizer, *render(prompt, response, dataset_cfg, tokenizer, prompt_turns), limit)


def score(model, tokenizer, prompts: list[str], responses: list[str], dataset_cfg: dict) -> list[float]:
    """The reward of each (prompt, response): the token layout of training (`[BOS] prompt answer EOS`),
    cut to dataset.max_seq_length."""
    return score_ids(model, [scoring_row(tokenizer, p, r, dataset_cfg) for p, r in zip(prompts, responses)])


def chat_pair_ids(tokenizer, row: dict, dataset_cfg: dict) -> tuple[str, str, str, list[int], list[int]]:
    """A chat_pairs row (message lists) as training rendered it: (prompt, chosen, rejected texts, and the ids the
    model reads for chosen and for rejected). `hydratune score --file` of the run's own data (review T14)."""
    from hydratune.data.pairs import format_chat_pairs

    prompt, chosen, rejected = format_chat_pairs(row, dataset_cfg, tokenizer)
    limit = dataset_cfg.get("max_seq_length")
    return prompt, chosen, rejected, *(scoring_ids(tokenizer, prompt, a, limit) for a in (chosen, rejected))


@torch.no_grad()
def score_ids(model, rows: list[list[int]]) -> list[float]:
    """The one logit of each row of token ids, one row at a time (no padding to get wrong)."""
    out = []
    for ids in rows:
        input_ids = torch.tensor([ids], device=model.device)
        logits = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits
        out.append(float(logits[0, 0]))
    return out
