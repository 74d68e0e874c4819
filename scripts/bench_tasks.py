"""Speed of task=dpo and task=grpo against TRL's DPOTrainer and GRPOTrainer, same model, data and settings.

What: the shipped tiny base (assets/tiny-llama: 4 layers, hidden 128, ~0.8M parameters, char tokenizer) with
LoRA r=16 (alpha 32, no dropout) on every linear layer, AdamW (no weight decay) at a constant LR, gradients
clipped at 1.0, fp32, no evaluation. The tiny base, not scripts/bench.py's random 4x256 model, because the
shipped pairs and prompts are written in its world: GRPO's completions stop at the newline and the
exact-match reward varies within groups as in a real run (a random model writes max_new_tokens of noise
and every reward is 0). With a model this small a step is mostly framework work, which is what differs.
- DPO: data/preference pairs, 8 pairs per step (16 rows: chosen, then rejected), sigmoid loss, beta 0.1,
  no SFT term (hydratune task.sft_weight=0), max length 64, reference = adapters off, lr 1e-4.
  Runners: `dpo_hydratune` (python train.py task=dpo ...), `dpo_trl` (DPOTrainer), and `dpo_sft`
  (python train.py task=sft on the same pairs as 16 prompt/answer rows per step: the +15% memory check).
- GRPO: data/grpo prompts, 8 prompts x G=8 completions per step, max_new_tokens 12, temperature 1, top_p 1,
  stop at the newline (TRL: the newline added to the model's EOS ids), hydratune's exact-match reward
  (hydratune.rewards.exact_match on the `answer` column), loss `grpo`, epsilon 0.2, beta 0 (no
  reference forward), one iteration per batch of samples, lr 1e-3; TRL generates with transformers'
  generate (no vLLM). Runners: `grpo_hydratune`, `grpo_trl`.
Each runner is a separate process; --repeats interleaves them (A, B, C, A, B, C, ...) and the run with the
median rate is reported, with every run's rate. Reported: median pairs/s (DPO) or steps/s (GRPO) over
5-step windows after 5 warm-up steps, peak RSS of the training process, time from process start to the end
of the first optimizer step, final loss. Writes <out>/bench_tasks.json and <out>/bench_tasks.md.
TRL 1.16 turns gradient checkpointing and bf16 on by default; both are off here, as in hydratune: the same work.
Hardware: CPU (2 cores here). Expected time on a loaded 2-core machine: ~20-25 s per DPO run and ~30-45 s per
GRPO run (40 steps each, most of it start-up), so ~5 minutes for `--task dpo --repeats 4`, ~5 for grpo.

TRL comes with the `bench` extra (`make install` installs it, pinned in constraints.txt):

    .venv/bin/python scripts/bench_tasks.py --task dpo --repeats 3
    .venv/bin/python scripts/bench.py --task grpo --repeats 3   # the same, via bench.py
    ... --task dpo --precompute-ref    # reference log-probs computed once before training, on both sides
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE_MODEL = ROOT / "assets" / "tiny-llama"
MODEL = BASE_MODEL  # the model every runner loads (a widened copy with --vocab)
RUNNERS = {"dpo": ("dpo_hydratune", "dpo_trl", "dpo_sft"), "grpo": ("grpo_hydratune", "grpo_trl")}
DEFAULT_STEPS = {"dpo": 40, "grpo": 40}
SEED = 42
# DPO
PAIRS, BETA, MAX_LEN, DPO_LR = 8, 0.1, 64, 1e-4
# GRPO
PROMPTS, G, MAX_NEW, GRPO_LR = 8, 8, 12, 1e-3
LORA = dict(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear")
MEMORY_TARGET = 1.15  # DPO's peak memory <= SFT's on the same batch shape x this


# ---- hydratune runners (python train.py, like scripts/bench.py) ----


def step_timer(out: str, units: int):
    """A hydratune.callbacks.StepTimer that also writes each step's end time (Hydra `_target_` in train.py).

    `units` per optimizer step: pairs for DPO, 1 for GRPO (steps/s); real tokens are not comparable across
    the two frameworks' layouts.
    """
    from hydratune.callbacks import StepTimer

    class TaskStepTimer(StepTimer):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.step_ends.append(time.time())
            self.tokens.append(units)  # summarize_steps's "tokens" are our units: pairs or steps
            self.padded.append(units)
            metrics = trainer.callback_metrics
            loss = metrics.get("train/loss")
            self.losses.append(float(loss) if loss is not None else float("nan"))
            for key, name in (("train/completion_length", "completion_length"), ("train/reward", "reward")):
                if key in metrics:
                    self.seen.setdefault(name, []).append(float(metrics[key]))

        def on_train_end(self, trainer, pl_module) -> None:
            super().on_train_end(trainer, pl_module)
            result = json.loads(Path(self.out).read_text())
            del result["padding_efficiency"]
            result |= {"step_ends": self.step_ends, "units": self.tokens}
            result |= {name: round(sum(v) / len(v), 3) for name, v in self.seen.items()}
            Path(self.out).write_text(json.dumps(result, indent=2))

    timer = TaskStepTimer(out)
    timer.seen = {}  # GRPO: completion length and reward of each step (the same work on both sides)
    return timer


def common_overrides(workdir: Path, runner: str, steps: int, lr: float, units: int) -> list[str]:
    return [
        f"model.pretrained_model_name_or_path={MODEL}",
        "model.dtype=float32",
        "peft=lora",
        *(f"peft.config.{k}={v}" for k, v in LORA.items()),
        "optimizer=adamw_torch",
        f"optimizer.lr={lr}",
        "optimizer.weight_decay=0.0",
        "scheduler=constant",
        "trainer.gradient_clip_val=1.0",
        f"seed={SEED}",
        f"trainer.max_steps={steps}",
        "+trainer.limit_val_batches=0",
        "trainer.enable_progress_bar=false",
        "trainer.precision=32-true",
        "eval_before_training=false",
        "eval_generations.num_prompts=0",
        "callbacks=none",
        "logger=none",
        f"+callbacks.bench={{_target_:bench_tasks.step_timer,out:{workdir / (runner + '.json')},units:{units}}}",
        f"hydra.run.dir={workdir / 'runs' / runner}",
    ]


def train_py(workdir: Path, runner: str, overrides: list[str]) -> None:
    # train.py refuses the folder of a finished run: a repeat starts from an empty one.
    shutil.rmtree(workdir / "runs" / runner, ignore_errors=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "scripts"), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise SystemExit(f"{runner} failed:\n{proc.stderr[-3000:]}")


def run_dpo_hydratune(workdir: Path, args) -> None:
    overrides = common_overrides(workdir, args.runner, args.steps, DPO_LR, PAIRS) + [
        "task=dpo",
        "task.loss=sigmoid",
        f"task.beta={BETA}",
        "task.sft_weight=0.0",
        f"task.precompute_ref_logps={str(args.precompute_ref).lower()}",
        f"dataset.batch_size={PAIRS}",
        f"dataset.max_seq_length={MAX_LEN}",
    ]
    train_py(workdir, args.runner, overrides)


def run_dpo_sft(workdir: Path, args) -> None:
    """SFT on the same pairs as 2B prompt/answer rows per step (chosen and rejected answers): the peak
    memory DPO is held to. Its rate is shown in rows/2 per second so the column stays 'pairs'."""
    sft = workdir / "sft_pairs.jsonl"
    overrides = common_overrides(workdir, args.runner, args.steps, DPO_LR, PAIRS) + [
        "task=sft",
        f"dataset.sources=[{{loader:json,data_files:{{train:{sft},validation:{sft}}}}}]",
        "dataset.format=prompt_response",
        "+dataset.prompt_column=prompt",
        "+dataset.response_column=response",
        f"dataset.batch_size={2 * PAIRS}",
        f"dataset.max_seq_length={MAX_LEN}",
        "dataset.group_by_length=false",
    ]
    train_py(workdir, args.runner, overrides)


def run_grpo_hydratune(workdir: Path, args) -> None:
    overrides = common_overrides(workdir, args.runner, args.steps, GRPO_LR, 1) + [
        "task=grpo",
        f"task.num_generations={G}",
        f"task.max_new_tokens={MAX_NEW}",
        "task.temperature=1.0",
        "task.top_p=1.0",
        "task.beta=0.0",
        "task.epsilon=0.2",
        "task.num_iterations=1",
        "task.aggregation=grpo",
        "task.log_completions=0",
        f"dataset.batch_size={PROMPTS}",
    ]
    train_py(workdir, args.runner, overrides)


# ---- TRL runners ----


def trl_model_and_tokenizer():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)
    return model, tokenizer


def trl_common(workdir: Path, args, lr: float) -> dict:
    return dict(
        output_dir=str(workdir / "runs" / args.runner),
        max_steps=args.steps,
        learning_rate=lr,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        dataloader_num_workers=0,
        use_cpu=True,
        seed=SEED,
        # TRL's configs default both to True; hydratune's (and transformers') to False: the same work here.
        gradient_checkpointing=False,
        bf16=False,
    )


def trl_train(trainer, workdir: Path, args, units: int) -> None:
    from transformers import TrainerCallback

    step_ends, losses, seen = [], [], {}

    class Timer(TrainerCallback):
        def on_step_end(self, *_, **__):
            step_ends.append(time.time())

        def on_log(self, _args, _state, _control, logs=None, **__):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))
            for key, name in (("completions/mean_length", "completion_length"), ("reward", "reward")):
                if logs and key in logs:
                    seen.setdefault(name, []).append(float(logs[key]))

    trainer.add_callback(Timer())
    trainer.train()
    write_result(workdir, args.runner, step_ends, [units] * len(step_ends), losses, seen)


def run_dpo_trl(workdir: Path, args) -> None:
    import datasets
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer

    model, tokenizer = trl_model_and_tokenizer()
    # The same ids as hydratune's pairs: BOS, prompt, answer, EOS (TRL appends EOS; this tokenizer adds no BOS).
    rows = [json.loads(line) for line in (ROOT / "data/preference/train.jsonl").read_text().splitlines()]
    rows = [r | {"prompt": tokenizer.bos_token + r["prompt"]} for r in rows]
    config = DPOConfig(
        **trl_common(workdir, args, DPO_LR),
        per_device_train_batch_size=PAIRS,
        beta=BETA,
        loss_type=["sigmoid"],
        max_length=MAX_LEN,
        precompute_ref_log_probs=args.precompute_ref,
    )
    trainer = DPOTrainer(
        model=model,
        args=config,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA),
    )
    trl_train(trainer, workdir, args, PAIRS)


def exact_match_reward(prompts, completions, answer, **_) -> list[float]:
    """hydratune's exact-match reward in TRL's calling convention (dataset columns as keywords)."""
    from hydratune.rewards import exact_match

    return exact_match(prompts, completions, column="answer", answer=answer)


def run_grpo_trl(workdir: Path, args) -> None:
    import datasets
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    model, tokenizer = trl_model_and_tokenizer()
    # Stop at the newline as hydratune's task.stop does: TRL ends (and masks) completions at the model's EOS ids.
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, *newline]
    # The same prompt ids as hydratune's sampler: BOS, then the prompt (this tokenizer adds no BOS itself).
    rows = [json.loads(line) for line in (ROOT / "data/grpo/train.jsonl").read_text().splitlines()]
    rows = [r | {"prompt": tokenizer.bos_token + r["prompt"]} for r in rows]
    config = GRPOConfig(
        **trl_common(workdir, args, GRPO_LR),
        per_device_train_batch_size=PROMPTS * G,  # TRL counts completions
        num_generations=G,
        max_completion_length=MAX_NEW,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=0.0,
        epsilon=0.2,
        num_iterations=1,
        loss_type="grpo",
        scale_rewards="group",
        use_vllm=False,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=exact_match_reward,
        args=config,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA),
    )
    trl_train(trainer, workdir, args, 1)


def write_result(workdir: Path, runner: str, step_ends, units, losses, seen: dict) -> None:
    from hydratune.bench import process_start, summarize_steps

    result = summarize_steps(step_ends, units, losses)
    result |= {
        "time_to_first_step_s": round(step_ends[0] - process_start(), 2),
        "step_ends": step_ends,
        "units": units,
    }
    result |= {name: round(sum(v) / len(v), 3) for name, v in seen.items()}
    (workdir / f"{runner}.json").write_text(json.dumps(result, indent=2))


RUN = {
    "dpo_hydratune": run_dpo_hydratune,
    "dpo_trl": run_dpo_trl,
    "dpo_sft": run_dpo_sft,
    "grpo_hydratune": run_grpo_hydratune,
    "grpo_trl": run_grpo_trl,
}


# ---- orchestration ----


def prepare(workdir: Path, vocab: int | None = None) -> None:
    """The SFT rows of the memory check: each pair as two prompt/answer rows (chosen, then rejected). With
    `vocab`: a copy of the tiny model whose embedding and output layer have that many entries (the text keeps
    its ids; the logits are as large as a BPE model's), in workdir/model."""
    workdir.mkdir(parents=True, exist_ok=True)
    if vocab:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(BASE_MODEL)
        model.resize_token_embeddings(vocab, mean_resizing=False)
        model.save_pretrained(workdir / "model")
        AutoTokenizer.from_pretrained(BASE_MODEL).save_pretrained(workdir / "model")
    pairs = [json.loads(line) for line in (ROOT / "data/preference/train.jsonl").read_text().splitlines()]
    rows = [{"prompt": p["prompt"], "response": p[k]} for p in pairs for k in ("chosen", "rejected")]
    (workdir / "sft_pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def rate(result: dict) -> float | None:
    """pairs/s (DPO) or steps/s (GRPO)."""
    return result.get("rate")


def units_per_s(step_ends: list[float], units: list[int], warmup: int = 5, window: int = 5) -> float | None:
    """Median rate over `window`-step windows after `warmup` steps (summarize_steps's, to 3 decimals)."""
    import statistics

    rates = [
        sum(units[start + 1 : start + window + 1]) / (step_ends[start + window] - step_ends[start])
        for start in range(warmup, len(step_ends) - window, window)
    ]
    return round(statistics.median(rates), 3) if rates else None


def median_run(runs: list[dict]) -> dict:
    done = sorted((r for r in runs if rate(r)), key=rate)
    if not done:
        return runs[-1]
    median = dict(done[(len(done) - 1) // 2])
    median["rate_runs"] = [rate(r) for r in runs]
    median.pop("step_ends", None)
    median.pop("units", None)
    return median


def table(task: str, results: dict, machine: str, load: str) -> str:
    from hydratune.bench import versions  # late: the runners must not pay for its imports

    unit = "pairs/s" if task == "dpo" else "steps/s"
    reference = rate(results.get(f"{task}_trl", {}))
    lines = [
        f"Machine: {machine}; {load}. Date: {datetime.date.today()}. "
        + ", ".join(f"{k} {v}" for k, v in versions().items())
        + ".",
        "",
        f"| runner | {unit} (median; min-max of runs) | vs TRL | peak RSS (MB) | first step (s) | final loss "
        "| completion length | reward |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error'][:80]} | | | | | | |")
            continue
        runs = [x for x in r.get("rate_runs", []) if x]
        value = rate(r)
        shown = f"{value} ({min(runs)}-{max(runs)}, {len(runs)} runs)" if len(runs) > 1 else value
        versus = f"{value / reference:.2f}x" if value and reference and name != f"{task}_sft" else "-"
        lines.append(
            f"| {name} | {shown} | {versus} | {r.get('peak_rss_mb')} | {r.get('time_to_first_step_s')} "
            f"| {r.get('final_loss')} | {r.get('completion_length', '-')} | {r.get('reward', '-')} |"
        )
    ours, theirs = (results.get(f"{task}_{n}", {}).get("rate_runs", []) for n in ("hydratune", "trl"))
    paired = [f"{a / b:.2f}x" for a, b in zip(ours, theirs) if a and b]
    if paired:  # each repeat ran the two back to back: the ratio least hit by the machine's load swings
        lines += ["", f"hydratune / TRL per repeat: {', '.join(paired)}."]
    if task == "dpo" and "dpo_sft" in results and "dpo_hydratune" in results:
        dpo, sft = results["dpo_hydratune"].get("peak_rss_mb"), results["dpo_sft"].get("peak_rss_mb")
        if dpo and sft:
            lines += [
                "",
                f"Peak RSS, DPO / SFT on 16 rows per step: {dpo / sft:.3f} (target <= {MEMORY_TARGET}).",
            ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=sorted(RUNNERS), required=True)
    parser.add_argument("--out", default=None, help="default: outputs/bench_<task>")
    parser.add_argument(
        "--runners", default=None, help="a subset, comma-separated (default: all of the task's)"
    )
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default 40)")
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs of each runner, interleaved; median reported"
    )
    parser.add_argument(
        "--precompute-ref",
        action="store_true",
        help="DPO: reference log-probs computed once before training, on both sides (hydratune "
        "task.precompute_ref_logps, TRL precompute_ref_log_probs)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads per runner (OMP_NUM_THREADS)")
    parser.add_argument(
        "--vocab", type=int, help="widen the model's output layer to this size (e.g. 32000: BPE-sized logits)"
    )
    parser.add_argument("--runner", help=argparse.SUPPRESS)  # internal: run one runner in this process
    args = parser.parse_args(argv)
    workdir = Path(args.out or ROOT / "outputs" / f"bench_{args.task}")
    args.steps = args.steps or DEFAULT_STEPS[args.task]

    global MODEL
    if args.vocab:
        MODEL = workdir / "model"  # written by prepare()
    if args.runner:
        RUN[args.runner](workdir, args)
        return

    from hydratune.bench import versions  # late: the runners must not pay for its imports

    prepare(workdir, args.vocab)
    load_before = os.getloadavg()[0]
    names = args.runners.split(",") if args.runners else RUNNERS[args.task]
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for repeat in range(args.repeats):  # interleaved, so a busy spell hits every runner
        for name in runs:
            started = time.time()
            cmd = [
                sys.executable,
                __file__,
                "--task",
                args.task,
                "--out",
                str(workdir),
                "--steps",
                str(args.steps),
            ] + (["--precompute-ref"] if args.precompute_ref else [])
            cmd += ["--vocab", str(args.vocab)] if args.vocab else []
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
            proc = subprocess.run([*cmd, "--runner", name], capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                lines = [x for x in proc.stderr.splitlines() if x.strip() and "HYDRA_FULL_ERROR" not in x]
                result = {"error": (lines or ["?"])[-1]}
            else:
                result = json.loads((workdir / f"{name}.json").read_text())
                result["rate"] = units_per_s(result["step_ends"], result["units"])
                del result["tokens_per_s"]  # the same figure, rounded to 1 decimal
            result["wall_s"] = round(time.time() - started, 1)
            runs[name].append(result)
            print(
                name, repeat, {k: v for k, v in result.items() if k not in ("step_ends", "units")}, flush=True
            )
    results = {name: median_run(found) for name, found in runs.items()}
    machine = f"{platform.machine()}, {os.cpu_count()} CPU threads, {args.threads} torch thread(s) per runner"
    load = f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after (shared machine)"
    (workdir / "bench_tasks.json").write_text(
        json.dumps(
            {
                "task": args.task,
                "machine": machine,
                "load": load,
                "versions": versions(),
                "steps": args.steps,
                "repeats": args.repeats,
                "results": results,
            },
            indent=2,
        )  # fmt: skip
    )
    (workdir / "bench_tasks.md").write_text(table(args.task, results, machine, load) + "\n")
    print(table(args.task, results, machine, load))


if __name__ == "__main__":
    main()
