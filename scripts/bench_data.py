"""Benchmark the data pipeline: rows/s to load, format and tokenize 50,000 Alpaca-like rows,
on the first run (tokenizing) and the second (reading the fingerprinted cache).

Hardware: any CPU; about 2 minutes on 2 cores with the shipped character-level tokenizer
(which tokenizes about 300k characters/s per process and dominates the first run). Usage:
    .venv/bin/python scripts/bench_data.py [--rows 50000] [--num-proc 1] [--tokenizer assets/tiny-llama]
    .venv/bin/python scripts/bench_data.py --rows 200 --chat-turns 60   # conversations, Phi-3's template
`--chat-turns N` times conversations of N turns under a template that renders a turn by what follows it
(Phi-3's: EOS only at the end), the path that finds each answer where a placeholder rendered. The figures go
to `--out` (outputs/bench/bench_data.json) as well as the console.
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


# Phi-3's chat template in short: a turn is "<|role|>\ncontent<|end|>\n", EOS ends the conversation.
PHI3 = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + '<|end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)


def chat_like(n: int, turns: int, seed: int = 0) -> list[dict]:
    """Conversations of `turns` user/assistant turns of 5-40 words."""
    rng = random.Random(seed)
    text = lambda lo, hi: " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))  # noqa: E731
    roles = ("user", "assistant")
    return [
        {"messages": [{"role": roles[t % 2], "content": text(5, 40)} for t in range(turns)]} for _ in range(n)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--num-proc", type=int, default=None)
    parser.add_argument("--tokenizer", default=str(Path(__file__).resolve().parents[1] / "assets/tiny-llama"))
    parser.add_argument("--packing", action="store_true")
    parser.add_argument(
        "--chat-turns", type=int, default=0, help="conversations of N turns instead of alpaca rows"
    )
    parser.add_argument("--out", default="outputs/bench/bench_data.json")
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    figures = {"rows": args.rows, "chat_turns": args.chat_turns, "packing": args.packing}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "rows.jsonl"
        rows = chat_like(args.rows, args.chat_turns) if args.chat_turns else alpaca_like(args.rows)
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        cfg = {
            "sources": [{"loader": "json", "data_files": str(data)}],
            "format": "alpaca",
            "template": "alpaca",
            "max_seq_length": 1024,
            "batch_size": 8,
            "num_proc": args.num_proc,
            "packing": args.packing,
        }
        if args.chat_turns:
            tokenizer.add_special_tokens(
                {"additional_special_tokens": ["<|user|>", "<|assistant|>", "<|end|>"]}
            )
            cfg |= {"format": "messages", "template": None, "chat_template": PHI3, "max_seq_length": 65536}
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
            figures[name.replace(" ", "_")] = {"seconds": round(seconds, 2), "rows_per_s": round(args.rows / seconds, 1),
                                               "tokens": stats["tokens"]}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
