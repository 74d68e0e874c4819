"""Preference data: formats, tokenization with counted drops, and the pair/KTO collators."""

from __future__ import annotations

import json

import pytest
import torch

from hydratune.data.formats import CHAT_TEMPLATES, alpaca_prompt
from hydratune.data.pairs import (
    KTOCollator,
    PairCollator,
    bos_first,
    check_pair_config,
    pair_stats,
    tokenize_kto,
    tokenize_pairs,
)
from hydratune.errors import UserError

CFG = {"format": "pairs", "max_seq_length": 32}


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_pairs_layout_bos_prompt_and_answers_with_eos(tokenizer):
    out = tokenize_pairs([{"prompt": "copy: ab -> ", "chosen": "AB", "rejected": "ab"}], tokenizer, CFG)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    assert out["prompt_ids"] == [[bos, *ids(tokenizer, "copy: ab -> ")]]
    assert out["chosen_ids"] == [[*ids(tokenizer, "AB"), eos]]
    assert out["rejected_ids"] == [[*ids(tokenizer, "ab"), eos]]
    assert out["length"] == [1 + 12 + 3] and out["drop"] == [""] and out["truncated"] == [False]


def test_column_names_come_from_the_config(tokenizer):
    cfg = CFG | {"prompt_column": "q", "chosen_column": "good", "rejected_column": "bad"}
    out = tokenize_pairs([{"q": "x", "good": "yes", "bad": "no"}], tokenizer, cfg)
    assert out["chosen_ids"][0][:-1] == ids(tokenizer, "yes")
    with pytest.raises(UserError, match="'good'"):
        tokenize_pairs([{"q": "x", "chosen": "yes", "bad": "no"}], tokenizer, cfg)


def test_alpaca_pairs_use_the_sft_template(tokenizer):
    cfg = {"format": "alpaca_pairs", "template": "alpaca_short", "max_seq_length": 128}
    row = {"instruction": "Shout.", "input": "hi", "chosen": "HI", "rejected": "hi"}
    out = tokenize_pairs([row], tokenizer, cfg)
    assert out["prompt_ids"][0][1:] == ids(tokenizer, alpaca_prompt("Shout.", "hi", "alpaca_short"))


def test_chat_pairs_share_the_prompt_turns_and_differ_in_the_last_answer(tokenizer):
    tokenizer.chat_template = CHAT_TEMPLATES["tiny"]
    user = {"role": "user", "content": "hi"}
    row = {
        "chosen": [user, {"role": "assistant", "content": "HI"}],
        "rejected": [user, {"role": "assistant", "content": "hi"}],
    }
    out = tokenize_pairs([row], tokenizer, {"format": "chat_pairs", "max_seq_length": 64})
    eos = tokenizer.eos_token_id
    assert out["prompt_ids"][0][1:] == ids(tokenizer, "<|user|>\nhi") + [eos] + ids(
        tokenizer, "\n<|assistant|>\n"
    )
    # The template ends the turn with EOS and a newline: no second EOS is added.
    assert out["chosen_ids"][0] == ids(tokenizer, "HI") + [eos] + ids(tokenizer, "\n")
    # TRL's conversational layout (prompt turns in their own column) gives the same ids.
    split = {"prompt": [user], "chosen": row["chosen"][1:], "rejected": row["rejected"][1:]}
    assert tokenize_pairs([split], tokenizer, {"format": "chat_pairs", "max_seq_length": 64}) == out
    bad = {"chosen": row["chosen"], "rejected": [{"role": "user", "content": "yo"}, row["rejected"][1]]}
    with pytest.raises(UserError, match="share every turn"):
        tokenize_pairs([bad], tokenizer, {"format": "chat_pairs", "max_seq_length": 64})


def test_bad_pairs_are_dropped_and_counted_long_answers_cut(tokenizer):
    rows = [
        {"prompt": "p", "chosen": "good", "rejected": "bad"},  # kept
        {"prompt": "p", "chosen": "  ", "rejected": "bad"},  # empty answer
        {"prompt": "p", "chosen": "same", "rejected": "same"},  # identical
        {"prompt": "x" * 40, "chosen": "a", "rejected": "b"},  # prompt alone over the limit
        {"prompt": "y" * 20, "chosen": "a" * 30, "rejected": "b" * 5},  # chosen cut to fit
        {"prompt": "z" * 20, "chosen": "c" * 30 + "1", "rejected": "c" * 30 + "2"},  # identical once cut
    ]
    out = tokenize_pairs(rows, tokenizer, CFG)
    assert out["drop"] == ["", "empty_answer", "identical", "long_prompt", "", "identical"]
    assert len(out["prompt_ids"][4]) + len(out["chosen_ids"][4]) == 32  # 1 + 20 + 11
    assert out["chosen_ids"][4] == ids(tokenizer, "a" * 11)  # cut from the right, EOS lost
    assert out["rejected_ids"][4][-1] == tokenizer.eos_token_id
    keep, stats = pair_stats(out["drop"], out["truncated"])
    assert keep == [0, 4]
    assert stats == {
        "rows": 6,
        "pairs": 2,
        "dropped_empty_answer": 1,
        "dropped_identical": 2,
        "dropped_long_prompt": 1,
        "truncated": 1,
        "truncation_rate": 0.5,
    }


