"""Prompt formats: a row of the dataset becomes text segments, each flagged as response or not.

Prompt segments are never trained on (unless `train_on: all`); responses are, followed by EOS.
A format is chosen by name in the dataset config: `format: alpaca` -> `FORMATS["alpaca"]`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from hydratune.errors import UserError, did_you_mean

log = logging.getLogger(__name__)

# Prompt templates for the alpaca format, by name. `alpaca` is the original Stanford Alpaca wording;
# `alpaca_short` drops the preamble, which matters when every character is a token.
TEMPLATES: dict[str, dict[str, str]] = {
    "alpaca": {
        "with_input": (
            "Below is an instruction that describes a task, paired with an input that provides further "
            "context. Write a response that appropriately completes the request.\n\n"
            "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
        ),
        "no_input": (
            "Below is an instruction that describes a task. Write a response that appropriately "
            "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
        ),
    },
    "alpaca_short": {
        "with_input": "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n",
        "no_input": "### Instruction:\n{instruction}\n\n### Response:\n",
    },
}


def alpaca_prompt(instruction: str, input: str = "", template: str = "alpaca") -> str:
    """The prompt text for one instruction (and optional input), as training saw it."""
    parts = TEMPLATES[template]
    if input:
        return parts["with_input"].format(instruction=instruction, input=input)
    return parts["no_input"].format(instruction=instruction)


# Built-in chat templates for `format: messages` with `chat_template: NAME`. The one used is set on the
# tokenizer, so the exported tokenizer carries the template training saw.
CHAT_TEMPLATES: dict[str, str] = {
    "chatml": (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
    "tiny": (  # hydratune.tiny's own template: short, since every character is one token
        "{% for message in messages %}"
        "{{ '<|' + message['role'] + '|>\n' + message['content'] + '</s>' + '\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
    ),
}
ROLES = ("system", "user", "assistant", "tool")
TOOLS_COLUMN = "tools"  # function schemas passed to the chat template (messages and sharegpt rows)
# ShareGPT rows (`conversations: [{from: human|gpt|system, value: ...}]`, as LLaMA-Factory and Axolotl data
# sets have them): the keys that `format: sharegpt` reads when the dataset config leaves them unset.
SHAREGPT_DEFAULTS = {
    "conversations_column": "conversations",
    "role_key": "from",
    "content_key": "value",
    "roles": {"human": "user", "gpt": "assistant", "system": "system", "user": "user", "assistant": "assistant",
              "tool": "tool", "observation": "tool", "function_call": "assistant"},
}  # fmt: skip
# Formats rendered with the tokenizer's chat template (they need the tokenizer and set the template).
CHAT_FORMATS = ("messages", "sharegpt", "alpaca_chat")
TRAIN_ON = ("response", "assistant", "last_assistant", "all")

# A rendered sample: text segments in order, each flagged True when it is a response (assistant turn).
Segments = list[tuple[str, bool]]


def _text(row: dict, column: str, optional: bool = False) -> str:
    value = row.get(column)
    if value is None and optional:
        return ""
    if value is None:  # a JSON row without the key reads as null too
        present = [k for k, v in row.items() if v is not None]
        raise UserError(
            f"dataset: no {column!r} in this row (null or missing; it has: {', '.join(present)}); every row "
            f"needs it: fix the row, drop it with a filter op, or name the column that holds it"
        )
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        # A CSV column of numbers (an arithmetic answer): pandas reads it as int, or as float where a cell is
        # empty; the file said "4", not "4.0".
        return str(int(value)) if float(value).is_integer() else repr(value)
    if not isinstance(value, str):
        if isinstance(value, list) and value and all(isinstance(m, dict) and "content" in m for m in value):
            fix = (
                "a chat format reads it: dataset.format=messages (SFT rows; prompt and completion columns of "
                "messages: dataset=chat 'dataset.messages_column=[prompt,completion]') or chat_pairs (preference pairs)"
            )
        else:
            fix = "convert it with a `map` op or choose another column"
        raise UserError(
            f"dataset: column {column!r} holds {type(value).__name__} {str(value)[:40]!r}, not text; {fix}"
        )
    return value


# A column that names a layout, and the format that reads it (for a format's missing-column error).
LAYOUT_COLUMNS = (
    ("conversations", "sharegpt", "ShareGPT turns"),
    ("messages", "messages", "chat messages"),
    ("instruction", "alpaca", "Alpaca rows"),
    ("chosen", None, "preference pairs: task=dpo (or kto, reward)"),
)


def layout_hint(fmt: str, columns) -> str:
    """'; these look like ShareGPT turns: dataset.format=sharegpt' when the split's columns are another layout's."""
    for name, reader, what in LAYOUT_COLUMNS:
        if name in columns and reader != fmt:
            return f"; these look like {what}" + (f": dataset.format={reader}" if reader else "")
    return ""


def format_alpaca(row: dict, cfg: dict) -> Segments:
    prompt = alpaca_prompt(
        _text(row, "instruction"), _text(row, "input", optional=True), cfg.get("template") or "alpaca"
    )
    return [(prompt, False), (_text(row, "output"), True)]


def format_prompt_response(row: dict, cfg: dict) -> Segments:
    prompt = _text(row, cfg["prompt_column"])
    system_column = cfg.get("system_column")
    if system_column and row.get(system_column):
        prompt = f"{_text(row, system_column)}\n\n{prompt}"
    return [(prompt, False), (_text(row, cfg["response_column"]), True)]


def format_text(row: dict, cfg: dict) -> Segments:
    # Plain text: everything is "response", so every token is trained.
    return [(_text(row, cfg.get("text_column") or "text"), True)]


def format_segments(row: dict, cfg: dict) -> Segments:
    """Hand-labelled pieces of text, `[{label: true|false, text: ...}]` (Axolotl's input_output rows):
    trained where `label` is true. BOS and EOS are added as for every format, unless the text has them.
    The column is always `segments`, as alpaca's are always instruction, input, output."""
    column = "segments"
    pieces = row.get(column)
    if not isinstance(pieces, list) or not pieces:
        raise UserError(f"dataset: column {column!r} must hold a non-empty list of {{label, text}} segments")
    for piece in pieces:
        if not isinstance(piece, dict) or not isinstance(piece.get("text"), str) or "label" not in piece:
            raise UserError(
                f"dataset: column {column!r} holds {str(piece)[:60]!r}; each segment needs text and a "
                "label (true: trained, false: context)"
            )
    return [(piece["text"], bool(piece["label"])) for piece in pieces]


def format_messages(row: dict, cfg: dict, tokenizer=None) -> Segments:
    """OpenAI-style `[{role, content}, ...]` rendered with the chat template, one segment per turn.

    Each prefix of the conversation is rendered on its own, so an assistant turn's segment is exactly
    what the template adds for it (its header, from `add_generation_prompt`, stays a prompt segment).
    Templates that render a turn by what follows it (Phi-3 ends a conversation with EOS, Qwen3 writes
    the think block only on the last turns, Mistral puts the system prompt in the last user turn, Qwen2.5
    groups tool results) are rendered whole instead (`_by_placeholders`).
    """
    column = cfg.get("messages_column") or "messages"
    prompt_turns = 0  # assistant turns before the last column's are prompt (TRL's prompt/completion)
    if isinstance(column, list):  # several columns' message lists, joined in order: [prompt, completion]
        parts = [row.get(c) for c in column]
        bad = next((c for c, part in zip(column, parts) if not isinstance(part, list) or not part), None)
        if bad is not None:
            raise UserError(
                f"dataset: column {bad!r} must hold a non-empty list of {{role, content}} messages"
            )
        messages, prompt_turns = [m for part in parts for m in part], sum(len(part) for part in parts[:-1])
        column = "+".join(column)
    else:
        messages = row.get(column)
    if not isinstance(messages, list) or not messages:
        raise UserError(
            f"dataset: column {column!r} must hold a non-empty list of {{role, content}} messages"
        )
    checked = []
    for message in messages:
        if isinstance(message, dict):  # keys a source's schema gave every message, null where a turn has none
            message = {k: v for k, v in message.items() if v is not None or k == "content"}
        if isinstance(message, dict) and message.get("content") is None and message.get("tool_calls"):
            message = {**message, "content": ""}  # OpenAI's assistant turn that only calls tools
        if isinstance(message, dict) and isinstance(message.get("content"), list):
            message = {**message, "content": _text_parts(message["content"], column)}
        if (
            not isinstance(message, dict)
            or message.get("role") not in ROLES
            or not isinstance(message.get("content"), str)
        ):
            raise UserError(
                f"dataset: column {column!r} holds {str(message)[:60]!r}; each message needs a role "
                f"({', '.join(ROLES)}) and text content (null only beside tool_calls)"
            )
        checked.append(message)
    # OpenAI's fine-tuning files: `weight: 0` on an assistant turn keeps it out of the loss (1 trains it).
    weights = {
        i: m.get("weight") for i, m in enumerate(checked) if m["role"] == "assistant" and "weight" in m
    }
    if any(w not in (0, 1) for w in weights.values()):
        raise UserError(
            f"dataset: column {column!r} has an assistant turn with weight {next(w for w in weights.values() if w not in (0, 1))!r}; "
            "OpenAI's weight is 0 (not trained) or 1 (trained)"
        )
    untrained = {i for i, w in weights.items() if w == 0} | set(range(prompt_turns))
    checked = [{k: v for k, v in m.items() if k != "weight"} for m in checked]
    given = _tools(row)

    def render(conversation: list, generation_prompt: bool = False, tools: bool = True) -> str:
        if not conversation:
            return ""
        from jinja2.exceptions import TemplateError

        try:
            return tokenizer.apply_chat_template(
                conversation,
                tokenize=False,
                add_generation_prompt=generation_prompt,
                tools=given if tools else None,
            )
        # The template's own raise_exception: no system role, roles must alternate.
        except TemplateError as err:
            raise UserError(
                f"dataset.chat_template refuses this conversation ({err}): change the rows (e.g. merge a system "
                "turn into the first user turn), or choose another template with dataset.chat_template"
            ) from None

    segments = None
    if checked[0]["role"] != "assistant":  # an opening assistant turn has no prefix to render
        segments = _by_prefixes(checked, render, untrained)
    if segments is None:
        segments = _by_placeholders(checked, render, tokenizer, untrained)
    _check_tools_rendered(checked, given, segments, render)
    _warn_if_turns_dropped(checked, segments)
    return segments


_SAID_DROPPED: set[str] = set()


def _warn_if_turns_dropped(messages: list[dict], segments: Segments) -> None:
    """A template that leaves a prompt turn out of the text (Mistral v0.3's writes the system prompt only before the
    last user turn, which a training row, ending with an answer, never has) trained every row without it, silently,
    while `hydratune generate --system` puts it in (review T4). Said once per role."""
    text = "".join(t for t, _ in segments)
    for message in messages:
        role, content = message["role"], message["content"].strip()
        if role in ("system", "user") and content and content not in text and role not in _SAID_DROPPED:
            _SAID_DROPPED.add(role)
            log.warning(
                "dataset.chat_template leaves the %s turn out of rows it renders (%r is not in the text; Mistral's "
                "template writes a system prompt only before a conversation's last user turn): merge it into the "
                "first user turn (a map op), or choose another template with dataset.chat_template",
                role, content[:40],
            )  # fmt: skip


def _check_tools_rendered(messages: list[dict], tools, segments: Segments, render) -> None:
    """A template that does not render tool calls (or the tools column) trains a tool-calling turn as an empty
    answer, and the prompt without the tools it calls: refused in one line instead."""
    calls = [c for m in messages for c in m.get("tool_calls") or [] if isinstance(c, dict)]
    if not calls and not tools:
        return
    text = "".join(t for t, _ in segments)
    for call in calls:
        name = (call.get("function") or {}).get("name") or call.get("name")
        if name and name not in text:
            raise UserError(
                f"dataset.chat_template does not render tool_calls (the call to {name!r} is missing from the "
                "rendered text, so the turn would train as an empty answer): use a template that does (the "
                "model's own, with dataset.chat_template=null), or leave the tool calls out of the rows"
            )
    if tools and text == render(messages, tools=False):  # `text`: the conversation rendered with them
        raise UserError(
            f"dataset.chat_template does not render the {TOOLS_COLUMN!r} column (the prompt would lack the tools "
            "the answers call): use a template that does (the model's own, with dataset.chat_template=null), or "
            f"drop the column ('dataset.ops=[{{drop_columns:[{TOOLS_COLUMN}]}}]')"
        )


def _text_parts(parts: list, column: str) -> str:
    """OpenAI's content as a list of parts (`[{"type": "text", "text": ...}]`), joined; text only."""
    if all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in parts):
        return "".join(p["text"] for p in parts)
    kinds = sorted(
        {str(p.get("type")) if isinstance(p, dict) else type(p).__name__ for p in parts} - {"text"}
    )
    raise UserError(
        f"dataset: column {column!r} holds a message with {', '.join(kinds)} parts; hydratune trains on text: "
        "keep the text parts only (each {type: text, text: ...}) or drop those rows"
    )


