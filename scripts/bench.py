"""Throughput benchmark: hydratune vs TRL's SFTTrainer vs a bare PyTorch loop, same work.

What: one Llama-shaped model built from a config (CPU: 4 layers, hidden 256; --gpu: ~0.5B in bf16),
the same Alpaca-like rows (28-537 tokens), max length 512, batch 8, LoRA r=16 on all linear layers,
AdamW at a constant LR, loss on responses only. Each runner is a separate process. Reported per
runner: median real-token (non-pad) throughput over 5-step windows after 5 warm-up steps, padding
efficiency, peak memory (RSS on CPU; max_memory_allocated on GPU), time to first optimizer step,
data preparation time, final loss. Writes JSON and a Markdown table (BENCHMARKS.md section).
Hardware: 2 CPU cores: ~8 minutes with the default 40 steps per runner.

    python scripts/bench.py --out outputs/bench            # all runners
    python scripts/bench.py --runners bare,hydratune       # a subset
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
WORDS = (
    "the model data train loss token batch layer weight value answer question reason simple "
    "write list explain short story number letter word sentence result method"
).split()


def alpaca_like_rows(n: int, seed: int = 0) -> list[dict]:
    """Rows whose formatted length spans ~28-537 characters (= tokens for the char tokenizer)."""
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


def prepare(workdir: Path, gpu: bool) -> None:
    """The model (saved like a hub checkpoint) and the data, shared by every runner."""
    from hydratune.tiny import build_random_model

    workdir.mkdir(parents=True, exist_ok=True)
    size = (
        dict(
            num_hidden_layers=24,
            hidden_size=1024,
            intermediate_size=2816,
            num_attention_heads=16,
            num_key_value_heads=16,
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
    out = workdir / f"{args.runner}.json"
    overrides = [
        f"model.pretrained_model_name_or_path={workdir / 'model'}",
        f"model.dtype={'bfloat16' if args.gpu else 'float32'}",
        f"dataset.sources=[{{loader:json,data_files:{{train:{workdir / 'train.jsonl'},validation:{workdir / 'eval.jsonl'}}}}}]",
        "dataset.template=alpaca",
        "dataset.max_seq_length=512",
        "dataset.batch_size=8",
        f"dataset.packing={str(packed).lower()}",
        "peft=lora",
        "peft.config.r=16",
        "peft.config.lora_alpha=32",
        "optimizer=adamw_torch",
        "optimizer.lr=2e-4",
        "scheduler=constant",
        f"trainer.max_steps={args.steps}",
        "+trainer.limit_val_batches=0",
        "trainer.enable_progress_bar=false",
        f"trainer.precision={'bf16-true' if args.gpu else '32-true'}",
        "eval_before_training=false",
        "callbacks=none",
        "logger=none",
        f"+callbacks.bench={{_target_:hydratune.bench.StepTimer,out:{out}}}",
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
        bf16=args.gpu,
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
            step_ends.append(time.time())

        def on_log(self, _args, _state, _control, logs=None, **__):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    trainer.add_callback(Timer())
    trainer.train()
    write_result(workdir, args, step_ends, tokens[: len(step_ends)], padded, losses, prep)


def write_result(workdir: Path, args, step_ends, tokens, padded, losses, prep: float) -> None:
    """The runner's figures as `<runner>.json` (the same fields as hydratune.bench.StepTimer writes)."""
    import torch

    from hydratune.bench import process_start, summarize_steps

    result = summarize_steps(step_ends, tokens, losses)
    result |= {
        "padding_efficiency": round(sum(tokens) / max(sum(padded), 1), 4),
        "time_to_first_step_s": round(step_ends[0] - process_start(), 2),
        "data_prep_s": round(prep, 2),
    }
    if args.gpu:
        result["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    (workdir / f"{args.runner}.json").write_text(json.dumps(result, indent=2))


def run_bare(workdir: Path, args, packed: bool) -> None:
    """The overhead floor: tokenize, batch (padded or best-fit packed), forward, backward, step."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hydratune.data.tokenize import tokenize_pair
    from hydratune.module import token_nll

    device = "cuda" if args.gpu else "cpu"
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(workdir / "model")
    prep_start = time.time()
    samples = [tokenize_pair(p, c, tokenizer, 512) for p, c in formatted(workdir)]
    batches = (
        pack_rows(samples, rows=8, width=512)
        if packed
        else [samples[i : i + 8] for i in range(0, len(samples), 8)]
    )
    prep = time.time() - prep_start
    model = AutoModelForCausalLM.from_pretrained(
        workdir / "model", dtype=torch.bfloat16 if args.gpu else torch.float32
    )
    model = get_peft_model(
        model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    model.to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    step_ends, tokens, padded, losses = [], [], [], []
    for step in range(args.steps):
        batch = (
            collate_packed(batches[step], tokenizer.pad_token_id)
            if packed
            else collate_padded(batches[step], tokenizer.pad_token_id)
        )
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model(
            input_ids=batch["input_ids"],
            attention_mask=batch.get("attention_mask"),
            position_ids=batch.get("position_ids"),
            use_cache=False,
        )
        nll, count = token_nll(out.logits, batch["labels"])
        loss = nll / count
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        step_ends.append(time.time())
        tokens.append(int((batch["input_ids"] != tokenizer.pad_token_id).sum()))
        padded.append(batch["input_ids"].numel())
    write_result(workdir, args, step_ends, tokens, padded, losses, prep)


def pack_rows(samples: list[dict], rows: int, width: int) -> list[list[list[dict]]]:
    """Best-fit decreasing into batches of `rows` rows of at most `width` tokens."""
    bins: list[tuple[int, list[dict]]] = []
    for sample in sorted(samples, key=lambda s: -len(s["input_ids"])):
        n = len(sample["input_ids"])
        fits = [i for i, (used, _) in enumerate(bins) if used + n <= width]
        if fits:
            best = min(fits, key=lambda i: width - bins[i][0] - n)
            bins[best] = (bins[best][0] + n, bins[best][1] + [sample])
        else:
            bins.append((n, [sample]))
    random.Random(0).shuffle(bins)
    return [[b for _, b in bins[i : i + rows]] for i in range(0, len(bins), rows)]


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
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        at = 0
        for s in row:
            n = len(s["input_ids"])
            ids[i, at : at + n] = torch.tensor(s["input_ids"])
            labels[i, at : at + n] = torch.tensor(s["labels"])
            labels[i, at] = -100  # never predict a sample's first token from its neighbour
            positions[i, at : at + n] = torch.arange(n)
            at += n
    return {"input_ids": ids, "labels": labels, "position_ids": positions}


# ---- orchestration ----


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "peft", "lightning", "trl", "datasets"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "missing"
    return out


def ratio(rate: float | None, reference: float | None) -> str:
    return f"{rate / reference:.2f}x" if rate and reference else "-"


def table(results: dict, machine: str) -> str:
    lines = [
        f"Machine: {machine}. Date: {datetime.date.today()}. "
        + ", ".join(f"{k} {v}" for k, v in versions().items())
        + ".",
        "",
        "| runner | real tokens/s | vs TRL (same packing) | vs bare | padding efficiency | peak memory (MB) "
        "| first step (s) | data prep (s) | final loss |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error'][:80]} | | | | | | | |")
            continue
        packed = name.endswith("_packed")
        trl = results.get("trl_packed" if packed else "trl", {}).get("tokens_per_s")
        bare = results.get("bare_packed" if packed else "bare", {}).get("tokens_per_s")
        rate = r.get("tokens_per_s")
        memory = r.get("peak_gpu_mb", r.get("peak_rss_mb"))
        lines.append(
            f"| {name} | {rate} | {ratio(rate, trl)} | {ratio(rate, bare)} | {r.get('padding_efficiency')} | {memory} "
            f"| {r.get('time_to_first_step_s')} | {r.get('data_prep_s')} | {r.get('final_loss')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "outputs" / "bench"))
    parser.add_argument("--runners", default=",".join(RUNNERS))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--gpu", action="store_true", help="~0.5B model in bf16 on CUDA")
    parser.add_argument("--runner", help=argparse.SUPPRESS)  # internal: run one runner in this process
    args = parser.parse_args()
    workdir = Path(args.out)

    if args.runner:
        packed = args.runner.endswith("_packed")
        family = args.runner.removesuffix("_packed")
        {"hydratune": run_hydratune, "trl": run_trl, "bare": run_bare}[family](workdir, args, packed)
        return

    prepare(workdir, args.gpu)
    results = {}
    for runner in args.runners.split(","):
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
        proc = subprocess.run(cmd + (["--gpu"] if args.gpu else []), capture_output=True, text=True)
        if proc.returncode != 0:
            results[runner] = {"error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
        else:
            results[runner] = json.loads((workdir / f"{runner}.json").read_text())
        results[runner]["wall_s"] = round(time.time() - started, 1)
        print(runner, results[runner], flush=True)
    machine = f"{platform.machine()}, {__import__('os').cpu_count()} CPU threads" + (
        ", GPU" if args.gpu else ""
    )
    (workdir / "bench.json").write_text(
        json.dumps({"machine": machine, "versions": versions(), "results": results}, indent=2)
    )
    (workdir / "bench.md").write_text(table(results, machine) + "\n")
    print(table(results, machine))


if __name__ == "__main__":
    main()
