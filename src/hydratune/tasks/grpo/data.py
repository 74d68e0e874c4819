"""GRPO's data: prompts (and the columns the reward functions read), batched as lists of strings.

A prompt is text (used as written, or as the instruction of an alpaca `dataset.template`) or, as TRL's
conversational datasets hold it, a list of `{role, content}` messages: rendered with the tokenizer's chat
template up to the assistant's header (`add_generation_prompt`), as `dataset.format=chat_pairs` renders a
DPO prompt; `dataset.chat_template` sets the template. With `dataset.prompt_format=chat` a text prompt is a
user turn rendered the same way (and `hydratune generate` renders its --prompt so)."""

from __future__ import annotations

import json
import logging

import lightning as L
from torch.utils.data import DataLoader

from hydratune.data.formats import ROLES, TEMPLATES, alpaca_prompt, set_chat_template
from hydratune.data.ops import build_splits
from hydratune.data.sampler import eval_loader, train_loader
from hydratune.data.sources import validation_split
from hydratune.errors import UserError
from hydratune.rewards import check_reward_columns, unmatchable_references

log = logging.getLogger(__name__)


# A hidden column: each prompt as the conversation it is (JSON), for a reward model with a chat template.
TURNS = "__prompt_turns"


class PromptCollator:
    """Rows -> {"prompts": [str], "turns": [[{role, content}, ...]], "columns": {name: [value, ...]}} (the
    columns: every other one)."""

    def __init__(self, prompt_column: str):
        self.prompt_column = prompt_column

    def __call__(self, rows: list[dict]) -> dict:
        rows = [{k: v for k, v in row.items() if k != "window_tokens"} for row in rows]
        names = [k for k in rows[0] if k not in (self.prompt_column, TURNS)]
        return {
            "prompts": [row[self.prompt_column] for row in rows],
            "turns": [json.loads(row[TURNS]) if TURNS in row else None for row in rows],
            "columns": {name: [row[name] for row in rows] for name in names},
        }


def prompt_turns(value) -> list[dict]:
    """The conversation a prompt is: a message list as given; text as one user turn, before any template
    wraps it. A reward model with a chat template renders these with its own template (not the text the
    policy's template made of them)."""
    return value if isinstance(value, list) else [{"role": "user", "content": value}]


PROMPT_FORMATS = ("text", "chat")


def render_prompts(values: list, tokenizer, cfg: dict, split: str) -> list[str]:
    """Each prompt as the text the policy continues (see the module docstring); a value that is neither
    text nor a message list is a one-line error naming its row. Empty text stays empty (dropped later)."""
    column, template = cfg.get("prompt_column") or "prompt", cfg.get("template")
    fmt = cfg.get("prompt_format") or "text"
    if fmt not in PROMPT_FORMATS:
        raise UserError(f"dataset.prompt_format={fmt!r}: use text or chat")
    messages = sum(isinstance(v, list) for v in values)
    if fmt == "chat" or messages:
        set_chat_template(tokenizer, cfg)
    if fmt == "text" and messages:
        log.warning(
            "dataset: %d %s prompts are message lists, rendered with the chat template; set "
            "dataset.prompt_format=chat so that hydratune generate renders a --prompt as a user turn too",
            messages, split,
        )  # fmt: skip
    out = []
    for i, value in enumerate(values):
        where = f"dataset: the {split} split's row {i + 1}: column {column!r}"
        if isinstance(value, str) and (fmt == "text" or not value.strip()):
            out.append(
                alpaca_prompt(value, "", template) if template is not None and value.strip() else value
            )
            continue
        if isinstance(value, str):  # prompt_format=chat: the text is one user turn
            value = [{"role": "user", "content": value}]
        elif not isinstance(value, list):
            raise UserError(
                f"{where} holds {type(value).__name__} {str(value)[:40]!r}; a prompt is text or a list of "
                "{role, content} messages: fix the row or drop it with a filter op"
            )
        bad = next((m for m in value if not _is_message(m)), None) if value else "an empty list"
        if bad is not None:
            raise UserError(
                f"{where} holds {str(bad)[:60]!r}; each message needs a role ({', '.join(ROLES)}) and text content"
            )
        if value[-1]["role"] == "assistant":
            raise UserError(f"{where} ends with an assistant turn; a prompt ends where the answer starts")
        out.append(tokenizer.apply_chat_template(value, tokenize=False, add_generation_prompt=True))
    return out


