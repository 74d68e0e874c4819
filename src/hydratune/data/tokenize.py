"""Tokenize rendered samples into input ids and labels, with the masking policy applied.

A sample is a list of text segments flagged as response or not (see `hydratune.data.formats`). Each
segment is tokenized on its own, so the boundary between prompt and response is exact; the segments
of a whole batch of samples go through the tokenizer in one call (the fast tokenizers batch in Rust).
"""

from __future__ import annotations

IGNORE_INDEX = -100  # label value that cross-entropy skips
# Tokens a tokenizer without a pad token may hold for padding (Llama 3.1's reserved pad, common pad names).
PAD_NAMES = ("<|finetune_right_pad_id|>", "<|pad|>", "<pad>", "[PAD]", "<|padding|>")


def stand_in_pad(eos: str | None, unk: str | None, has_token) -> str | None:
    """The pad token of a tokenizer that has none: a pad-named token it holds, else its UNK (Llama 2's), else
    EOS. Padding is never trained, but a sequence classifier or reward model (transformers'
    *ForSequenceClassification) reads the last token that is not pad: with EOS as pad, that is the token
    before the EOS that ends every row, not the EOS. `has_token(text)`: whether the vocabulary holds it."""
    named = next((name for name in PAD_NAMES if name != eos and has_token(name)), None)
    return named or (unk if unk and unk != eos else eos)


_END_OF_TURN: dict[tuple, int | None] = {}
ANSWER = "hydratune answer"


def end_of_turn_id(tokenizer) -> int | None:
    """The special token the tokenizer's chat template writes right after an assistant answer (<|im_end|>,
    <|eot_id|>, <end_of_turn>, </s>), or None (no template, or a text marker split into several tokens).
    A base model's EOS is often another token (Qwen2.5's <|endoftext|>, Llama 3.1's <|end_of_text|>) that its
    generation_config alone names, so a model trained on the template went on past its turn (review T1)."""
    template = getattr(tokenizer, "chat_template", None)
    if not isinstance(template, str) or not template:
        return None
    key = (template, getattr(tokenizer, "name_or_path", ""), len(tokenizer))
    if key not in _END_OF_TURN:
        try:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ANSWER}], tokenize=False
            )
        except Exception:  # a template that wants other turns (a system one, tools): no marker to read
            text = ""
        at = text.rfind(ANSWER) if isinstance(text, str) else -1
        tail = tokenizer(text[at + len(ANSWER) :], add_special_tokens=False)["input_ids"] if at >= 0 else []
        special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
        _END_OF_TURN[key] = tail[0] if tail and tail[0] in special else None
    return _END_OF_TURN[key]


def ends_answer(ids: list[int], eos_id: int, end_of_turn: int | None = None) -> bool:
    """Whether token ids already end an answer, so no EOS is appended: EOS among the last two (a chat template
    ends a turn with it, and maybe a newline), or the chat template's own end-of-turn token (<|im_end|>\n,
    <|eot_id|>): an EOS after it taught `<|eot_id|> <|end_of_text|>` on last turns only (review T15; TRL appends
    none to a conversation)."""
    return eos_id in ids[-2:] or (end_of_turn is not None and end_of_turn in ids[-2:])


