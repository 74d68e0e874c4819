"""The LightningDataModule of preference data: pairs (task=dpo, task=reward) or KTO rows (task=kto).

sources -> ops -> format -> tokenize (a cached `datasets.map`, as SFT's) -> counted drops -> batches of
pairs padded to their longest row. Formats, tokenization and collators are `hydratune.data.pairs`.
"""

from __future__ import annotations

import logging
import time

import lightning as L
from torch.utils.data import DataLoader

from hydratune.data.formats import set_chat_template
from hydratune.data.ops import build_splits, fingerprint, tokenizer_fingerprint
from hydratune.data.pairs import (
    DROP_REASONS,
    PAIR_FORMATS,
    KTOCollator,
    PairCollator,
    check_pair_config,
    pair_stats,
    required_pair_columns,
    tokenize_kto,
    tokenize_pairs,
)
from hydratune.data.sampler import eval_loader, train_loader
from hydratune.data.sources import validation_split
from hydratune.errors import UserError

log = logging.getLogger(__name__)

# Bumped when pair tokenization changes its output, so cached results of older code are not reused.
TOKENIZE_VERSION = 1


class PreferenceDataModule(L.LightningDataModule):
    """Train/validation preference data.

    Args:
        tokenizer: the model's tokenizer (needs eos and pad tokens).
        cfg: the dataset config as a plain dict (sources, format, column keys, max_seq_length, batch sizes).
        seed: seeds the shuffling of the training set.
        cache_dir: where `datasets` keeps loaded files and tokenized results.
        kto: the rows are KTO rows (one completion and a desirable flag) instead of pairs.

    After `setup()`: `train_dataset`, `val_dataset` (kept rows only) and `stats` per split (rows, kept,
    each drop reason, truncation), which preflight and `hydratune inspect` report.
    """

    def __init__(self, tokenizer, cfg: dict, seed: int = 0, cache_dir: str | None = None, kto: bool = False):
        super().__init__()
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.seed = seed
        self.cache_dir = cache_dir
        self.kto = kto
        self.train_dataset = None
        self.val_dataset = None
        self.stats: dict[str, dict] = {}
        if cfg.get("format") == "chat_pairs":
            # Before any tokenization, so the exported tokenizer carries the template training used.
            set_chat_template(tokenizer, cfg)
        if kto:
            self.collate = KTOCollator(tokenizer.pad_token_id, kl=True, max_length=cfg["max_seq_length"])
        else:
            self.collate = PairCollator(tokenizer.pad_token_id)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        check_pair_config(self.cfg, kto=self.kto)
        splits = build_splits(self.cfg, self.cache_dir)
        val_name = validation_split(splits)
        if "train" not in splits or val_name is None:
            raise UserError(
                f"dataset.sources: preference training needs a train and a validation split (found: "
                f"{', '.join(splits)}); add data_files: {{train: ..., validation: ...}} or a split op"
            )
        self.train_dataset, self.stats["train"] = self._tokenize(splits["train"], "train")
        self.val_dataset, self.stats["validation"] = self._tokenize(splits[val_name], val_name)

    def _tokenize(self, dataset, split: str):
        fmt = self.cfg["format"]
        missing = [c for c in required_pair_columns(fmt, self.cfg) if c not in dataset.column_names]
        if missing:
            raise UserError(
                f"dataset.format={fmt}: column {missing[0]!r} is not in split {split!r}; available columns: "
                f"{', '.join(dataset.column_names)} (set dataset.prompt_column/chosen_column/... to yours)"
            )
        tokenize = tokenize_kto if self.kto else tokenize_pairs

        def encode(batch: dict, indices: list[int]) -> dict:
            rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
            try:
                return tokenize(rows, self.tokenizer, self.cfg)
            except UserError as err:
                raise UserError(f"split {split!r} rows {indices[0]}-{indices[-1]}: {err}") from None

        keys = ("format", "template", "chat_template", "max_seq_length", "prompt_column", "chosen_column",
                "rejected_column", "completion_column", "label_column", "system_column")  # fmt: skip
        key = fingerprint(dataset._fingerprint, tokenizer_fingerprint(self.tokenizer),
                          {k: self.cfg.get(k) for k in keys}, self.kto, TOKENIZE_VERSION)  # fmt: skip
        started = time.time()
        tokenized = dataset.map(
            encode,
            batched=True,
            with_indices=True,
            remove_columns=dataset.column_names,
            num_proc=self.cfg.get("num_proc"),
            new_fingerprint=key,
            desc=f"tokenizing {split}",
        )
        keep, stats = pair_stats(list(tokenized["drop"]), list(tokenized["truncated"]))
        if len(keep) < len(tokenized):
            tokenized = tokenized.select(keep)
        if not len(tokenized):
            raise UserError(
                f"dataset: no row of split {split!r} is left to train on ("
                + ", ".join(f"{stats['dropped_' + r]} {r.replace('_', ' ')}" for r in DROP_REASONS)
                + f"); check the columns, or raise dataset.max_seq_length={self.cfg['max_seq_length']}"
            )
        dropped = {r: stats[f"dropped_{r}"] for r in DROP_REASONS if stats[f"dropped_{r}"]}
        log.info(
            "%s: %d %s from %d rows in %.1fs%s, %d truncated",
            split, stats["pairs"], "rows" if self.kto else "pairs", stats["rows"], time.time() - started,
            f", dropped {dropped}" if dropped else "", stats["truncated"],
        )  # fmt: skip
        return tokenized, stats

    def train_dataloader(self) -> DataLoader:
        # The loss is a mean over the pairs (rows) of the whole optimizer step: one unit per pair.
        units = [1] * len(self.train_dataset)
        lengths = list(self.train_dataset["length"]) if self.cfg.get("group_by_length") else None
        return train_loader(
            self.train_dataset, units, self.cfg, self.trainer, self.seed, self.collate, lengths
        )

    def val_dataloader(self) -> DataLoader:
        return eval_loader(self.val_dataset, self.cfg, self.collate, self.trainer)


