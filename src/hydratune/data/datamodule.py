"""The SFT LightningDataModule: load, format, tokenize, then batch with dynamic padding."""

from __future__ import annotations

import logging

import lightning as L
from torch.utils.data import DataLoader

from hydratune.data.collate import PadCollator
from hydratune.data.formats import FORMATS
from hydratune.data.sampler import WindowBatchSampler, WindowDataset
from hydratune.data.sources import load_splits
from hydratune.data.tokenize import IGNORE_INDEX, tokenize_pair

log = logging.getLogger(__name__)


def tokenize_split(dataset, tokenizer, cfg: dict):
    """Format and tokenize every row; drop rows left with no trained token and say how many."""
    render = FORMATS[cfg["format"]]

    def encode(batch: dict) -> dict:
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        out = {"input_ids": [], "labels": [], "num_trained": []}
        for row in rows:
            prompt, response = render(row, cfg)
            ids = tokenize_pair(
                prompt, response, tokenizer, cfg["max_seq_length"], cfg.get("train_on", "response")
            )
            out["input_ids"].append(ids["input_ids"])
            out["labels"].append(ids["labels"])
            # Predicted positions: token t+1 from position t, so the first label never counts.
            out["num_trained"].append(sum(x != IGNORE_INDEX for x in ids["labels"][1:]))
        return out

    tokenized = dataset.map(
        encode, batched=True, remove_columns=dataset.column_names, load_from_cache_file=False
    )
    before = len(tokenized)
    tokenized = tokenized.filter(lambda n: n > 0, input_columns="num_trained")
    if len(tokenized) < before:
        log.warning(
            "dropped %d of %d samples with no trained token (prompt longer than max_seq_length?)",
            before - len(tokenized),
            before,
        )
    return tokenized


class SFTDataModule(L.LightningDataModule):
    """Train/validation data for supervised fine-tuning.

    Args:
        tokenizer: the model's tokenizer (needs eos and pad tokens).
        cfg: the dataset config as a plain dict (sources, format, max_seq_length, batch sizes, ...).
        seed: seeds the shuffling of the training set.
        cache_dir: where `datasets` keeps loaded files.
    """

    def __init__(self, tokenizer, cfg: dict, seed: int = 0, cache_dir: str | None = None):
        super().__init__()
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.seed = seed
        self.cache_dir = cache_dir
        self.train_dataset = None
        self.val_dataset = None
        self.collate = PadCollator(tokenizer.pad_token_id)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        splits = load_splits(self.cfg["sources"], self.cache_dir)
        self.train_dataset = tokenize_split(splits["train"], self.tokenizer, self.cfg)
        val_name = next((n for n in ("validation", "eval", "test") if n in splits), None)
        self.val_dataset = tokenize_split(splits[val_name], self.tokenizer, self.cfg) if val_name else None

    def train_dataloader(self) -> DataLoader:
        accumulate = self.trainer.accumulate_grad_batches if self.trainer is not None else 1
        sampler = WindowBatchSampler(
            self.train_dataset["num_trained"], self.cfg["batch_size"], accumulate, seed=self.seed
        )
        return DataLoader(
            WindowDataset(self.train_dataset),
            batch_sampler=sampler,
            collate_fn=self.collate,
            num_workers=self.cfg.get("num_workers", 0),
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self.val_dataset,
            batch_size=self.cfg.get("eval_batch_size", self.cfg["batch_size"]),
            shuffle=False,
            collate_fn=self.collate,
            num_workers=self.cfg.get("num_workers", 0),
        )