def tokenize_samples(
    samples: list[list[tuple[str, bool]]],
    tokenizer,
    max_seq_length: int,
    train_on: str = "response",
    split_long: bool = False,
    whole: bool = False,
) -> dict[str, list]:
    """Columns `input_ids`, `labels`, `num_trained`, `length` (before truncation) for each sample.

    Layout: `[BOS] segments... EOS`. BOS is added unless the text already starts with it (chat
    templates often write it) and is never trained; EOS is appended unless the text already ends with
    it, and is trained with the last segment. `train_on`: `response` / `assistant` (every response
    segment), `last_assistant` (only the last one), `all` (every token but BOS).
    Sequences longer than `max_seq_length` are cut from the right; `length` keeps the full length. With
    `split_long` (`dataset.truncation: split`, pre-training text) they are cut into consecutive pieces of
    `max_seq_length` tokens instead, each its own sample, so no token is lost (as LLaMA-Factory's and
    Axolotl's pre-training streams cut their concatenated text into blocks).
    With `whole` (a rendered conversation) each sample's text is tokenized at once and every token goes to
    the segment of its last character: a SentencePiece tokenizer reads an answer that follows a newline
    (Phi-3's `<|assistant|>\n`) as `A`, `PP`, `LE`, and alone as `▁APPLE`. Segments are tokenized one by
    one otherwise: an alpaca or prompt-response prompt, tokenized alone at generation, ends as in training.
    """
    encoded = _by_text(samples, tokenizer) if whole else None
    if encoded is None:
        texts = [text for segments in samples for text, _ in segments]
        encoded = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    bos_id, eos_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    end_of_turn = end_of_turn_id(tokenizer)
    out: dict[str, list] = {"input_ids": [], "labels": [], "num_trained": [], "length": []}
    k = 0
    for segments in samples:
        pieces = encoded[k : k + len(segments)]
        k += len(segments)
        responses = [i for i, (_, is_response) in enumerate(segments) if is_response]
        last = responses[-1] if responses else None
        trained = [
            train_on == "all" or (is_response and (train_on != "last_assistant" or i == last))
            for i, (_, is_response) in enumerate(segments)
        ]
        input_ids, labels = [], []
        if bos_id is not None and not (pieces and pieces[0][:1] == [bos_id]):
            input_ids.append(bos_id)
            labels.append(IGNORE_INDEX)
        for ids, train in zip(pieces, trained):
            input_ids += ids
            labels += ids if train else [IGNORE_INDEX] * len(ids)
        if not ends_answer(input_ids, eos_id, end_of_turn if whole else None):
            input_ids.append(eos_id)
            labels.append(eos_id if (trained[-1] if trained else True) else IGNORE_INDEX)
        if input_ids[0] == bos_id:
            labels[0] = IGNORE_INDEX
        starts = range(0, len(input_ids), max_seq_length) if split_long else (0,)
        for start in starts:
            piece, piece_labels = (
                input_ids[start : start + max_seq_length],
                labels[start : start + max_seq_length],
            )
            out["length"].append(len(piece) if split_long else len(input_ids))
            out["input_ids"].append(piece)
            out["labels"].append(piece_labels)
            # Predicted positions: token t+1 from position t, so the first label never counts.
            out["num_trained"].append(sum(x != IGNORE_INDEX for x in piece_labels[1:]))
    return out


def encode_with_offsets(texts: list[str], tokenizer) -> dict | None:
    """`texts` tokenized without special tokens, with each token's character span (`offset_mapping`); None
    for a tokenizer that gives no spans (a slow one)."""
    try:
        return tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, KeyError, TypeError):
        return None


def _by_text(samples: list, tokenizer) -> list[list[int]] | None:
    """The ids of every segment of `samples` (flat, in order), from tokenizing each sample's text whole;
    None for a tokenizer without offsets."""
    from bisect import bisect_right

    texts = ["".join(text for text, _ in segments) for segments in samples]
    if not texts:
        return []
    encoded = encode_with_offsets(texts, tokenizer)
    if encoded is None:
        return None
    out = []
    for segments, ids, offsets in zip(samples, encoded["input_ids"], encoded["offset_mapping"]):
        edges, at = [], 0
        for text, _ in segments:
            at += len(text)
            edges.append(at)
        pieces = [[] for _ in segments]
        for token, (start, end) in zip(ids, offsets):
            pieces[min(bisect_right(edges, max(end - 1, start)), len(segments) - 1)].append(token)
        out += pieces
    return out