def _tools(row: dict) -> list | None:
    """The row's `tools` column (function schemas, TRL's and LLaMA-Factory's name; JSON text too), which the
    chat template writes into the prompt as the model will see it when called with tools."""
    tools = row.get(TOOLS_COLUMN)
    if isinstance(tools, str):
        import json

        try:
            tools = json.loads(tools) if tools.strip() else None
        except ValueError:
            raise UserError(
                f"dataset: column {TOOLS_COLUMN!r} holds {tools[:60]!r}, which is not JSON: give a list of function "
                "schemas (or JSON text of one)"
            ) from None
    return tools or None


def _by_prefixes(messages: list[dict], render, untrained: set[int] = frozenset()) -> Segments | None:
    """Segments from each prefix's rendering; None when one is not the start of the next. The assistant turns
    at `untrained` (weight 0) are prompt."""
    segments, done = [], ""
    for i, message in enumerate(messages):
        if message["role"] == "assistant":
            head = render(messages[:i], generation_prompt=True)
            if not head.startswith(done):
                return None
            segments.append((head[len(done) :], False))
            done_before = head
        else:
            done_before = done
        full = render(messages[: i + 1])
        if not full.startswith(done_before):
            return None
        segments.append((full[len(done_before) :], message["role"] == "assistant" and i not in untrained))
        done = full
    return [(text, trained) for text, trained in segments if text]


