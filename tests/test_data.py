"""Formatting, label masking and collation."""

from __future__ import annotations

import pytest
import torch

from hydratune.data.collate import PadCollator
from hydratune.data.formats import FORMATS, alpaca_prompt
from hydratune.data.tokenize import IGNORE_INDEX, tokenize_pair


def test_alpaca_format_uses_input_when_present():
    row = {"instruction": "Reverse.", "input": "abc", "output": "cba"}
    (prompt, is_response), (response, is_response2) = FORMATS["alpaca"](row, {"template": "alpaca_short"})
    assert (is_response, is_response2) == (False, True)
    assert prompt == "### Instruction:\nReverse.\n\n### Input:\nabc\n\n### Response:\n"
    assert response == "cba"
    assert "### Input" not in alpaca_prompt("Say hi.", "", "alpaca_short")
    assert alpaca_prompt("Say hi.", "", "alpaca").startswith("Below is an instruction")


def test_prompt_tokens_are_masked_and_response_plus_eos_trained(tokenizer):
    prompt, response = "### Q:\nabc\n### A:\n", "CBA"
    out = tokenize_pair(prompt, response, tokenizer, max_seq_length=128)
    n_prompt = 1 + len(tokenizer(prompt, add_special_tokens=False)["input_ids"])  # BOS + prompt
    assert out["input_ids"][0] == tokenizer.bos_token_id
    assert out["input_ids"][-1] == tokenizer.eos_token_id
    assert out["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
    trained = out["labels"][n_prompt:]
    assert trained == out["input_ids"][n_prompt:]
    assert tokenizer.decode(trained[:-1]) == response
    assert trained[-1] == tokenizer.eos_token_id


def test_train_on_all_trains_prompt_but_not_bos(tokenizer):
    out = tokenize_pair("ab", "cd", tokenizer, max_seq_length=128, train_on="all")
    assert out["labels"][0] == IGNORE_INDEX
    assert out["labels"][1:] == out["input_ids"][1:]


def test_truncation_keeps_length(tokenizer):
    out = tokenize_pair("x" * 50, "y" * 50, tokenizer, max_seq_length=32)
    assert len(out["input_ids"]) == len(out["labels"]) == 32


def test_pad_collator_pads_right_with_masks():
    batch = PadCollator(pad_token_id=0)(
        [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [5], "labels": [5]}]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [5, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["input_ids"].dtype == torch.long


def test_datamodule_builds_masked_batches(tokenizer, tmp_path):
    import json

    from hydratune.tasks.sft.data import SFTDataModule

    rows = [{"instruction": "Upper.", "input": f"w{i}", "output": f"W{i}"} for i in range(10)]
    for name in ("train", "eval"):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {
        "sources": [
            {
                "loader": "json",
                "data_files": {
                    "train": str(tmp_path / "train.jsonl"),
                    "validation": str(tmp_path / "eval.jsonl"),
                },
            }
        ],
        "format": "alpaca",
        "template": "alpaca_short",
        "max_seq_length": 128,
        "batch_size": 4,
    }
    dm = SFTDataModule(tokenizer, cfg, seed=0, cache_dir=str(tmp_path / "cache"))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 4
    trained = batch["labels"] != IGNORE_INDEX
    # Every sample trains on its answer (2 chars) + EOS and nothing else.
    assert trained.sum(dim=1).tolist() == [3, 3, 3, 3]
    assert len(dm.val_dataset) == 10


def _messages():
    return [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "HI"},
        {"role": "user", "content": "yo"},
        {"role": "assistant", "content": "YO"},
    ]


def _trained_text(tokenizer, out):
    return tokenizer.decode([t for t, lab in zip(out["input_ids"], out["labels"]) if lab != IGNORE_INDEX])


@pytest.mark.parametrize(
    ("train_on", "expected"),
    [
        ("response", "HI</s>\nYO</s>\n"),
        ("assistant", "HI</s>\nYO</s>\n"),
        ("last_assistant", "YO</s>\n"),
    ],
)
def test_messages_masking_policies(tokenizer, train_on, expected):
    from hydratune.data.formats import format_messages
    from hydratune.data.tokenize import tokenize_samples

    segments = format_messages({"messages": _messages()}, {}, tokenizer=tokenizer)
    assert "".join(t for t, _ in segments) == tokenizer.apply_chat_template(_messages(), tokenize=False)
    out = tokenize_samples([segments], tokenizer, 512, train_on)
    # The assistant header is prompt; the turn's content and its end-of-turn EOS are trained, no extra EOS.
    assert _trained_text(tokenizer, {k: v[0] for k, v in out.items()}) == expected
    assert out["input_ids"][0].count(tokenizer.eos_token_id) == 5


def test_messages_train_on_all_trains_everything_but_bos(tokenizer):
    from hydratune.data.formats import format_messages
    from hydratune.data.tokenize import tokenize_samples

    out = tokenize_samples(
        [format_messages({"messages": _messages()}, {}, tokenizer=tokenizer)], tokenizer, 512, "all"
    )
    assert out["labels"][0][0] == IGNORE_INDEX and out["labels"][0][1:] == out["input_ids"][0][1:]


def _sharegpt():
    names = {"system": "system", "user": "human", "assistant": "gpt"}
    return [{"from": names[m["role"]], "value": m["content"]} for m in _messages()]


def test_sharegpt_rows_train_exactly_as_the_same_messages(tokenizer):
    from hydratune.data.formats import FORMATS
    from hydratune.data.tokenize import tokenize_samples

    want = tokenize_samples([FORMATS["messages"]({"messages": _messages()}, {}, tokenizer)], tokenizer, 512)
    got = tokenize_samples(
        [FORMATS["sharegpt"]({"conversations": _sharegpt()}, {}, tokenizer)], tokenizer, 512
    )
    assert got == want and _trained_text(tokenizer, {k: v[0] for k, v in got.items()}) == "HI</s>\nYO</s>\n"
    # Other names: the column, the turn keys and the role values are config keys; a system column leads.
    turns = [{"speaker": {"human": "q", "gpt": "a"}[t["from"]], "text": t["value"]} for t in _sharegpt()[1:]]
    cfg = {"conversations_column": "chat", "role_key": "speaker", "content_key": "text",
           "roles": {"q": "user", "a": "assistant"}, "system_column": "sys"}  # fmt: skip
    row = {"chat": turns, "sys": "Be brief."}
    assert tokenize_samples([FORMATS["sharegpt"](row, cfg, tokenizer)], tokenizer, 512) == want


@pytest.mark.parametrize(
    ("turns", "match"),
    [
        ([{"from": "bot", "value": "x"}], "each turn needs 'from' \\(human \\| gpt \\| system"),
        ([{"from": "human", "content": "x"}], "text 'value'"),
        ("hi", "non-empty list"),
        ([{"from": "human", "value": "x"}], "dataset.roles.human='person': map each speaker to one of"),
    ],
)
def test_sharegpt_bad_turns_name_the_fix(tokenizer, turns, match):
    from hydratune.data.formats import FORMATS
    from hydratune.errors import UserError

    cfg = {"roles": {"human": "person"}} if "person" in match else {}
    with pytest.raises(UserError, match=match):
        FORMATS["sharegpt"]({"conversations": turns}, cfg, tokenizer)


def test_alpaca_chat_is_one_user_and_one_assistant_turn(tokenizer):
    from hydratune.data.formats import FORMATS

    row = {"instruction": "Reverse.", "input": "abc", "output": "cba", "sys": "Be brief."}
    turns = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Reverse.\nabc"},
             {"role": "assistant", "content": "cba"}]  # fmt: skip
    assert FORMATS["alpaca_chat"](row, {"system_column": "sys"}, tokenizer) == FORMATS["messages"](
        {"messages": turns}, {}, tokenizer
    )
    assert FORMATS["alpaca_chat"]({**row, "input": ""}, {}, tokenizer)[0][0] == "<|user|>\nReverse.</s>\n"