def test_kto_rows_labels_and_drops(tokenizer):
    cfg = {"format": "kto", "max_seq_length": 16, "label_column": "ok"}
    rows = [
        {"prompt": "q", "completion": "yes", "ok": True},
        {"prompt": "q", "completion": "no", "ok": 0},
        {"prompt": "q", "completion": "", "ok": 1},
        {"prompt": "q" * 20, "completion": "x", "ok": 1},
    ]
    out = tokenize_kto(rows, tokenizer, cfg)
    assert out["label"] == [True, False, True, True]
    assert out["drop"] == ["", "", "empty_answer", "long_prompt"]
    assert out["completion_ids"][0] == ids(tokenizer, "yes") + [tokenizer.eos_token_id]
    with pytest.raises(UserError, match="'ok' holds 'yes' \\(str\\); use true/false or 1/0"):
        tokenize_kto([{"prompt": "q", "completion": "a", "ok": "yes"}], tokenizer, cfg)
    # "true"/"false" as text (a CSV cell, JSON written with quotes) read as the flags they spell
    text_labels = [
        {"prompt": "q", "completion": "a", "ok": "True"},
        {"prompt": "q", "completion": "b", "ok": "false"},
        {"prompt": "q", "completion": "c", "ok": "1"},  # and "1"/"0" (review F12)
        {"prompt": "q", "completion": "d", "ok": " 0"},
    ]
    assert tokenize_kto(text_labels, tokenizer, cfg)["label"] == [True, False, True, False]


def _preference_data(tokenizer, tmp_path, rows: list[dict], **cfg):
    """A PreferenceDataModule over `rows` (train and validation alike), set up."""
    import json

    from hydratune.data.preference import PreferenceDataModule

    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    kto = cfg.get("format") == "kto"
    cfg = {"sources": [{"loader": "json", "data_files": {"train": str(path), "validation": str(path)}}],
           "max_seq_length": 32, "batch_size": 2, "eval_batch_size": 2, **cfg}  # fmt: skip
    return PreferenceDataModule(tokenizer, cfg=cfg, cache_dir=str(tmp_path / "cache"), kto=kto)


PAIRS = [{"prompt": f"copy: {w} -> ", "chosen": w.upper(), "rejected": w} for w in ("ab", "cd", "ef")]


def test_a_mapped_column_no_preference_format_reads_is_a_warning(tokenizer, tmp_path, caplog):
    """As for SFT (O4): a `map` op making a column that the pair or KTO format does not read changes nothing
    trained on, and says so with the key that would read it; a column it reads is no warning (V9)."""
    unread = [{"map": {"answer": "{chosen}!"}}]
    data = _preference_data(tokenizer, tmp_path / "a", PAIRS, format="pairs", ops=unread)
    with caplog.at_level("WARNING"):
        data.setup("fit")
    assert (
        "dataset.ops[0].map makes column 'answer', which nothing reads (dataset.format=pairs reads chosen, prompt, "
        "rejected): map onto one of those, or point the format at it (e.g. dataset.chosen_column=answer)"
    ) in caplog.text
    caplog.clear()
    read = [{"map": {"chosen": "{chosen}!"}}]
    data = _preference_data(tokenizer, tmp_path / "b", PAIRS, format="pairs", ops=read)
    with caplog.at_level("WARNING"):
        data.setup("fit")
    assert "map makes" not in caplog.text
    assert data.train_dataset is not None
    # KTO reads prompt/completion/label, and the pairs it unpairs; the fix points at its completion column
    kto = [
        {"prompt": "q", "completion": "A", "label": True},
        {"prompt": "q", "completion": "b", "label": False},
    ]
    data = _preference_data(
        tokenizer, tmp_path / "c", kto, format="kto", ops=[{"map": {"reply": "{completion}"}}]
    )
    with caplog.at_level("WARNING"):
        data.setup("fit")
    assert "(e.g. dataset.completion_column=reply)" in caplog.text


def test_preference_data_without_a_validation_split_trains_unevaluated(tokenizer, tmp_path):
    """A train-only file was refused ('needs a train and a validation split'); TRL evaluates only when asked,
    and SFT here trains unevaluated with a warning (train.py's): preference data now does the same (review F14)."""
    from hydratune.data.preference import PreferenceDataModule

    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in PAIRS))
    cfg = {"sources": [{"loader": "json", "data_files": {"train": str(path)}}], "format": "pairs",
           "max_seq_length": 32, "batch_size": 2, "eval_batch_size": 2}  # fmt: skip
    data = PreferenceDataModule(tokenizer, cfg=cfg, cache_dir=str(tmp_path / "cache"))
    data.setup("fit")
    assert len(data.train_dataset) == 3 and data.val_dataset is None and "validation" not in data.stats
    named = {**cfg, "sources": [{"loader": "json", "data_files": {"eval": str(path)}}]}
    with pytest.raises(UserError, match=r"the sources give splits eval but no 'train'"):
        PreferenceDataModule(tokenizer, cfg=named, cache_dir=str(tmp_path / "cache2")).setup("fit")