PLACEHOLDER = "\u27e6hydratune-turn-{}\u27e7"  # a string no template changes and no text holds


def _by_placeholders(messages: list[dict], render, tokenizer, untrained: set[int] = frozenset()) -> Segments:
    """The conversation rendered once, for templates whose prefixes do not start the whole. Each answer is
    found where a placeholder rendered in place of its content; an answer with no text (a turn that only
    calls tools) where its turn, rendered as the last, begins. It is trained from where the generation
    prompt ends (as `_by_prefixes` trains it, and as the model answers after that prompt; where the prompt
    does not start the whole, from its content) to the end of its turn: what the template writes after the
    answer when it ends the conversation (Phi-3's `<|end|>`, and EOS on the last turn), up to where the next
    turn starts."""
    import re

    full = render(messages)
    answers = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    placed = [i for i in answers if messages[i]["content"]]
    marked = [{**m, "content": PLACEHOLDER.format(i)} if i in placed else m for i, m in enumerate(messages)]
    pieces = re.split(PLACEHOLDER.format(r"(\d+)"), render(marked))
    texts, turns = pieces[0::2], [int(i) for i in pieces[1::2]]
    rebuilt = texts[0] + "".join(messages[i]["content"] + text for i, text in zip(turns, texts[1:]))
    if rebuilt != full or turns != placed:
        changed = next((i for i in placed if messages[i]["content"] not in full), placed[0] if placed else 0)
        raise UserError(
            f"dataset.chat_template: the template changes the text of the assistant turn at message {changed} "
            "(trims it, or moves a think block out of it), so its tokens cannot be told apart; write the turns "
            "as the template renders them, or choose another template with dataset.chat_template"
        )
    content_at, at = {}, len(texts[0])
    for k, i in enumerate(turns):
        content_at[i] = at
        at += len(messages[i]["content"]) + len(texts[k + 1])
    starts, ends = _token_edges(full, tokenizer)
    segments, done = [], 0
    for i in answers:
        head = render(messages[:i], generation_prompt=True)
        prompt_end = len(head) if head and full.startswith(head) and len(head) >= done else None
        if i in content_at:
            body = content_at[i] + len(messages[i]["content"])
            ending = render(marked[: i + 1]).split(PLACEHOLDER.format(i), 1)[1]
            begin = prompt_end if prompt_end is not None and prompt_end <= content_at[i] else content_at[i]
            # the answer from where the generation prompt ends, as when it starts the whole
            if prompt_end is None:
                begin = _after_prompt(full, content_at[i], head, done)
        else:
            last = render(messages[: i + 1])
            if prompt_end is None or not last.startswith(head):
                raise UserError(
                    f"dataset.chat_template: the assistant turn at message {i} has no text, and where the template "
                    "renders it cannot be found; give it content, or choose another template with dataset.chat_template"
                )
            begin = body = prompt_end
            ending = last[len(head) :]
        # Both edges at token edges of the whole text: the answer ends where the text stops matching the
        # template's ending, never inside a token (such as `<|user|>`); it begins at the start of the token it
        # is in (a SentencePiece tokenizer reads Mistral's " " + answer as one token "▁ANSWER").
        same = _common_prefix(full[body:], ending)
        end = body + same
        if 0 < same < len(full) - body:
            end = max((e for e in ends if body <= e <= end), default=body)
        begin = max(done, max((s for s in starts if s <= begin), default=0))
        segments += [(full[done:begin], False), (full[begin:end], i not in untrained)]
        done = end
    segments.append((full[done:], False))
    return [(text, trained) for text, trained in segments if text]


