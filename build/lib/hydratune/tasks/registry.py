"""The one registry of tasks: `conf/task/<name>.yaml` says `name: sft` (a built-in, looked up here) or
`_target_: my_package.MyTask` (a user's own `hydratune.tasks.task.Task` subclass, no edit to src/)."""

from __future__ import annotations

from hydratune.errors import UserError
from hydratune.tasks.classification import ClassificationTask
from hydratune.tasks.dpo import DPOTask
from hydratune.tasks.grpo import GRPOTask
from hydratune.tasks.kto import KTOTask
from hydratune.tasks.reward import RewardTask
from hydratune.tasks.sft import SFTTask
from hydratune.tasks.task import Task

TASKS: dict[str, type[Task]] = {
    task.name: task for task in (SFTTask, ClassificationTask, DPOTask, KTOTask, RewardTask, GRPOTask)
}


def task_class(task_cfg: dict) -> type[Task]:
    """The Task class a task config names (`_target_` first, then `name`)."""
    target = task_cfg.get("_target_")
    if target:
        from hydra.utils import get_class

        try:
            cls = get_class(target)
        except Exception as err:
            raise UserError(
                f"task._target_={target}: cannot import it ({str(err).splitlines()[0]})"
            ) from None
        if not (isinstance(cls, type) and issubclass(cls, Task)):
            raise UserError(f"task._target_={target}: not a hydratune.tasks.task.Task subclass")
        return cls
    name = task_cfg.get("name", "sft")
    if name not in TASKS:
        raise UserError(f"task.name={name}: no such task; use one of {', '.join(TASKS)} (or task._target_)")
    return TASKS[name]


def get_task(task_cfg: dict | None) -> Task:
    """The task of a run, built with its settings (the task config's keys but `name` and `_target_`)."""
    task_cfg = task_cfg or {}
    settings = {k: v for k, v in task_cfg.items() if k not in ("name", "_target_")}
    return task_class(task_cfg)(**settings)


def all_rules() -> list:
    """The cross-group rules and every built-in task's own (the README table lists them all)."""
    from hydratune.rules import RULES

    rules = [*RULES, *(rule for task in TASKS.values() for rule in task.rules)]
    return list(dict.fromkeys(rules))  # a rule shared by several tasks (preference_packing) once
