"""`hydratune score RUN_DIR --prompt P --response R` (or `--file ROWS.jsonl`): a reward model run's reward for each
(prompt, response), one JSON object per line; a file of held-out pairs also gets its accuracy."""

from __future__ import annotations

import argparse
import json
import sys

from hydratune.errors import UserError


def add_parser(sub) -> None:
    """Register the `score` subcommand on an argparse subparsers object."""
    parser = sub.add_parser("score", help="score responses with a finished reward-model run (task=reward)")
    parser.add_argument("run_dir", help="a task=reward run directory (holds merged/, adapter/ or model/)")
    parser.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    parser.add_argument("--response", action="append", default=[], help="its response, one per --prompt")
    parser.add_argument(
        "--file",
        help="JSON Lines of {prompt, response} rows, or of pairs with the run's prompt/chosen/rejected columns "
        "(each answer scored, and the share of pairs ranked right printed last)",
    )
    parser.add_argument("--artifact", choices=["adapter", "merged", "model"], help="which export to load")
    parser.set_defaults(func=main)


def read_rows(path: str, dataset_cfg: dict) -> tuple[list, bool]:
    """(prompt, response) for every answer in the file, and whether its rows are pairs (then chosen and
    rejected alternate); the pair columns are the run's own (dataset.prompt_column, ...). A chat_pairs run's
    rows of message lists come back whole, to be rendered as training rendered them."""
    from hydratune.data.pairs import column
    from hydratune.data.sources import parse_json_line

    prompt, chosen, rejected = (
        column(dataset_cfg, k) for k in ("prompt_column", "chosen_column", "rejected_column")
    )
    try:
        lines = open(path, encoding="utf-8-sig").read().splitlines()
    except OSError as err:
        raise UserError(f"--file {path}: {err.strerror}") from None
    answers, pairs = [], None
    for lineno, line in enumerate(lines, 1):
        row = parse_json_line(line, path, lineno)
        if row is None:
            continue
        keys = (prompt, chosen, rejected) if rejected in row else (prompt, "response")
        pairs = rejected in row if pairs is None else pairs
        texts = [row.get(k) for k in keys]
        if any(isinstance(t, list) for t in texts):  # message lists: a chat_pairs run's own rows (review T14)
            if dataset_cfg.get("format") != "chat_pairs":
                raise UserError(
                    f"{path}:{lineno}: its {prompt}/{chosen}/{rejected} hold message lists, and this run trained on "
                    f"dataset.format={dataset_cfg.get('format', 'pairs')} text: write each as its text"
                )
            answers.append(row)
            pairs = True
            continue
        if not all(isinstance(t, str) for t in texts) or (rejected in row) != pairs:
            want = f"{prompt}, {chosen} and {rejected}" if pairs else f"{prompt} and response"
            raise UserError(f"{path}:{lineno}: every row needs {want} as text (it has: {', '.join(row)})")
        answers += [(texts[0], t) for t in texts[1:]]
    if not answers:
        raise UserError(f"{path}: no rows")
    if len({isinstance(a, dict) for a in answers}) > 1:
        raise UserError(f"{path}: some rows hold message lists and others text; give one kind per file")
    return answers, bool(pairs)


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
    answers, pairs = (
        read_rows(args.file, dataset_cfg) if args.file else (list(zip(args.prompt, args.response)), False)
    )
    if not answers:
        raise UserError("give --prompt and --response, or --file ROWS.jsonl")
    model, tokenizer = load_artifact(find_artifact(args.run_dir, args.artifact))
    if any(isinstance(a, dict) for a in answers):  # chat_pairs rows: rendered as training rendered them
        from hydratune.tasks.reward.inference import chat_pair_ids, score_ids

        rendered = [chat_pair_ids(tokenizer, row, dataset_cfg) for row in answers]
        prompts = [p for p, *_ in rendered for _ in (0, 1)]
        responses = [a for _, chosen, rejected, *_ in rendered for a in (chosen, rejected)]
        rewards = [round(r, 6) for r in score_ids(model, [ids for *_, c, r in rendered for ids in (c, r)])]
    else:
        prompts, responses = [p for p, _ in answers], [r for _, r in answers]
        rewards = [round(r, 6) for r in task.score(model, tokenizer, prompts, responses, dataset_cfg)]
    if not pairs:
        for prompt, response, reward in zip(prompts, responses, rewards):
            print(json.dumps({"prompt": prompt, "response": response, "reward": reward}))
        return 0
    right = 0
    for i in range(0, len(rewards), 2):
        chosen, rejected = rewards[i], rewards[i + 1]
        right += chosen > rejected
        print(json.dumps({"prompt": prompts[i], "chosen": responses[i], "rejected": responses[i + 1],
                          "reward_chosen": chosen, "reward_rejected": rejected}))  # fmt: skip
    print(f"{len(rewards) // 2} pairs: chosen scored above rejected in {right} ({right / (len(rewards) // 2):.1%})",
          file=sys.stderr)  # fmt: skip
    return 0