def _after_prompt(full: str, content: int, head: str, done: int) -> int:
    """Where an answer starts whose generation prompt does not start the whole text: at its content, or before the
    space the template writes ahead of it when the prompt does not end with that space (Mistral v0.3: "[/INST]" +
    " " + answer; the prompt ends at "[/INST]", so the model writes the space, and a SentencePiece "▁" before a
    digit is a token of its own that was never trained: review T3)."""
    before = full[done:content]
    gap = len(before) - len(before.rstrip())  # whitespace between the prompt's text and the answer
    kept = len(head) - len(head.rstrip())  # of which the generation prompt itself ends with
    prompt = head.rstrip()
    if gap > kept and prompt and full[: content - gap].endswith(prompt[-8:]):
        return content - gap + kept
    return content


def _token_edges(text: str, tokenizer) -> tuple[list[int], list[int]]:
    """Where the tokens of `text`, tokenized whole, start and end (every position for a tokenizer without
    offsets)."""
    from hydratune.data.tokenize import encode_with_offsets

    encoded = encode_with_offsets([text], tokenizer)
    if encoded is None:
        every = list(range(len(text) + 1))
        return every, every
    offsets = encoded["offset_mapping"][0]
    return sorted({start for start, _ in offsets} | {len(text)}), sorted({end for _, end in offsets} | {0})


