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
