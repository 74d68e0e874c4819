"""The shape of a task: everything that differs from one training objective to another.

A task is chosen by `conf/task/<name>.yaml` and built by `hydratune.tasks.registry.get_task`. Its
settings are the YAML's keys (all but `name` and `_target_`). Nothing outside the registry compares
task names: `train.run`, preflight, `hydratune inspect` and `hydratune predict` ask the task.

This module and every task's `__init__.py` import no torch and no Lightning (preflight and `--help`
stay fast); a task imports its LightningModule and DataModule inside the methods that build them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from hydratune.errors import UserError
from hydratune.rules import Rule


class Task:
    """One training objective: its data, its LightningModule, its checks, its report.

    Subclasses set `name` and override `datamodule` and `module`; the rest has defaults. The config
    dicts passed in are plain values (see `hydratune.config.to_plain`); `cfg` is the whole run config.
    """

    name: ClassVar[str] = ""
    # Cross-group rules that hold only for this task (checked with hydratune.rules.RULES).
    rules: ClassVar[tuple[Rule, ...]] = ()
    # Whether the trained model writes text (a causal LM): eval_generations then samples its answers.
    generative: ClassVar[bool] = True
    # How a sweep ranks its jobs (hydratune.sweep) when its axes include task settings. `loss_settings`
    # change what val/loss measures (a temperature or weight inside it): the val losses of jobs that differ
    # in one do not compare, so such a sweep is ranked by `settings_metric` (a val metric they leave
    # comparable, and whether higher is better), or names no best job when that is None. Across
    # `unranked_settings` no val metric compares.
    loss_settings: ClassVar[tuple[str, ...]] = ()
    settings_metric: ClassVar[tuple[str, bool] | None] = None
    unranked_settings: ClassVar[tuple[str, ...]] = ()
    # The val metrics beside the losses in a sweep's summary, whatever it is ranked by (classification's F1).
    summary_metrics: ClassVar[tuple[str, ...]] = ()
    # Names of a metric this task logs under another name (another task's, or the HF Trainer's): preflight
    # points metric_for_best_model at the task's own before the run, not at its first evaluation.
    metric_aliases: ClassVar[dict[str, str]] = {}

    def __init__(self, **settings: Any):
        self.settings = settings

    # ---------------------------------------------------------------------------------- training

    def datamodule(self, tokenizer, cfg: dict):
        """The LightningDataModule; its `setup()` prepares the data (`train.run` calls it before fit)."""
        raise NotImplementedError(f"task {self.name!r} has no datamodule")

    def module(self, cfg: dict, datamodule, tokenizer):
        """The LightningModule, built from plain config values (the model itself loads in configure_model)."""
        raise NotImplementedError(f"task {self.name!r} has no module")

    def finish(self, trainer, module, datamodule, run_dir: Path) -> dict:
        """After fit (best weights back in place): extra metrics.json entries and files. Every rank calls it."""
        return {}

    # ------------------------------------------------------------------------- checks and views

    def check(self, cfg: dict) -> None:
        """Checks of the task's own settings that load no model and read no data (preflight and train.py
        run them with the schema and rules); raise UserError with one line naming the key."""

    def quick_data_report(self, splits: dict, tokenizer, dataset_cfg: dict, notes: list[str]) -> dict:
        """Preflight's quick look at the first rows (hydratune.data.peek Rows; no torch). Raise
        `hydratune.data.peek.Fallback` where the quick look cannot match training."""
        from hydratune.data.peek import Fallback

        raise Fallback(f"task={self.name} has no quick data check")

    def full_data_report(self, cfg: dict, tokenizer) -> dict:
        """Preflight's full data check: every row prepared as training prepares it."""
        datamodule = self.datamodule(tokenizer, cfg)
        datamodule.setup("fit")
        return dict(getattr(datamodule, "stats", {}))

    def inspect(self, cfg: dict, tokenizer, samples: int) -> list[str]:
        """`hydratune inspect`: what the model will be trained on, as lines of text (no model weights)."""
        raise UserError(f"hydratune inspect: task={self.name} has no inspect view yet")

    def prompt_text(
        self, dataset_cfg: dict, tokenizer, prompt: str, input: str = "", system: str = ""
    ) -> str:
        """`hydratune generate`: one prompt (and an alpaca input, or a chat run's system turn) rendered as this
        task's training data rendered its prompts, so the model answers as it learnt to."""
        raise UserError(
            f"task={self.name} writes no text (a classifier: hydratune predict; a reward model: hydratune score)"
        )


def module_kwargs(cfg: dict) -> dict:
    """The constructor arguments every task's LightningModule shares, from the plain run config.

    The hub token is handed over apart from `model` so it never lands in saved hyperparameters.
    """
    model = dict(cfg["model"])
    token = model.pop("token", None)
    return {
        "model": model,
        "peft": cfg["peft"],
        "optimizer": cfg["optimizer"],
        "scheduler": cfg["scheduler"],
        "gradient_checkpointing": bool(model.pop("gradient_checkpointing", False)),
        "quantization": cfg.get("quantization"),
        "hub_token": token,
        "nan_policy": cfg.get("nan_policy", "stop"),
    }


def data_kwargs(cfg: dict) -> dict:
    """The DataModule arguments every task shares: the dataset config, the seed and the cache folder."""
    return {"cfg": cfg["dataset"], "seed": cfg.get("seed", 0), "cache_dir": cfg["paths"].get("cache_dir")}
