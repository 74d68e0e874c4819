"""Throughput benchmark: hydratune vs TRL's SFTTrainer vs a bare PyTorch loop, same work.

What: one Llama-shaped model built from a config (CPU: 4 layers, hidden 256; --gpu: ~0.5B in bf16),
the same Alpaca-like rows (157-512 tokens with the full Alpaca template; ~30% are cut at the max
length of 512), batch 8, LoRA r=16 on all linear layers, AdamW (no weight decay) at a constant LR,
gradients clipped to norm 1.0, loss on responses only. Each runner is a separate process. Reported
per runner: median real-token (non-pad) throughput over 5-step windows after 5 warm-up steps, padding
efficiency, peak memory (RSS on CPU; max_memory_allocated on GPU), time to first optimizer step, data
preparation time, final loss. Writes JSON and a Markdown table (BENCHMARKS.md section).

Batches. `bare` and `hydratune` train on the same batches in the same order, so "vs bare" measures
the loop, not the batching: samples in the order of hydratune's WindowBatchSampler (seed 42); packed,
samples go best-fit-decreasing into rows of at most 512 tokens (hydratune.data.packing.pack_bins),
and the rows are grouped by length as hydratune does by default (`dataset.group_by_length: null`):
runs of 50 shuffled batches are sorted by row length, cut into batches of 8 rows, and the batches
are shuffled. Every batch is padded to its longest row. TRL keeps its own defaults: a random sampler
and, packed, padding-free rows (the whole batch flattened into one row).
Padding efficiency, the same for every runner: non-pad tokens / elements of `input_ids`, summed over
all steps. With the same seed, `bare` and `hydratune` start from the same LoRA weights: their final
losses agree, a check that they did the same work.
Model FLOPs (the TFLOP/s and MFU columns), PaLM-style, per real token:
    4*N + 2*N_lora + 12*L*h*T
N = parameters in matmuls (attention and MLP projections, lm_head; not the embedding lookup), whose
frozen weights cost a forward (2N) and an input-gradient backward (2N) but no weight gradient;
N_lora = LoRA parameters (r=16 on every linear layer of the blocks), trained in full (2N_lora extra);
12*L*h*T = attention scores and weighted sums, forward and backward, with L layers, hidden size h and
T = 512 (the row length; no causal discount). MFU = real tokens/s * FLOPs per token / the device's
peak dense bf16 FLOP/s (GPU only: H100 SXM / H200 989 TFLOP/s, A100 312; CPU has no agreed peak).
Hardware: 2 CPU cores: ~8 minutes with the default 40 steps per runner (times --repeats).

    python scripts/bench.py --out outputs/bench            # all runners
    python scripts/bench.py --runners bare,hydratune       # a subset
    python scripts/bench.py --runners bare,hydratune --repeats 3   # interleaved A,B,A,B,...: median of runs
    python scripts/bench.py --bf16 --runners bare_packed,hydratune_packed   # CPU bf16 autocast
    python scripts/bench.py --vocab 32000 --runners bare_packed,hydratune_packed   # BPE-sized logits
    python scripts/bench.py --precisions fp32,bf16 --runners bare_packed,hydratune_packed --repeats 3
        # both precisions in one run, interleaved; adds "vs own fp32" and each repeat's bf16/fp32 ratio
    python scripts/bench.py --task dpo --repeats 3   # DPO / GRPO vs TRL: scripts/bench_tasks.py (its options)

--bf16 (CPU): the bare loop runs forward and loss under torch.autocast("cpu", bfloat16), hydratune
trainer.precision=bf16-mixed, TRL bf16=True; weights stay float32 in all three.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNNERS = ("bare", "bare_packed", "hydratune", "hydratune_packed", "trl", "trl_packed")
SEED = 42  # hydratune's sampler seed, also used to order the bare loop's batches
BATCH, MAX_LEN = 8, 512
WORDS = (
    "the model data train loss token batch layer weight value answer question reason simple "
    "write list explain short story number letter word sentence result method"
).split()


def alpaca_like_rows(n: int, seed: int = 0) -> list[dict]:
    """Rows of 15-622 characters of instruction, input and output (the char tokenizer: one token each).

    With the full Alpaca template around them, samples are 157-512 tokens; 30% are cut at 512.
    """
    rng = random.Random(seed)

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))

    return [
        {
            "instruction": text(2, 12),
            "input": text(0, 25) if rng.random() < 0.4 else "",
            "output": text(1, 60),
        }
        for _ in range(n)
    ]


def prepare(workdir: Path, gpu: bool, vocab: int | None = None) -> None:
    """The model (saved like a hub checkpoint) and the data, shared by every runner. `vocab`: widen the
    embedding and output layer to this many entries (a BPE-sized output layer; the text stays in the
    char tokenizer's ids, so only the logits grow)."""
    from hydratune.tiny import build_random_model

    workdir.mkdir(parents=True, exist_ok=True)
    size = (
        dict(
            num_hidden_layers=24,  # 0.49B parameters in the blocks
            hidden_size=1280,
            intermediate_size=3584,
            num_attention_heads=20,
            num_key_value_heads=20,
        )
        if gpu
        else dict(
            num_hidden_layers=4,
            hidden_size=256,
            intermediate_size=688,
            num_attention_heads=4,
            num_key_value_heads=4,
        )
    )
    model, tokenizer = build_random_model(seed=0, **size)
    if vocab:
        model.resize_token_embeddings(vocab, mean_resizing=False)
    model.save_pretrained(workdir / "model")
    tokenizer.save_pretrained(workdir / "model")
    rows = alpaca_like_rows(4000)
    (workdir / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (workdir / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:16]))


