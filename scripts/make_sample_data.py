"""Write the shipped sample dataset: data/sample/{train,eval}.jsonl (Alpaca format).

What: string transformations (uppercase, lowercase, capitalize) over random letter strings; the eval
split shares no word with the train split. Deterministic. Hardware: any; takes under a second.

    python scripts/make_sample_data.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hydratune.synthetic import alpaca_rows, write_jsonl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/sample")
    parser.add_argument("--train-rows", type=int, default=2000)
    parser.add_argument("--eval-rows", type=int, default=60)
    args = parser.parse_args()
    eval_rows = alpaca_rows(args.eval_rows, seed=1)
    train_rows = alpaca_rows(args.train_rows, seed=0, exclude={row["input"].lower() for row in eval_rows})
    write_jsonl(Path(args.out) / "train.jsonl", train_rows)
    write_jsonl(Path(args.out) / "eval.jsonl", eval_rows)
    print(f"wrote {len(train_rows)} train and {len(eval_rows)} eval rows to {args.out}")


if __name__ == "__main__":
    main()
