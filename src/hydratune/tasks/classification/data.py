"""Classification data: rows of text (and an optional text pair) with a label; label names come from the
train split (or dataset.labels). Texts are encoded by `encode_texts` in training, evaluation and prediction."""

from __future__ import annotations

import logging
from collections import Counter

import lightning as L
import torch
from torch.utils.data import DataLoader

from hydratune.data.labels import (
    build_label_names,
    classifier_cut_warning,
    encode_texts,
    unread_classifier_columns,
    unread_classifier_text,
)
from hydratune.data.labels import label_key as _label_key
from hydratune.data.labels import missing as _missing
from hydratune.data.ops import build_splits
from hydratune.data.sampler import eval_loader, train_loader
from hydratune.data.sources import validation_split
from hydratune.data.tokenize import WARN_CUT
from hydratune.errors import UserError

log = logging.getLogger(__name__)


def class_weights(setting, counts: list[int]) -> list[float] | None:
    """Loss weights per class: None, `balanced` (n / (k * count)), or an explicit list of k numbers."""
    if setting in (None, "none"):
        return None
    k = len(counts)
    if setting == "balanced":
        total = sum(counts)
        return [total / (k * max(c, 1)) for c in counts]
    if (
        isinstance(setting, list | tuple)
        and len(setting) == k
        and all(isinstance(w, int | float) for w in setting)
    ):
        return [float(w) for w in setting]
    raise UserError(
        f"task.class_weights={setting!r}: use null, balanced, or a list of {k} numbers (one per class)"
    )


