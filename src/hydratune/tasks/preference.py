"""The shared base of the tasks trained on preference data (dpo, reward, kto): their DataModule, rules and
views. An abstract base like `Task` itself: concrete tasks subclass it, never one another."""

from __future__ import annotations

from hydratune.rules import Rule, is_number
from hydratune.tasks.task import Task, data_kwargs

# dataset.format values of preference pairs (hydratune.data.pairs.PAIR_FORMATS, less `kto`).
PAIR_FORMATS = ("pairs", "alpaca_pairs", "chat_pairs")


def _format(cfg: dict) -> str | None:
    return (cfg.get("dataset") or {}).get("format")


PACKING = Rule(
    "preference_packing",
    "task, dataset.packing",
    lambda c: bool((c.get("dataset") or {}).get("packing")),
    "preference data is scored answer by answer, so rows cannot be packed: set dataset.packing=false",
)


class PreferenceTask(Task):
    """What the tasks on preference data share: their DataModule, checks and views."""

    kto = False  # the rows are KTO rows (one completion, a desirable flag) instead of pairs
    rules = (
        PACKING,
        Rule(
            "preference_needs_pairs",
            "task, dataset.format",
            lambda c: _format(c) not in PAIR_FORMATS,
            "this task trains on preference pairs: use dataset=preference "
            f"(or set dataset.format to one of {', '.join(PAIR_FORMATS)} with your columns)",
        ),
    )

    def datamodule(self, tokenizer, cfg: dict):
        from hydratune.data.preference import PreferenceDataModule

        return PreferenceDataModule(tokenizer, **data_kwargs(cfg), kto=self.kto)

    def full_data_report(self, cfg: dict, tokenizer) -> dict:
        datamodule = self.datamodule(tokenizer, cfg)
        datamodule.setup("fit")
        if not self.kto:
            return dict(datamodule.stats)
        # KTO rows are not pairs and are never identical to another: the report says rows kept.
        return {
            split: {("kept" if k == "pairs" else k): v for k, v in stats.items() if k != "dropped_identical"}
            for split, stats in datamodule.stats.items()
        }

    def prompt_text(
        self, dataset_cfg: dict, tokenizer, prompt: str, input: str = "", system: str = ""
    ) -> str:
        from hydratune.data.formats import alpaca_prompt, chat_prompt, no_input, no_system

        fmt = dataset_cfg.get("format") or ("kto" if self.kto else "pairs")
        if fmt == "chat_pairs":
            no_input(f"dataset.format={fmt}", input)
            return chat_prompt(tokenizer, prompt, system)
        no_system(f"dataset.format={fmt}", system)
        if fmt == "alpaca_pairs":
            return alpaca_prompt(prompt, input, dataset_cfg.get("template") or "alpaca")
        no_input(f"dataset.format={fmt}", input)
        return prompt  # pairs, kto: as written

    def inspect(self, cfg: dict, tokenizer, samples: int) -> list[str]:
        from hydratune.data.preference import inspect_lines

        datamodule = self.datamodule(tokenizer, cfg)
        datamodule.setup("fit")
        return inspect_lines(datamodule, tokenizer, samples)


KTO_RULES = (
    PACKING,
    Rule(
        "kto_needs_kto_rows",
        "task, dataset.format",
        lambda c: _format(c) != "kto",
        "task=kto trains on unpaired rows (prompt, completion, label): use dataset=kto "
        "(or dataset.format=kto with your columns)",
    ),
    Rule(
        "kto_beta",
        "task.beta",
        lambda c: not (is_number(b := (c.get("task") or {}).get("beta", 0.1)) and b > 0),
        "task.beta is the implicit reward's temperature and must be > 0: use e.g. task.beta=0.1",
    ),
    Rule(
        "kto_weights",
        "task.desirable_weight, task.undesirable_weight",
        lambda c: any(
            not (is_number(w := (c.get("task") or {}).get(k, 1.0)) and w > 0)
            for k in ("desirable_weight", "undesirable_weight")
        ),
        "task.desirable_weight and task.undesirable_weight weigh the two kinds of rows and must be > 0: "
        "use e.g. task.undesirable_weight=1.0",
    ),
    Rule(
        "kto_batch_of_one",
        "task, dataset.batch_size, dataset.eval_batch_size",
        # Each row's KL reference point is the batch's mismatched pairs: in a batch of one, the row itself.
        lambda c: any(
            is_number(n := (c.get("dataset") or {}).get(k)) and n < 2
            for k in ("batch_size", "eval_batch_size")
        ),
        "task=kto takes its KL reference point from the other rows of a batch, so a batch of one compares a "
        "row with itself: set dataset.batch_size=2 or more (halve trainer.accumulate_grad_batches to keep "
        "the effective batch), and dataset.eval_batch_size=2 or more",
    ),
)