def formatted(workdir: Path) -> list[tuple[str, str]]:
    from hydratune.data.formats import alpaca_prompt

    rows = [json.loads(line) for line in (workdir / "train.jsonl").read_text().splitlines()]
    return [(alpaca_prompt(r["instruction"], r["input"], "alpaca"), r["output"]) for r in rows]


# ---- runners (each runs in its own process) ----


def run_hydratune(workdir: Path, args, packed: bool) -> None:
    import shutil

    out = workdir / f"{args.runner}.json"
    # train.py refuses the folder of a finished run: a repeat (or a rerun) starts from an empty one.
    shutil.rmtree(workdir / "runs" / args.runner, ignore_errors=True)
    overrides = [
        f"model.pretrained_model_name_or_path={workdir / 'model'}",
        f"model.dtype={'bfloat16' if args.gpu else 'float32'}",
        f"dataset.sources=[{{loader:json,data_files:{{train:{workdir / 'train.jsonl'},validation:{workdir / 'eval.jsonl'}}}}}]",
        "dataset.template=alpaca",
        f"dataset.max_seq_length={MAX_LEN}",
        f"dataset.batch_size={BATCH}",
        f"dataset.packing={str(packed).lower()}",
        "peft=lora",
        "peft.config.r=16",
        "peft.config.lora_alpha=32",
        "optimizer=adamw_torch",
        "optimizer.lr=2e-4",
        "scheduler=constant",
        "trainer.gradient_clip_val=1.0",
        f"seed={SEED}",
        f"trainer.max_steps={args.steps}",
        "+trainer.limit_val_batches=0",
        "trainer.enable_progress_bar=false",
        f"trainer.precision={'bf16-true' if args.gpu else ('bf16-mixed' if args.bf16 else '32-true')}",
        "eval_before_training=false",
        "callbacks=none",
        "logger=none",
        f"+callbacks.bench={{_target_:hydratune.callbacks.StepTimer,out:{out}}}",
        f"hydra.run.dir={workdir / 'runs' / args.runner}",
    ]
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"hydratune run failed:\n{result.stderr[-3000:]}")


def run_trl(workdir: Path, args, packed: bool) -> None:
    import datasets
    import torch
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(workdir / "model")
    model = AutoModelForCausalLM.from_pretrained(
        workdir / "model", dtype=torch.bfloat16 if args.gpu else torch.float32
    )
    data = datasets.Dataset.from_list([{"prompt": p, "completion": c} for p, c in formatted(workdir)])
    config = SFTConfig(
        output_dir=str(workdir / "runs" / args.runner),
        max_steps=args.steps,
        per_device_train_batch_size=8,
        learning_rate=2e-4,
        lr_scheduler_type="constant",
        max_length=512,
        packing=packed,
        padding_free=packed,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        dataloader_num_workers=0,
        bf16=args.gpu or args.bf16,
        gradient_checkpointing=False,  # TRL 1.16 turns it on by default; no runner recomputes here
        use_cpu=not args.gpu,
        seed=0,
    )
    lora = LoraConfig(
        r=16, lora_alpha=32, target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM"
    )
    prep_start = time.time()
    trainer = SFTTrainer(
        model=model, args=config, train_dataset=data, processing_class=tokenizer, peft_config=lora
    )
    prep = time.time() - prep_start

    tokens, padded, step_ends, losses = [], [], [], []
    collate = trainer.data_collator

    def counting_collator(rows):
        batch = collate(rows)
        mask = batch.get("attention_mask")
        tokens.append(
            int(mask.sum()) if mask is not None else int((batch["input_ids"] != tokenizer.pad_token_id).sum())
        )
        padded.append(batch["input_ids"].numel())
        return batch

    trainer.data_collator = counting_collator

    class Timer(TrainerCallback):
        def on_step_end(self, *_, **__):
            if args.gpu:
                torch.cuda.synchronize()  # the step's end, not its launch (the other runners read the loss)
            step_ends.append(time.time())

        def on_log(self, _args, _state, _control, logs=None, **__):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    trainer.add_callback(Timer())
    trainer.train()
    write_result(workdir, args, step_ends, tokens[: len(step_ends)], padded, losses, prep)


