"""GRPO's data: prompts (and the columns the reward functions read), batched as lists of strings."""

from __future__ import annotations

import logging

import lightning as L
from torch.utils.data import DataLoader

from hydratune.data.formats import TEMPLATES, alpaca_prompt
from hydratune.data.ops import build_splits
from hydratune.data.sampler import eval_loader, train_loader
from hydratune.data.sources import validation_split
from hydratune.errors import UserError

log = logging.getLogger(__name__)


class PromptCollator:
    """Rows -> {"prompts": [str], "columns": {name: [value, ...]}} (every column but the prompt)."""

    def __init__(self, prompt_column: str):
        self.prompt_column = prompt_column

    def __call__(self, rows: list[dict]) -> dict:
        rows = [{k: v for k, v in row.items() if k != "window_tokens"} for row in rows]
        names = [k for k in rows[0] if k != self.prompt_column]
        return {
            "prompts": [row[self.prompt_column] for row in rows],
            "columns": {name: [row[name] for row in rows] for name in names},
        }


class PromptDataModule(L.LightningDataModule):
    """Train/validation prompts for online RL.

    Args:
        tokenizer: the model's tokenizer (the module samples with it).
        cfg: the dataset config as a plain dict: sources, prompt_column, template (null: prompts are used
            as written; an alpaca template name: each prompt is the instruction), batch sizes.
        seed: seeds the shuffling of the training prompts.
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
        self.stats: dict[str, dict] = {}
        self.collate = PromptCollator("prompt")

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is not None:
            return
        column, template = self.cfg.get("prompt_column") or "prompt", self.cfg.get("template")
        if template is not None and template not in TEMPLATES:
            raise UserError(f"dataset.template={template}: use null or one of {', '.join(TEMPLATES)}")
        splits = build_splits(self.cfg, self.cache_dir)
        val_name = validation_split(splits)
        if "train" not in splits or val_name is None:
            raise UserError(
                f"dataset.sources: task=grpo needs a train and a validation split of prompts (found: "
                f"{', '.join(splits)})"
            )
        for split, attr in (("train", "train_dataset"), (val_name, "val_dataset")):
            data = splits[split]
            if column not in data.column_names:
                raise UserError(
                    f"dataset.prompt_column={column!r}: no such column in the {split} split "
                    f"(columns: {', '.join(data.column_names)})"
                )
            rows = len(data)
            data = data.filter(lambda r: isinstance(r[column], str) and r[column].strip() != "")
            if template is not None:
                data = data.map(lambda r: {column: alpaca_prompt(r[column], "", template)})
            data = data.rename_column(column, "prompt") if column != "prompt" else data
            if not len(data):
                raise UserError(f"dataset: the {split} split has no prompt (column {column!r} is empty)")
            self.stats["train" if split == "train" else "validation"] = {"rows": rows, "prompts": len(data)}
            setattr(self, attr, data)
        log.info("prompts: %d train, %d %s", len(self.train_dataset), len(self.val_dataset), val_name)

    def train_dataloader(self) -> DataLoader:
        units = [1] * len(self.train_dataset)  # each rank samples its share of every global batch of prompts
        return train_loader(self.train_dataset, units, self.cfg, self.trainer, self.seed, self.collate)

    def val_dataloader(self) -> DataLoader:
        return eval_loader(self.val_dataset, self.cfg, self.collate, self.trainer)
