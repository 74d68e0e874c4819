"""The shared base of the tasks trained on preference data (dpo, reward, kto): their DataModule, rules and
views. An abstract base like `Task` itself: concrete tasks subclass it, never one another."""

from __future__ import annotations

from hydratune.rules import Rule
from hydratune.tasks.task import Task, data_kwargs


class PreferenceTask(Task):
    """What the tasks on preference data share: their DataModule, checks and views (subclassed by the
    concrete preference tasks, which share nothing else)."""

    kto = False
    rules = (
        Rule(
            "preference_packing",
            "task, dataset.packing",
            lambda c: bool((c.get("dataset") or {}).get("packing")),
            "preference pairs are scored answer by answer, so rows cannot be packed: set dataset.packing=false",
        ),
    )

    def datamodule(self, tokenizer, cfg: dict):
        from hydratune.data.preference import PreferenceDataModule

        return PreferenceDataModule(tokenizer, **data_kwargs(cfg), kto=self.kto)

    def full_data_report(self, cfg: dict, tokenizer) -> dict:
        datamodule = self.datamodule(tokenizer, cfg)
        datamodule.setup("fit")
        return dict(datamodule.stats)

    def inspect(self, cfg: dict, tokenizer, samples: int) -> list[str]:
        from hydratune.data.preference import inspect_lines

        datamodule = self.datamodule(tokenizer, cfg)
        datamodule.setup("fit")
        return inspect_lines(datamodule, tokenizer, samples)