def test_kto_on_preference_pairs_unpairs_them_as_trl_does(tokenizer, tmp_path):
    """A prompt/chosen/rejected file given to task=kto trains as KTO rows: each chosen answer desirable, each
    rejected one undesirable (TRL's KTOTrainer unpairs such data itself)."""
    data = _preference_data(tokenizer, tmp_path, PAIRS, format="kto")
    data.setup("fit")
    rows = data.train_dataset
    assert len(rows) == 6 and list(rows["label"]) == [True] * 3 + [False] * 3
    assert rows[0]["completion_ids"] == ids(tokenizer, "AB") + [tokenizer.eos_token_id]
    assert rows[3]["completion_ids"] == ids(tokenizer, "ab") + [tokenizer.eos_token_id]
    assert (
        rows[0]["prompt_ids"]
        == rows[3]["prompt_ids"]
        == [tokenizer.bos_token_id, *ids(tokenizer, "copy: ab -> ")]
    )


def test_kto_on_implicit_prompt_pairs_takes_the_shared_start_as_trl_does(tokenizer, tmp_path):
    """hh-rlhf transcripts and TRL's conversational pairs without a prompt column were refused by task=kto, which
    pointed at its own columns; TRL's KTOTrainer extracts the prompt, then unpairs (review P7)."""
    hh = [{"chosen": f"Q: {w}? A: {w.upper()}", "rejected": f"Q: {w}? A: {w}"} for w in ("ab", "cd")]
    data = _preference_data(tokenizer, tmp_path / "hh", hh, format="kto")
    data.setup("fit")
    rows = data.train_dataset
    assert list(rows["label"]) == [True, True, False, False]
    assert rows[0]["prompt_ids"] == [tokenizer.bos_token_id, *ids(tokenizer, "Q: ab? A:")]
    assert rows[0]["completion_ids"] == ids(tokenizer, " AB") + [tokenizer.eos_token_id]
    tokenizer.chat_template = CHAT_TEMPLATES["tiny"]
    user = {"role": "user", "content": "hi"}
    conv = [{"chosen": [user, {"role": "assistant", "content": "HI"}],
             "rejected": [user, {"role": "assistant", "content": "ho"}]}] * 2  # fmt: skip
    data = _preference_data(tokenizer, tmp_path / "conv", conv, format="kto", chat_template="tiny")
    data.setup("fit")
    pair = tokenize_pairs([{"prompt": [user], **{k: conv[0][k][1:] for k in ("chosen", "rejected")}}], tokenizer,
                          {"format": "chat_pairs", "max_seq_length": 32})  # fmt: skip
    assert data.train_dataset[0]["prompt_ids"] == pair["prompt_ids"][0]
    assert data.train_dataset[0]["completion_ids"] == pair["chosen_ids"][0]
    nothing = [{"chosen": "yes", "rejected": "no"}]
    with pytest.raises(UserError, match="share no text or turns to be the prompt"):
        _preference_data(tokenizer, tmp_path / "none", nothing, format="kto").setup("fit")


def test_conversational_kto_rows_render_as_chat_pairs_do(tokenizer):
    """TRL's conversational KTO rows (prompt turns, one completion turn, a label) were refused, with a pointer to
    formats task=kto does not take (review F9): they train, rendered with the chat template, the prompt ending
    with the assistant header as chat_pairs' does."""
    tokenizer.chat_template = CHAT_TEMPLATES["tiny"]
    user = {"role": "user", "content": "hi"}
    cfg = {"format": "kto", "max_seq_length": 64}
    rows = [{"prompt": [user], "completion": [{"role": "assistant", "content": "HI"}], "label": True},
            {"prompt": "hi", "completion": [{"role": "assistant", "content": "ho"}], "label": 0}]  # fmt: skip
    out = tokenize_kto(rows, tokenizer, cfg)
    pair = tokenize_pairs(
        [{"prompt": [user], "chosen": rows[0]["completion"], "rejected": rows[1]["completion"]}],
        tokenizer,
        {"format": "chat_pairs", "max_seq_length": 64},
    )
    assert out["prompt_ids"] == [pair["prompt_ids"][0]] * 2  # a text prompt is the user turn
    assert out["completion_ids"] == [pair["chosen_ids"][0], pair["rejected_ids"][0]]
    assert out["label"] == [True, False] and out["drop"] == ["", ""]
    with pytest.raises(UserError, match="column 'completion' must end with an assistant turn"):
        tokenize_kto([{"prompt": [user], "completion": [user], "label": True}], tokenizer, cfg)
    # UltraFeedback-binarized unpaired: a text prompt and completions that repeat it as their first turn got the
    # user turn twice (review P6); it is rendered once, as chat_pairs renders the same file
    repeated = [{"prompt": "hi", "completion": [user, {"role": "assistant", "content": "HI"}], "label": True}]
    assert tokenize_kto(repeated, tokenizer, cfg)["prompt_ids"] == [pair["prompt_ids"][0]]