def write_result(workdir: Path, args, step_ends, tokens, padded, losses, prep: float) -> None:
    """The runner's figures as `<runner>.json` (the same fields as hydratune.callbacks.StepTimer writes)."""
    from hydratune.bench import process_start, summarize_steps

    result = summarize_steps(step_ends, tokens, losses)
    result |= {
        "padding_efficiency": round(sum(tokens) / max(sum(padded), 1), 4),
        "time_to_first_step_s": round(step_ends[0] - process_start(), 2),
        "data_prep_s": round(prep, 2),
        "losses": [round(x, 4) for x in losses],  # the loss curve, step by step (bf16 vs fp32)
    }
    (workdir / f"{args.runner}.json").write_text(json.dumps(result, indent=2))


def run_bare(workdir: Path, args, packed: bool) -> None:
    """The overhead floor: tokenize, batch (the same batches as hydratune), forward, backward, clip, step."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hydratune.data.tokenize import tokenize_pair
    from hydratune.losses import token_nll

    device = "cuda" if args.gpu else "cpu"
    torch.manual_seed(SEED)
    tokenizer = AutoTokenizer.from_pretrained(workdir / "model")
    prep_start = time.time()
    samples = [tokenize_pair(p, c, tokenizer, MAX_LEN) for p, c in formatted(workdir)]
    batches = hydratune_batches(samples, packed)
    prep = time.time() - prep_start
    model = AutoModelForCausalLM.from_pretrained(
        workdir / "model", dtype=torch.bfloat16 if args.gpu else torch.float32
    )
    model = get_peft_model(
        model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    model.to(device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=2e-4, weight_decay=0.0)
    step_ends, tokens, padded, losses = [], [], [], []
    for step in range(args.steps):
        batch = (
            collate_packed(batches[step], tokenizer.pad_token_id)
            if packed
            else collate_padded(batches[step], tokenizer.pad_token_id)
        )
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16 and not args.gpu):
            out = model(
                input_ids=batch["input_ids"],
                attention_mask=batch.get("attention_mask"),
                position_ids=batch.get("position_ids"),
                use_cache=False,
            )
            nll, count = token_nll(out.logits, batch["labels"])
        loss = nll / count
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        step_ends.append(time.time())
        tokens.append(int((batch["input_ids"] != tokenizer.pad_token_id).sum()))
        padded.append(batch["input_ids"].numel())
    write_result(workdir, args, step_ends, tokens, padded, losses, prep)


def hydratune_batches(samples: list[dict], packed: bool) -> list[list]:
    """The batches hydratune trains on, in its order: samples, or lists of samples packed into one row.

    Packed: best-fit decreasing into rows of MAX_LEN tokens, then rows grouped by length
    (WindowBatchSampler with `lengths`, as `dataset.group_by_length: null` does for packed rows).
    """
    from hydratune.data.packing import pack_bins
    from hydratune.data.sampler import WindowBatchSampler

    lengths = [len(s["input_ids"]) for s in samples]
    if packed:
        items = [[samples[i] for i in row] for row in pack_bins(lengths, MAX_LEN, "bfd")]
        lengths = [sum(len(s["input_ids"]) for s in row) for row in items]
    else:
        items = samples
    sampler = WindowBatchSampler([1] * len(items), BATCH, seed=SEED, lengths=lengths if packed else None)
    return [[items[i] for i, _ in batch] for batch in sampler]


def collate_padded(samples: list[dict], pad: int) -> dict:
    import torch

    width = max(len(s["input_ids"]) for s in samples)
    ids = torch.full((len(samples), width), pad)
    labels = torch.full((len(samples), width), -100)
    mask = torch.zeros((len(samples), width), dtype=torch.long)
    for i, s in enumerate(samples):
        n = len(s["input_ids"])
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(s["input_ids"]), torch.tensor(s["labels"]), 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def collate_packed(rows: list[list[dict]], pad: int) -> dict:
    import torch

    width = max(sum(len(s["input_ids"]) for s in row) for row in rows)
    ids = torch.full((len(rows), width), pad)
    labels = torch.full((len(rows), width), -100)
    positions = torch.arange(width).repeat(len(rows), 1)
    for i, row in enumerate(rows):
        at = 0
        for s in row:
            n = len(s["input_ids"])
            ids[i, at : at + n] = torch.tensor(s["input_ids"])
            labels[i, at : at + n] = torch.tensor(s["labels"])
            labels[i, at] = -100  # never predict a sample's first token from its neighbour
            positions[i, at : at + n] = torch.arange(n)
            at += n
        positions[i, at:] = torch.arange(width - at)  # the pad tail: one more block, as hydratune's
    return {"input_ids": ids, "labels": labels, "position_ids": positions}


# ---- orchestration ----


def median_run(runs: list[dict]) -> dict:
    """The run with the median throughput (the lower one of an even count), with every run's figure."""
    done = sorted((r for r in runs if r.get("tokens_per_s")), key=lambda r: r["tokens_per_s"])
    if not done:
        return runs[-1]
    median = dict(done[(len(done) - 1) // 2])
    if len(runs) > 1:
        median["tokens_per_s_runs"] = [r.get("tokens_per_s") for r in runs]
    return median


PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12}  # dense, SXM parts
LORA_RANK = 16


def flops_per_token(config: dict) -> float:
    """Model FLOPs per trained token (see the module docstring for the formula)."""
    h, i, layers, vocab = (
        config[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "vocab_size")
    )
    kv = h * config.get("num_key_value_heads", config["num_attention_heads"]) // config["num_attention_heads"]
    linears = [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]  # q k v o, gate up down
    n = layers * sum(a * b for a, b in linears) + h * vocab
    n_lora = layers * sum(LORA_RANK * (a + b) for a, b in linears)
    return 4 * n + 2 * n_lora + 12 * layers * h * MAX_LEN


def device_peak() -> tuple[str, float | None]:
    import torch

    if not torch.cuda.is_available():
        return "cpu", None
    name = torch.cuda.get_device_name()
    return name, next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), None)


