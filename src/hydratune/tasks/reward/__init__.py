"""`task=reward`: a scalar reward model (a sequence classifier with one output) trained on preference pairs
with the Bradley-Terry loss; `hydratune score RUN --prompt ... --response ...` prints its reward."""

from __future__ import annotations

from hydratune.rules import Rule, is_number
from hydratune.tasks.preference import PreferenceTask
from hydratune.tasks.task import Task, module_kwargs


class RewardTask(PreferenceTask):
    name = "reward"
    generative = False
    loss_settings = ("margin", "center_rewards_coefficient")
    settings_metric = ("val/accuracy", True)  # chosen scored above rejected, whatever the margin
    summary_metrics = ("val/accuracy", "val/margin")
    metric_aliases = {"val/acc": "val/accuracy"}
    rules = (
        *PreferenceTask.rules,
        Rule(
            "reward_margin",
            "task.margin",
            lambda c: not (is_number(m := (c.get("task") or {}).get("margin", 0.0)) and m >= 0),
            "task.margin is how far the chosen reward must exceed the rejected one and must be >= 0: "
            "use e.g. task.margin=0",
        ),
        Rule(
            "reward_centering",
            "task.center_rewards_coefficient",
            lambda c: (
                not (
                    (v := (c.get("task") or {}).get("center_rewards_coefficient")) is None
                    or (is_number(v) and v >= 0)
                )
            ),
            "task.center_rewards_coefficient weighs (chosen + rejected)^2 and must be >= 0 (or null): e.g. 0.01",
        ),
    )

    def module(self, cfg: dict, datamodule, tokenizer):
        from hydratune.tasks.reward.module import RewardModule

        return RewardModule(
            **module_kwargs(cfg),
            pad_token_id=tokenizer.pad_token_id,
            margin=self.settings.get("margin", 0.0),
            center_rewards_coefficient=self.settings.get("center_rewards_coefficient"),
        )

    def prompt_text(
        self, dataset_cfg: dict, tokenizer, prompt: str, input: str = "", system: str = ""
    ) -> str:
        return Task.prompt_text(self, dataset_cfg, tokenizer, prompt, input, system)  # writes no text

    def score(self, model, tokenizer, prompts, responses, dataset_cfg: dict) -> list[float]:
        """`hydratune score`: the reward of each (prompt, response), rendered as in training."""
        from hydratune.tasks.reward.inference import score

        return score(model, tokenizer, prompts, responses, dataset_cfg)