def test_kto_data_counts_both_kinds_and_says_when_one_is_missing(tokenizer, tmp_path, caplog):
    rows = [{"prompt": "q", "completion": w, "label": True} for w in ("a", "b")]
    data = _preference_data(tokenizer, tmp_path, rows, format="kto")
    with caplog.at_level("WARNING"):
        data.setup("fit")
    assert (data.stats["train"]["desirable"], data.stats["train"]["undesirable"]) == (2, 0)
    assert "every KTO row of split 'train' is desirable (label true)" in caplog.text


def test_preference_data_names_the_row_and_what_the_columns_are(tokenizer, tmp_path, caplog):
    kto_rows = [{"prompt": "q", "completion": "a", "label": True}]
    data = _preference_data(tokenizer, tmp_path / "a", kto_rows, format="pairs")
    with pytest.raises(
        UserError, match="column 'chosen' is not in split 'train'.*these are KTO rows.*task=kto"
    ):
        data.setup("fit")
    # TRL's implicit-prompt conversations (trl-lib/ultrafeedback_binarized): the fix is chat_pairs (review D7)
    turns = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "A"}]
    data = _preference_data(tokenizer, tmp_path / "c", [{"chosen": turns, "rejected": turns}], format="pairs")
    caplog.clear()
    with (
        pytest.raises(
            UserError, match="column 'chosen' holds list .*not text; a chat format reads it.* chat_pairs"
        ),
        caplog.at_level("WARNING"),
    ):
        data.setup("fit")
    assert (
        "answers share" not in caplog.text
    )  # not first told its prompt is the text the answers share (review P11)
    # A margin per pair is read as TRL's RewardTrainer reads it (review D9, then P8), and said so.
    data = _preference_data(tokenizer, tmp_path / "d", [{**r, "margin": 2.0} for r in PAIRS], format="pairs")
    with caplog.at_level("INFO"):
        data.setup("fit")
    assert "column 'margin' is each pair's margin for task=reward" in caplog.text
    assert set(data.train_dataset["margin"]) == {2.0}
    nulls = [*PAIRS, {"prompt": "q", "chosen": "A", "rejected": None}]
    data = _preference_data(tokenizer, tmp_path / "b", nulls, format="pairs")
    with pytest.raises(UserError, match=r"split 'train' row 3: dataset: no 'rejected' in this row"):
        data.setup("fit")
    # dropped pairs are named by row, not only counted
    same = [
        PAIRS[0],
        {"prompt": "q", "chosen": "A", "rejected": "A"},
        PAIRS[1],
        {"prompt": "q", "chosen": " ", "rejected": "b"},
    ]
    data = _preference_data(tokenizer, tmp_path / "d", same, format="pairs")
    data.setup("fit")
    assert data.stats["train"]["first_dropped"] == ["row 1 (identical)", "row 3 (empty answer)"]
    # a max_seq_length that cuts most answers is a warning that names the key
    data = _preference_data(tokenizer, tmp_path / "c", PAIRS, format="pairs", max_seq_length=15)
    with caplog.at_level("WARNING"):
        data.setup("fit")
    assert (
        "dataset.max_seq_length=15: in split 'train', 0 of 3 rows dropped (prompt too long) and 3 of 3"
        in caplog.text
    )


def test_pair_collator_puts_chosen_then_rejected_in_one_batch():
    pairs = [
        {"prompt_ids": [1, 5, 6], "chosen_ids": [7, 2], "rejected_ids": [8, 9, 10, 2], "ref_chosen_logps": -1.0,
         "ref_rejected_logps": -2.0},
        {"prompt_ids": [1, 5], "chosen_ids": [11, 2], "rejected_ids": [12, 2], "ref_chosen_logps": -3.0,
         "ref_rejected_logps": -4.0},
    ]  # fmt: skip
    batch = PairCollator(pad_token_id=0)(pairs)
    assert batch["input_ids"].tolist() == [
        [1, 5, 6, 7, 2, 0, 0],
        [1, 5, 11, 2, 0, 0, 0],
        [1, 5, 6, 8, 9, 10, 2],
        [1, 5, 12, 2, 0, 0, 0],
    ]
    assert batch["attention_mask"].tolist() == [
        [1, 1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 1, 0, 0, 0],
    ]
    assert batch["labels"].tolist() == [
        [-100, -100, -100, 7, 2, -100, -100],
        [-100, -100, 11, 2, -100, -100, -100],
        [-100, -100, -100, 8, 9, 10, 2],
        [-100, -100, 12, 2, -100, -100, -100],
    ]
    assert batch["ref_chosen_logps"].tolist() == [-1.0, -3.0]
    assert batch["ref_rejected_logps"].tolist() == [-2.0, -4.0]