def _common_prefix(text: str, other: str) -> int:
    """The length of the longest start of `text` that `other` starts with too."""
    same = 0
    while same < min(len(text), len(other)) and text[same] == other[same]:
        same += 1
    return same


def sharegpt_messages(row: dict, cfg: dict) -> list[dict]:
    """A ShareGPT row's turns as `{role, content}` messages, the roles renamed by `dataset.roles`.

    `dataset.system_column`, when set and filled, becomes a leading system message (LLaMA-Factory keeps
    the system prompt in its own column).
    """
    keys = {key: cfg.get(key) or default for key, default in SHAREGPT_DEFAULTS.items()}
    column, role_key, content_key, roles = (keys[k] for k in SHAREGPT_DEFAULTS)
    wrong = {name: role for name, role in roles.items() if role not in ROLES}
    if wrong:
        name, role = next(iter(wrong.items()))
        raise UserError(f"dataset.roles.{name}={role!r}: map each speaker to one of {', '.join(ROLES)}")
    turns = row.get(column)
    if not isinstance(turns, list) or not turns:
        raise UserError(
            f"dataset: column {column!r} must hold a non-empty list of {{{role_key}, {content_key}}} turns "
            "(dataset.conversations_column names the column)"
        )
    messages = []
    system_column = cfg.get("system_column")
    if system_column and row.get(system_column):
        messages.append({"role": "system", "content": _text(row, system_column)})
    for turn in turns:
        role = roles.get(turn.get(role_key)) if isinstance(turn, dict) else None
        if role is None or not isinstance(turn.get(content_key), str):
            raise UserError(
                f"dataset: column {column!r} holds {str(turn)[:60]!r}; each turn needs {role_key!r} "
                f"({' | '.join(roles)}; map others with dataset.roles) and text {content_key!r} "
                "(dataset.role_key, dataset.content_key name them)"
            )
        messages.append({"role": role, "content": turn[content_key]})
    return messages