def add_flops(results: dict, workdir: Path, gpu: bool) -> None:
    """TFLOP/s and (on a known GPU) MFU for each runner, from its real tokens/s."""
    per_token = flops_per_token(json.loads((workdir / "model" / "config.json").read_text()))
    _, peak = device_peak() if gpu else ("cpu", None)
    for r in results.values():
        if r.get("tokens_per_s"):
            r["tflops"] = round(r["tokens_per_s"] * per_token / 1e12, 3)
            r["mfu"] = round(r["tokens_per_s"] * per_token / peak, 4) if peak else None


def ratio(rate: float | None, reference: float | None) -> str:
    return f"{rate / reference:.2f}x" if rate and reference else "-"


def table(results: dict, machine: str) -> str:
    from hydratune.bench import versions  # late: the runners must not pay for its imports

    lines = [
        f"Machine: {machine}. Date: {datetime.date.today()}. "
        + ", ".join(f"{k} {v}" for k, v in versions().items())
        + ".",
        "",
        "| runner | real tokens/s | vs TRL (same packing) | vs bare | padding efficiency | peak memory (MB) "
        "| first step (s) | data prep (s) | final loss | TFLOP/s | MFU |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error'][:80]} | | | | | | | | | |")
            continue
        runner, at, precision = name.partition("@")  # "hydratune_packed@bf16" with --precisions
        packed = runner.endswith("_packed")
        trl = results.get(("trl_packed" if packed else "trl") + at + precision, {}).get("tokens_per_s")
        bare = results.get(("bare_packed" if packed else "bare") + at + precision, {}).get("tokens_per_s")
        rate = r.get("tokens_per_s")
        spread = [x for x in r.get("tokens_per_s_runs", []) if x]
        shown = f"{rate} ({min(spread)}-{max(spread)}, {len(spread)} runs)" if len(spread) > 1 else rate
        memory = r.get("peak_gpu_mb", r.get("peak_rss_mb"))
        lines.append(
            f"| {name} | {shown} | {ratio(rate, trl)} | {ratio(rate, bare)} | {r.get('padding_efficiency')} | {memory} "
            f"| {r.get('time_to_first_step_s')} | {r.get('data_prep_s')} | {r.get('final_loss')} "
            f"| {r.get('tflops')} | {r.get('mfu') if r.get('mfu') is not None else '-'} |"
        )
    lines += precision_ratios(results)
    return "\n".join(lines)


