"""Write the shipped preference data: data/preference/{train,eval}.jsonl (pairs) and
data/preference/kto_{train,eval}.jsonl (the same answers as unpaired KTO rows).

What: prompts in the tiny base model's pretraining format, `copy: WORD -> `; the chosen answer is WORD
in capitals, the rejected one the copy the base model writes today (see hydratune.synthetic). So a
preference run must teach a behaviour the base never shows; scripts/dpo_probe.py measures it. The
eval split shares no word with the train split. Deterministic. Hardware: any; under a second.

    python scripts/make_preference_data.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hydratune.synthetic import kto_rows, preference_rows, write_jsonl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/preference")
    parser.add_argument("--train-rows", type=int, default=2000)
    parser.add_argument("--eval-rows", type=int, default=64)
    args = parser.parse_args()
    eval_rows = preference_rows(args.eval_rows, seed=1)
    train_rows = preference_rows(args.train_rows, seed=0, exclude={row["rejected"] for row in eval_rows})
    out = Path(args.out)
    write_jsonl(out / "train.jsonl", train_rows)
    write_jsonl(out / "eval.jsonl", eval_rows)
    write_jsonl(out / "kto_train.jsonl", kto_rows(train_rows, seed=0))
    write_jsonl(out / "kto_eval.jsonl", kto_rows(eval_rows, seed=1))
    print(
        f"wrote {len(train_rows)} train and {len(eval_rows)} eval pairs (and twice as many KTO rows) to {out}"
    )


if __name__ == "__main__":
    main()
