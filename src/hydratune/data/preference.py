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
from hydratune.data.ops import build_splits, fingerprint, tokenizer_fingerprint, unread_map_columns
from hydratune.data.pairs import (
    DROP_REASONS,
    PAIR_FORMATS,
    KTOCollator,
    PairCollator,
    check_pair_config,
    column,
    pair_stats,
    read_pair_columns,
    required_pair_columns,
    shared_start,
    tokenize_kto,
    tokenize_pairs,
)
from hydratune.data.sampler import eval_loader, train_loader
from hydratune.data.sources import validation_split
from hydratune.errors import UserError

log = logging.getLogger(__name__)

# Bumped when pair tokenization changes its output, so cached results of older code are not reused.
TOKENIZE_VERSION = 4


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
        if cfg.get("format") == "chat_pairs" or (kto and cfg.get("chat_template")):
            # Before any tokenization, so the exported tokenizer carries the template training used (KTO: for
            # conversational rows, which are rendered with it).
            set_chat_template(tokenizer, cfg)
        if kto:
            self.collate = KTOCollator(tokenizer.pad_token_id, kl=True, max_length=cfg["max_seq_length"])
        else:
            self.collate = PairCollator(tokenizer.pad_token_id)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        fmt = check_pair_config(self.cfg, kto=self.kto)
        fix = "dataset.completion_column={column}" if self.kto else "dataset.chosen_column={column}"
        for line in unread_map_columns(
            self.cfg, read_pair_columns(fmt, self.cfg), f"dataset.format={fmt}", fix
        ):
            log.warning(line)
        splits = build_splits(self.cfg, self.cache_dir)
        val_name = validation_split(splits)
        if "train" not in splits:
            raise UserError(
                f"dataset: the sources give splits {', '.join(splits)} but no 'train'; "
                "map one with data_files: {train: ...} or a hub source's split"
            )
        self.train_dataset, self.stats["train"] = self._tokenize(splits["train"], "train")
        # without one the run trains unevaluated, as SFT does, and says so (train.py)
        if val_name is not None:
            self.val_dataset, self.stats["validation"] = self._tokenize(splits[val_name], val_name)

    def _tokenize(self, dataset, split: str):
        fmt = self.cfg["format"]
        if self.kto and is_paired(dataset.column_names, self.cfg):
            dataset = unpair(dataset, self.cfg)
            log.info(
                "%s: prompt/chosen/rejected pairs unpaired into %d KTO rows (chosen desirable, rejected "
                "undesirable), as TRL's KTOTrainer does", split, len(dataset),
            )  # fmt: skip
        missing = [c for c in required_pair_columns(fmt, self.cfg) if c not in dataset.column_names]
        if missing:
            raise UserError(missing_column(fmt, missing[0], split, dataset.column_names, self.cfg))
        if (
            fmt == "pairs"
            and column(self.cfg, "prompt_column") not in dataset.column_names
            and split == "train"
            # conversations are refused below with the format to use, not read as text (review P11)
            and len(dataset)
            and isinstance(dataset[0].get(column(self.cfg, "chosen_column")), str)
        ):
            log.warning(
                "dataset: no %r column: each pair's prompt is the text its chosen and rejected answers share, up to "
                "where they differ (as TRL reads implicit-prompt pairs such as Anthropic's hh-rlhf)",
                column(self.cfg, "prompt_column"),
            )
        if "margin" in dataset.column_names and split == "train" and not self.kto:
            log.info(
                "dataset: column 'margin' is each pair's margin for task=reward (as TRL's RewardTrainer reads it, "
                "in place of task.margin); task=dpo does not read it"
            )
        tokenize = tokenize_kto if self.kto else tokenize_pairs

        def encode(batch: dict, indices: list[int]) -> dict:
            rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
            try:
                return tokenize(rows, self.tokenizer, self.cfg)
            except UserError:
                for index, row in zip(indices, rows):  # the row that fails, named alone
                    try:
                        tokenize([row], self.tokenizer, self.cfg)
                    except UserError as err:
                        raise UserError(f"split {split!r} row {index}: {err}") from None
                raise

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
        drop = list(tokenized["drop"])
        keep, stats = pair_stats(drop, list(tokenized["truncated"]))
        stats["first_dropped"] = [
            f"row {i} ({reason.replace('_', ' ')})" for i, reason in enumerate(drop) if reason
        ][:5]
        if len(keep) < len(tokenized):
            tokenized = tokenized.select(keep)
        if not len(tokenized):
            raise UserError(
                f"dataset: no row of split {split!r} is left to train on ("
                + ", ".join(f"{stats['dropped_' + r]} {r.replace('_', ' ')}" for r in DROP_REASONS)
                + f"); check the columns, or raise dataset.max_seq_length={self.cfg['max_seq_length']}"
            )
        dropped = {r: stats[f"dropped_{r}"] for r in DROP_REASONS if stats[f"dropped_{r}"]}
        unit = "rows" if self.kto else "pairs"
        log.info(
            "%s: %d %s from %d rows in %.1fs%s, %d truncated",
            split, stats["pairs"], unit, stats["rows"], time.time() - started,
            "".join(f", dropped {n} {r.replace('_', ' ')}" for r, n in dropped.items())
            + (f" (first: {', '.join(stats['first_dropped'])})" if dropped else ""), stats["truncated"],
        )  # fmt: skip
        warn_if_cut(stats, split, unit, self.cfg["max_seq_length"])
        if self.kto:
            stats["desirable"] = sum(tokenized["label"])
            stats["undesirable"] = len(tokenized) - stats["desirable"]
            if not stats["desirable"] or not stats["undesirable"]:
                kind = "desirable" if stats["desirable"] else "undesirable"
                log.warning(
                    "dataset: every KTO row of split %r is %s (label %s): KTO learns from the contrast; add "
                    "rows of the other kind", split, kind, str(kind == "desirable").lower(),
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


# Above these shares of a split, what max_seq_length drops or cuts is said as a warning (training and preflight).
WARN_LONG_PROMPT = 0.05
WARN_TRUNCATED = 0.25


def warn_if_cut(stats: dict, split: str, unit: str, max_seq_length: int) -> None:
    """A warning when dataset.max_seq_length drops many prompts whole or cuts many answers (losing their EOS)."""
    rows = max(stats["rows"], 1)
    long_prompts, truncated = stats["dropped_long_prompt"], stats["truncated"]
    if long_prompts / rows > WARN_LONG_PROMPT or truncated / max(stats["pairs"], 1) > WARN_TRUNCATED:
        log.warning(
            "dataset.max_seq_length=%d: in split %r, %d of %d rows dropped (prompt too long) and %d of %d %s "
            "cut short (their answers lose EOS); raise dataset.max_seq_length (`hydratune inspect` shows the "
            "lengths)", max_seq_length, split, long_prompts, stats["rows"], truncated, stats["pairs"], unit,
        )  # fmt: skip


def is_paired(columns, cfg: dict) -> bool:
    """KTO rows asked for, chosen/rejected given (TRL's paired layout, the prompt in its own column or implicit in
    both answers): no completion column."""
    pair = [column(cfg, k) for k in ("chosen_column", "rejected_column")]
    return column(cfg, "completion_column") not in columns and all(c in columns for c in pair)


def unpair(dataset, cfg: dict):
    """Each pair as two KTO rows: the chosen answer desirable, the rejected one undesirable. Without a prompt
    column the prompt is what both answers share, as TRL's KTOTrainer extracts it first (the text up to where
    they differ; for conversations, the turns before the first that differs)."""
    prompt, chosen, rejected = (column(cfg, k) for k in ("prompt_column", "chosen_column", "rejected_column"))
    completion, label = column(cfg, "completion_column"), column(cfg, "label_column")

    def split_pairs(batch: dict) -> dict:
        n = len(batch[chosen])
        if prompt in batch:
            prompts, good, bad = batch[prompt], batch[chosen], batch[rejected]
        else:
            prompts, good, bad = map(
                list, zip(*(_shared_prompt(c, r, prompt) for c, r in zip(batch[chosen], batch[rejected])))
            )
        return {prompt: prompts * 2, completion: good + bad, label: [True] * n + [False] * n}

    return dataset.map(split_pairs, batched=True, remove_columns=dataset.column_names, desc="unpairing")


def _shared_prompt(chosen, rejected, prompt_column: str) -> tuple:
    """(prompt, chosen answer, rejected answer) of an implicit-prompt pair, text or conversation."""
    if isinstance(chosen, str) and isinstance(rejected, str):
        at = shared_start(chosen, rejected)
        if chosen[:at].strip():
            return chosen[:at], chosen[at:], rejected[at:]
    elif isinstance(chosen, list) and isinstance(rejected, list):
        at = 0
        while at < min(len(chosen), len(rejected)) - 1 and chosen[at] == rejected[at]:
            at += 1
        if at:
            return chosen[:at], chosen[at:], rejected[at:]
    raise UserError(
        f"dataset: no {prompt_column!r} column, and chosen and rejected share no text or turns to be the prompt: "
        "give the prompt its own column (dataset.prompt_column)"
    )


def missing_column(fmt: str, name: str, split: str, columns: list[str], cfg: dict) -> str:
    """The error for a column the format reads and the split lacks, with what the columns look like."""
    where = f"dataset.format={fmt}: column {name!r} is not in split {split!r}; available columns: {', '.join(columns)}"
    if fmt == "kto":
        return f"{where} (set dataset.prompt_column/completion_column/label_column to yours)"
    if column(cfg, "completion_column") in columns and column(cfg, "label_column") in columns:
        return f"{where}; these are KTO rows (a completion and a label each): train them with task=kto"
    return f"{where} (set dataset.prompt_column/chosen_column/rejected_column to yours)"


def pair_format_names(kto: bool = False) -> list[str]:
    """The dataset.format values a preference (or KTO) task reads."""
    return ["kto"] if kto else [name for name in PAIR_FORMATS if name != "kto"]


def inspect_lines(datamodule, tokenizer, samples: int) -> list[str]:
    """`hydratune inspect` for preference data: counts and drops per split, lengths, decoded examples."""
    from hydratune.data.display import histogram

    unit = "rows" if datamodule.kto else "pairs"
    lines = []
    for split, stats in datamodule.stats.items():
        reasons = [r for r in DROP_REASONS if not (datamodule.kto and r == "identical")]  # pairs only
        drops = ", ".join(f"{stats['dropped_' + r]} {r.replace('_', ' ')}" for r in reasons)
        kinds = (
            f" ({stats['desirable']} desirable, {stats['undesirable']} undesirable)" if datamodule.kto else ""
        )
        first = f" (first: {', '.join(stats['first_dropped'])})" if stats.get("first_dropped") else ""
        lines += [
            f"{split}: {stats['pairs']} {unit}{kinds} from {stats['rows']} rows; dropped: {drops}{first}",
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