def _is_message(message) -> bool:
    return (
        isinstance(message, dict) and message.get("role") in ROLES and isinstance(message.get("content"), str)
    )


class PromptDataModule(L.LightningDataModule):
    """Train/validation prompts for online RL.

    Args:
        tokenizer: the model's tokenizer (the module samples with it).
        cfg: the dataset config as a plain dict: sources, prompt_column, template (null: prompts are used
            as written; an alpaca template name: each prompt is the instruction), prompt_format and
            chat_template (see the module docstring), batch sizes.
        seed: seeds the shuffling of the training prompts.
        cache_dir: where `datasets` keeps loaded files.
        rewards: `task.rewards`: the columns its functions read are checked here, with the data, before
            any model loads (hydratune.rewards.check_reward_columns).
    """

    def __init__(
        self,
        tokenizer,
        cfg: dict,
        seed: int = 0,
        cache_dir: str | None = None,
        rewards: list | None = None,
        stop: list | None = None,
    ):
        super().__init__()
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.rewards = rewards
        self.stop = stop
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
        for text in self.stop or []:  # checked before a model loads (it was a traceback once it had: G5)
            tokens = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            if tokens != 1:
                raise UserError(
                    f"task.stop: {text!r} is {tokens} tokens of this tokenizer; each stop string must be one token (a "
                    "newline, the model's end-of-turn marker), or use task.stop=[] to stop at EOS only"
                )
        splits = build_splits(self.cfg, self.cache_dir)
        val_name = validation_split(splits)
        if "train" not in splits:
            raise UserError(
                f"dataset: the sources give splits {', '.join(splits)} but no 'train'; "
                "map one with data_files: {train: ...} or a hub source's split"
            )
        # Without a validation split the run trains unevaluated, as every task does (train.py says so: G7).
        for split, attr in (("train", "train_dataset"), *(((val_name, "val_dataset"),) if val_name else ())):
            data = splits[split]
            if column not in data.column_names:
                raise UserError(
                    f"dataset.prompt_column={column!r}: no such column in the {split} split "
                    f"(columns: {', '.join(data.column_names)})"
                )
            rows = len(data)
            prompts = render_prompts(data[column], self.tokenizer, self.cfg, split)
            turns = [json.dumps(prompt_turns(value)) for value in data[column]]
            data = data.remove_columns(column).add_column("prompt", prompts).add_column(TURNS, turns)
            data = data.filter(lambda r: r["prompt"].strip() != "")  # empty prompts: counted in stats
            check_reward_columns(
                self.rewards, [c for c in data.column_names if c not in ("prompt", TURNS)], split
            )
            if split == "train":
                for line in unmatchable_references(self.rewards, self.stop, data):
                    log.warning(line)
            if not len(data):
                raise UserError(f"dataset: the {split} split has no prompt (column {column!r} is empty)")
            self.stats["train" if split == "train" else "validation"] = {"rows": rows, "prompts": len(data)}
            setattr(self, attr, data)
        log.info(
            "prompts: %d train, %d %s",
            len(self.train_dataset),
            len(self.val_dataset or []),
            val_name or "validation",
        )

    def train_dataloader(self) -> DataLoader:
        units = [1] * len(self.train_dataset)  # each rank samples its share of every global batch of prompts
        return train_loader(self.train_dataset, units, self.cfg, self.trainer, self.seed, self.collate)

    def val_dataloader(self) -> DataLoader:
        return eval_loader(self.val_dataset, self.cfg, self.collate, self.trainer)
