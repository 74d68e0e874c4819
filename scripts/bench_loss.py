"""Milliseconds of hydratune's fused SFT loss alone (`hydratune.losses.linear_cross_entropy`, forward and
backward), in float32 and under bf16 autocast.

What: `--rows` trained positions of hidden size `--hidden` against an output layer of `--vocab` entries
(the defaults: a packed bench batch of 8 x 512 with ~40% of the tokens trained, the bench's hidden size,
a BPE-sized vocabulary), the output layer frozen as under LoRA. Median of `--repeats` timed calls after
one warm-up, the precisions interleaved `--rounds` times, one process. Writes
outputs/bench_loss/bench_loss.json (or --out) and prints the medians.
Hardware: any CPU; ~1 minute on 2 cores. To compare two versions of the code, run each tree's copy with
`PYTHONPATH=<tree>/src`, alternating.

    python scripts/bench_loss.py [--threads 2] [--rows 1630 --hidden 256 --vocab 32000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from hydratune.losses import linear_cross_entropy

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1630, help="trained positions in the batch")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--threads", type=int, default=2, help="torch's intra-op threads")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per round and precision")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "outputs" / "bench_loss"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(1, args.rows + 1, args.hidden, generator=generator).requires_grad_()
    weight = torch.randn(args.vocab, args.hidden, generator=generator) * 0.02
    labels = torch.randint(0, args.vocab, (1, args.rows + 1), generator=generator)

    def call(bf16: bool) -> float:
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            nll, _ = linear_cross_entropy(hidden, weight, labels)
        nll.backward()
        hidden.grad = None
        return (time.perf_counter() - started) * 1000

    rounds: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for _ in range(args.rounds):
        for name in rounds:
            call(name == "bf16")
            rounds[name].append(statistics.median(call(name == "bf16") for _ in range(args.repeats)))
    result = {
        "shape": {"rows": args.rows, "hidden": args.hidden, "vocab": args.vocab, "threads": args.threads},
        "ms": {name: round(statistics.median(values), 1) for name, values in rounds.items()},
        "ms_per_round": {name: [round(v, 1) for v in values] for name, values in rounds.items()},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_loss.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