def format_sharegpt(row: dict, cfg: dict, tokenizer=None) -> Segments:
    """ShareGPT turns rendered and masked exactly as `format: messages` renders the same conversation."""
    return format_messages(
        {"messages": sharegpt_messages(row, cfg), TOOLS_COLUMN: row.get(TOOLS_COLUMN)},
        {"messages_column": "messages"},
        tokenizer,
    )


def format_alpaca_chat(row: dict, cfg: dict, tokenizer=None) -> Segments:
    """Alpaca columns as one user turn (instruction, then input on its own line) and one assistant turn
    (output), rendered with the chat template: how LLaMA-Factory trains alpaca-format data. A filled
    `dataset.system_column` becomes a system turn."""
    instruction, extra = _text(row, "instruction"), _text(row, "input", optional=True)
    messages = [{"role": "user", "content": f"{instruction}\n{extra}" if extra else instruction},
                {"role": "assistant", "content": _text(row, "output")}]  # fmt: skip
    system_column = cfg.get("system_column")
    if system_column and row.get(system_column):
        messages.insert(0, {"role": "system", "content": _text(row, system_column)})
    return format_messages({"messages": messages}, {"messages_column": "messages"}, tokenizer)


def check_chat_template(template: object) -> None:
    """dataset.chat_template is null, a built-in template's name, or a Jinja template (checked before any run
    folder is made; it was found when the data were prepared)."""
    if template and not is_jinja(template) and template not in CHAT_TEMPLATES:
        raise UserError(
            f"dataset.chat_template={template!r} is not a built-in template; {did_you_mean(template, CHAT_TEMPLATES)}"
            f"use one of: {', '.join(CHAT_TEMPLATES)}, a Jinja template, or null for the tokenizer's own"
        )


def is_jinja(template: object) -> bool:
    """Whether a dataset.chat_template value is a Jinja template itself rather than a built-in's name."""
    return isinstance(template, str) and ("{%" in template or "{{" in template)


def set_chat_template(tokenizer, cfg: dict) -> None:
    """Put the configured chat template on the tokenizer (it is saved with the exported tokenizer)."""
    name = cfg.get("chat_template")
    check_chat_template(name)
    if name and is_jinja(name):  # a template of its own (the alignment-handbook recipes carry one)
        tokenizer.chat_template = str(name)
    elif name:
        tokenizer.chat_template = CHAT_TEMPLATES[name]
        warn_if_split(tokenizer, name, TEMPLATE_MARKERS.get(name, ()))
    elif not getattr(tokenizer, "chat_template", None):
        raise UserError(
            f"dataset.chat_template: the tokenizer has no chat template; set one of: {', '.join(CHAT_TEMPLATES)}"
        )
    bos = getattr(tokenizer, "bos_token", None)
    if bos and tokenizer.bos_token_id is not None:
        # Training puts BOS before every conversation (hydratune.data.tokenize); apply_chat_template(tokenize=
        # True), pipelines and vLLM add no special tokens to the rendered text. A template that does not
        # write BOS itself gets it first, so the exported tokenizer prompts as training did.
        probe = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
        if not str(probe).startswith(bos):
            tokenizer.chat_template = "{{ bos_token }}" + tokenizer.chat_template