class ClassificationCollator:
    """Right-pads `input_ids` with the pad id; `labels` is one class id per row."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        length = max(len(s["input_ids"]) for s in samples)
        input_ids = torch.full((len(samples), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(samples), length), dtype=torch.long)
        for i, sample in enumerate(samples):
            n = len(sample["input_ids"])
            input_ids[i, :n] = torch.as_tensor(sample["input_ids"])
            attention_mask[i, :n] = 1
        labels = torch.tensor([s["label"] for s in samples], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class ClassificationDataModule(L.LightningDataModule):
    """Train/validation data for sequence classification.

    Args:
        tokenizer: the model's tokenizer (needs a pad token).
        cfg: the dataset config as a plain dict: sources, text_column, text_pair_column, label_column,
            labels, pair_separator, max_seq_length, batch_size, eval_batch_size, num_workers.
        seed: seeds the shuffling of the training set.
        cache_dir: where `datasets` keeps loaded files.

    After `setup()`: `labels` (names by id) and `class_counts` (train rows per class).
    """

    def __init__(self, tokenizer, cfg: dict, seed: int = 0, cache_dir: str | None = None):
        super().__init__()
        for key in ("text_column", "label_column"):
            if not cfg.get(key):
                raise UserError(
                    f"dataset.{key} is not set: task=classification needs a dataset with text_column and "
                    "label_column (e.g. dataset=topics)"
                )
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.seed = seed
        self.cache_dir = cache_dir
        self.labels: list[str] = []
        self.class_counts: list[int] = []
        self.train_dataset = None
        self.val_dataset = None
        self.collate = ClassificationCollator(tokenizer.pad_token_id)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        for line in unread_classifier_columns(self.cfg):
            log.warning(line)
        splits = build_splits(self.cfg, self.cache_dir)  # sources, then dataset.ops (filters, maps, split)
        val_name = validation_split(splits)
        if "train" not in splits:
            raise UserError(
                f"dataset: the sources give splits {', '.join(splits)} but no 'train'; "
                "map one with data_files: {train: ...} or a hub source's split"
            )
        first = splits["train"].select(range(min(200, len(splits["train"]))))
        for line in unread_classifier_text(first.to_list(), first.column_names, self.cfg):
            log.warning(line)
        train_rows = self._rows(splits["train"], "train")
        where = f"the train split ({self.cfg['label_column']!r} column)"
        self.labels, mapping = build_label_names(
            [_label_key(r["label"], where) for r in train_rows], self.cfg.get("labels"), where
        )
        self.train_dataset = self._encode(train_rows, mapping, "train")
        # without one the run trains unevaluated, and says so (train.py), as SFT does
        if val_name is not None:
            self.val_dataset = self._encode(self._rows(splits[val_name], val_name), mapping, val_name)
            if len(self.val_dataset) == 0:
                raise UserError(f"dataset: the {val_name} split has no usable row (see the warnings above)")
        counts = Counter(self.train_dataset["label"])
        self.class_counts = [counts.get(i, 0) for i in range(len(self.labels))]
        log.info(
            "classification: %d labels %s; %d train and %d %s rows",
            len(self.labels), dict(zip(self.labels, self.class_counts)), len(self.train_dataset),
            len(self.val_dataset or []), val_name or "validation",
        )  # fmt: skip

    def _rows(self, dataset, split: str) -> list[dict]:
        """Rows as {text, pair, label}; rows missing any of them are dropped with a counted warning."""
        text_col, pair_col, label_col = (
            self.cfg["text_column"], self.cfg.get("text_pair_column"), self.cfg["label_column"]
        )  # fmt: skip
        for key, column in (
            ("text_column", text_col),
            ("text_pair_column", pair_col),
            ("label_column", label_col),
        ):
            if column and column not in dataset.column_names:
                raise UserError(
                    f"dataset.{key}={column!r}: no such column in the {split} split "
                    f"(columns: {', '.join(dataset.column_names)})"
                )
        texts, labels = dataset[text_col], dataset[label_col]
        pairs = dataset[pair_col] if pair_col else [None] * len(texts)
        rows, no_text, no_label = [], 0, 0
        for text, pair, label in zip(texts, pairs, labels):
            if _missing(text) or (pair_col and _missing(pair)):
                no_text += 1
            elif _missing(label):
                no_label += 1
            else:
                rows.append({"text": text, "pair": pair, "label": label})
        for count, what in ((no_text, f"an empty {text_col!r}" + (f" or {pair_col!r}" if pair_col else "")),
                            (no_label, f"no {label_col!r} (empty, or negative as the -1 of unlabelled rows)")):  # fmt: skip
            if count:
                log.warning("dropped %d of %d %s rows with %s", count, len(texts), split, what)
        return rows

    def _encode(self, rows: list[dict], mapping: dict, split: str):
        """A `datasets.Dataset` of input_ids and label (class id); rows whose label the train split never
        had are dropped with a warning."""
        import datasets

        where = f"the {split} split"
        unknown: Counter = Counter()
        kept = []
        for row in rows:
            key = _label_key(row["label"], where)
            if key in mapping:
                kept.append((row, mapping[key]))
            else:
                unknown[key] += 1
        if unknown:
            log.warning(
                "dropped %d of %d %s rows with labels the train split does not have: %s",
                sum(unknown.values()), len(rows), split, dict(unknown.most_common(5)),
            )  # fmt: skip
        if not kept:
            return datasets.Dataset.from_dict({"input_ids": [], "label": []})
        pair_col, max_len = self.cfg.get("text_pair_column"), self.cfg.get("max_seq_length")
        separator = self.cfg.get("pair_separator", "\n")
        texts = [r["text"] for r, _ in kept]
        pairs = [r["pair"] for r, _ in kept] if pair_col else None
        ids = encode_texts(self.tokenizer, texts, pairs, None, separator)
        long = [i for i, row in enumerate(ids) if max_len and len(row) > max_len]
        if long:  # encoded again with the cut, as the tokenizer cuts (its special tokens kept)
            cut = encode_texts(
                self.tokenizer,
                [texts[i] for i in long],
                [pairs[i] for i in long] if pairs else None,
                max_len,
                separator,
            )
            for i, row in zip(long, cut):
                ids[i] = row
            if len(long) / len(ids) > WARN_CUT:
                log.warning(classifier_cut_warning(split, len(long), len(ids), max_len))
        return datasets.Dataset.from_dict({"input_ids": ids, "label": [y for _, y in kept]})

    def train_dataloader(self) -> DataLoader:
        """SFT's sampler with one unit per row (see hydratune.data.sampler.train_loader)."""
        rows = [1] * len(self.train_dataset)
        return train_loader(self.train_dataset, rows, self.cfg, self.trainer, self.seed, self.collate)

    def val_dataloader(self) -> DataLoader:
        return eval_loader(self.val_dataset, self.cfg, self.collate, self.trainer)