def tokenize_pair(
    prompt: str, response: str, tokenizer, max_seq_length: int, train_on: str = "response"
) -> dict[str, list[int]]:
    """`[BOS] prompt response EOS` for one pair, labels -100 on BOS and the prompt (unless `train_on == "all"`)."""
    segments = ([(prompt, False)] if prompt else []) + [(response, True)]
    out = tokenize_samples([segments], tokenizer, max_seq_length, train_on)
    return {"input_ids": out["input_ids"][0], "labels": out["labels"][0]}


def keep_and_count(
    lengths: list[int], trained: list[int], max_len: int, drop_long: bool
) -> tuple[list[int], dict]:
    """The samples that train (some trained token; not too long when `truncation: drop`) and the counts
    that say why the others were dropped, and how many were truncated."""
    too_long = [n > max_len for n in lengths]
    keep = [i for i, (t, long) in enumerate(zip(trained, too_long)) if t > 0 and not (drop_long and long)]
    stats = {
        "rows": len(lengths),
        "truncated": sum(too_long),
        "dropped_truncated": sum(too_long) if drop_long else 0,
        "dropped_untrained": sum(t == 0 and not (drop_long and long) for t, long in zip(trained, too_long)),
    }
    stats["truncation_rate"] = stats["truncated"] / max(stats["rows"], 1)
    return keep, stats


# Above these shares of a split's samples, what max_seq_length cuts is said as a warning (training and preflight).
WARN_DROPPED = 0.05
WARN_CUT = 0.25


def cut_warning(split: str, stats: dict, max_len: int, truncation: str = "truncate") -> str | None:
    """The warning when dataset.max_seq_length cuts many samples short (a cut answer loses its EOS: the model
    learns to stop mid-word) or leaves many with no trained token; None when few are. Long documents that
    `truncation: split` cuts into blocks lose nothing."""
    rows = max(stats.get("rows", 0), 1)
    dropped, cut = stats.get("dropped_untrained", 0), stats.get("truncated", 0)
    if truncation == "split" or (dropped / rows <= WARN_DROPPED and cut / rows <= WARN_CUT):
        return None
    fate = "dropped (truncation: drop)" if truncation == "drop" else "cut short (a cut answer loses its EOS)"
    return (
        f"dataset.max_seq_length={max_len}: in split {split!r}, {cut} of {stats['rows']} samples are longer and "
        f"{fate} and {dropped} are dropped with no trained token left; raise dataset.max_seq_length "
        "(`hydratune inspect` shows the lengths)"
    )


def answer_column(fmt: str, cfg: dict) -> str | None:
    """The column holding the trained answer of a one-turn format (alpaca, prompt_response), else None."""
    return {"alpaca": "output", "prompt_response": cfg.get("response_column")}.get(fmt)


def count_empty(values) -> int:
    """Answers that are missing or only whitespace."""
    return sum(1 for value in values if value is None or not str(value).strip())


def empty_answer_warning(split: str, count: int, rows: int, column: str) -> str:
    """An answer that is empty trains only the end-of-sequence token: the model learns to answer with nothing.
    Preference data drops such rows; SFT keeps them (the Hugging Face trainers do) and says so (review F13)."""
    return (
        f"dataset: {count} of {rows} rows of split {split!r} have an empty answer (column {column!r}); each trains "
        f"only the end-of-sequence token, teaching the model to answer with nothing: drop them with "
        f'dataset.ops=[{{filter: "len({column}) > 0"}}]'
    )


def nothing_left(split: str, stats: dict, lengths: list[int], max_len: int) -> str:
    """The error when no sample of `split` trains: why, and the length that would keep one."""
    cut = sum(n > max_len for n in lengths)
    return (
        f"dataset: no sample of split {split!r} is left to train on ({stats['dropped_untrained']} had no trained "
        f"token, {cut} of them longer than dataset.max_seq_length={max_len}; {stats['dropped_truncated']} "
        f"dropped as too long); raise dataset.max_seq_length above {max_len} (the shortest sample has "
        f"{min(lengths, default=0)} tokens)"
    )