# The markers of a built-in template that a tokenizer should hold as single tokens ("tiny" spells them out).
TEMPLATE_MARKERS = {"chatml": ("<|im_start|>", "<|im_end|>")}


def warn_if_split(tokenizer, name: str, markers: tuple[str, ...]) -> None:
    """A template's turn markers that the tokenizer does not have, each then several tokens: the model must
    learn to spell them, and its answers end in the marker's text rather than a token generation stops at."""
    for marker in markers:
        pieces = len(tokenizer(marker, add_special_tokens=False)["input_ids"])
        if pieces > 1:
            log.warning(
                "dataset.chat_template=%s writes %s, which this tokenizer splits into %d tokens: use the "
                "tokenizer's own template (dataset.chat_template=null), or one whose markers it has",
                name, marker, pieces,
            )  # fmt: skip
            return


def chat_prompt(tokenizer, content: str, system: str = "") -> str:
    """One user turn (after a system turn, when given) in the tokenizer's chat template, up to where the
    assistant's answer starts."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(
            "the run's tokenizer has no chat template, so its chat prompt cannot be rebuilt; use --raw"
        )
    turns = [{"role": "system", "content": system}] if system else []
    turns.append({"role": "user", "content": content})
    return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)


def no_input(what: str, input: str) -> None:
    if input:
        raise UserError(f"--input: {what} has no input field; put it in the prompt")


def no_system(what: str, system: str) -> None:
    if system:
        raise UserError(f"--system: {what} has no system turn (chat formats have one); put it in the prompt")


def prompt_text(cfg: dict, tokenizer, prompt: str, input: str = "", system: str = "") -> str:
    """`hydratune generate`: a prompt (and an alpaca input, or a chat run's system turn) as an SFT run's
    format rendered its prompts."""
    fmt = resolve_format(cfg)
    if fmt == "alpaca_chat":  # as format_alpaca_chat joins them
        return chat_prompt(tokenizer, f"{prompt}\n{input}" if input else prompt, system)
    if fmt in CHAT_FORMATS:
        no_input(f"dataset.format={fmt}", input)
        return chat_prompt(tokenizer, prompt, system)
    no_system(f"dataset.format={fmt}", system)
    if fmt == "alpaca":
        return alpaca_prompt(prompt, input, cfg.get("template") or "alpaca")
    no_input(f"dataset.format={fmt}", input)
    return prompt  # prompt_response: the prompt as written; text, segments: text to continue


FORMATS: dict[str, Callable[..., Segments]] = {
    "alpaca": format_alpaca,
    "prompt_response": format_prompt_response,
    "text": format_text,
    "messages": format_messages,
    "sharegpt": format_sharegpt,
    "segments": format_segments,
    "alpaca_chat": format_alpaca_chat,
}
# The preference tasks' formats, met by a task that trains on text: which task reads them.
PAIRS_DATA = "preference pairs: train them with task=dpo (or task=reward)"
OTHER_TASKS_DATA = {"pairs": PAIRS_DATA, "alpaca_pairs": PAIRS_DATA, "chat_pairs": PAIRS_DATA,
                    "kto": "unpaired KTO rows: train them with task=kto"}  # fmt: skip


def resolve_format(cfg: dict) -> str:
    """The format name, checking the column keys: exactly one of text_column or prompt+response columns."""
    fmt = cfg.get("format")
    text = cfg.get("text_column") is not None
    pair = cfg.get("prompt_column") is not None or cfg.get("response_column") is not None
    if fmt in (None, "text", "prompt_response"):
        if text and pair:
            raise UserError(
                "dataset.text_column and dataset.prompt_column/response_column are both set; keep exactly one"
            )
        if fmt is None:
            if not (text or pair):
                raise UserError(
                    "dataset: set dataset.text_column or dataset.prompt_column + dataset.response_column "
                    "(or format: alpaca | alpaca_chat | messages | sharegpt | segments)"
                )
            fmt = "text" if text else "prompt_response"
        if fmt == "prompt_response" and (
            cfg.get("prompt_column") is None or cfg.get("response_column") is None
        ):
            alone = cfg.get("prompt_column") is not None and cfg.get("response_column") is None
            raise UserError(
                "dataset.format=prompt_response needs both dataset.prompt_column and dataset.response_column"
                + ("; prompts alone are task=grpo's data (add task=grpo)" if alone else "")
            )
    # dataset=preference with the default task read as an unknown format (review X9)
    if fmt in OTHER_TASKS_DATA:
        raise UserError(f"dataset.format={fmt} is {OTHER_TASKS_DATA[fmt]}, or choose an SFT dataset")
    if fmt not in FORMATS:
        raise UserError(
            f"dataset.format={fmt!r} is not known; {did_you_mean(fmt, FORMATS)}use one of: {', '.join(FORMATS)}"
        )
    if fmt == "alpaca" and (cfg.get("template") or "alpaca") not in TEMPLATES:  # null: the standard one
        raise UserError(
            f"dataset.template={cfg['template']!r} is not known; use one of: {', '.join(TEMPLATES)}"
        )
    train_on = cfg.get("train_on", "response")
    if train_on not in TRAIN_ON:
        raise UserError(f"dataset.train_on={train_on!r} is not known; use one of: {', '.join(TRAIN_ON)}")
    return fmt


def required_columns(fmt: str, cfg: dict) -> list[str]:
    """Columns a format reads (optional ones excluded)."""
    return {
        "alpaca": ["instruction", "output"],
        "prompt_response": [cfg.get("prompt_column"), cfg.get("response_column")],
        "text": [cfg.get("text_column") or "text"],
        "messages": list(cfg["messages_column"])
        if isinstance(cfg.get("messages_column"), list | tuple)
        else [cfg.get("messages_column") or "messages"],
        "sharegpt": [cfg.get("conversations_column") or SHAREGPT_DEFAULTS["conversations_column"]],
        "segments": ["segments"],
        "alpaca_chat": ["instruction", "output"],
    }[fmt]


READ_FIX = (
    "dataset.format=text ++dataset.text_column={column}"  # an override that reads a column a map op made
)


def read_columns(fmt: str, cfg: dict) -> set[str]:
    """Every column a format reads, the optional ones included."""
    optional = (
        {"input"} if fmt in ("alpaca", "alpaca_chat") else {TOOLS_COLUMN} if fmt in CHAT_FORMATS else set()
    )
    return {c for c in (*required_columns(fmt, cfg), *optional, cfg.get("system_column")) if c}


TRUNCATION = ("truncate", "drop", "split")


def check_config(cfg: dict) -> str:
    """Validate the dataset keys that tokenization and batching read; returns the format name.
    (Here, not in datamodule.py, so that preflight's quick data check can run it without torch.)"""
    from hydratune.data.packing import STRATEGIES

    fmt = resolve_format(cfg)
    if not isinstance(cfg.get("max_seq_length"), int) or cfg["max_seq_length"] < 2:
        raise UserError(f"dataset.max_seq_length={cfg.get('max_seq_length')!r}: give a number of tokens >= 2")
    if cfg.get("truncation", "truncate") not in TRUNCATION:
        raise UserError(
            f"dataset.truncation={cfg['truncation']!r} is not known; use one of: {', '.join(TRUNCATION)}"
        )
    if cfg.get("truncation") == "split" and fmt not in ("text", "segments"):
        # Its blocks after the first start mid-row: a conversation's turns without their headers, answers
        # without their questions.
        raise UserError(
            f"dataset.truncation=split cuts long documents into blocks (pre-training text), not dataset.format="
            f"{fmt} rows: use dataset.truncation=truncate or drop, or raise dataset.max_seq_length"
        )
    if cfg.get("packing_strategy", "bfd") not in STRATEGIES:
        raise UserError(
            f"dataset.packing_strategy={cfg['packing_strategy']!r} is not known; use one of: {', '.join(STRATEGIES)}"
        )
    if cfg.get("group_by_length") not in (None, True, False):
        raise UserError(
            f"dataset.group_by_length={cfg['group_by_length']!r}: use true, false or null (null: packed rows only)"
        )
    return fmt
