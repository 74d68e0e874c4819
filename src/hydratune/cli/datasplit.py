"""`hydratune datasplit`: split a JSON Lines file into train and eval files, seeded and reproducible."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from hydratune.errors import UserError


def datasplit(
    input: str, train_output: str, eval_output: str, eval_percentage: float, seed: int = 42
) -> tuple[int, int]:
    """Shuffle the records of `input` (seeded) and write `eval_percentage`% of them to `eval_output`.

    At least one record goes to each side; the records are written back as they were read.
    Returns (train rows, eval rows).
    """
    if not 0 < eval_percentage < 100:
        raise UserError(f"--eval-percentage={eval_percentage}: give a number between 0 and 100 (exclusive)")
    path = Path(input)
    if not path.is_file():
        raise UserError(f"--input {input}: no such file")
    named = {"--input": path, "--train-output": Path(train_output), "--eval-output": Path(eval_output)}
    seen: dict[Path, str] = {}
    for flag, file in named.items():  # the same file twice lost rows and overwrote the input (review K5)
        if file.resolve() in seen:
            raise UserError(f"{flag} {file} is also {seen[file.resolve()]}: give three different files")
        seen[file.resolve()] = flag
    lines = []
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):  # it read as one record (K14)
        raise UserError(f"--input {input} is a JSON array; datasplit reads JSON Lines (one record per line)")
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{input}:{lineno}: malformed JSON ({err.msg}); fix or remove that line") from err
        lines.append(line)
    if len(lines) < 2:
        raise UserError(f"{input}: holds {len(lines)} record(s); a split needs at least 2")
    random.Random(seed).shuffle(lines)
    n_eval = min(max(1, round(len(lines) * eval_percentage / 100)), len(lines) - 1)
    for out, part in ((eval_output, lines[:n_eval]), (train_output, lines[n_eval:])):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text("".join(line + "\n" for line in part), encoding="utf-8")
    return len(lines) - n_eval, n_eval


def add_parser(sub) -> None:
    p = sub.add_parser("datasplit", help="split a JSONL file into train/eval files (seeded)")
    p.add_argument("--input", required=True, help="a JSON Lines file, one record per line")
    p.add_argument("--train-output", required=True, help="where the training records go")
    p.add_argument("--eval-output", required=True, help="where the evaluation records go")
    p.add_argument(
        "--eval-percentage", type=float, default=10.0, help="percent of records for eval (default 10)"
    )
    p.add_argument("--seed", type=int, default=42, help="shuffling seed (default 42)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    n_train, n_eval = datasplit(
        args.input, args.train_output, args.eval_output, args.eval_percentage, args.seed
    )
    print(f"wrote {n_train} records to {args.train_output} and {n_eval} to {args.eval_output}")
    return 0