def test_segments_train_where_labelled(tokenizer):
    from hydratune.data.formats import FORMATS
    from hydratune.data.tokenize import tokenize_samples
    from hydratune.errors import UserError

    row = {"segments": [{"label": False, "text": "Q: abc\nA: "}, {"label": True, "text": "CBA"},
                        {"label": False, "text": "\nQ: x\nA: "}, {"label": True, "text": "X"}]}  # fmt: skip
    out = tokenize_samples([FORMATS["segments"](row, {})], tokenizer, 512)
    assert _trained_text(tokenizer, {k: v[0] for k, v in out.items()}) == "CBAX</s>"
    with pytest.raises(UserError, match="each segment needs text and a label"):
        FORMATS["segments"]({"segments": [{"text": "a"}]}, {})


def test_named_chat_template_is_set_on_the_tokenizer(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from hydratune.data.formats import CHAT_TEMPLATES, set_chat_template

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    set_chat_template(tok, {"chat_template": "chatml"})
    tok.save_pretrained(tmp_path)  # what export does: the saved template is the one training used
    # BOS first: training starts every conversation with it, so the saved template writes it too
    assert (
        AutoTokenizer.from_pretrained(tmp_path).chat_template == "{{ bos_token }}" + CHAT_TEMPLATES["chatml"]
    )


def test_prompt_response_with_system_column(tokenizer):
    cfg = {"prompt_column": "q", "response_column": "a", "system_column": "s"}
    segments = FORMATS["prompt_response"]({"q": "2+2?", "a": "4", "s": "Math."}, cfg)
    assert segments == [("Math.\n\n2+2?", False), ("4", True)]


def test_truncation_policies_are_counted(tokenizer, caplog):
    import logging

    import datasets

    from hydratune.tasks.sft.data import tokenize_split

    rows = [{"text": "a" * n} for n in (5, 50, 8, 70)]
    cfg = {"format": "text", "text_column": "text", "max_seq_length": 20}
    with caplog.at_level(logging.WARNING, logger="hydratune.tasks.sft.data"):
        kept, stats = tokenize_split(datasets.Dataset.from_list(rows), tokenizer, cfg)
    assert (stats["samples"], stats["truncated"], stats["truncation_rate"]) == (4, 2, 0.5)
    said = [r.getMessage() for r in caplog.records]  # half the samples cut: a warning
    assert len(said) == 1 and said[0].startswith(
        "dataset.max_seq_length=20: in split 'train', 2 of 4 samples"
    )
    caplog.clear()
    assert max(len(x) for x in kept["input_ids"]) == 20
    with caplog.at_level(logging.WARNING, logger="hydratune.tasks.sft.data"):
        kept, stats = tokenize_split(
            datasets.Dataset.from_list(rows), tokenizer, cfg | {"truncation": "drop"}
        )
    assert (stats["samples"], stats["dropped_truncated"]) == (2, 2)
    # split: every token of a long row trains, in consecutive max_seq_length pieces (pre-training text).
    assert "are longer and dropped (truncation: drop)" in caplog.records[-1].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hydratune.tasks.sft.data"):
        kept, stats = tokenize_split(
            datasets.Dataset.from_list(rows), tokenizer, cfg | {"truncation": "split"}
        )
    assert not [r for r in caplog.records if "max_seq_length" in r.getMessage()]
    whole = [tokenize_pair("", r["text"], tokenizer, 10_000, "all") for r in rows]
    pieces = list(kept["input_ids"])
    assert max(len(p) for p in pieces) == 20 and stats["truncated"] == 0
    assert sum(pieces, []) == sum((w["input_ids"] for w in whole), [])  # nothing lost or repeated, in order
    assert sum(list(kept["labels"]), []) == sum(
        (w["labels"] for w in whole), []
    )  # every token but BOS trains
    assert stats["samples"] == sum(-(-len(w["input_ids"]) // 20) for w in whole) == len(pieces)


def test_samples_without_trained_tokens_are_dropped_and_counted(tokenizer):
    import datasets

    from hydratune.tasks.sft.data import tokenize_split

    rows = [{"q": "x" * 40, "a": "y"}, {"q": "short", "a": "ok"}]
    cfg = {"prompt_column": "q", "response_column": "a", "max_seq_length": 20}
    kept, stats = tokenize_split(datasets.Dataset.from_list(rows), tokenizer, cfg)
    assert (stats["samples"], stats["dropped_untrained"]) == (1, 1)


def test_empty_answers_are_counted_and_said_in_training_and_preflight(tokenizer, caplog):
    """An empty answer trains only EOS, teaching the model to say nothing; SFT counted nothing for it (review
    F13). Training's data log and preflight's quick look both count it and name the filter that drops it."""
    import logging

    import datasets

    from hydratune.data.peek import Rows, sft_split
    from hydratune.tasks.sft.data import tokenize_split

    rows = [{"q": "a", "a": "b"}, {"q": "c", "a": ""}, {"q": "d", "a": "  "}]
    cfg = {"format": "prompt_response", "prompt_column": "q", "response_column": "a", "max_seq_length": 20}
    with caplog.at_level(logging.WARNING, logger="hydratune.tasks.sft.data"):
        kept, stats = tokenize_split(datasets.Dataset.from_list(rows[:3]), tokenizer, cfg)
    assert stats["empty_answers"] == 2 and stats["samples"] == 3  # kept, as the HF trainers keep them
    assert [r.getMessage() for r in caplog.records] == [
        "dataset: 2 of 3 rows of split 'train' have an empty answer (column 'a'); each trains only the "
        "end-of-sequence token, teaching the model to answer with nothing: drop them with dataset.ops=[{filter: "
        '"len(a) > 0"}]'
    ]
    notes: list[str] = []
    peeked, _ = sft_split(
        Rows(rows[:3], ["q", "a"], ["f.jsonl:1"] * 3, ["f.jsonl"]), tokenizer, cfg, "train", notes
    )
    assert peeked["empty_answers"] == 2 and notes[0].startswith(
        "dataset: 2 of 3 rows of split 'train' have an empty"
    )
    with caplog.at_level(logging.WARNING, logger="hydratune.tasks.sft.data"):
        _, stats = tokenize_split(datasets.Dataset.from_list(rows[:1]), tokenizer, cfg)
    assert stats["empty_answers"] == 0 and len(caplog.records) == 1


def test_group_by_length_batches_similar_lengths():
    from hydratune.data.sampler import WindowBatchSampler

    lengths = [i % 97 for i in range(400)]
    batches = list(WindowBatchSampler([1] * 400, 8, seed=0, lengths=lengths))
    assert sorted(i for b in batches for i, _ in b) == list(range(400))
    spread = sum(max(lengths[i] for i, _ in b) - min(lengths[i] for i, _ in b) for b in batches) / len(
        batches
    )
    assert spread < 10  # shuffled batches of 8 would span ~75


# Real templates that render a turn by what follows it (C1, C3, C6, C11): written after the published
# tokenizer_config.json files, cut to what matters here.
PHI3 = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + '<|end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)
QWEN3 = (  # the think block only on assistant turns after the last user turn
    "{%- set ns = namespace(last=0) %}{%- for m in messages %}{%- if m.role == 'user' %}"
    "{%- set ns.last = loop.index0 %}{%- endif %}{%- endfor %}{%- for m in messages %}"
    "{%- if m.role == 'assistant' %}{{ '<|im_start|>assistant\n' }}{%- if loop.index0 > ns.last %}"
    "{{ '<think>\n\n</think>\n\n' }}{%- endif %}{{ m.content + '<|im_end|>\n' }}"
    "{%- else %}{{ '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{%- endif %}"
)
MISTRAL = (  # the system prompt goes into the user turn that ends the conversation, else nowhere
    "{%- if messages[0]['role'] == 'system' %}{%- set system = messages[0]['content'] %}"
    "{%- set turns = messages[1:] %}{%- else %}{%- set turns = messages %}{%- endif %}"
    "{%- for m in turns %}{%- if m['role'] == 'user' %}{%- if loop.last and system is defined %}"
    "{{ '[INST] ' + system + '\n\n' + m['content'] + '[/INST]' }}{%- else %}{{ '[INST] ' + m['content'] + '[/INST]' }}"
    "{%- endif %}{%- else %}{{ ' ' + m['content'] + eos_token }}{%- endif %}{%- endfor %}"
)
CHATML_SYSTEM = (  # Qwen2.5: a default system prompt when the rows have none
    "{%- if messages[0].role != 'system' %}{{ '<|im_start|>system\nBe brief.<|im_end|>\n' }}{%- endif %}"
    "{%- for m in messages %}{{ '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{%- endif %}"
)
GEMMA = (
    "{%- for m in messages %}{%- if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{%- endif %}{{ '<start_of_turn>' + m['role'] + '\n' + m['content'] + '<end_of_turn>\n' }}{%- endfor %}"
)
MARKERS = [
    "<|user|>",
    "<|assistant|>",
    "<|system|>",
    "<|end|>",
    "<|im_start|>",
    "<|im_end|>",
    "<think>",
    "</think>",
]


@pytest.fixture()
def template_tokenizer(tiny_model_dir):
    """A tokenizer of its own (the session's is shared), the templates' markers as special tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": MARKERS})
    return tokenizer


def _turns(*contents, system=None, first="user"):
    roles = ["user", "assistant"] if first == "user" else ["assistant", "user"]
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": roles[i % 2], "content": c} for i, c in enumerate(contents)]


@pytest.mark.parametrize(
    ("template", "messages", "trained"),
    [
        # Phi-3 ends a conversation with EOS: each turn trains its <|end|>, the last one EOS too.
        (PHI3, _turns("hi", "HI", "yo", "YO"), ["HI<|end|>\n", "YO<|end|>\n</s>"]),
        # Qwen3: turn 1 has no think block once turn 2 exists; the last turn's is trained, as it is when that
        # turn is the only one (what the model writes after the generation prompt).
        (
            QWEN3,
            _turns("hi", "HI", "yo", "YO", system="S"),
            ["HI<|im_end|>\n", "<think>\n\n</think>\n\nYO<|im_end|>\n"],
        ),
        # Mistral with a system prompt: rendered as the template renders the whole conversation; each answer with
        # the space the template writes after "[/INST]", where the generation prompt ends, as without a system
        # prompt (review T3: with SentencePiece, "▁" before a digit is a token the model never learnt to write).
        (MISTRAL, _turns("hi", "HI", "yo", "YO", system="S"), [" HI</s>", " YO</s>"]),
        (MISTRAL, _turns("hi", "HI", "yo", "YO"), [" HI</s>", " YO</s>"]),
        # An opening assistant turn: the default system prompt and the header are prompt, not trained.
        (
            CHATML_SYSTEM,
            _turns("HELLO", "hi", "HI", first="assistant"),
            ["HELLO<|im_end|>\n", "HI<|im_end|>\n"],
        ),
    ],
)
def test_templates_that_render_a_turn_by_what_follows_train_each_answer_and_its_end(
    template_tokenizer, template, messages, trained
):
    from hydratune.data.formats import format_messages

    template_tokenizer.chat_template = template
    segments = format_messages({"messages": messages}, {}, tokenizer=template_tokenizer)
    assert "".join(t for t, _ in segments) == template_tokenizer.apply_chat_template(messages, tokenize=False)
    assert [t for t, on in segments if on] == trained


def test_a_template_that_leaves_a_prompt_turn_out_is_said_once(template_tokenizer, caplog, monkeypatch):
    """Mistral v0.3 writes the system prompt only before the last user turn, which a training row never ends
    with: every row trained without it, silently (review T4)."""
    from hydratune.data import formats

    monkeypatch.setattr(formats, "_SAID_DROPPED", set())
    template_tokenizer.chat_template = MISTRAL
    with caplog.at_level("WARNING", logger="hydratune.data.formats"):
        for _ in range(2):
            formats.format_messages(
                {"messages": _turns("hi", "HI", system="Be brief.")}, {}, tokenizer=template_tokenizer
            )
        formats.format_messages({"messages": _turns("hi", "HI")}, {}, tokenizer=template_tokenizer)
    assert [r.getMessage() for r in caplog.records] == [
        "dataset.chat_template leaves the system turn out of rows it renders ('Be brief.' is not in the text; "
        "Mistral's template writes a system prompt only before a conversation's last user turn): merge it into "
        "the first user turn (a map op), or choose another template with dataset.chat_template"
    ]


def test_a_conversation_ending_with_the_templates_end_of_turn_gets_no_eos_after_it(template_tokenizer):
    """ChatML ends a turn with <|im_end|>: an EOS was appended after the last turn only, teaching
    `<|im_end|> <|endoftext|>` there and `<|im_end|> <|im_start|>` elsewhere (review T15; TRL appends none).
    Text formats keep their EOS."""
    from hydratune.data.formats import format_messages
    from hydratune.data.tokenize import tokenize_samples

    template_tokenizer.chat_template = CHATML_SYSTEM
    segments = format_messages({"messages": _turns("hi", "HI")}, {}, tokenizer=template_tokenizer)
    ids = tokenize_samples([segments], template_tokenizer, 256, whole=True)["input_ids"][0]
    im_end = template_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert template_tokenizer.eos_token_id not in ids and ids[-2] == im_end
    plain = tokenize_samples([[("hi ", False), ("HI", True)]], template_tokenizer, 256)["input_ids"][0]
    assert plain[-1] == template_tokenizer.eos_token_id
    # preference pairs of conversations alike (TRL's DPO adds EOS to text pairs only); text pairs keep theirs
    from hydratune.data.pairs import tokenize_pairs

    row = {"prompt": _turns("hi"), "chosen": [{"role": "assistant", "content": "HI"}],
           "rejected": [{"role": "assistant", "content": "ho"}]}  # fmt: skip
    out = tokenize_pairs([row], template_tokenizer, {"format": "chat_pairs", "max_seq_length": 256})
    for answer in (out["chosen_ids"][0], out["rejected_ids"][0]):
        assert answer[-2] == im_end and template_tokenizer.eos_token_id not in answer
    text = tokenize_pairs([{"prompt": "hi ", "chosen": "HI", "rejected": "ho"}], template_tokenizer,
                          {"format": "pairs", "max_seq_length": 256})  # fmt: skip
    assert text["chosen_ids"][0][-1] == text["rejected_ids"][0][-1] == template_tokenizer.eos_token_id


def test_chat_pairs_with_a_template_that_ends_with_eos(template_tokenizer):
    """chat_pairs shares the rendering: Phi-3 preference pairs were refused too."""
    from hydratune.data.pairs import format_chat_pairs

    template_tokenizer.chat_template = PHI3
    row = {"prompt": _turns("hi"), "chosen": [{"role": "assistant", "content": "HI"}],
           "rejected": [{"role": "assistant", "content": "hi"}]}  # fmt: skip
    prompt, chosen, rejected = format_chat_pairs(row, {"format": "chat_pairs"}, template_tokenizer)
    assert (prompt, chosen, rejected) == (
        "<|user|>\nhi<|end|>\n<|assistant|>\n",
        "HI<|end|>\n</s>",
        "hi<|end|>\n</s>",
    )


def test_a_template_that_refuses_or_rewrites_a_conversation_is_one_line(template_tokenizer):
    from hydratune.data.formats import format_messages
    from hydratune.errors import UserError

    template_tokenizer.chat_template = GEMMA
    with pytest.raises(
        UserError, match=r"refuses this conversation \(System role not supported\): change the rows"
    ):
        format_messages({"messages": _turns("hi", "HI", system="S")}, {}, tokenizer=template_tokenizer)
    template_tokenizer.chat_template = PHI3.replace("m['content']", "m['content'] | trim")
    with pytest.raises(UserError, match=r"changes the text of the assistant turn at message 1"):
        format_messages({"messages": _turns("hi", " HI ")}, {}, tokenizer=template_tokenizer)
    # OpenAI's tool-calling turn (content null beside tool_calls) under a template that does not render tool
    # calls: it trained as an empty answer ("<|end|>\n</s>"); refused, as is a tools column it leaves out
    # (review F2). Templates that render them: test_a_turn_that_only_calls_tools_trains_its_calls.
    template_tokenizer.chat_template = PHI3
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"type": "function", "function": {"name": "get_weather"}}],
    }
    with pytest.raises(UserError, match=r"does not render tool_calls \(the call to 'get_weather' is missing"):
        format_messages({"messages": [*_turns("hi"), call]}, {}, tokenizer=template_tokenizer)
    with pytest.raises(UserError, match=r"does not render the 'tools' column"):
        format_messages(
            {"messages": _turns("hi", "HI"), "tools": [{"name": "get_weather"}]},
            {},
            tokenizer=template_tokenizer,
        )


def test_a_tools_column_reaches_the_template(template_tokenizer):
    """Function-calling rows (TRL's `tools` column, LLaMA-Factory's as JSON text): the template writes the
    schemas into the prompt; they were dropped, so the model learnt to call tools it was never shown."""
    import json

    from hydratune.data.formats import format_messages, format_sharegpt
    from hydratune.errors import UserError

    template_tokenizer.chat_template = "{% if tools %}TOOLS {{ tools | tojson }}\n{% endif %}" + CHATML_SYSTEM
    tools = [{"type": "function", "function": {"name": "weather"}}]
    for given in (tools, json.dumps(tools)):
        segments = format_messages({"messages": _turns("hi", "HI"), "tools": given}, {}, template_tokenizer)
        text, trained = segments[0]
        assert (
            text.startswith('TOOLS [{"type": "function", "function": {"name": "weather"}}]\n') and not trained
        )
    sharegpt = {
        "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "HI"}],
        "tools": tools,
    }
    assert format_sharegpt(sharegpt, {}, template_tokenizer)[0][0].startswith("TOOLS [")
    with pytest.raises(UserError, match="column 'tools' holds .* which is not JSON"):
        format_messages({"messages": _turns("hi", "HI"), "tools": "{weather"}, {}, template_tokenizer)


def test_a_template_whose_markers_the_tokenizer_lacks_is_a_warning(
    tiny_model_dir, template_tokenizer, caplog
):
    """chatml on a tokenizer without <|im_start|> (a Llama 3 one): each marker became several tokens, silently."""
    from transformers import AutoTokenizer

    from hydratune.data.formats import set_chat_template

    with caplog.at_level("WARNING", logger="hydratune.data.formats"):
        set_chat_template(AutoTokenizer.from_pretrained(tiny_model_dir), {"chat_template": "chatml"})
    assert (
        "dataset.chat_template=chatml writes <|im_start|>, which this tokenizer splits into 12 tokens"
        in caplog.text
    )
    caplog.clear()
    with caplog.at_level("WARNING", logger="hydratune.data.formats"):
        set_chat_template(template_tokenizer, {"chat_template": "chatml"})  # it has them
    assert "splits" not in caplog.text


def test_chat_sources_whose_messages_have_other_keys_combine(template_tokenizer):
    """One file's messages carry a `name` (or `tool_calls`) key, the other's not: their columns had two types
    that no op can align, so the sources could not be combined (review C17)."""
    import datasets

    from hydratune.data.formats import format_messages
    from hydratune.data.ops import combine

    plain = datasets.Dataset.from_list([{"messages": _turns("hi", "HI")}])
    named = datasets.Dataset.from_list([{"messages": [{"role": "user", "content": "yo", "name": "ann"},
                                                      {"role": "assistant", "content": "YO", "name": None}]}])  # fmt: skip
    for op in ({"concat": {}}, {"interleave": {"stopping_strategy": "all_exhausted"}}):
        rows = list(
            combine([datasets.DatasetDict(train=plain), datasets.DatasetDict(train=named)], op, "ops[0]")[
                "train"
            ]
        )
        assert sorted(r["messages"][0]["content"] for r in rows) == ["hi", "yo"]
    # The null a message gets for a key it lacks does not reach the template.
    filled = next(r["messages"] for r in rows if r["messages"][0]["content"] == "hi")
    assert filled[0]["name"] is None
    template_tokenizer.chat_template = "{% for m in messages %}{{ m | tojson }}{% endfor %}"
    rendered = "".join(t for t, _ in format_messages({"messages": filled}, {}, template_tokenizer))
    assert '"content": "hi"' in rendered and '"name"' not in rendered


def test_content_as_a_list_of_text_parts_is_joined(template_tokenizer):
    """OpenAI exports write content as parts; text parts were refused as 'no text content' (review C15)."""
    from hydratune.data.formats import format_messages
    from hydratune.errors import UserError

    template_tokenizer.chat_template = CHATML_SYSTEM
    parts = [{"type": "text", "text": "h"}, {"type": "text", "text": "i"}]
    messages = [{"role": "user", "content": parts}, {"role": "assistant", "content": "HI"}]
    assert format_messages({"messages": messages}, {}, template_tokenizer) == format_messages(
        {"messages": _turns("hi", "HI")}, {}, template_tokenizer
    )
    image = [*parts, {"type": "image_url", "image_url": {"url": "x"}}]
    with pytest.raises(UserError, match="holds a message with image_url parts; hydratune trains on text"):
        format_messages(
            {"messages": [{"role": "user", "content": image}, messages[1]]}, {}, template_tokenizer
        )


def _sentencepiece_like(texts: list[str]):
    """A word-level tokenizer normalized as Llama 2's and Phi-3's SentencePiece ones: "▁" before every call's
    text, spaces as "▁", newlines apart. Alone, "HI" is "▁HI"; after a newline, "HI". Its vocabulary: every
    piece of `texts`, whole or alone."""
    import re

    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<s>", "</s>", "[INST]", "[/INST]", *MARKERS]
    normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    splitter = pre_tokenizers.Split(Regex("\n|▁[^▁\n]*|[^▁\n]+"), behavior="isolated")
    pieces = [p for text in texts for p in re.split("|".join(map(re.escape, specials)), text) if p]
    words = {w for piece in pieces for w, _ in splitter.pre_tokenize_str(normalizer.normalize_str(piece))}
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", *sorted(words)])}
    model = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    model.normalizer, model.pre_tokenizer = normalizer, splitter
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=model, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["[INST]", "[/INST]", *MARKERS]})
    return tokenizer


@pytest.mark.parametrize(
    ("template", "messages"),
    [
        (MISTRAL, _turns("hi", "HI", "yo", "YO", system="S")),  # ' ' + answer, the whole-rendering path
        (PHI3, _turns("hi", "HI", "yo", "YO")),  # '<|assistant|>\n' + answer
    ],
)
def test_a_conversation_trains_on_its_own_ids(template, messages):
    """A SentencePiece tokenizer reads an answer alone as '▁HI' and after '\n' as 'HI': segments tokenized one
    by one gave ids the conversation never has (review V1). A conversation is tokenized whole now, each token
    trained with the segment of its last character."""
    from hydratune.data.formats import format_messages
    from hydratune.data.tokenize import tokenize_samples

    probe = _sentencepiece_like([])
    probe.chat_template = "{{ bos_token }}" + template
    full = probe.apply_chat_template(messages, tokenize=False)
    tokenizer = _sentencepiece_like([full, "HI", "YO", " HI", " YO"])
    tokenizer.chat_template = "{{ bos_token }}" + template
    segments = format_messages({"messages": messages}, {}, tokenizer)
    out = tokenize_samples([segments], tokenizer, 64, "assistant", whole=True)
    ids, labels = out["input_ids"][0], out["labels"][0]
    assert ids == tokenizer(full, add_special_tokens=False)["input_ids"]
    assert "<unk>" not in tokenizer.convert_ids_to_tokens(ids)
    trained = tokenizer.convert_ids_to_tokens([t for t, label in zip(ids, labels) if label != -100])
    assert [t for t in trained if "HI" in t or "YO" in t] and not [
        t for t in trained if "hi" in t or "yo" in t
    ]


QWEN25_TOOLS = (  # Qwen2.5's tool turns: a call-only answer has no text; results in a row share one block
    "{%- for m in messages %}{%- if m.role == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}{{ '<|im_start|>user' }}{%- endif %}"
    "{{ '\n<tool_response>\n' + m.content + '\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{ '<|im_end|>\n' }}{%- endif %}"
    "{%- elif m.role == 'assistant' %}{{ '<|im_start|>assistant' }}{%- if m.content %}{{ '\n' + m.content }}{%- endif %}"
    "{%- for call in m.tool_calls or [] %}{{ '\n<tool_call>\n' + call.function.name + '\n</tool_call>' }}{%- endfor %}"
    "{{ '<|im_end|>\n' }}{%- else %}{{ '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{%- endif %}"
)


@pytest.mark.parametrize("content", [None, ""])
def test_a_turn_that_only_calls_tools_trains_its_calls(template_tokenizer, content):
    """Two tool results in a row (one block in Qwen2.5's template) send the conversation down the whole-text
    path, where an answer with no text had no placeholder to find: it was refused (review V2)."""
    from hydratune.data.formats import format_messages

    template_tokenizer.chat_template = QWEN25_TOOLS
    calls = [{"type": "function", "function": {"name": name}} for name in ("f", "g")]
    messages = [{"role": "user", "content": "weather?"}, {"role": "assistant", "content": content, "tool_calls": calls},
                {"role": "tool", "content": "sun"}, {"role": "tool", "content": "rain"},
                {"role": "assistant", "content": "MIXED"}]  # fmt: skip
    segments = format_messages({"messages": messages}, {}, template_tokenizer)
    assert "".join(t for t, _ in segments) == template_tokenizer.apply_chat_template(messages, tokenize=False)
    assert [t for t, on in segments if on] == [
        "<tool_call>\nf\n</tool_call>\n<tool_call>\ng\n</tool_call><|im_end|>\n",
        "MIXED<|im_end|>\n",
    ]


def test_a_tool_calling_chat_file_combines_with_a_plain_one(tmp_path):
    """datasets reads messages that hold tool_calls (or null content) as JSON values, and plain ones as records:
    two such files could not be combined (review V3)."""
    import json

    import datasets

    from hydratune.data.ops import combine

    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"type": "function", "function": {"name": "f"}}],
    }
    files = {
        "plain": [{"messages": _turns("hi", "HI")}],
        "tools": [{"messages": [{"role": "user", "content": "weather?"}, call]}],
    }
    loaded = []
    for name, rows in files.items():
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        loaded.append(datasets.load_dataset("json", data_files=str(tmp_path / f"{name}.jsonl")))
    for op in ({"concat": {}}, {"interleave": {"stopping_strategy": "all_exhausted"}}):
        rows = list(combine(loaded, op, "dataset.ops[0]")["train"])
        assert sorted(r["messages"][0]["content"] for r in rows) == ["hi", "weather?"]
        assert any(r["messages"][-1].get("tool_calls") for r in rows)


def test_openai_weight_zero_keeps_an_assistant_turn_out_of_the_loss(template_tokenizer):
    """OpenAI's fine-tuning files mark a turn not to learn with `weight: 0`; it was trained (review F1). Both
    rendering paths read it; a weight other than 0 or 1 is one line."""
    from hydratune.data.formats import format_messages
    from hydratune.errors import UserError

    messages = _turns("hi", "WRONG", "again", "RIGHT")
    messages[1]["weight"] = 0
    messages[3]["weight"] = 1
    for template, trained in ((CHATML_SYSTEM, ["RIGHT<|im_end|>\n"]), (PHI3, ["RIGHT<|end|>\n</s>"])):
        template_tokenizer.chat_template = template
        segments = format_messages({"messages": messages}, {}, tokenizer=template_tokenizer)
        assert [t for t, on in segments if on] == trained
        assert "WRONG" in "".join(t for t, _ in segments)  # still the prompt of the turn after it
    messages[1]["weight"] = 0.5
    with pytest.raises(
        UserError, match=r"assistant turn with weight 0.5; OpenAI's weight is 0 \(not trained\) or 1"
    ):
        format_messages({"messages": messages}, {}, tokenizer=template_tokenizer)


def test_sharegpt_turns_that_name_their_roles_are_read_by_default(template_tokenizer):
    """ShareGPT exports that write `from: user/assistant` (OpenHermes) and LLaMA-Factory's observation turns
    were refused until dataset.roles was extended by hand (review F8)."""
    from hydratune.data.formats import SHAREGPT_DEFAULTS, sharegpt_messages

    row = {"conversations": [{"from": "user", "value": "hi"}, {"from": "assistant", "value": "HI"},
                             {"from": "observation", "value": "42"}, {"from": "gpt", "value": "OK"}]}  # fmt: skip
    assert [m["role"] for m in sharegpt_messages(row, {"roles": SHAREGPT_DEFAULTS["roles"]})] == [
        "user", "assistant", "tool", "assistant"
    ]  # fmt: skip


def test_trls_conversational_prompt_completion_rows_train_the_completion(template_tokenizer):
    """TRL's conversational prompt-completion rows (prompt and completion, each a list of messages) could not
    be read (review F9): messages_column takes the columns in order; only the last one's turns train."""
    from hydratune.data.formats import format_messages, required_columns

    template_tokenizer.chat_template = CHATML_SYSTEM
    row = {"prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "HI"},
                      {"role": "user", "content": "yo"}],
           "completion": [{"role": "assistant", "content": "YO"}]}  # fmt: skip
    cfg = {"messages_column": ["prompt", "completion"]}
    segments = format_messages(row, cfg, tokenizer=template_tokenizer)
    assert [t for t, on in segments if on] == ["YO<|im_end|>\n"] and "HI" in "".join(t for t, _ in segments)
    assert required_columns("messages", cfg) == ["prompt", "completion"]


def test_the_marked_text_keeps_a_sentencepiece_space_at_the_edge_of_a_run():
    """`hydratune inspect` decoded each run alone, and a SentencePiece decoder drops a run's leading "▁": Mistral's
    `[/INST] 42` showed as `[/INST][[42`, hiding whether the space was trained (review T11)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from hydratune.data.display import marked_text

    vocab = {"<unk>": 0, "]": 1, "▁": 2, "4": 3, "2": 4, "▁ok": 5}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer, backend.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend)
    assert tokenizer.decode([2, 3, 4]) == "42"  # alone, the space is gone
    assert marked_text(tokenizer, [1, 2, 3, 4, 5], [-100, 2, 3, 4, -100]) == "][[ 42]] ok"
    assert marked_text(tokenizer, [1, 2, 3, 4], [-100, -100, 3, 4]) == "] [[42]]"