def test_kto_collator_adds_rotated_kl_rows():
    samples = [
        {"prompt_ids": [1, 5], "completion_ids": [6, 2], "label": True},
        {"prompt_ids": [1, 7, 7], "completion_ids": [8, 9, 2], "label": False},
    ]
    batch = KTOCollator(pad_token_id=0, max_length=5)(samples)
    assert batch["desirable"].tolist() == [True, False]
    assert batch["input_ids"].tolist() == [
        [1, 5, 6, 2, 0, 0],
        [1, 7, 7, 8, 9, 2],
        [1, 5, 8, 9, 2, 0],  # row 0's prompt, row 1's completion
        [1, 7, 7, 6, 2, 0],  # row 1's prompt, row 0's completion
    ]
    assert batch["labels"][2].tolist() == [-100, -100, 8, 9, 2, -100]
    assert batch["attention_mask"].sum(1).tolist() == [4, 6, 5, 5]
    plain = KTOCollator(pad_token_id=0, kl=False)(samples)
    assert plain["input_ids"].shape == (2, 6)


def test_pair_config_checks_name_the_key():
    assert check_pair_config(CFG) == "pairs"
    assert check_pair_config({"format": "kto", "max_seq_length": 8}, kto=True) == "kto"
    with pytest.raises(UserError, match=r"dataset.format='alpaca' is not a preference-pair format"):
        check_pair_config({"format": "alpaca", "max_seq_length": 8})
    with pytest.raises(UserError, match="dataset.format='pairs' is not a KTO format"):
        check_pair_config(CFG, kto=True)


def test_collated_labels_score_only_the_answers(tokenizer):
    """End to end: the tokens `sequence_logps` scores are exactly the answer ids, per row."""
    out = tokenize_pairs([{"prompt": "ab", "chosen": "xy", "rejected": "z"}], tokenizer, CFG)
    pair = {k: out[k][0] for k in ("prompt_ids", "chosen_ids", "rejected_ids")}
    batch = PairCollator(tokenizer.pad_token_id)([pair])
    scored = [row[row != -100].tolist() for row in batch["labels"]]
    assert scored == [pair["chosen_ids"], pair["rejected_ids"]]
    assert torch.equal(batch["input_ids"][batch["labels"] != -100], batch["labels"][batch["labels"] != -100])


def test_shipped_preference_data_is_what_the_script_writes(tokenizer):
    import json

    from hydratune.synthetic import kto_rows, preference_rows

    root = __import__("pathlib").Path(__file__).resolve().parents[1] / "data" / "preference"
    read = lambda name: [json.loads(line) for line in (root / name).read_text().splitlines()]  # noqa: E731
    train, held_out = read("train.jsonl"), read("eval.jsonl")
    assert held_out == preference_rows(len(held_out), seed=1)
    assert train[:50] == preference_rows(50, seed=0, exclude={row["rejected"] for row in held_out})
    assert not {row["rejected"] for row in train} & {row["rejected"] for row in held_out}
    assert read("kto_eval.jsonl") == kto_rows(held_out, seed=1)
    assert all(row["chosen"] == row["rejected"].upper() != row["rejected"] for row in train + held_out)
    out = tokenize_pairs(held_out, tokenizer, {"format": "pairs", "max_seq_length": 64})
    assert pair_stats(out["drop"], out["truncated"])[1]["pairs"] == len(held_out)


def _training_prompt_ids(task: str, cfg: dict, row: dict, tokenizer) -> list[int]:
    """The prompt ids a row trained with: the pair/KTO prompt, or an SFT sample's untrained prefix."""
    if task in ("dpo", "kto"):
        tokenize = tokenize_kto if task == "kto" else tokenize_pairs
        return tokenize([row], tokenizer, cfg)["prompt_ids"][0]
    from hydratune.data.formats import CHAT_FORMATS, FORMATS, resolve_format
    from hydratune.data.tokenize import tokenize_samples

    fmt = resolve_format(cfg)
    segments = FORMATS[fmt](row, cfg, **({"tokenizer": tokenizer} if fmt in CHAT_FORMATS else {}))
    sample = tokenize_samples([segments], tokenizer, cfg["max_seq_length"])
    labels = sample["labels"][0]
    return sample["input_ids"][0][: next(i for i, label in enumerate(labels) if label != -100)]


