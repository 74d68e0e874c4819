"""`task=grpo`: online RL with a group baseline (GRPO; the reference docs' `ppo` stage): sampled completions
scored by reward functions (or a task=reward model), advantages normalised within each prompt's group, the
PPO clipped objective and an optional KL term to the reference model."""

from __future__ import annotations

from collections.abc import Callable

from hydratune.rules import Rule
from hydratune.rules import is_number as _number
from hydratune.tasks.task import Task, data_kwargs, module_kwargs

SETTINGS = ("rewards", "reward_model", "num_generations", "max_new_tokens", "temperature", "top_p", "stop",
            "epsilon", "epsilon_high", "beta", "num_iterations", "aggregation", "scale_rewards",
            "log_completions")  # fmt: skip


def _task(c: dict) -> dict:
    return c.get("task") or {}


def _trainer(c: dict, key: str, default=None):
    return (c.get("trainer") or {}).get(key, default)


def _one_device(c: dict) -> bool:
    """trainer.devices and trainer.num_nodes name one process (1, "1", [0], "0,"); "auto" may be more."""
    devices = _trainer(c, "devices", 1)
    if isinstance(devices, str) and "," in devices:
        devices = [d for d in devices.split(",") if d.strip()]
    count = len(devices) if isinstance(devices, list | tuple) else devices
    return str(count) == "1" and str(_trainer(c, "num_nodes", 1) or 1) == "1"


def _dapo_window_unknown(c: dict) -> bool:
    """dapo divides by the completion tokens of the whole accumulated batch on every device; hydratune samples
    each micro-batch in its own step, so it knows that count only when the micro-batch is the whole batch."""
    accumulation = _trainer(c, "accumulate_grad_batches", 1) or 1
    return _task(c).get("aggregation") == "dapo" and not (accumulation == 1 and _one_device(c))


def _outside(key: str, default: float, accepts: Callable[[float], bool]) -> Callable[[dict], bool]:
    """A rule's test: task.<key> (default where unset) is not a number that `accepts` takes."""

    def applies(c: dict) -> bool:
        value = _task(c).get(key, default)
        return not (_number(value) and accepts(value))

    return applies


def _scale_rewards_unknown(c: dict) -> bool:
    value = _task(c).get("scale_rewards", True)
    return not (isinstance(value, bool) or value in ("group", "batch", "none"))


def _epsilon_high_below_epsilon(c: dict) -> bool:
    high, low = _task(c).get("epsilon_high"), _task(c).get("epsilon", 0.2)
    return high is not None and not (_number(high) and (not _number(low) or high >= low))


class GRPOTask(Task):
    name = "grpo"
    generative = False  # the module writes its own completions.jsonl (sampled groups, rewards, advantages)
    unranked_settings = ("rewards", "reward_model")  # val/loss is minus the mean reward they define
    summary_metrics = ("val/reward",)
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
            lambda c: _task(c).get("aggregation", "grpo") not in ("grpo", "dr_grpo", "bnpo", "dapo"),
            "task.aggregation must be grpo, dr_grpo, bnpo or dapo: set task.aggregation=grpo",
        ),
        Rule(
            "grpo_dapo_window",
            "task.aggregation, trainer.accumulate_grad_batches, trainer.devices, trainer.num_nodes",
            _dapo_window_unknown,
            "task.aggregation=dapo divides by the completion tokens of the whole accumulated batch on all "
            "devices, which hydratune samples one micro-batch at a time: use task.aggregation=bnpo (a token mean "
            "per micro-batch), or trainer.accumulate_grad_batches=1 on one device (trainer.devices=1)",
        ),
        Rule(
            "grpo_scale_rewards",
            "task.scale_rewards",
            _scale_rewards_unknown,
            "task.scale_rewards is true or group (the group's std), batch (the std of the batch's rewards), false "
            "or none (no division): set task.scale_rewards=group",
        ),
        Rule(
            "grpo_epsilon",
            "task.epsilon",
            _outside("epsilon", 0.2, lambda v: 0 < v < 1),
            "task.epsilon is the clip range of the importance ratio, in (0, 1): set task.epsilon=0.2",
        ),
        Rule(
            "grpo_epsilon_high",
            "task.epsilon_high, task.epsilon",
            _epsilon_high_below_epsilon,
            "task.epsilon_high is the upper clip range, at least task.epsilon: set task.epsilon_high=0.28 (DAPO's "
            "clip-higher) or null (= task.epsilon)",
        ),
        Rule(
            "grpo_beta",
            "task.beta",
            _outside("beta", 0.0, lambda v: v >= 0),
            "task.beta weighs the KL term to the reference and must be >= 0: set task.beta=0.0 (no KL) or e.g. 0.04",
        ),
        Rule(
            "grpo_temperature",
            "task.temperature",
            _outside("temperature", 1.0, lambda v: v > 0),
            "task.temperature must be > 0 (0 samples the same completion G times: no spread, nothing learnt): "
            "set task.temperature=1.0",
        ),
        Rule(
            "grpo_top_p",
            "task.top_p",
            _outside("top_p", 1.0, lambda v: 0 < v <= 1),
            "task.top_p is the probability mass sampled from, in (0, 1]: set task.top_p=1.0 (no cut)",
        ),
        Rule(
            "grpo_num_iterations",
            "task.num_iterations",
            _outside("num_iterations", 1, lambda v: isinstance(v, int) and v >= 1),
            "task.num_iterations is the optimizer steps per batch of samples, an integer >= 1: set "
            "task.num_iterations=1",
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

    def stop(self, cfg: dict) -> list[str]:
        """task.stop as sampling reads it: null picks a newline for text prompts and EOS alone (TRL's) for chat
        prompts, whose answers span lines (a newline there ended every `<think>` at its first line: review G6);
        a written `\\n` or `\\t` (Hydra's command line does not unescape it) is the character."""
        stop = self.settings.get("stop")
        if stop is None:
            stop = [] if (cfg.get("dataset") or {}).get("prompt_format") == "chat" else ["\n"]
        return [str(s).replace("\\n", "\n").replace("\\t", "\t") for s in stop]

    def datamodule(self, tokenizer, cfg: dict):
        from hydratune.tasks.grpo.data import PromptDataModule

        return PromptDataModule(
            tokenizer,
            **data_kwargs(cfg),
            rewards=self.settings.get("rewards"),
            stop=self.stop(cfg),
        )

    def module(self, cfg: dict, datamodule, tokenizer):
        from hydratune.tasks.grpo.module import GRPOModule

        settings = {k: self.settings[k] for k in SETTINGS if k in self.settings} | {"stop": self.stop(cfg)}
        chat = (cfg.get("dataset") or {}).get("prompt_format") == "chat"
        return GRPOModule(**module_kwargs(cfg), **settings, seed=cfg.get("seed", 0), conversational=chat)

    def prompt_text(
        self, dataset_cfg: dict, tokenizer, prompt: str, input: str = "", system: str = ""
    ) -> str:
        from hydratune.data.formats import alpaca_prompt, chat_prompt, no_input, no_system

        template = dataset_cfg.get("template")
        if template is not None:  # each prompt was the instruction of that alpaca template
            no_system(f"dataset.template={template}", system)
            return alpaca_prompt(prompt, input, template)
        no_input("task=grpo with dataset.template=null", input)
        if dataset_cfg.get("prompt_format") == "chat":  # prompts were messages: this one is a user turn
            return chat_prompt(tokenizer, prompt, system)
        no_system("task=grpo with dataset.prompt_format=text", system)
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
