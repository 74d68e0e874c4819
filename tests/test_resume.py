"""Exact resume: a run killed with SIGKILL and resumed trains exactly like one that never stopped."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT
from safetensors.torch import load_file

STEPS = 12


def write_data(folder: Path) -> tuple[Path, Path]:
    """36 train rows (9 micro-batches of 4: an accumulation window straddles each epoch end) and 4 eval rows."""
    words = [
        "alpha",
        "bravo",
        "charlie",
        "delta",
        "echo",
        "foxtrot",
        "golf",
        "hotel",
        "india",
        "juliet",
        "kilo",
        "lima",
        "mike",
        "november",
        "oscar",
        "papa",
        "quebec",
        "romeo",
        "sierra",
        "tango",
    ]
    rows = [
        {
            "instruction": "Write the word in capital letters.",
            "input": w + str(i),
            "output": (w + str(i)).upper(),
        }
        for i, w in enumerate(words * 2)
    ]
    train, val = folder / "train.jsonl", folder / "eval.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows[:36]))
    val.write_text("".join(json.dumps(r) + "\n" for r in rows[36:]))
    return train, val


def command(tiny_model_dir: Path, data: tuple[Path, Path], run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "train.py",
        f"model.pretrained_model_name_or_path={tiny_model_dir}",
        f"dataset.sources.0.data_files.train={data[0]}",
        f"dataset.sources.0.data_files.validation={data[1]}",
        "dataset.batch_size=4",
        "peft.config.lora_dropout=0.1",  # dropout draws random numbers: the RNG state must resume too
        f"trainer.max_steps={STEPS}",
        "trainer.accumulate_grad_batches=2",
        "trainer.val_check_interval=6",
        "+trainer.limit_val_batches=1",
        "trainer.log_every_n_steps=1",
        "trainer.deterministic=true",
        "trainer.enable_progress_bar=false",
        "callbacks.model_checkpoint.save_steps=5",  # step 5 ends epoch 0: resume at an epoch start
        "eval_before_training=false",
        "logger=csv",
        "optimizer.lr=1e-2",  # large steps, so that a wrong batch or state shows in the losses
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


def step_losses(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")}


# One thread: the three runs do the same float operations, and a loaded 2-core machine spins less.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tiny_model_dir, tmp_path):
    data = write_data(tmp_path)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    # The uninterrupted run and the one to kill run side by side (one thread each).
    uninterrupted = subprocess.Popen(
        command(tiny_model_dir, data, straight),
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc = subprocess.Popen(
        command(tiny_model_dir, data, killed),
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = killed / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "metrics.json").exists(), "the run finished before it could be killed"
    saved_at = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
    assert 5 <= saved_at < STEPS

    _, stderr = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, stderr[-3000:]
    run(command(tiny_model_dir, data, killed, "resume=auto"))
    expected, resumed = step_losses(straight), step_losses(killed)
    after = {step: loss for step, loss in expected.items() if step >= saved_at}
    assert len(after) >= STEPS - saved_at
    assert {step: resumed[step] for step in after} == after  # every step after the kill, bit for bit
    want, got = (
        load_file(straight / "adapter" / "adapter_model.safetensors"),
        load_file(killed / "adapter" / "adapter_model.safetensors"),
    )
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(want[name], got[name]), name
    finished, resumed_metrics = (json.loads((d / "metrics.json").read_text()) for d in (straight, killed))
    assert resumed_metrics["steps"] == STEPS
    # The loss history and token counts travel in the checkpoint: the summary covers the whole run.
    for key in ("train_loss", "val_loss", "tokens_seen", "trained_tokens"):
        assert resumed_metrics[key] == finished[key], key
    # save_steps=5 with save_total_limit=2: the newest two step files (10, and 12 at the end), last and best.
    names = sorted(p.name for p in (straight / "checkpoints").iterdir())
    assert names == ["best.ckpt", "last.ckpt", "step=000010.ckpt", "step=000012.ckpt"]
    generations = [json.loads(line) for line in (straight / "generations.jsonl").read_text().splitlines()]
    assert len(generations) == 4 * len(finished["val_curve"])  # 4 prompts (the default) per evaluation
    assert {row["step"] for row in generations} == {step for step, _ in finished["val_curve"]}
    assert all(row["prompt"] and row["reference"] for row in generations)
    # The same run folder and logger run: one metrics.csv, one run.json recording the resume.
    assert json.loads((killed / "run.json").read_text())["resumes"][0]["checkpoint"].endswith("last.ckpt")


@pytest.mark.slow
def test_a_step_checkpoint_due_with_an_evaluation_holds_its_result(tiny_model_dir, tmp_path):
    """save_steps on an evaluation step: the checkpoint is written after that evaluation, so a run resumed from
    it keeps the step's val loss (curve, best score, early stopping's count) instead of losing it; and the
    evaluation's dataloader, which draws a seed before any callback sees it, does not shift the dropout
    masks of the steps after it (the resumed run, which does not evaluate there, trains bit for bit alike)."""
    data = write_data(tmp_path)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    settings = [
        "callbacks.model_checkpoint.save_steps=6",
        "callbacks.model_checkpoint.save_total_limit=null",
        "trainer.accumulate_grad_batches=1",
    ]
    run(command(tiny_model_dir, data, straight, *settings))
    step6 = straight / "checkpoints" / "step=000006.ckpt"
    state = torch.load(step6, weights_only=False)
    assert state["global_step"] == 6
    finished = json.loads((straight / "metrics.json").read_text())
    assert 6 in [step for step, _ in finished["val_curve"]]
    run(command(tiny_model_dir, data, resumed, *settings, f'ckpt_path="{step6}"'))
    again = json.loads((resumed / "metrics.json").read_text())
    assert again["val_curve"] == finished["val_curve"]  # step 6's evaluation came with the checkpoint
    assert again["best_val_loss"] == finished["best_val_loss"]
    expected = {step: loss for step, loss in step_losses(straight).items() if step >= 6}
    assert {step: step_losses(resumed)[step] for step in expected} == expected


def test_resume_names_the_settings_a_launch_changes(tmp_path):
    """resume=auto with other values than the run it continues (whose .hydra/config.yaml keeps the first
    launch's) says which; where files go and what to resume are the resume itself, not changes."""
    from omegaconf import OmegaConf

    from hydratune.train import changed_settings

    first = {"task": {"name": "dpo", "beta": 0.1}, "trainer": {"max_steps": 40}, "paths": {"output_dir": "a"},
             "resume": None, "seed": 42}  # fmt: skip
    saved = tmp_path / "config.yaml"
    saved.write_text(OmegaConf.to_yaml(OmegaConf.create(first)))
    again = OmegaConf.create(first | {"paths": {"output_dir": "b"}, "resume": "auto"})
    assert changed_settings(saved, again) == []
    again.task.beta, again.trainer.max_steps = 0.5, 50
    assert changed_settings(saved, again) == ["task.beta=0.1 -> 0.5", "trainer.max_steps=40 -> 50"]
    assert changed_settings(tmp_path / "absent.yaml", again) == []