TURNS = [{"role": "user", "content": "copy: ab"}, {"role": "assistant", "content": "AB"}]
# (task, dataset config, a training row, what `hydratune generate --prompt` gets, its --input)
GENERATE_CASES = [
    ("sft", {"format": "alpaca", "template": "alpaca_short"},
     {"instruction": "copy", "input": "ab", "output": "AB"}, "copy", "ab"),
    ("sft", {"format": "alpaca", "template": None}, {"instruction": "copy", "input": "", "output": "AB"}, "copy", ""),
    ("sft", {"format": "alpaca_chat", "chat_template": "tiny"},
     {"instruction": "copy", "input": "ab", "output": "AB"}, "copy", "ab"),
    ("sft", {"format": "messages", "chat_template": "tiny"}, {"messages": TURNS}, "copy: ab", ""),
    ("sft", {"format": "prompt_response", "prompt_column": "q", "response_column": "a"},
     {"q": "copy: ab -> ", "a": "AB"}, "copy: ab -> ", ""),
    ("dpo", {"format": "pairs"}, {"prompt": "copy: ab -> ", "chosen": "AB", "rejected": "ab"}, "copy: ab -> ", ""),
    ("dpo", {"format": "alpaca_pairs", "template": "alpaca_short"},
     {"instruction": "copy", "input": "ab", "chosen": "AB", "rejected": "ab"}, "copy", "ab"),
    ("dpo", {"format": "chat_pairs", "chat_template": "tiny", "prompt_column": None},
     {"chosen": TURNS, "rejected": [TURNS[0], {"role": "assistant", "content": "ab"}]}, "copy: ab", ""),
    ("kto", {"format": "kto"}, {"prompt": "copy: ab -> ", "completion": "AB", "label": True}, "copy: ab -> ", ""),
]  # fmt: skip


@pytest.mark.parametrize(("task", "cfg", "row", "prompt", "input"), GENERATE_CASES,
                         ids=[f"{c[0]}-{c[1]['format']}" for c in GENERATE_CASES])  # fmt: skip
def test_generate_prompts_as_the_run_trained(tokenizer, task, cfg, row, prompt, input, tmp_path):
    """`hydratune generate --prompt P` renders P as the run's task and dataset.format rendered its prompts:
    the ids it generates from are the prompt ids training saw (an alpaca wrap on a DPO run of plain pairs
    made its answers garbage). A chat run's saved tokenizer gives the same ids through plain transformers'
    apply_chat_template (pipelines and vLLM take that path): its template writes BOS, as training did."""
    import copy

    from hydratune.data.formats import set_chat_template
    from hydratune.tasks.registry import get_task

    tokenizer = copy.deepcopy(tokenizer)
    cfg = {"max_seq_length": 256, **cfg}
    if cfg.get("chat_template"):
        set_chat_template(tokenizer, cfg)  # as training did; the export saves it with the tokenizer
    text = get_task({"name": task}).prompt_text(cfg, tokenizer, prompt, input)
    trained = _training_prompt_ids(task, cfg, row, tokenizer)
    assert bos_first(ids(tokenizer, text), tokenizer.bos_token_id) == trained
    if cfg.get("chat_template"):
        from transformers import AutoTokenizer

        tokenizer.save_pretrained(tmp_path)
        turn = [{"role": "user", "content": f"{prompt}\n{input}" if input else prompt}]
        plain = AutoTokenizer.from_pretrained(tmp_path).apply_chat_template(
            turn, add_generation_prompt=True, tokenize=True, return_dict=True
        )
        assert plain["input_ids"] == trained


def test_generate_puts_a_system_turn_before_a_chat_runs_prompt(tokenizer):
    """A chat run trained with a system prompt in every row could not be prompted as trained (review C10)."""
    from hydratune.data.formats import format_messages
    from hydratune.tasks.registry import get_task

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "copy: ab"}]
    text = get_task({"name": "sft"}).prompt_text(
        {"format": "messages"}, tokenizer, "copy: ab", "", "Be brief."
    )
    segments = format_messages(
        {"messages": [*messages, {"role": "assistant", "content": "ab"}]}, {}, tokenizer
    )
    assert text == "".join(t for t, trained in segments[: [s[1] for s in segments].index(True)])


def test_generate_refuses_what_it_cannot_render(tokenizer):
    from hydratune.tasks.registry import get_task

    with pytest.raises(UserError, match="task=reward writes no text .*hydratune score"):
        get_task({"name": "reward"}).prompt_text({"format": "pairs"}, tokenizer, "copy: ab -> ")
    with pytest.raises(UserError, match="--input: dataset.format=pairs has no input field"):
        get_task({"name": "dpo"}).prompt_text({"format": "pairs"}, tokenizer, "copy", "ab")
    with pytest.raises(UserError, match="--system: dataset.format=alpaca has no system turn"):
        get_task({"name": "sft"}).prompt_text({"format": "alpaca"}, tokenizer, "copy", "", "Be brief.")
    grpo = get_task({"name": "grpo"})
    assert grpo.prompt_text({"template": None}, tokenizer, "shout: ab -> ") == "shout: ab -> "
    assert grpo.prompt_text({"template": "alpaca_short"}, tokenizer, "copy", "") == alpaca_prompt(
        "copy", "", "alpaca_short"
    )


