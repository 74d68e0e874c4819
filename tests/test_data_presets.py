"""Every local dataset preset composes and prepares its data (tokenizer only, no model)."""

from __future__ import annotations

import pytest
from conftest import compose

from hydratune.config import to_plain
from hydratune.data.tokenize import IGNORE_INDEX
from hydratune.tasks.sft.data import SFTDataModule


@pytest.mark.parametrize("preset", ["sample", "local_csv", "mixture", "chat", "sharegpt", "packed"])
def test_local_preset_builds_batches(preset, tokenizer, tmp_path):
    cfg = to_plain(compose([f"dataset={preset}"]).dataset)
    dm = SFTDataModule(tokenizer, cfg, seed=0, cache_dir=str(tmp_path))
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert (batch["labels"] != IGNORE_INDEX).any()
    assert ("position_ids" in batch) == (preset == "packed")
    assert dm.val_dataset is not None and len(dm.val_dataset) > 0
    if preset == "packed":
        assert dm.stats["train"]["packing_efficiency"] > 0.85  # ~93-token samples, 5 per row
    if preset == "mixture":
        capital = sum("capital" in t for t in tokenizer.batch_decode(batch["input_ids"]))
        assert 0 < capital < len(batch["input_ids"])


def test_local_csv_takes_ones_own_columns_and_alpaca_rows(tokenizer, tmp_path):
    """What the preset's comment and docs/options.md tell a user: point data_files at your file and name
    its columns (or say it is Alpaca). Its dedup and split ops must not assume the example's column names."""
    import json

    from hydratune.errors import UserError

    rows = [(f"Write {w} in capitals.", w.upper()) for w in ("ab", "cd", "ef", "gh", "ij", "kl", "mn", "op")]
    mine = tmp_path / "mine.csv"
    mine.write_text("prompt,completion\n" + "".join(f"{p},{c}\n" for p, c in rows * 3))  # duplicates too
    overrides = [f"dataset.sources.0.data_files={mine}", "dataset.prompt_column=prompt",
                 "dataset.response_column=completion"]  # fmt: skip
    dm = SFTDataModule(
        tokenizer, to_plain(compose(["dataset=local_csv", *overrides]).dataset), cache_dir=str(tmp_path)
    )
    dm.setup("fit")
    assert len(dm.train_dataset) + len(dm.val_dataset) == len(rows)  # the exact duplicates went
    alpaca = tmp_path / "alpaca.jsonl"
    alpaca.write_text(
        "".join(json.dumps({"instruction": p, "input": "", "output": c}) + "\n" for p, c in rows)
    )
    cfg = to_plain(compose(["dataset=local_csv", "dataset.sources.0.loader=json",
                            f"dataset.sources.0.data_files={alpaca}", "dataset.format=alpaca"]).dataset)  # fmt: skip
    assert cfg["template"] is None  # the preset's: the standard Alpaca template then
    dm = SFTDataModule(tokenizer, cfg | {"max_seq_length": 256}, cache_dir=str(tmp_path))
    dm.setup("fit")
    assert "Below is an instruction" in tokenizer.decode(dm.train_dataset[0]["input_ids"])
    with pytest.raises(UserError, match="dataset.template='alpacca' is not known; use one of: alpaca"):
        SFTDataModule(tokenizer, cfg | {"template": "alpacca"}, cache_dir=str(tmp_path)).setup("fit")


def test_alpaca_hub_preset_composes():
    cfg = to_plain(compose(["dataset=alpaca"]).dataset)
    assert cfg["sources"][0]["path"] == "tatsu-lab/alpaca" and cfg["ops"][-1]["split"]["eval"] == 0.02


def test_tokenization_is_cached_by_fingerprint(tokenizer, tmp_path, monkeypatch):
    import hydratune.tasks.sft.data as datamodule

    calls = []
    real = datamodule.tokenize_samples
    monkeypatch.setattr(datamodule, "tokenize_samples", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = to_plain(compose(["dataset=local_csv"]).dataset)

    def setup(cfg):
        calls.clear()
        # prepared=False: `datasets`' own cache, which a run reads before it has prepared rows to read
        dm = SFTDataModule(tokenizer, cfg, seed=0, cache_dir=str(tmp_path), prepared=False)
        dm.setup("fit")
        return len(calls), list(dm.train_dataset["input_ids"])

    first, ids = setup(cfg)
    again, ids_again = setup(cfg)
    assert first > 0 and again == 0 and ids_again == ids  # the second run reads the cache
    changed, _ = setup(cfg | {"max_seq_length": 64})
    assert changed > 0  # another max length is another fingerprint
