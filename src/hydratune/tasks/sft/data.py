"""The SFT LightningDataModule: sources -> ops -> format -> tokenize (cached) -> pack or pad."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from hydratune.data.collate import PackedCollator, PadCollator
from hydratune.data.formats import (
    CHAT_FORMATS,
    FORMATS,
    READ_FIX,
    check_config,
    layout_hint,
    read_columns,
    required_columns,
    set_chat_template,
)
from hydratune.data.ops import build_splits, fingerprint, tokenizer_fingerprint, unread_map_columns
from hydratune.data.packing import PACKING_VERSION, pack_dataset, packing_efficiency, row_lengths
from hydratune.data.prepared import prepared_folder, read_prepared, write_prepared
from hydratune.data.sampler import eval_loader, train_loader
from hydratune.data.sources import validation_split
from hydratune.data.tokenize import (
    answer_column,
    count_empty,
    cut_warning,
    empty_answer_warning,
    keep_and_count,
    nothing_left,
    tokenize_samples,
)
from hydratune.errors import UserError

log = logging.getLogger(__name__)

# Bumped when tokenization changes its output, so cached results of older code are not reused.
TOKENIZE_VERSION = 5


def is_cached(dataset, fingerprint: str) -> bool:
    """Whether `dataset.map(..., new_fingerprint=fingerprint)` will read its result from the cache."""
    if not dataset.cache_files:  # in memory: datasets does not cache maps of it
        return False
    folder = Path(dataset.cache_files[0]["filename"]).parent
    return any(folder.glob(f"cache-{fingerprint}*.arrow"))


def tokenize_split(dataset, tokenizer, cfg: dict, split: str = "train", tokenizer_key: str | None = None):
    """Format and tokenize every row (cached by fingerprint), then drop what cannot be trained.

    Returns the tokenized dataset and its statistics (rows, drops, truncation rate, trainable share).
    Rows with no trained token are dropped and counted; with `truncation: drop`, so are rows longer
    than max_seq_length.
    """
    fmt = check_config(cfg)
    render = FORMATS[fmt]
    columns = [c for c in required_columns(fmt, cfg) if c not in dataset.column_names]
    if columns:
        raise UserError(
            f"dataset.format={fmt}: column {columns[0]!r} is not in split {split!r}; "
            f"available columns: {', '.join(dataset.column_names)}{layout_hint(fmt, dataset.column_names)}"
        )
    max_len, train_on = cfg["max_seq_length"], cfg.get("train_on", "response")
    split_long = cfg.get("truncation") == "split"  # a long sample becomes several (pre-training text)
    extra = {"tokenizer": tokenizer} if fmt in CHAT_FORMATS else {}

    def encode(batch: dict, indices: list[int]) -> dict:
        samples = []
        for index, values in zip(indices, zip(*batch.values())):
            try:
                samples.append(render(dict(zip(batch, values)), cfg, **extra))
            except UserError as err:
                raise UserError(f"split {split!r} row {index}: {err}") from None
        return tokenize_samples(samples, tokenizer, max_len, train_on, split_long, whole=fmt in CHAT_FORMATS)

    keys = ("format", "template", "text_column", "prompt_column", "response_column", "system_column",
            "messages_column", "chat_template", "train_on", "max_seq_length")  # fmt: skip
    if fmt == "sharegpt":  # only then, so the caches of the other formats keep their fingerprints
        keys += ("conversations_column", "role_key", "content_key", "roles")
    if split_long:  # likewise: truncate and drop tokenize alike (drop filters afterwards)
        keys += ("truncation",)
    tokenizer_key = tokenizer_key or tokenizer_fingerprint(tokenizer)  # a caller that has it passes it
    key = fingerprint(dataset._fingerprint, tokenizer_key, {k: cfg.get(k) for k in keys},
                      TOKENIZE_VERSION)  # fmt: skip
    cached = is_cached(dataset, key)
    started = time.time()
    tokenized = dataset.map(
        encode,
        batched=True,
        with_indices=True,
        remove_columns=dataset.column_names,
        num_proc=cfg.get("num_proc"),
        new_fingerprint=key,
        desc=f"tokenizing {split}",
    )
    # Under DDP, rank 0 prepares the data before the other ranks start; they read this cache.
    log.info("%s: %s (%.1fs)", split, "read from the cache" if cached else f"tokenized {len(dataset)} rows",
             time.time() - started)  # fmt: skip
    lengths, trained = list(tokenized["length"]), list(tokenized["num_trained"])
    drop_long = cfg.get("truncation", "truncate") == "drop"
    keep, stats = keep_and_count(lengths, trained, max_len, drop_long)
    if len(keep) < len(lengths):
        tokenized = tokenized.select(keep)
    if not len(tokenized):
        raise UserError(nothing_left(split, stats, lengths, max_len))
    kept_lengths = [min(lengths[i], max_len) for i in keep]
    stats |= {
        "samples": len(tokenized),
        "tokens": sum(kept_lengths),
        "trained_tokens": sum(trained[i] for i in keep),
        "lengths": kept_lengths,
    }
    stats["trainable_fraction"] = stats["trained_tokens"] / max(stats["tokens"], 1)
    answers = answer_column(fmt, cfg)
    if answers is not None:
        stats["empty_answers"] = count_empty(dataset[answers])
    report_split(split, stats, cfg)
    return tokenized, stats


def report_split(split: str, stats: dict, cfg: dict) -> None:
    """What preparing a split kept, dropped and cut, said as it was prepared and again when a later run reads
    the prepared rows (a run after `hydratune inspect` said nothing of 42% of its samples cut: review T7)."""
    drop_long = cfg.get("truncation", "truncate") == "drop"
    log.info(
        "%s: %d samples, %.1f%% of tokens trained, %d dropped with no trained token, %d truncated (%.1f%%)%s",
        split,
        stats["samples"],
        100 * stats["trainable_fraction"],
        stats["dropped_untrained"],
        stats["truncated"],
        100 * stats["truncation_rate"],
        f", {stats['dropped_truncated']} dropped as too long" if drop_long else "",
    )
    warning = cut_warning(split, stats, cfg["max_seq_length"], cfg.get("truncation", "truncate"))
    if warning:
        log.warning(warning)
    if stats.get("empty_answers"):  # a one-answer format: a sample per row
        answers = answer_column(check_config(cfg), cfg)
        log.warning(empty_answer_warning(split, stats["empty_answers"], stats["rows"], answers))


class SFTDataModule(L.LightningDataModule):
    """Train/validation data for supervised fine-tuning.

    Args:
        tokenizer: the model's tokenizer (needs eos and pad tokens).
        cfg: the dataset config as a plain dict (sources, format, max_seq_length, batch sizes, ...).
        seed: seeds the shuffling of the training set.
        cache_dir: where `datasets` keeps loaded files, and the prepared rows (`hydratune.data.prepared`).
        prepared: read the prepared rows of an earlier run when there are some (training); False
            prepares through `datasets` every time and keeps the unpacked samples (`train_samples`),
            which inspection shows.
    """

    def __init__(
        self, tokenizer, cfg: dict, seed: int = 0, cache_dir: str | None = None, prepared: bool = True
    ):
        super().__init__()
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.seed = seed
        self.cache_dir = cache_dir
        self.prepared = prepared
        self.train_dataset = None
        self.val_dataset = None
        self.train_samples = None  # unpacked tokenized samples; None when read from prepared rows
        self.stats: dict[str, dict] = {}  # per split: rows, drops, truncation rate, ...; see tokenize_split
        self.lengths: dict[str, list[int]] = {}
        self.row_lengths: list[int] = []  # with packing: the tokens of each packed row
        self.collate = PadCollator(tokenizer.pad_token_id)
        self.packed_collate = PackedCollator(tokenizer.pad_token_id)
        if cfg.get("format") in CHAT_FORMATS:
            # Before any tokenization, so the exported tokenizer carries the template training used.
            set_chat_template(tokenizer, cfg)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        fmt = check_config(self.cfg)
        for line in unread_map_columns(
            self.cfg, read_columns(fmt, self.cfg), f"dataset.format={fmt}", READ_FIX
        ):
            log.warning(line)
        tokenizer_key = tokenizer_fingerprint(self.tokenizer)  # the whole vocabulary serialised: once
        folder = prepared_folder(self.cfg, tokenizer_key, self.cache_dir, [TOKENIZE_VERSION, PACKING_VERSION])
        if self.prepared and folder is not None and self._read_prepared(folder):
            return
        splits = build_splits(self.cfg, self.cache_dir)
        if "train" not in splits:
            raise UserError(
                f"dataset: the sources give splits {', '.join(splits)} but no 'train'; "
                "map one with data_files: {train: ...} or a hub source's split"
            )
        self.train_dataset, self.stats["train"] = tokenize_split(
            splits["train"], self.tokenizer, self.cfg, tokenizer_key=tokenizer_key
        )
        val_name = validation_split(splits)
        if val_name:
            self.val_dataset, self.stats["validation"] = tokenize_split(
                splits[val_name], self.tokenizer, self.cfg, val_name, tokenizer_key
            )
        # Per-sample lengths (for group_by_length and `hydratune inspect`), kept out of the printed stats.
        self.lengths = {split: stats.pop("lengths") for split, stats in self.stats.items()}
        self.train_samples = self.train_dataset  # unpacked, for inspection
        if self.cfg.get("packing"):
            capacity = self.cfg["max_seq_length"]
            self.train_dataset = pack_dataset(
                self.train_dataset, capacity, self.cfg.get("packing_strategy", "bfd")
            )
            self.row_lengths = row_lengths(self.train_dataset)
            efficiency = packing_efficiency(self.row_lengths, capacity)
            self.stats["train"] |= {"packed_rows": len(self.train_dataset), "packing_efficiency": efficiency}
            log.info(
                # Of full rows; metrics.json's padding_efficiency is of the batches, each padded to its longest row.
                "packed %d samples into %d rows of up to %d tokens: they fill %.1f%% of them (packing_efficiency)",
                self.stats["train"]["samples"],
                len(self.train_dataset),
                capacity,
                100 * efficiency,
            )
        if folder is not None:
            splits = {"train": self.train_dataset, "validation": self.val_dataset}
            extra = {"stats": self.stats, "lengths": self.lengths, "row_lengths": self.row_lengths}
            write_prepared(folder, {name: data for name, data in splits.items() if data is not None}, extra)

    def _read_prepared(self, folder) -> bool:
        """Take the rows and statistics of an earlier run's prepared folder; False when there is none."""
        manifest = read_prepared(folder)
        if manifest is None:
            return False
        self.train_dataset = manifest["datasets"]["train"]
        self.val_dataset = manifest["datasets"].get("validation")
        self.stats, self.lengths, self.row_lengths = (
            manifest["stats"],
            manifest["lengths"],
            manifest["row_lengths"],
        )
        log.info("data: %d training rows read from the prepared rows in %s", len(self.train_dataset), folder)
        for split, stats in self.stats.items():
            report_split(split, stats, self.cfg)
        return True

    def group_lengths(self) -> list[int] | None:
        """The lengths that batches are grouped by (see WindowBatchSampler), or None for plain shuffling.

        `group_by_length: null` (the default) groups packed rows only: their lengths vary (a row of
        one 300-token sample beside full rows) and a batch is padded to its longest row, while the
        point of packing is to spend no compute on padding. `true` groups unpacked samples too, as the
        Hugging Face Trainer's option does; off by default there, as here, because a batch of similar
        samples makes the loss jump more from step to step.
        """
        packed = bool(self.cfg.get("packing"))
        group = self.cfg.get("group_by_length")
        if not (packed if group is None else group):
            return None
        return self.row_lengths if packed else self.lengths["train"]

    def train_dataloader(self) -> DataLoader:
        collate = self.packed_collate if self.cfg.get("packing") else self.collate
        trained = list(self.train_dataset["num_trained"])
        return train_loader(
            self.train_dataset, trained, self.cfg, self.trainer, self.seed, collate, self.group_lengths()
        )

    def val_dataloader(self) -> DataLoader:
        return eval_loader(self.val_dataset, self.cfg, self.collate, self.trainer)
