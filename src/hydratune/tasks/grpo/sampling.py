"""Sampling completions for GRPO: prompts x generations, batched, with the KV cache, seeded.

Layout: the completions of prompt i are rows i*G .. i*G+G-1 (G = `num_generations`), the order that
`loss.group_advantages` expects. Prompts are LEFT padded so that every row's next token is in the
last column; position ids count real tokens only, so a padded prompt continues exactly as it would
alone.

The cache is on here (`use_cache=True`): each new token attends to the stored keys/values instead of
recomputing the prefix. Training forwards must pass `use_cache=False` (see the packed-attention note
in DESIGN.md); sampling has no packed rows, so the cache is safe and is what makes it fast.

Two implementations of the same distribution: `method="loop"` is a small hand-written decoding
loop (one prefill per distinct prompt, its cache repeated G times, a `torch.Generator` for the draws);
`method="generate"` calls `model.generate` on the G-times repeated prompts with the global RNG forked
and seeded. The loop is the default: on the shipped tiny model (16 prompts x 8 generations x 16 new
tokens, `scripts/grpo_probe.py --bench-sampling`, 1 thread on a shared 2-core CPU) it sampled
~4,100 tokens/s against generate's ~2,200 (load average ~10), and ~14,000 against ~9,000 on a less
loaded moment; generate's per-step overhead (logits processors, stopping criteria, cache set-up)
dominates on a model this small. Its seed is also independent of any other use of the global RNG.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field

import torch

from hydratune.data.pairs import bos_first
from hydratune.generate import stop_ids as stop_ids_of


@dataclass
class Samples:
    """What one sampling call produced. N = number of prompts x num_generations.

    prompt_ids/prompt_mask: [N, P], left padded. completion_ids/completion_mask: [N, C] with C <= the
    requested max_new_tokens; the mask is 1 up to and including the row's stop token (EOS or one of
    `stop_token_ids`) and 0 after it (those ids are pad). texts: completions decoded without special
    tokens (a stop token that is an ordinary character, such as a newline, stays in the text): what was
    sampled. answers: the same without the stop token that ended them, as reward functions receive them
    (TRL hands completions without EOS); the loss still covers the stop token (the mask), it was sampled.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    texts: list[str]
    answers: list[str] = field(default_factory=list)
    seconds: float = 0.0
    stats: dict[str, float] = field(default_factory=dict)

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """Prompt + completion as one training forward's inputs (pass use_cache=False with them).

        Position ids count real tokens only, as while sampling. The logits at columns P-1 .. P+C-2
        (P = prompt width) predict the completion tokens: `logits[:, P - 1 : -1]`.
        """
        mask = torch.cat([self.prompt_mask, self.completion_mask], dim=1)
        return {
            "input_ids": torch.cat([self.prompt_ids, self.completion_ids], dim=1),
            "attention_mask": mask,
            "position_ids": (mask.cumsum(-1) - 1).clamp(min=0),
        }

    @property
    def num_tokens(self) -> int:
        """Completion tokens sampled (stop tokens included, padding not)."""
        return int(self.completion_mask.sum())


def encode_prompts(tokenizer, prompts: list[str], add_bos: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask of `prompts`, LEFT padded to the longest: ([B, P], [B, P]). BOS once:
    not added where the prompt's text already begins with it (a chat template that writes it)."""
    bos = tokenizer.bos_token_id if add_bos else None
    rows = [bos_first(tokenizer(p, add_special_tokens=False)["input_ids"], bos) for p in prompts]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row)
        mask[i, width - len(row) :] = 1
    return ids, mask


