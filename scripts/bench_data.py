"""Benchmark the data pipeline: rows/s to load, format and tokenize 50,000 Alpaca-like rows,
on the first run (tokenizing) and the second (reading the fingerprinted cache).

Hardware: any CPU; about 2 minutes on 2 cores with the shipped character-level tokenizer
(which tokenizes about 300k characters/s per process and dominates the first run). Usage:
    .venv/bin/python scripts/bench_data.py [--rows 50000] [--num-proc 1] [--tokenizer assets/tiny-llama]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from transformers import AutoTokenizer

from hydratune.tasks.sft.data import SFTDataModule

WORDS = "the a model data train token learn write word letter answer short long example input output".split()


def alpaca_like(n: int, seed: int = 0) -> list[dict]:
    """Rows shaped like Alpaca's: instructions of 3-25 words, an input on 40% of rows, answers of 3-90 words."""
    rng = random.Random(seed)
    text = lambda lo, hi: " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))  # noqa: E731
    return [
        {
            "instruction": text(3, 25),
            "input": text(1, 30) if rng.random() < 0.4 else "",
            "output": text(3, 90),
        }
        for _ in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--num-proc", type=int, default=None)
    parser.add_argument("--tokenizer", default=str(Path(__file__).resolve().parents[1] / "assets/tiny-llama"))
    parser.add_argument("--packing", action="store_true")
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "alpaca_like.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in alpaca_like(args.rows)))
        cfg = {
            "sources": [{"loader": "json", "data_files": str(data)}],
            "format": "alpaca",
            "template": "alpaca",
            "max_seq_length": 1024,
            "batch_size": 8,
            "num_proc": args.num_proc,
            "packing": args.packing,
        }
        for name in ("first run", "cached run"):
            started = time.perf_counter()
            dm = SFTDataModule(tokenizer, cfg, seed=0, cache_dir=str(Path(tmp) / "cache"))
            dm.setup("fit")
            seconds = time.perf_counter() - started
            stats = dm.stats["train"]
            print(
                f"{name}: {args.rows} rows in {seconds:.1f}s = {args.rows / seconds:,.0f} rows/s "
                f"({stats['tokens']:,} tokens, {100 * stats['truncation_rate']:.1f}% truncated)"
            )


if __name__ == "__main__":
    main()
