"""task=grpo through `python train.py`: the checks before anything loads, learning on the shipped prompts,
completions.jsonl, and an exact resume (the sampling is seeded by the step, the reused samples travel in the
checkpoint)."""

from __future__ import annotations

import csv
import json
import os

import pytest
import torch
from conftest import compose, run_cli
from safetensors.torch import load_file

from hydratune.config import to_plain
from hydratune.errors import UserError
from hydratune.preflight import check_config


def test_grpo_config_is_checked_before_anything_loads():
    check_config(to_plain(compose(["task=grpo"])))
    with pytest.raises(UserError, match=r"task.num_generations=8"):
        check_config(to_plain(compose(["task=grpo", "task.num_generations=1"])))
    with pytest.raises(UserError, match=r"list task.rewards or set task.reward_model"):
        check_config(to_plain(compose(["task=grpo", "task.rewards=[]"])))
    with pytest.raises(UserError, match=r"task.aggregation must be grpo or dr_grpo"):
        check_config(to_plain(compose(["task=grpo", "task.aggregation=mean"])))


def test_grpo_brings_its_prompts_and_run_length_and_the_command_line_wins():
    cfg = to_plain(compose(["task=grpo"]))
    assert cfg["dataset"]["prompt_column"] == "prompt" and cfg["trainer"]["max_steps"] == 80
    cfg = to_plain(compose(["task=grpo", "trainer.max_steps=7", "optimizer.lr=5e-4"]))
    assert cfg["trainer"]["max_steps"] == 7 and cfg["optimizer"]["lr"] == 5e-4


@pytest.mark.slow
def test_grpo_raises_held_out_exact_match(tmp_path):
    """The smaller version of the issue's criterion: 20 steps of the default task=grpo."""
    run_dir = tmp_path / "grpo"
    result = run_cli(
        ["train.py", "task=grpo", "trainer.max_steps=20", "trainer.val_check_interval=20",
         f"hydra.run.dir={run_dir}", "trainer.enable_progress_bar=false"]
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["initial_val_reward"] <= 0.3, metrics
    assert metrics["val_reward"] >= metrics["initial_val_reward"] + 0.15, metrics
    rows = [json.loads(line) for line in (run_dir / "completions.jsonl").read_text().splitlines()]
    assert {row["step"] for row in rows} == {0, 20}
    assert all({"prompt", "completion", "reward", "advantage"} <= set(row) for row in rows)
    # Per prompt, the advantages of its group sum to zero (mean-centred within the group).
    first = [row["advantage"] for row in rows if row["step"] == 0][:8]
    assert abs(sum(first)) < 1e-3
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file() and (run_dir / "loss.png").is_file()


def _grpo_command(run_dir, *extra):
    return ["train.py", "task=grpo", "trainer.max_steps=4", "trainer.val_check_interval=4",
            "callbacks.model_checkpoint.save_steps=2", "task.num_iterations=2", "task.beta=0.04",
            "dataset.batch_size=4", "task.num_generations=4", "eval_before_training=false", "logger=csv",
            "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false", "trainer.deterministic=true",
            f"hydra.run.dir={run_dir}", *extra]  # fmt: skip


@pytest.mark.slow
def test_grpo_resumes_exactly_from_a_step_checkpoint(tmp_path):
    env = {"OMP_NUM_THREADS": "1"}
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert run_cli(_grpo_command(straight), env=env).returncode == 0
    step2 = straight / "checkpoints" / "step=000002.ckpt"
    assert "grpo_samples" in torch.load(step2, weights_only=False)  # the reused batch of samples
    result = run_cli(_grpo_command(resumed, f"ckpt_path='{step2}'"), env=env)
    assert result.returncode == 0, result.stderr[-3000:]

    def losses(run_dir):
        with open(run_dir / "csv" / "metrics.csv") as f:
            return {int(r["step"]): r["train/loss"] for r in csv.DictReader(f) if r.get("train/loss")}

    after = {s: v for s, v in losses(straight).items() if s >= 2}
    assert after and {s: losses(resumed)[s] for s in after} == after
    want = load_file(straight / "adapter" / "adapter_model.safetensors")
    got = load_file(resumed / "adapter" / "adapter_model.safetensors")
    for name in want:
        assert torch.equal(want[name], got[name]), name
    assert os.path.getsize(resumed / "completions.jsonl") > 0
