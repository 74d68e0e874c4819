"""`task=kto`: KTO on unpaired data, each row a prompt, one completion and a desirable/undesirable flag."""

from __future__ import annotations

import logging

from hydratune.tasks.preference import KTO_RULES, PreferenceTask
from hydratune.tasks.task import module_kwargs

log = logging.getLogger(__name__)


class KTOTask(PreferenceTask):
    name = "kto"
    kto = True
    loss_settings = ("beta", "desirable_weight", "undesirable_weight")  # and no val metric apart from beta
    summary_metrics = ("val/margin",)
    rules = KTO_RULES

    def module(self, cfg: dict, datamodule, tokenizer):
        from hydratune.tasks.kto.module import KTOModule

        warn_if_unbalanced(self.settings, (getattr(datamodule, "stats", None) or {}).get("train") or {})
        keys = ("beta", "desirable_weight", "undesirable_weight", "fused_loss")
        return KTOModule(**module_kwargs(cfg), **{k: self.settings[k] for k in keys if k in self.settings})


# desirable_weight x desirable rows over undesirable_weight x undesirable rows outside this range: a warning (the
# KTO paper's advice, which TRL's KTOTrainer checks too).
BALANCE = (1.0, 4 / 3)


def warn_if_unbalanced(settings: dict, train_stats: dict) -> None:
    desirable, undesirable = train_stats.get("desirable"), train_stats.get("undesirable")
    if not desirable or not undesirable:
        return  # none of a kind is the data module's warning
    d_weight, u_weight = settings.get("desirable_weight", 1.0), settings.get("undesirable_weight", 1.0)
    ratio = d_weight * desirable / (u_weight * undesirable)
    if not BALANCE[0] <= ratio <= BALANCE[1]:
        low, high = (
            BALANCE[0] * u_weight * undesirable / desirable,
            BALANCE[1] * u_weight * undesirable / desirable,
        )
        log.warning(
            "task=kto: desirable_weight x %d desirable rows is %.2fx undesirable_weight x %d undesirable ones; "
            "KTO works best at 1 to 4/3x: set task.desirable_weight between %.2f and %.2f",
            desirable, ratio, undesirable, low, high,
        )  # fmt: skip