def test_kto_weights_out_of_balance_with_the_counts_are_said_with_the_weight_that_fits(caplog):
    from hydratune.tasks.kto import warn_if_unbalanced

    with caplog.at_level("WARNING"):
        warn_if_unbalanced(
            {"desirable_weight": 1.0, "undesirable_weight": 1.0}, {"desirable": 100, "undesirable": 100}
        )
    assert caplog.text == ""  # 1x: in range
    with caplog.at_level("WARNING"):
        warn_if_unbalanced({}, {"desirable": 50, "undesirable": 100})
    assert "is 0.50x undesirable_weight" in caplog.text
    assert "set task.desirable_weight between 2.00 and 2.67" in caplog.text


def test_score_file_rows_are_answers_or_pairs_in_the_runs_columns(tmp_path):
    import json

    from hydratune.cli.score import read_rows

    path = tmp_path / "rows.jsonl"
    path.write_text(
        json.dumps({"q": "a -> ", "good": "A", "bad": "a"})
        + "\n\n"
        + json.dumps({"q": "b -> ", "good": "B", "bad": "b"})
        + "\n"
    )
    cfg = {"prompt_column": "q", "chosen_column": "good", "rejected_column": "bad"}
    assert read_rows(str(path), cfg) == (
        [("a -> ", "A"), ("a -> ", "a"), ("b -> ", "B"), ("b -> ", "b")],
        True,
    )
    path.write_text(json.dumps({"prompt": "a -> ", "response": "A"}) + "\n")
    assert read_rows(str(path), {}) == ([("a -> ", "A")], False)
    path.write_text(json.dumps({"prompt": "a -> ", "output": "A"}) + "\n")
    with pytest.raises(
        UserError,
        match=r"rows.jsonl:1: every row needs prompt and response as text \(it has: prompt, output\)",
    ):
        read_rows(str(path), {})
    turns = [{"role": "user", "content": "a -> "}]  # a chat_pairs row said it lacked the columns it has (T14)
    row = {"prompt": turns, "chosen": "A", "rejected": "a"}
    path.write_text(json.dumps(row) + "\n")
    assert read_rows(str(path), {"format": "chat_pairs"}) == ([row], True)  # rendered as training did
    with pytest.raises(
        UserError, match=r"rows.jsonl:1: its prompt/chosen/rejected hold message lists, and this run"
    ):
        read_rows(str(path), {"format": "pairs"})
    path.write_text(
        json.dumps(row) + "\n" + json.dumps({"prompt": "a", "chosen": "A", "rejected": "a"}) + "\n"
    )
    with pytest.raises(
        UserError, match=r"some rows hold message lists and others text; give one kind per file"
    ):
        read_rows(str(path), {"format": "chat_pairs"})


def test_a_chat_pairs_row_is_scored_as_its_text_prompt_is(tokenizer):
    """`hydratune score --file` of a chat_pairs run's own rows: the ids of a one-user-turn conversation are those
    of its prompt given as text (one user turn), chosen and rejected alike (review T14)."""
    from hydratune.tasks.reward.inference import chat_pair_ids, scoring_row

    cfg = {"format": "chat_pairs", "max_seq_length": 64}
    row = {"prompt": [{"role": "user", "content": "copy: ab -> "}], "chosen": "AB", "rejected": "ab"}
    *_, chosen, rejected = chat_pair_ids(tokenizer, row, cfg)
    assert chosen == scoring_row(tokenizer, "copy: ab -> ", "AB", cfg)
    assert rejected == scoring_row(tokenizer, "copy: ab -> ", "ab", cfg)


def test_the_readme_chat_pairs_reward_layout_is_what_score_reads(tokenizer, tmp_path):
    """README: a chat_pairs reward model reads `apply_chat_template(turns)` as tokenized by the template, which
    now writes BOS (a `tokenizer(rendered text)` would add a second one)."""
    import copy

    from transformers import AutoTokenizer

    from hydratune.data.formats import set_chat_template
    from hydratune.tasks.reward.inference import scoring_row

    tokenizer = copy.deepcopy(tokenizer)
    cfg = {"format": "chat_pairs", "chat_template": "tiny", "prompt_column": None, "max_seq_length": 256}
    set_chat_template(tokenizer, cfg)
    tokenizer.save_pretrained(tmp_path)
    plain = AutoTokenizer.from_pretrained(tmp_path)
    turns = [{"role": "user", "content": "copy: stone"}, {"role": "assistant", "content": "STONE"}]
    readme = plain.apply_chat_template(turns, return_dict=True, return_tensors="pt")["input_ids"][0].tolist()
    assert readme == scoring_row(tokenizer, "copy: stone", "STONE", cfg)