def pair_format_names(kto: bool = False) -> list[str]:
    """The dataset.format values a preference (or KTO) task reads."""
    return ["kto"] if kto else [name for name in PAIR_FORMATS if name != "kto"]


def inspect_lines(datamodule, tokenizer, samples: int) -> list[str]:
    """`hydratune inspect` for preference data: counts and drops per split, lengths, decoded examples."""
    from hydratune.data.display import histogram

    unit = "rows" if datamodule.kto else "pairs"
    lines = []
    for split, stats in datamodule.stats.items():
        drops = ", ".join(f"{stats['dropped_' + r]} {r.replace('_', ' ')}" for r in DROP_REASONS)
        lines += [
            f"{split}: {stats['pairs']} {unit} from {stats['rows']} rows; dropped: {drops}",
            f"  truncated: {stats['truncated']} ({100 * stats['truncation_rate']:.1f}%) longer than "
            f"{datamodule.cfg['max_seq_length']} tokens (answers cut from the right)",
        ]
    data = datamodule.train_dataset
    lines += ["train length histogram (prompt + longer answer, tokens):", *histogram(list(data["length"]))]
    lines.append("examples (prompt | answers; only answer tokens are scored):")
    for i in range(min(samples, len(data))):
        row = data[i]
        lines.append(f"--- train[{i}] prompt: {tokenizer.decode(row['prompt_ids'])!r}")
        if datamodule.kto:
            flag = "desirable" if row["label"] else "undesirable"
            lines.append(f"  completion ({flag}): {tokenizer.decode(row['completion_ids'])!r}")
        else:
            lines.append(f"  chosen:   {tokenizer.decode(row['chosen_ids'])!r}")
            lines.append(f"  rejected: {tokenizer.decode(row['rejected_ids'])!r}")
    return lines
