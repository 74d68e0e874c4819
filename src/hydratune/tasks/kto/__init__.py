"""`task=kto`: KTO on unpaired data, each row a prompt, one completion and a desirable/undesirable flag."""

from __future__ import annotations

from hydratune.tasks.preference import KTO_RULES, PreferenceTask
from hydratune.tasks.task import module_kwargs


class KTOTask(PreferenceTask):
    name = "kto"
    kto = True
    loss_settings = ("beta", "desirable_weight", "undesirable_weight")  # and no val metric apart from beta
    rules = KTO_RULES

    def module(self, cfg: dict, datamodule, tokenizer):
        from hydratune.tasks.kto.module import KTOModule

        keys = ("beta", "desirable_weight", "undesirable_weight", "fused_loss")
        return KTOModule(**module_kwargs(cfg), **{k: self.settings[k] for k in keys if k in self.settings})