def test_text_pairs_without_a_prompt_column_take_the_text_they_share_as_trl_does(tokenizer, tmp_path, caplog):
    """Anthropic's hh-rlhf holds whole transcripts in chosen and rejected: no setting read it, and chat_pairs
    trained each transcript as the answer to an empty prompt (review F3). format=pairs now takes the text they
    share as the prompt (TRL's maybe_extract_prompt), says so, and refuses a pair that shares none."""
    from hydratune.data.pairs import format_chat_pairs, format_pairs

    hh = {"chosen": "\n\nHuman: Spell apple loudly.\n\nAssistant: APPLE",
          "rejected": "\n\nHuman: Spell apple loudly.\n\nAssistant: apple"}  # fmt: skip
    assert format_pairs(hh, {}) == ("\n\nHuman: Spell apple loudly.\n\nAssistant:", " APPLE", " apple")
    with pytest.raises(UserError, match="no 'prompt' column, and chosen and rejected share no text"):
        format_pairs({"chosen": "Yes", "rejected": "no"}, {})
    data = _preference_data(
        tokenizer,
        tmp_path / "hh",
        [hh, {**hh, "rejected": hh["rejected"] + "!"}],
        format="pairs",
        max_seq_length=96,
    )
    with caplog.at_level("WARNING"):
        data.setup("fit")
    assert (
        "no 'prompt' column: each pair's prompt is the text its chosen and rejected answers share"
        in caplog.text
    )
    assert len(data.train_dataset) == 2
    # under chat_pairs the same strings are one assistant turn each, with no prompt: refused, pointing at pairs
    with pytest.raises(UserError, match="the pair has no prompt turns .*hh-rlhf\\) use dataset.format=pairs"):
        format_chat_pairs(hh, {}, tokenizer)


def test_chat_pairs_read_a_text_prompt_and_a_system_column(tokenizer):
    """A text prompt beside message-list answers was dropped (review F4), unless the answers repeat it as
    their first turn (UltraFeedback); a system column is a system turn (Intel's orca pairs, F5), and a pair
    format that renders no system turn refuses the key instead of ignoring it."""
    import copy

    from hydratune.data.formats import set_chat_template
    from hydratune.data.pairs import check_pair_config, format_chat_pairs

    tok = copy.deepcopy(tokenizer)
    set_chat_template(tok, {"chat_template": "tiny"})
    answer = lambda text: [{"role": "assistant", "content": text}]  # noqa: E731
    row = {"prompt": "copy: ab", "chosen": answer("AB"), "rejected": answer("ab")}
    assert format_chat_pairs(row, {}, tok)[0] == "<s><|user|>\ncopy: ab</s>\n<|assistant|>\n"
    repeated = {"prompt": "copy: ab", "chosen": [{"role": "user", "content": "copy: ab"}, *answer("AB")],
                "rejected": [{"role": "user", "content": "copy: ab"}, *answer("ab")]}  # fmt: skip
    assert format_chat_pairs(repeated, {}, tok)[0] == "<s><|user|>\ncopy: ab</s>\n<|assistant|>\n"
    system = format_chat_pairs({**row, "system": "Be loud."}, {"system_column": "system"}, tok)[0]
    assert system.startswith("<s><|system|>\nBe loud.</s>\n<|user|>\ncopy: ab")
    with pytest.raises(UserError, match="dataset.system_column=system: format=pairs renders no system turn"):
        check_pair_config({"format": "pairs", "max_seq_length": 64, "system_column": "system"})


def test_score_file_of_chat_pairs_rows_prints_each_pair_and_the_share_ranked_right(
    tiny_model_dir, tokenizer, tmp_path, monkeypatch, capsys
):
    """The command's path for message-list rows: two rewards per pair, as the text rows get (review T14)."""
    from transformers import AutoModelForSequenceClassification

    import hydratune.export
    from hydratune.cli import main
    from hydratune.tasks.reward.inference import chat_pair_ids, score_ids

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1).eval()
    model.config.pad_token_id = tokenizer.pad_token_id
    cfg = {"format": "chat_pairs", "max_seq_length": 64}
    rows = [{"prompt": [{"role": "user", "content": f"copy: {w} -> "}], "chosen": w.upper(), "rejected": w}
            for w in ("ab", "cd")]  # fmt: skip
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(hydratune.export, "run_settings", lambda run: ({"name": "reward"}, cfg))
    monkeypatch.setattr(hydratune.export, "find_artifact", lambda run, prefer=None: tmp_path)
    monkeypatch.setattr(hydratune.export, "load_artifact", lambda folder: (model, tokenizer))
    assert main(["score", str(tmp_path), "--file", str(path)]) == 0
    out, err = capsys.readouterr()
    printed = [json.loads(line) for line in out.splitlines()]
    expected = score_ids(model, [ids for row in rows for ids in chat_pair_ids(tokenizer, row, cfg)[3:]])
    assert [(p["reward_chosen"], p["reward_rejected"]) for p in printed] == [
        (round(expected[0], 6), round(expected[1], 6)),
        (round(expected[2], 6), round(expected[3], 6)),
    ]
    assert err.strip().splitlines()[-1].startswith("2 pairs: chosen scored above rejected in ")
