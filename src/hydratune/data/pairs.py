"""Preference data: pairs (a prompt, a chosen and a rejected answer) and KTO rows (a prompt, one
completion, a desirable/undesirable flag); their formats, tokenization with counted drops, and collators.

A format renders a row into text: `(prompt, chosen, rejected)` for pairs, `(prompt, completion, label)`
for KTO. It is chosen by name in the dataset config (`format: pairs` -> `PAIR_FORMATS["pairs"]`), and
reads its columns from config keys (`prompt_column`, `chosen_column`, `rejected_column`,
`completion_column`, `label_column`). Prompt templates and chat templates are those of
`hydratune.data.formats`, so a preference run sees prompts exactly as an SFT run on the same data.

Token layout (as SFT's `tokenize_samples`): prompt ids `[BOS] prompt`, answer ids `answer EOS`; only
answer tokens are scored. Chosen and rejected are tokenized separately, each after the same prompt.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from hydratune.data.formats import SHAREGPT_DEFAULTS, _text, alpaca_prompt, format_messages
from hydratune.data.tokenize import IGNORE_INDEX, end_of_turn_id, ends_answer
from hydratune.errors import UserError

# Column keys with their defaults (a dataset config may leave them unset).
COLUMN_DEFAULTS = {
    "prompt_column": "prompt",
    "chosen_column": "chosen",
    "rejected_column": "rejected",
    "completion_column": "completion",
    "label_column": "label",
}
# Why a row is dropped, in the order the checks run (the first that applies is counted).
DROP_REASONS = ("empty_answer", "identical", "long_prompt")


def column(cfg: dict, key: str) -> str:
    return cfg.get(key) or COLUMN_DEFAULTS[key]


def format_pairs(row: dict, cfg: dict, tokenizer=None) -> tuple[str, str, str]:
    """`{prompt, chosen, rejected}` strings, used as they are. Without a prompt column (Anthropic's hh-rlhf,
    TRL's implicit prompt) the prompt is the text chosen and rejected share, as TRL's maybe_extract_prompt
    takes it: up to where they differ, less a space that ends it."""
    if column(cfg, "prompt_column") not in row:
        chosen, rejected = (_text(row, column(cfg, key)) for key in ("chosen_column", "rejected_column"))
        at = shared_start(chosen, rejected)
        if not chosen[:at].strip():
            raise UserError(
                f"dataset: no {column(cfg, 'prompt_column')!r} column, and chosen and rejected share no text to "
                "be the prompt: give the prompt its own column (dataset.prompt_column)"
            )
        return chosen[:at], chosen[at:], rejected[at:]
    return tuple(
        _text(row, column(cfg, key)) for key in ("prompt_column", "chosen_column", "rejected_column")
    )


def shared_start(chosen: str, rejected: str) -> int:
    """Where two texts stop agreeing (TRL's implicit-prompt rule: a space just before is the answer's)."""
    at = next(
        (i for i, (a, b) in enumerate(zip(chosen, rejected)) if a != b), min(len(chosen), len(rejected))
    )
    return at - 1 if at > 0 and chosen[at - 1] == " " else at


def format_alpaca_pairs(row: dict, cfg: dict, tokenizer=None) -> tuple[str, str, str]:
    """`{instruction, input, chosen, rejected}`: the prompt is the alpaca template (`dataset.template`)."""
    prompt = alpaca_prompt(
        _text(row, "instruction"), _text(row, "input", optional=True), cfg.get("template", "alpaca")
    )
    return prompt, _text(row, column(cfg, "chosen_column")), _text(row, column(cfg, "rejected_column"))


def _turns(value, cfg: dict, answer: bool = False) -> list:
    """A cell of chat_pairs as `{role, content}` messages: a list of turns, or one turn on its own (LLaMA-Factory's
    and Axolotl's chosen/rejected), or for an answer its text alone (Axolotl's); turns keyed otherwise
    (`{from, value}`) are renamed by dataset.role_key, content_key and roles, as format=sharegpt reads them."""
    if answer and isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    turns = [value] if isinstance(value, dict) else value if isinstance(value, list) else []
    role_key, content_key, roles = cfg.get("role_key"), cfg.get("content_key"), cfg.get("roles") or {}
    if not (role_key or content_key or roles):
        return turns
    role_key, content_key = role_key or "role", content_key or "content"
    roles = roles or SHAREGPT_DEFAULTS["roles"]  # as format=sharegpt reads them
    return [
        {"role": roles.get(t.get(role_key), t.get(role_key)), "content": t.get(content_key)}
        if isinstance(t, dict) else t
        for t in turns
    ]  # fmt: skip


def format_chat_pairs(row: dict, cfg: dict, tokenizer=None) -> tuple[str, str, str]:
    """Chosen and rejected as `[{role, content}, ...]` conversations that share every turn but the last,
    an assistant turn in both. The prompt turns may also sit in their own column (`prompt_column`,
    a message list), with chosen/rejected holding only the answer turn (TRL's conversational layout).

    Rendered with the tokenizer's chat template (set it with `dataset.chat_template`, as for `messages`):
    the prompt is the shared turns plus the assistant header (`add_generation_prompt`), each answer the
    rest of its rendered conversation.
    """
    prompt_turns = _turns(row.get(column(cfg, "prompt_column")), cfg)
    prompt = row.get(column(cfg, "prompt_column"))
    chosen_turns = _turns(row.get(column(cfg, "chosen_column")), cfg, answer=True)
    if isinstance(prompt, str) and prompt.strip():  # a text prompt beside message-list answers: a user turn,
        opening = chosen_turns[0] if chosen_turns else {}  # unless the answers repeat it (UltraFeedback)
        if not (opening.get("role") == "user" and str(opening.get("content", "")).strip() == prompt.strip()):
            prompt_turns = [{"role": "user", "content": prompt}]
    system = row.get(cfg["system_column"]) if cfg.get("system_column") else None
    first = (prompt_turns or chosen_turns or [{}])[0]
    if isinstance(system, str) and system.strip() and first.get("role") != "system":
        prompt_turns = [{"role": "system", "content": system}, *prompt_turns]  # dataset.system_column
    rejected_turns = _turns(row.get(column(cfg, "rejected_column")), cfg, answer=True)
    conversations, rendered = [], []
    for key, answer in (("chosen_column", chosen_turns), ("rejected_column", rejected_turns)):
        name = column(cfg, key)
        messages = prompt_turns + answer
        # format_messages checks roles and contents, with the same one-line errors as SFT's chat data.
        segments = format_messages({name: messages}, {"messages_column": name}, tokenizer)
        if messages[-1]["role"] != "assistant":
            raise UserError(f"dataset: column {name!r} must end with an assistant turn (the answer)")
        conversations.append(messages)
        last = max(i for i, (_, trained) in enumerate(segments) if trained)
        rendered.append(("".join(t for t, _ in segments[:last]), "".join(t for t, _ in segments[last:])))
    chosen, rejected = conversations
    if not chosen[:-1]:
        raise UserError(
            f"dataset: the pair has no prompt turns (columns {column(cfg, 'chosen_column')!r} and "
            f"{column(cfg, 'rejected_column')!r} hold only the answer, and there is no "
            f"{column(cfg, 'prompt_column')!r} column): give the prompt turns, or for text pairs with the prompt "
            "inside them (hh-rlhf) use dataset.format=pairs"
        )
    if chosen[:-1] != rejected[:-1] or rendered[0][0] != rendered[1][0]:
        raise UserError(
            f"dataset: columns {column(cfg, 'chosen_column')!r} and {column(cfg, 'rejected_column')!r} must "
            "share every turn but the last assistant one (the prompt)"
        )
    # The prompt: the shared turns and the answer's header; each answer: the rest of its conversation.
    return rendered[0][0], rendered[0][1], rendered[1][1]


def format_kto(row: dict, cfg: dict, tokenizer=None) -> tuple[str, str, bool]:
    """`{prompt, completion, label}`: label True (or 1) for a desirable completion, False (0) otherwise. Prompt and
    completion are texts, or TRL's conversational rows (message lists: the prompt turns and the one answer turn),
    rendered with the tokenizer's chat template as chat_pairs renders them."""
    name = column(cfg, "label_column")
    label = row.get(name)
    if isinstance(label, str) and label.strip().lower() in ("true", "false", "1", "0"):
        label = label.strip().lower() in ("true", "1")  # "true" or "1" in quotes: a CSV cell, or JSON as text
    if label not in (True, False):  # also accepts 0 and 1, which compare equal
        raise UserError(
            f"dataset: column {name!r} holds {label!r} ({type(label).__name__}); use true/false or 1/0 per row"
        )
    prompt, completion = row.get(column(cfg, "prompt_column")), row.get(column(cfg, "completion_column"))
    if isinstance(prompt, list | dict) or isinstance(completion, list | dict):
        return (*_chat_kto(row, cfg, tokenizer), bool(label))
    return _text(row, column(cfg, "prompt_column")), _text(row, column(cfg, "completion_column")), bool(label)


def _chat_kto(row: dict, cfg: dict, tokenizer) -> tuple[str, str]:
    """A conversational KTO row as (prompt, completion) text: the prompt turns and the answer's header, then the
    rest of the rendered conversation (review F9)."""
    prompt_name, completion_name = column(cfg, "prompt_column"), column(cfg, "completion_column")
    prompt = row.get(prompt_name)
    turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else _turns(prompt, cfg)
    answer = _turns(row.get(completion_name), cfg, answer=True)
    opening = answer[0] if answer and isinstance(answer[0], dict) else {}
    if (
        isinstance(prompt, str)
        and opening.get("role") == "user"
        and str(opening.get("content", "")).strip() == prompt.strip()
    ):
        turns = []  # the completion's turns repeat the text prompt (UltraFeedback-binarized): once, as chat_pairs
    if not turns and opening.get("role") in (None, "assistant"):
        raise UserError(f"dataset: column {prompt_name!r} holds no prompt turns for the conversational row")
    messages = turns + answer
    segments = format_messages({completion_name: messages}, {"messages_column": completion_name}, tokenizer)
    if messages[-1].get("role") != "assistant":
        raise UserError(f"dataset: column {completion_name!r} must end with an assistant turn (the answer)")
    last = max(i for i, (_, trained) in enumerate(segments) if trained)
    return "".join(t for t, _ in segments[:last]), "".join(t for t, _ in segments[last:])


PAIR_FORMATS: dict[str, Callable[..., tuple]] = {
    "pairs": format_pairs,
    "alpaca_pairs": format_alpaca_pairs,
    "chat_pairs": format_chat_pairs,
    "kto": format_kto,
}


def required_pair_columns(fmt: str, cfg: dict) -> list[str]:
    """Columns a preference format reads (a separate prompt column of chat_pairs is optional)."""
    return {
        "pairs": [column(cfg, k) for k in ("chosen_column", "rejected_column")],  # the prompt may be implicit
        "alpaca_pairs": ["instruction", column(cfg, "chosen_column"), column(cfg, "rejected_column")],
        "chat_pairs": [column(cfg, "chosen_column"), column(cfg, "rejected_column")],
        "kto": [column(cfg, k) for k in ("prompt_column", "completion_column", "label_column")],
    }[fmt]


def read_pair_columns(fmt: str, cfg: dict) -> set[str]:
    """Every column a preference format reads, the optional ones included (KTO also reads TRL's paired
    layout, which it unpairs)."""
    reads = set(required_pair_columns(fmt, cfg)) | {column(cfg, "prompt_column")}
    if fmt == "alpaca_pairs":
        reads.add("input")
    if fmt == "kto":
        reads |= {column(cfg, "chosen_column"), column(cfg, "rejected_column")}
    return reads


def check_pair_config(cfg: dict, kto: bool = False) -> str:
    """Validate the preference dataset keys; returns the format name. `kto`: the task reads KTO rows."""
    fmt = cfg.get("format")
    allowed = ["kto"] if kto else [name for name in PAIR_FORMATS if name != "kto"]
    if fmt not in allowed:
        raise UserError(
            f"dataset.format={fmt!r} is not a {'KTO' if kto else 'preference-pair'} format; "
            f"use one of: {', '.join(allowed)}"
        )
    if not isinstance(cfg.get("max_seq_length"), int) or cfg["max_seq_length"] < 2:
        raise UserError(f"dataset.max_seq_length={cfg.get('max_seq_length')!r}: give a number of tokens >= 2")
    if cfg.get("system_column") and fmt != "chat_pairs":
        name = cfg["system_column"]
        raise UserError(
            f"dataset.system_column={name}: format={fmt} renders no system turn (chat_pairs does); put it in the "
            f"prompt with a map op, e.g. dataset.ops=[{{map:{{prompt:'{{{name}}} {{prompt}}'}}}}]"
        )
    return fmt


def _encode_texts(texts: list[str], tokenizer) -> list[list[int]]:
    return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []


def bos_first(ids: list[int], bos_id: int | None) -> list[int]:
    """`[BOS] prompt` (no second BOS where a chat template already wrote one): how every prompt the model
    trains on or answers starts (pairs, KTO rows, `hydratune generate`, GRPO's sampling)."""
    if bos_id is not None and ids[:1] != [bos_id]:
        return [bos_id, *ids]
    return list(ids)


def _answer_ids(ids: list[int], eos_id: int, end_of_turn: int | None = None) -> list[int]:
    """`answer EOS`, without an EOS where a chat template ended the turn already (with EOS, or its own end-of-turn
    token, maybe plus a newline: `tokenize.ends_answer`), as TRL adds none to a conversation (review T15)."""
    return list(ids) if ends_answer(ids, eos_id, end_of_turn) else [*ids, eos_id]


def scoring_ids(tokenizer, prompt: str, answer: str, max_length: int | None = None) -> list[int]:
    """`[BOS] prompt answer EOS` as the preference tasks tokenize a row (prompt and answer apart, BOS and EOS
    not doubled): how a reward model reads what it scores. Past `max_length` the prompt is cut from the left
    (after BOS), so the answer and its EOS, which the head reads, stay (as TRL truncates prompts); a cut from
    the right scored a chat prompt's start, the same for every completion (review G1). An answer longer than the
    limit alone is then cut from the right."""
    prompt_ids, answer_ids = _encode_texts([prompt, answer], tokenizer)
    prompt_ids = bos_first(prompt_ids, tokenizer.bos_token_id)
    answer_ids = _answer_ids(answer_ids, tokenizer.eos_token_id, end_of_turn_id(tokenizer))
    over = len(prompt_ids) + len(answer_ids) - max_length if max_length else 0
    if over > 0:
        head = 1 if prompt_ids[:1] == [tokenizer.bos_token_id] and tokenizer.bos_token_id is not None else 0
        prompt_ids = prompt_ids[:head] + prompt_ids[head + min(over, len(prompt_ids) - head) :]
    ids = prompt_ids + answer_ids
    return ids[:max_length] if max_length else ids


def _fit(prompt: list[int], answers: list[list[int]], max_len: int) -> tuple[list[list[int]], bool]:
    """Answers cut from the right so that prompt + answer fits in max_len; whether any was cut."""
    room = max_len - len(prompt)
    return [a[:room] for a in answers], any(len(a) > room for a in answers)


def tokenize_pairs(rows: list[dict], tokenizer, cfg: dict) -> dict[str, list]:
    """Columns `prompt_ids`, `chosen_ids`, `rejected_ids`, `length`, `truncated`, `drop` for each row.

    Answer ids end with EOS. Every row gets an entry, so this runs as a cached `datasets.map`; the
    `drop` column says which rows not to train on ("" to keep; else a `DROP_REASONS` entry), and
    `pair_stats` counts them. Policy (`dataset.max_seq_length` is the limit for prompt + answer):
    - `empty_answer`: a chosen or rejected answer that is empty or whitespace only;
    - `identical`: chosen == rejected (as text, or as tokens once truncated: no preference left);
    - `long_prompt`: the prompt alone leaves no room for one answer token (prompts are never cut, since
      that changes the question);
    - otherwise an answer that does not fit is cut from the right (losing its EOS) to fit, and the pair
      is counted as `truncated`. `length` is the longer of the two (prompt + answer) rows, after cutting.
    """
    fmt = cfg["format"]
    render = PAIR_FORMATS[fmt]
    triples = [render(row, cfg, tokenizer) for row in rows]
    encoded = _encode_texts([text for triple in triples for text in triple], tokenizer)
    bos_id, eos_id, max_len = tokenizer.bos_token_id, tokenizer.eos_token_id, cfg["max_seq_length"]
    end_of_turn = end_of_turn_id(tokenizer)
    out: dict[str, list] = {
        k: [] for k in ("prompt_ids", "chosen_ids", "rejected_ids", "length", "truncated", "drop")
    }
    for i, (_, chosen_text, rejected_text) in enumerate(triples):
        prompt = bos_first(encoded[3 * i], bos_id)
        chosen, rejected = (_answer_ids(encoded[3 * i + k], eos_id, end_of_turn) for k in (1, 2))
        (chosen, rejected), truncated = _fit(prompt, [chosen, rejected], max_len)
        if not chosen_text.strip() or not rejected_text.strip():
            drop = "empty_answer"
        elif chosen_text == rejected_text:
            drop = "identical"
        elif len(prompt) >= max_len:
            drop = "long_prompt"
        elif chosen == rejected:
            drop = "identical"
        else:
            drop = ""
        out["prompt_ids"].append(prompt)
        out["chosen_ids"].append(chosen)
        out["rejected_ids"].append(rejected)
        out["length"].append(len(prompt) + max(len(chosen), len(rejected)))
        out["truncated"].append(truncated and not drop)
        out["drop"].append(drop)
    if rows and "margin" in rows[0]:  # each pair's margin, as TRL's RewardTrainer reads the column
        out["margin"] = [_margin(row.get("margin")) for row in rows]
    return out


def _margin(value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserError(
            f"dataset: column 'margin' holds {value!r}: each pair's margin is a number (0 for none)"
        )
    return float(value)


def tokenize_kto(rows: list[dict], tokenizer, cfg: dict) -> dict[str, list]:
    """Columns `prompt_ids`, `completion_ids`, `label`, `length`, `truncated`, `drop` for KTO rows.

    The same policy as `tokenize_pairs`, with one answer: `empty_answer` and `long_prompt` drops; a
    completion that does not fit is cut from the right and counted as `truncated`.
    """
    triples = [format_kto(row, cfg, tokenizer) for row in rows]
    encoded = _encode_texts(
        [text for prompt, completion, _ in triples for text in (prompt, completion)], tokenizer
    )
    bos_id, eos_id, max_len = tokenizer.bos_token_id, tokenizer.eos_token_id, cfg["max_seq_length"]
    end_of_turn = end_of_turn_id(tokenizer)
    out: dict[str, list] = {
        k: [] for k in ("prompt_ids", "completion_ids", "label", "length", "truncated", "drop")
    }
    for i, (_, completion_text, label) in enumerate(triples):
        prompt = bos_first(encoded[2 * i], bos_id)
        (completion,), truncated = _fit(
            prompt, [_answer_ids(encoded[2 * i + 1], eos_id, end_of_turn)], max_len
        )
        drop = (
            "empty_answer" if not completion_text.strip() else "long_prompt" if len(prompt) >= max_len else ""
        )
        out["prompt_ids"].append(prompt)
        out["completion_ids"].append(completion)
        out["label"].append(label)
        out["length"].append(len(prompt) + len(completion))
        out["truncated"].append(truncated and not drop)
        out["drop"].append(drop)
    return out


def pair_stats(drop: list[str], truncated: list[bool]) -> tuple[list[int], dict]:
    """The rows to keep and the counts preflight and inspect report: `rows`, `pairs` (kept), one
    `dropped_<reason>` per `DROP_REASONS` entry, `truncated` and `truncation_rate` (among kept rows)."""
    keep = [i for i, reason in enumerate(drop) if not reason]
    stats = {"rows": len(drop), "pairs": len(keep)}
    stats |= {f"dropped_{reason}": drop.count(reason) for reason in DROP_REASONS}
    stats["truncated"] = sum(truncated[i] for i in keep)
    stats["truncation_rate"] = stats["truncated"] / max(len(keep), 1)
    return keep, stats


def _pad_rows(rows: list[tuple[list[int], list[int]]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """`(prompt, answer)` id lists -> right-padded `input_ids`, `attention_mask`, `labels` (answer only)."""
    width = max(len(p) + len(a) for p, a in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (prompt, answer) in enumerate(rows):
        n, m = len(prompt), len(answer)
        input_ids[i, : n + m] = torch.as_tensor(prompt + answer)
        labels[i, n : n + m] = torch.as_tensor(answer)
        attention_mask[i, : n + m] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class PairCollator:
    """B pairs -> one batch of 2B rows, chosen rows first then rejected, so both go through the model in
    one forward pass: `input_ids`, `attention_mask`, `labels` (-100 on prompt and padding), right-padded
    to the longest row of the batch. Row i and row B + i are the two answers to pair i's prompt.
    Precomputed reference log-probs (`ref_chosen_logps`, `ref_rejected_logps` fields) and each pair's `margin`
    (a reward model's) become `[B]` tensors of the same names.
    """

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, pairs: list[dict]) -> dict[str, torch.Tensor]:
        rows = [(p["prompt_ids"], p["chosen_ids"]) for p in pairs]
        rows += [(p["prompt_ids"], p["rejected_ids"]) for p in pairs]
        batch = _pad_rows(rows, self.pad_token_id)
        for key in ("ref_chosen_logps", "ref_rejected_logps", "margin"):
            if key in pairs[0]:
                batch[key] = torch.tensor([p[key] for p in pairs], dtype=torch.float32)
        return batch


class KTOCollator:
    """B KTO rows -> `input_ids`, `attention_mask`, `labels` for the B (prompt, completion) rows and the
    `[B]` bool tensor `desirable`. With `kl=True`, B more rows follow: the KL rows, row i's prompt with
    row i-1's completion (wrapping; TRL's rotation), whose log-probs estimate KTO's reference point
    (`hydratune.losses.kto_kl_estimate`); a batch of one pairs a row with itself. A mismatched row
    longer than `max_length` has its completion cut to fit. Precomputed reference log-probs
    (`ref_logps`, `ref_kl_logps` fields) become `[B]` tensors of the same names.
    """

    def __init__(self, pad_token_id: int, kl: bool = True, max_length: int | None = None):
        self.pad_token_id = pad_token_id
        self.kl = kl
        self.max_length = max_length

    def __call__(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        rows = [(s["prompt_ids"], s["completion_ids"]) for s in samples]
        if self.kl:
            for i, sample in enumerate(samples):
                prompt, completion = sample["prompt_ids"], samples[i - 1]["completion_ids"]
                if self.max_length is not None:
                    completion = completion[: max(self.max_length - len(prompt), 1)]
                rows.append((prompt, completion))
        batch = _pad_rows(rows, self.pad_token_id)
        batch["desirable"] = torch.tensor([bool(s["label"]) for s in samples])
        for key in ("ref_logps", "ref_kl_logps"):
            if key in samples[0]:
                batch[key] = torch.tensor([s[key] for s in samples], dtype=torch.float32)
        return batch
