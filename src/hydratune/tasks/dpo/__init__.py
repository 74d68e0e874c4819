"""`task=dpo`: preference optimisation on pairs (a prompt, a chosen and a rejected answer) with a loss of the
DPO family: sigmoid (DPO), robust, ipo, hinge, and the reference-free orpo and simpo."""

from __future__ import annotations

from hydratune.rules import Rule, is_number
from hydratune.tasks.preference import PreferenceTask
from hydratune.tasks.task import module_kwargs

# hydratune.losses.PREFERENCE_LOSSES, without importing torch for a config check.
LOSSES = ("sigmoid", "robust", "ipo", "hinge", "orpo", "simpo")

# The losses that read task.label_smoothing (the share of pairs taken as mislabelled).
SMOOTHED = ("sigmoid", "robust", "simpo")


def _task(cfg: dict) -> dict:
    return cfg.get("task") or {}


class DPOTask(PreferenceTask):
    name = "dpo"
    # The share of held-out pairs ranked right does not depend on beta or the loss's weights; between a
    # loss with a reference and a reference-free one its "reward" changes meaning.
    loss_settings = ("beta", "label_smoothing", "sft_weight", "simpo_gamma")
    settings_metric = ("val/accuracy", True)
    summary_metrics = ("val/accuracy", "val/margin")
    metric_aliases = {"val/acc": "val/accuracy"}
    unranked_settings = ("loss",)
    rules = (
        *PreferenceTask.rules,
        Rule(
            "dpo_loss_list",
            "task.loss",
            lambda c: isinstance((c.get("task") or {}).get("loss"), list),
            "task.loss is one loss: TRL's loss_type [sigmoid, sft] with loss_weights [1, W] is task.loss=sigmoid "
            "task.sft_weight=W",
        ),
        Rule(
            "dpo_loss",
            "task.loss",
            lambda c: not isinstance(loss := (c.get("task") or {}).get("loss"), list) and loss not in LOSSES,
            f"task.loss must be one of {', '.join(LOSSES)}: set e.g. task.loss=sigmoid (KTO, on unpaired rows: task=kto)",
        ),
        Rule(
            "dpo_beta",
            "task.beta",
            lambda c: not (is_number(b := _task(c).get("beta", 0.1)) and b > 0),
            "task.beta is the loss's temperature and must be > 0: use e.g. task.beta=0.1",
        ),
        Rule(
            "dpo_label_smoothing",
            "task.label_smoothing",
            lambda c: not (is_number(e := _task(c).get("label_smoothing", 0.0)) and 0 <= e < 0.5),
            "task.label_smoothing is the share of pairs taken as mislabelled and must be in [0, 0.5) (from 0.5 on "
            "the loss prefers the rejected answers): use e.g. task.label_smoothing=0.1",
        ),
        Rule(
            "dpo_label_smoothing_unread",
            "task.label_smoothing, task.loss",
            lambda c: (
                bool(_task(c).get("label_smoothing")) and _task(c).get("loss", "sigmoid") not in SMOOTHED
            ),
            f"task.label_smoothing is read by the {', '.join(SMOOTHED)} losses only: set task.label_smoothing=0, "
            "or task.loss=robust",
        ),
        Rule(
            "dpo_sft_weight_unread",
            "task.sft_weight, task.loss",
            lambda c: _task(c).get("loss") == "orpo" and bool(_task(c).get("sft_weight")),
            "task.sft_weight is not read by task.loss=orpo, whose NLL term is built in (weight 1): set "
            "task.sft_weight=0",
        ),
    )

    def module(self, cfg: dict, datamodule, tokenizer):
        from hydratune.tasks.dpo.module import DPOModule

        keys = (
            "loss",
            "beta",
            "label_smoothing",
            "sft_weight",
            "simpo_gamma",
            "precompute_ref_logps",
            "fused_loss",
        )
        return DPOModule(**module_kwargs(cfg), **{k: self.settings[k] for k in keys if k in self.settings})
