"""`hydratune score RUN_DIR --prompt P --response R`: a reward model run's reward for each (prompt, response),
one JSON object per line."""

from __future__ import annotations

import argparse
import json

from hydratune.errors import UserError


def add_parser(sub) -> None:
    """Register the `score` subcommand on an argparse subparsers object."""
    parser = sub.add_parser("score", help="score responses with a finished reward-model run (task=reward)")
    parser.add_argument("run_dir", help="a task=reward run directory (holds merged/, adapter/ or model/)")
    parser.add_argument("--prompt", action="append", required=True, help="a prompt (repeatable)")
    parser.add_argument("--response", action="append", required=True, help="its response, one per --prompt")
    parser.add_argument("--artifact", choices=["adapter", "merged", "model"], help="which export to load")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from hydratune.export import find_artifact, load_artifact, run_settings
    from hydratune.tasks.registry import get_task

    task_cfg, dataset_cfg = run_settings(args.run_dir)
    task = get_task(task_cfg)
    if not hasattr(task, "score"):
        raise UserError(
            f"{args.run_dir} is not a reward-model run (task={task.name}); train one with task=reward"
        )
    if len(args.prompt) != len(args.response):
        raise UserError("give one --response per --prompt")
    model, tokenizer = load_artifact(find_artifact(args.run_dir, args.artifact))
    for prompt, response, reward in zip(
        args.prompt, args.response, task.score(model, tokenizer, args.prompt, args.response, dataset_cfg)
    ):
        print(json.dumps({"prompt": prompt, "response": response, "reward": round(reward, 6)}))
    return 0
