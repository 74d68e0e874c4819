"""Write the shipped GRPO prompt set: data/grpo/{train,eval}.jsonl, columns `prompt` and `answer`.

What: prompts in the tiny base model's own format (`keyword: word -> `) with keywords it never saw
(`shout` means upper case, `rev` means reverse, ...: hydratune.synthetic.GRPO_KEYWORDS). The base
answers about a quarter of them exactly, so GRPO with the exact-match reward has both successes and
failures in most groups to learn from (scripts/grpo_probe.py shows it). The eval split shares no word
with the train split. Deterministic. Hardware: any; takes under a second.

    python scripts/make_grpo_data.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hydratune.synthetic import grpo_rows, write_jsonl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/grpo")
    parser.add_argument("--train-rows", type=int, default=2000)
    parser.add_argument("--eval-rows", type=int, default=96)
    args = parser.parse_args()
    eval_rows = grpo_rows(args.eval_rows, seed=1)
    eval_words = {row["prompt"].split(": ")[1].split(" ->")[0].lower() for row in eval_rows}
    train_rows = grpo_rows(args.train_rows, seed=0, exclude=eval_words)
    write_jsonl(Path(args.out) / "train.jsonl", train_rows)
    write_jsonl(Path(args.out) / "eval.jsonl", eval_rows)
    print(f"wrote {len(train_rows)} train and {len(eval_rows)} eval rows to {args.out}")


if __name__ == "__main__":
    main()
