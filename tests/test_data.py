"""Formatting, label masking and collation."""

from __future__ import annotations

import torch

from hydratune.data.collate import PadCollator
from hydratune.data.formats import FORMATS, alpaca_prompt
from hydratune.data.tokenize import IGNORE_INDEX, tokenize_pair


def test_alpaca_format_uses_input_when_present():
    row = {"instruction": "Reverse.", "input": "abc", "output": "cba"}
    prompt, response = FORMATS["alpaca"](row, {"template": "alpaca_short"})
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

    from hydratune.data.datamodule import SFTDataModule

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
