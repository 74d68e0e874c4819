"""`hydratune predict RUN_DIR --text "..."` or `--input rows.jsonl`: a classifier run's label and class
probabilities for each row, one JSON object per line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hydratune.errors import UserError


def add_parser(sub) -> None:
    """Register the `predict` subcommand on an argparse subparsers object."""
    parser = sub.add_parser("predict", help="classify texts with a finished classification run")
    parser.add_argument("run_dir", help="a classification run directory (holds merged/, adapter/ or model/)")
    parser.add_argument("--text", action="append", help="a text to classify (repeatable)")
    parser.add_argument("--text-pair", action="append", help="the second text of a pair, one per --text")
    parser.add_argument(
        "--input", help="a JSON-lines file; each row's text is in the run's dataset.text_column"
    )
    parser.add_argument("--artifact", choices=["adapter", "merged", "model"], help="which export to load")
    from hydratune.cli.args import positive

    parser.add_argument("--batch-size", type=positive, default=32, help="texts per forward pass (default 32)")
    parser.set_defaults(func=main)


def _rows_from_file(
    path: str, text_column: str, pair_column: str | None
) -> tuple[list[str], list[str] | None]:
    texts, pairs = [], []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        for column in (text_column, pair_column):
            if column and not isinstance(row.get(column), str):
                raise UserError(
                    f"{path}:{number}: no text in column {column!r} (a column the run's dataset config names)"
                )
        texts.append(row[text_column])
        if pair_column:
            pairs.append(row[pair_column])
    return texts, (pairs if pair_column else None)


def main(args: argparse.Namespace) -> int:
    from hydratune.export import find_artifact, load_artifact, run_settings
    from hydratune.tasks.registry import get_task

    task_cfg, dataset = run_settings(args.run_dir)
    task = get_task(task_cfg)
    if not hasattr(task, "predict"):
        raise UserError(
            f"{args.run_dir} is not a classification run (task={task.name} predicts no labels; "
            "use hydratune generate for text)"
        )
    pair_column = dataset.get("text_pair_column")
    if args.input:
        texts, pairs = _rows_from_file(args.input, dataset["text_column"], pair_column)
    elif args.text:
        texts, pairs = list(args.text), args.text_pair
        if pairs is not None and len(pairs) != len(texts):
            raise UserError("give one --text-pair per --text")
        if pair_column and pairs is None:
            raise UserError(f"{args.run_dir} classifies text pairs: add --text-pair for each --text")
        if pairs is not None and not pair_column:  # it was dropped without a word (review K10)
            raise UserError(
                f"{args.run_dir} classifies single texts (no dataset.text_pair_column): drop --text-pair"
            )
    else:
        raise UserError("give --text TEXT or --input FILE.jsonl")
    model, tokenizer = load_artifact(find_artifact(args.run_dir, args.artifact))
    results = task.predict(model, tokenizer, texts, pairs, dataset, args.batch_size)
    for text, result in zip(texts, results):
        print(json.dumps({"text": text, **result}))
    return 0
