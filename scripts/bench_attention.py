"""Why bf16 on this CPU gains less than its matmuls do: one attention layer and one output-layer matmul, fp32
vs bf16.

What: PyTorch's CPU `scaled_dot_product_attention`, forward and backward, on the bench's packed batch (8 rows
of 512 tokens, 4 heads of 64, each row packed with samples of 60-512 tokens), four ways: the block-diagonal
mask packing uses, a plain causal call (a lower bound: not correct for packed rows), one `is_causal` call per
packed sample, and samples regrouped by length into 2 or 3 padded `is_causal` calls; then the output layer's
matmul (262 rows x 256 by 256 x 32,000, the chunk `linear_cross_entropy` multiplies) for comparison.
Hardware: any CPU; ~1 minute on 2 cores. Writes outputs/bench_attention/bench_attention.json and prints a table.

    python scripts/bench_attention.py [--threads 2] [--repeats 10]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
ROWS, HEADS, LENGTH, HEAD_DIM = 8, 4, 512, 64


def packed_rows(seed: int = 0) -> list[list[int]]:
    """Sample lengths of each row: random samples of 60-512 tokens until the row is full (the last one cut)."""
    rng, rows = random.Random(seed), []
    for _ in range(ROWS):
        lengths, left = [], LENGTH
        while left > 0:
            lengths.append(min(left, rng.randint(60, LENGTH)))
            left -= lengths[-1]
        rows.append(lengths)
    return rows


def segments(rows: list[list[int]]) -> list[tuple[int, int, int]]:
    """(row, start, length) of every packed sample."""
    out = []
    for b, lengths in enumerate(rows):
        start = 0
        for length in lengths:
            out.append((b, start, length))
            start += length
    return out


def block_mask(rows: list[list[int]]) -> torch.Tensor:
    mask = torch.zeros(ROWS, 1, LENGTH, LENGTH, dtype=torch.bool)
    for b, start, n in segments(rows):
        mask[b, 0, start : start + n, start : start + n] = torch.ones(n, n, dtype=torch.bool).tril()
    return mask


def per_sample(q, k, v, segs):
    out = torch.empty_like(q)
    for b, s, n in segs:
        sl = slice(s, s + n)
        out[b, :, sl] = F.scaled_dot_product_attention(
            q[b : b + 1, :, sl], k[b : b + 1, :, sl], v[b : b + 1, :, sl], is_causal=True
        )[0]
    return out


def regrouped(q, k, v, segs, groups: int):
    """Samples sorted by length, split into `groups` batches, each right-padded to its longest: with
    `is_causal`, a real query never sees the padding after it."""
    order = sorted(segs, key=lambda seg: -seg[2])
    out, per = torch.empty_like(q), -(-len(order) // groups)
    for first in range(0, len(order), per):
        group = order[first : first + per]
        width = group[0][2]

        def pad(x, group=group, width=width):
            return torch.stack([F.pad(x[b, :, s : s + n], (0, 0, 0, width - n)) for b, s, n in group])

        attended = F.scaled_dot_product_attention(pad(q), pad(k), pad(v), is_causal=True)
        for i, (b, s, n) in enumerate(group):
            out[b, :, s : s + n] = attended[i, :, :n]
    return out


def timed(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


def attention_ms(attend, dtype, repeats: int) -> float:
    q, k, v = (torch.randn(ROWS, HEADS, LENGTH, HEAD_DIM, dtype=dtype, requires_grad=True) for _ in range(3))
    grad = torch.randn(ROWS, HEADS, LENGTH, HEAD_DIM, dtype=dtype)
    return timed(lambda: attend(q, k, v).backward(grad), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=str(ROOT / "outputs" / "bench_attention"))
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    rows = packed_rows()
    segs, mask = segments(rows), block_mask(rows)
    ways = {
        "block-diagonal mask (packing)": lambda q, k, v: F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask
        ),
        "plain causal (lower bound)": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        "is_causal per packed sample": lambda q, k, v: per_sample(q, k, v, segs),
        "regrouped, 3 calls": lambda q, k, v: regrouped(q, k, v, segs, 3),
        "regrouped, 2 calls": lambda q, k, v: regrouped(q, k, v, segs, 2),
    }
    q, k, v = (torch.randn(ROWS, HEADS, LENGTH, HEAD_DIM) for _ in range(3))
    reference = ways["block-diagonal mask (packing)"](q, k, v)
    results: dict = {"rows": rows, "threads": args.threads, "torch": torch.__version__, "ms": {}}
    for name, attend in ways.items():
        if name != "plain causal (lower bound)":  # the others must compute the packed attention exactly
            torch.testing.assert_close(attend(q, k, v), reference, atol=1e-5, rtol=1e-5)
        results["ms"][name] = {
            str(dtype).removeprefix("torch."): round(attention_ms(attend, dtype, args.repeats), 1)
            for dtype in (torch.float32, torch.bfloat16)
        }
    hidden, weight = torch.randn(262, 256), torch.randn(32000, 256) * 0.02
    matmul = {}
    for dtype in (torch.float32, torch.bfloat16):
        h, w = hidden.to(dtype), weight.to(dtype)
        matmul[str(dtype).removeprefix("torch.")] = round(
            16 * timed(lambda h=h, w=w: h @ w.T, args.repeats), 1
        )
    results["ms"]["output-layer matmul, 16 chunks"] = matmul
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_attention.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"| ({args.threads} threads) | fp32 ms | bf16 ms | bf16 speed-up |\n|---|---|---|---|")
    for name, ms in results["ms"].items():
        print(f"| {name} | {ms['float32']} | {ms['bfloat16']} | {ms['float32'] / ms['bfloat16']:.2f}x |")
    print(f"wrote {out / 'bench_attention.json'}")


if __name__ == "__main__":
    main()
