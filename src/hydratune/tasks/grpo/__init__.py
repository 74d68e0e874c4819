"""`task=grpo`: online RL with a group baseline (GRPO; the reference docs' `ppo` stage): sampled completions
scored by reward functions (or a task=reward model), advantages normalised within each prompt's group, the
PPO clipped objective and an optional KL term to the reference model."""

from __future__ import annotations

from hydratune.rules import Rule
from hydratune.tasks.task import Task, data_kwargs, module_kwargs

SETTINGS = ("rewards", "reward_model", "num_generations", "max_new_tokens", "temperature", "top_p", "stop",
            "epsilon", "epsilon_high", "beta", "num_iterations", "aggregation", "scale_rewards",
            "log_completions")  # fmt: skip


def _task(c: dict) -> dict:
    return c.get("task") or {}


class GRPOTask(Task):
    name = "grpo"
    generative = False  # the module writes its own completions.jsonl (sampled groups, rewards, advantages)
    unranked_settings = ("rewards", "reward_model")  # val/loss is minus the mean reward they define
    rules = (
        Rule(
            "grpo_group_size",
            "task.num_generations",
            lambda c: (
                not (isinstance(_task(c).get("num_generations"), int) and _task(c)["num_generations"] >= 2)
            ),
            "a group needs at least 2 completions per prompt to have a baseline: set task.num_generations=8",
        ),
        Rule(
            "grpo_rewards",
            "task.rewards, task.reward_model",
            lambda c: not (_task(c).get("rewards") or _task(c).get("reward_model")),
            "nothing scores the completions: list task.rewards or set task.reward_model=RUN_DIR",
        ),
        Rule(
            "grpo_aggregation",
            "task.aggregation",
            lambda c: _task(c).get("aggregation", "grpo") not in ("grpo", "dr_grpo"),
            "task.aggregation must be grpo or dr_grpo: set task.aggregation=grpo",
        ),
        Rule(
            "grpo_packing",
            "task, dataset.packing",
            lambda c: bool((c.get("dataset") or {}).get("packing")),
            "GRPO samples its own rows, there is nothing to pack: set dataset.packing=false",
        ),
    )

    def check(self, cfg: dict) -> None:
        """The reward functions import and take their bound keys, and a reward model's directory is a
        finished task=reward run: cheap (no model loads), so preflight and train.py say it first."""
        from hydratune.rewards import check_rewards

        check_rewards(self.settings.get("rewards"), self.settings.get("reward_model"))

    def datamodule(self, tokenizer, cfg: dict):
        from hydratune.tasks.grpo.data import PromptDataModule

        return PromptDataModule(tokenizer, **data_kwargs(cfg), rewards=self.settings.get("rewards"))

    def module(self, cfg: dict, datamodule, tokenizer):
        from hydratune.tasks.grpo.module import GRPOModule

        settings = {k: self.settings[k] for k in SETTINGS if k in self.settings}
        return GRPOModule(**module_kwargs(cfg), **settings, seed=cfg.get("seed", 0))

    def prompt_text(self, dataset_cfg: dict, tokenizer, prompt: str, input: str = "") -> str:
        from hydratune.data.formats import alpaca_prompt, chat_prompt, no_input

        template = dataset_cfg.get("template")
        if template is not None:  # each prompt was the instruction of that alpaca template
            return alpaca_prompt(prompt, input, template)
        no_input("task=grpo with dataset.template=null", input)
        if dataset_cfg.get("prompt_format") == "chat":  # prompts were messages: this one is a user turn
            return chat_prompt(tokenizer, prompt)
        return prompt

    def inspect(self, cfg: dict, tokenizer, samples: int) -> list[str]:
        datamodule = self.datamodule(tokenizer, cfg)
        datamodule.setup("fit")
        lines = [
            f"{split}: {s['prompts']} prompts from {s['rows']} rows" for split, s in datamodule.stats.items()
        ]
        lines.append("prompts (and the columns the rewards read):")
        for i in range(min(samples, len(datamodule.train_dataset))):
            lines.append(f"--- train[{i}] {datamodule.train_dataset[i]}")
        return lines