def precision_ratios(results: dict) -> list[str]:
    """With --precisions fp32,bf16: each runner's bf16 throughput over its own fp32 (medians, and each
    interleaved repeat's pair, which a busy spell skews less than two medians)."""
    lines = []
    for name, r in results.items():
        runner, _, precision = name.partition("@")
        fp32 = results.get(f"{runner}@fp32", {})
        if precision != "bf16" or not r.get("tokens_per_s") or not fp32.get("tokens_per_s"):
            continue
        pairs = [
            f"{b / f:.2f}x"
            for b, f in zip(r.get("tokens_per_s_runs", []), fp32.get("tokens_per_s_runs", []))
            if b and f
        ]
        lines.append(
            f"- {runner}: bf16 / own fp32 = {ratio(r['tokens_per_s'], fp32['tokens_per_s'])}"
            + (f" (each repeat: {', '.join(pairs)})" if pairs else "")
        )
    return ["", *lines] if lines else []


def main() -> None:

    if any(a == "--task" or a.startswith("--task=") for a in sys.argv[1:]):  # DPO/GRPO rows: bench_tasks.py
        sys.path.insert(0, str(Path(__file__).parent))
        import bench_tasks

        return bench_tasks.main()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "outputs" / "bench"))
    parser.add_argument("--runners", default=",".join(RUNNERS))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--gpu", action="store_true", help="~0.5B model in bf16 on CUDA")
    parser.add_argument(
        "--bf16", action="store_true", help="CPU: bf16 autocast (hydratune bf16-mixed, TRL bf16=True)"
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs of each runner, interleaved; median reported"
    )
    parser.add_argument(
        "--precisions",
        help="CPU: comma list of fp32,bf16 to run each runner at each, interleaved (default: --bf16's)",
    )
    parser.add_argument(
        "--vocab", type=int, help="output layer size (e.g. 32000: logits as large as a BPE model's)"
    )
    parser.add_argument("--runner", help=argparse.SUPPRESS)  # internal: run one runner in this process
    args = parser.parse_args()
    workdir = Path(args.out)

    if args.runner:
        packed = args.runner.endswith("_packed")
        family = args.runner.removesuffix("_packed")
        {"hydratune": run_hydratune, "trl": run_trl, "bare": run_bare}[family](workdir, args, packed)
        return

    from hydratune.bench import versions  # late: the runners must not pay for its imports

    precisions = (args.precisions or ("bf16" if args.bf16 else "fp32")).split(",")
    if (args.gpu and args.precisions) or not set(precisions) <= {"fp32", "bf16"}:
        parser.error("--precisions takes fp32 and/or bf16, on CPU (--gpu always runs bf16)")
    named = {  # the result's name -> (runner, precision)
        (runner if len(precisions) == 1 else f"{runner}@{precision}"): (runner, precision)
        for precision in precisions
        for runner in args.runners.split(",")
    }
    prepare(workdir, args.gpu, args.vocab)
    runs: dict[str, list[dict]] = {name: [] for name in named}
    for repeat in range(args.repeats):  # interleaved: A, B, A, B, ... so a busy spell hits every runner
        for name, (runner, precision) in named.items():
            started = time.time()
            cmd = [
                sys.executable,
                __file__,
                "--out",
                str(workdir),
                "--steps",
                str(args.steps),
                "--runner",
                runner,
            ]
            cmd += ["--gpu"] if args.gpu else []
            cmd += ["--bf16"] if precision == "bf16" else []
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                result = {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
            else:
                result = json.loads((workdir / f"{runner}.json").read_text())
            result["wall_s"] = round(time.time() - started, 1)
            runs[name].append(result)
            print(name, repeat, result, flush=True)
    results = {runner: median_run(found) for runner, found in runs.items()}
    add_flops(results, workdir, args.gpu)
    machine = f"{platform.machine()}, {__import__('os').cpu_count()} CPU threads" + (
        f", {device_peak()[0]}" if args.gpu else ""
    )
    machine += (
        f"; output layer {args.vocab or 'char'} entries, {'bf16' if args.gpu else ' and '.join(precisions)}"
    )
    (workdir / "bench.json").write_text(
        json.dumps({"machine": machine, "versions": versions(), "results": results}, indent=2)
    )
    (workdir / "bench.md").write_text(table(results, machine) + "\n")
    print(table(results, machine))


if __name__ == "__main__":
    main()
