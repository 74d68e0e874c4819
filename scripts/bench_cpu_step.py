"""CPU seconds per SFT step of the benchmark model in fp32, bf16 autocast, bf16 autocast with peft's
LoRA input casts skipped (hydratune.model.skip_needless_input_casts), and with those skipped and one cast
copy of each input shared by the linear layers that read it (hydratune.model.cast_shared_inputs_once:
what hydratune runs); optionally the op profile of a bf16 step.

What: the bench's CPU model (scripts/bench.py's `prepare`: 4 layers, hidden 256, LoRA r=16 on every
linear layer), one batch of 8 rows of 512 tokens, forward + loss + backward + clip + AdamW step; plain
causal rows and the loss from the full logits, or with --packed, rows packed with samples of 60-299 tokens
and the loss from the hidden states, as hydratune's packed SFT step. The modes run interleaved in one
process on one thread (--threads), and each step is timed by `time.process_time()`: CPU time, so that a
machine shared with other jobs skews the ratios less (wall time beside it, for a quiet machine and
--threads above 1).
Hardware: any CPU; ~1 minute with --repeats 5 on a quiet core.

    python scripts/bench.py --bf16 --runners bare_packed --steps 10 --out outputs/bench   # makes the model
    python scripts/bench_cpu_step.py --model outputs/bench/model --repeats 5 [--threads 2] [--packed] [--profile]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

BATCH, LENGTH = 8, 512
HYDRATUNE = "bf16 autocast, LoRA input casts skipped, input casts shared (hydratune)"


def build(model_dir: str, skip_casts: bool, share_casts: bool = False):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from hydratune.model import cast_shared_inputs_once, skip_needless_input_casts

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora).train()
    if skip_casts:
        skip_needless_input_casts(model)
    if share_casts:
        cast_shared_inputs_once(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    return model, trainable, torch.optim.AdamW(trainable, lr=2e-4, weight_decay=0.0)


def packed_positions(seed: int = 0) -> torch.Tensor:
    """Position ids of rows packed with samples of 60-299 tokens: each sample restarts at 0, from which
    transformers builds the block-diagonal causal mask, as in a packed hydratune batch."""
    generator = torch.Generator().manual_seed(seed)
    positions = torch.zeros(BATCH, LENGTH, dtype=torch.long)
    for row in positions:
        start = 0
        while start < LENGTH:
            length = min(int(torch.randint(60, 300, (1,), generator=generator)), LENGTH - start)
            row[start : start + length] = torch.arange(length)
            start += length
    return positions


def step(model, trainable, optimizer, bf16: bool, packed: bool = False) -> None:
    from hydratune.losses import linear_cross_entropy, token_nll

    ids = torch.randint(3, 100, (BATCH, LENGTH), generator=torch.Generator().manual_seed(0))
    positions = packed_positions() if packed else torch.arange(LENGTH).repeat(BATCH, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        if packed:  # hydratune's packed SFT step: the loss straight from the hidden states
            causal_lm = model.get_base_model()
            hidden = causal_lm.model(input_ids=ids, position_ids=positions, use_cache=False).last_hidden_state
            nll, count = linear_cross_entropy(hidden, causal_lm.lm_head.weight, ids)
        else:
            logits = model(input_ids=ids, position_ids=positions, use_cache=False).logits
            nll, count = token_nll(logits, ids)
    (nll / count).backward()
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", required=True, help="the bench's model folder (scripts/bench.py --out DIR: DIR/model)"
    )
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed steps per mode (after one warm-up step)"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch's intra-op threads")
    parser.add_argument(
        "--packed",
        action="store_true",
        help="packed rows (block-diagonal mask) and the fused output-layer loss",
    )
    parser.add_argument("--profile", action="store_true", help="also print the op table of two bf16 steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    modes = {
        "fp32": (build(args.model, False), False),
        "bf16 autocast": (build(args.model, False), True),
        "bf16 autocast, LoRA input casts skipped": (build(args.model, True), True),
        HYDRATUNE: (build(args.model, True, share_casts=True), True),
    }
    seconds: dict[str, list[float]] = {name: [] for name in modes}
    wall: dict[str, list[float]] = {name: [] for name in modes}
    for repeat in range(args.repeats + 1):
        for name, (parts, bf16) in modes.items():
            started, wall_started = time.process_time(), time.perf_counter()
            step(*parts, bf16, args.packed)
            if repeat:  # the first step of each mode is a warm-up
                seconds[name].append(time.process_time() - started)
                wall[name].append(time.perf_counter() - wall_started)
    fp32, fp32_wall = statistics.median(seconds["fp32"]), statistics.median(wall["fp32"])
    print("| mode | CPU s/step (median) | tokens per CPU second | vs fp32 | wall s/step (median) | vs fp32 |")
    print("|---|---|---|---|---|---|")
    for name, values in seconds.items():
        median, wall_median = statistics.median(values), statistics.median(wall[name])
        print(
            f"| {name} | {median:.3f} | {BATCH * LENGTH / median:.0f} | {fp32 / median:.2f}x "
            f"| {wall_median:.3f} | {fp32_wall / wall_median:.2f}x |"
        )
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        parts, _ = modes[HYDRATUNE]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(2):
                step(*parts, True, args.packed)
        print(
            prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=40)
        )


if __name__ == "__main__":
    main()