def pick_tokens(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Next token per row from `logits` [N, V]: argmax at temperature 0, else a draw from the
    temperature-scaled distribution cut to its top-p nucleus (the smallest set of tokens whose
    probability reaches top_p; the most likely token is always kept)."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Drop a token when the tokens ranked above it already reach top_p.
        drop = sorted_probs.cumsum(-1) - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _completion_mask(completion_ids: torch.Tensor, stop_ids: torch.Tensor) -> torch.Tensor:
    """1 up to and including each row's first stop token, 0 after it (all ones if it never stops)."""
    is_stop = torch.isin(completion_ids, stop_ids).long()
    stops_before = is_stop.cumsum(-1) - is_stop  # stop tokens strictly before each position
    return (stops_before == 0).long()


def takes_logits_to_keep(model) -> bool:
    """Whether the model's forward takes `logits_to_keep` (transformers' causal LMs do, some remote-code
    models do not): then only the positions whose logits are used go through the output layer."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


@torch.no_grad()
def _loop(model, ids, mask, num_generations, max_new_tokens, temperature, top_p, stop_ids, pad_id, generator):
    """Hand-written decoding: one prefill per distinct prompt, its cache repeated for the G rows."""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    last_only = {"logits_to_keep": 1} if takes_logits_to_keep(model) else {}
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **last_only)
    cache = out.cache
    logits = out.logits[:, -1].repeat_interleave(num_generations, dim=0)
    if num_generations > 1:
        cache.batch_repeat_interleave(num_generations)
    mask = mask.repeat_interleave(num_generations, dim=0)
    next_position = positions[:, -1:].repeat_interleave(num_generations, dim=0) + 1
    finished = torch.zeros(mask.shape[0], dtype=torch.bool, device=mask.device)
    tokens = []
    for _ in range(max_new_tokens):
        token = pick_tokens(logits, temperature, top_p, generator)
        token = token.masked_fill(finished, pad_id)
        tokens.append(token)
        finished |= torch.isin(token, stop_ids)
        if finished.all():
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = model(
            input_ids=token[:, None],
            attention_mask=mask,
            position_ids=next_position,
            cache=cache,
            use_cache=True,
        )
        cache, logits, next_position = out.cache, out.logits[:, -1], next_position + 1
    return torch.stack(tokens, dim=1)


@torch.no_grad()
def _generate(model, ids, mask, num_generations, max_new_tokens, temperature, top_p, stop_ids, pad_id, seed):
    """`model.generate` with the global RNG forked and seeded (the caller's RNG state is untouched)."""
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
    with torch.random.fork_rng(devices=[ids.device] if ids.device.type == "cuda" else []):
        torch.manual_seed(seed)
        out = model.generate(
            input_ids=ids.repeat_interleave(num_generations, dim=0),
            attention_mask=mask.repeat_interleave(num_generations, dim=0),
            max_new_tokens=max_new_tokens,
            eos_token_id=stop_ids.tolist(),
            pad_token_id=pad_id,
            use_cache=True,
            **(sampling if temperature > 0 else {"do_sample": False}),
        )
    return out[:, ids.shape[1] :]


def sample(
    model,
    tokenizer,
    prompts: list[str],
    num_generations: int = 1,
    max_new_tokens: int = 32,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int = 0,
    stop_token_ids: list[int] | None = None,
    method: str = "loop",
) -> Samples:
    """Sample `num_generations` completions of each prompt (texts as training saw them, no BOS).

    Args:
        temperature: 0 means greedy (then every generation of a prompt is the same).
        seed: the whole draw is a function of (model, prompts, settings, seed); pass e.g. the run's
            seed + the global step so that a resumed run samples the same completions.
        stop_token_ids: tokens that end a completion besides EOS (e.g. a newline id when answers are
            one line); the stop token is part of the completion and its mask.
        method: "loop" (default, the faster: see the module docstring) or "generate".
    """
    if max_new_tokens < 1 or num_generations < 1:
        raise ValueError(f"max_new_tokens={max_new_tokens}, num_generations={num_generations}: give >= 1")
    was_training = model.training
    model.eval()
    start = time.perf_counter()
    device = next(model.parameters()).device
    ids, mask = (t.to(device) for t in encode_prompts(tokenizer, prompts))
    ends = {*stop_ids_of(model, tokenizer), *(stop_token_ids or [])}  # EOS and the model's end of turn
    stop_ids = torch.tensor(sorted(ends), device=device)
    pad_id = tokenizer.pad_token_id
    if method == "loop":
        generator = torch.Generator(device=device).manual_seed(seed)
        args = (num_generations, max_new_tokens, temperature, top_p, stop_ids, pad_id)
        completion_ids = _loop(model, ids, mask, *args, generator)
    elif method == "generate":
        args = (num_generations, max_new_tokens, temperature, top_p, stop_ids, pad_id)
        completion_ids = _generate(model, ids, mask, *args, seed)
    else:
        raise ValueError(f"sampling method {method!r}: use loop or generate")
    completion_mask = _completion_mask(completion_ids, stop_ids)
    completion_ids = completion_ids.masked_fill(completion_mask == 0, pad_id)
    kept = [row[m.bool()] for row, m in zip(completion_ids, completion_mask)]
    texts = tokenizer.batch_decode(kept, skip_special_tokens=True)
    # The answer a reward reads ends before the stop token that ended it (EOS is special: decoded away).
    stops = set(stop_ids.tolist())
    ends = [row[:-1] if len(row) and int(row[-1]) in stops else row for row in kept]
    answers = tokenizer.batch_decode(ends, skip_special_tokens=True)
    model.train(was_training)
    samples = Samples(
        prompt_ids=ids.repeat_interleave(num_generations, dim=0),
        prompt_mask=mask.repeat_interleave(num_generations, dim=0),
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        texts=texts,
        answers=answers,
        seconds=time.perf_counter() - start,
    )
    samples.stats = {
        "tokens_per_second": samples.num_tokens / max(samples.seconds, 1e-9),
        "completion_length": samples.num_tokens / len(texts),
        "stopped_fraction": float(torch.isin(completion_ids, stop_ids).any(-1).float().mean()),
    }
    return samples
