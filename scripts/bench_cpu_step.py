"""CPU seconds per SFT step of the benchmark model in fp32, bf16 autocast, and bf16 autocast with peft's
LoRA input casts skipped (hydratune.model.skip_needless_input_casts); optionally the op profile of a
bf16 step.

What: the bench's CPU model (scripts/bench.py's `prepare`: 4 layers, hidden 256, LoRA r=16 on every
linear layer), one batch of 8 rows of 512 tokens, forward + loss + backward + clip + AdamW step. The
modes run interleaved in one process on one thread, and each step is timed by `time.process_time()`:
CPU time, not wall time, so that a machine shared with other jobs skews the ratios less.
Hardware: any CPU; ~1 minute with --repeats 5 on a quiet core.

    python scripts/bench.py --bf16 --runners bare_packed --steps 10 --out outputs/bench   # makes the model
    python scripts/bench_cpu_step.py --model outputs/bench/model --repeats 5 [--profile]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

BATCH, LENGTH = 8, 512


def build(model_dir: str, skip_casts: bool):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from hydratune.model import skip_needless_input_casts

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    lora = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora).train()
    if skip_casts:
        skip_needless_input_casts(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    return model, trainable, torch.optim.AdamW(trainable, lr=2e-4, weight_decay=0.0)


def step(model, trainable, optimizer, bf16: bool) -> None:
    from hydratune.tasks.sft.module import token_nll

    ids = torch.randint(3, 100, (BATCH, LENGTH), generator=torch.Generator().manual_seed(0))
    positions = torch.arange(LENGTH).repeat(BATCH, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
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
    parser.add_argument("--profile", action="store_true", help="also print the op table of two bf16 steps")
    args = parser.parse_args()
    torch.set_num_threads(1)
    modes = {
        "fp32": (build(args.model, False), False),
        "bf16 autocast": (build(args.model, False), True),
        "bf16 autocast, LoRA input casts skipped": (build(args.model, True), True),
    }
    seconds: dict[str, list[float]] = {name: [] for name in modes}
    for repeat in range(args.repeats + 1):
        for name, (parts, bf16) in modes.items():
            started = time.process_time()
            step(*parts, bf16)
            if repeat:  # the first step of each mode is a warm-up
                seconds[name].append(time.process_time() - started)
    fp32 = statistics.median(seconds["fp32"])
    print("| mode | CPU s/step (median) | tokens per CPU second | vs fp32 |")
    print("|---|---|---|---|")
    for name, values in seconds.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} | {BATCH * LENGTH / median:.0f} | {fp32 / median:.2f}x |")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        parts, _ = modes["bf16 autocast, LoRA input casts skipped"]
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(2):
                step(*parts, True)
        print(
            prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=40)
        )


if __name__ == "__main__":
    main()
