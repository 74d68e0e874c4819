"""Data-parallel training: 2 CPU processes (gloo) train exactly as 1 process with the same global batch."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_cli
from safetensors.torch import load_file

from hydratune.data.sampler import WindowBatchSampler


def test_window_sampler_shards_global_batches_by_rank():
    tokens = [(i % 7) + 1 for i in range(40)]
    one = list(WindowBatchSampler(tokens, batch_size=8, accumulate=2, seed=3))
    ranks = [list(WindowBatchSampler(tokens, 4, 2, seed=3, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(one) == 5
    for k, batch in enumerate(one):
        # The ranks' slices make up the 1-process batch, in order ...
        assert [i for i, _ in ranks[0][k] + ranks[1][k]] == [i for i, _ in batch]
        # ... and each rank divides by half the window's trained tokens (DDP averages the gradients).
        assert {w for _, w in ranks[0][k] + ranks[1][k]} == {batch[0][1] / 2}


def _run(tiny_model_dir, *overrides: str, multirun: bool = False, one_val_batch: bool = True):
    result = run_cli(
        [
            "train.py",
            *(["-m"] if multirun else []),
            f"model.pretrained_model_name_or_path={tiny_model_dir}",
            "trainer.max_steps=3",
            "trainer.val_check_interval=3",
            *(["+trainer.limit_val_batches=1"] if one_val_batch else []),
            "trainer.enable_progress_bar=false",
            "trainer.accelerator=cpu",
            "eval_before_training=false",
            "logger=csv",
            *overrides,
        ]
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Lightning's advice to log val metrics with sync_dist: the tasks reduce them over the ranks themselves (R7)
    assert "sync_dist" not in result.stderr + result.stdout
    return result


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tiny_model_dir, tmp_path):
    """2 ranks x 4 rows train as 1 process x 8 rows (the same samples, normalised per optimizer step), and
    validation is token-weighted over the ranks: each rank validates its own share of the rows (different
    token counts), and the logged val/loss is the one-process value (NLL and token counts summed over the
    ranks, not per-rank means averaged), before training and after."""
    from hydratune.data.sampler import eval_loader

    class World:  # the two ranks' shares of 5 rows of different lengths
        def __init__(self, rank):
            self.world_size, self.global_rank = 2, rank

    shares = [list(eval_loader(list(range(5)), {"batch_size": 2}, list, World(r)).sampler) for r in (0, 1)]
    assert shares == [[0, 2, 4], [1, 3]]
    # The whole validation set (60 rows, batches of 7): under DDP each rank validates its own share.
    common = ["eval_before_training=true", "dataset.eval_batch_size=7"]
    # The default trainer with 2 devices (Lightning's own DDP; it crashed on the batch sampler before), the
    # other tests here take trainer=ddp.
    _run(tiny_model_dir, "trainer.devices=2", "dataset.batch_size=4", *common,
         f"hydra.run.dir={tmp_path / 'ddp'}", one_val_batch=False)  # fmt: skip
    _run(
        tiny_model_dir,
        "dataset.batch_size=8",
        *common,
        f"hydra.run.dir={tmp_path / 'one'}",
        one_val_batch=False,
    )
    ddp, one = tmp_path / "ddp", tmp_path / "one"
    # Rank 0 prepared the data before rank 1 started: rank 1 read its prepared rows.
    rank1 = (ddp / "train_ddp_process_1.log").read_text()
    assert "read from the prepared rows" in rank1 and "tokenized" not in rank1
    ddp_metrics = json.loads((ddp / "metrics.json").read_text())
    one_metrics = json.loads((one / "metrics.json").read_text())
    assert ddp_metrics["steps"] == one_metrics["steps"] == 3
    # Before training the weights are the same, so the losses must agree to float precision.
    assert ddp_metrics["initial_val_loss"] == pytest.approx(one_metrics["initial_val_loss"], rel=1e-6)
    assert ddp_metrics["val_loss"] == pytest.approx(one_metrics["val_loss"], abs=1e-5)
    # The trained LoRA weights agree (the same samples and the same normalisation per optimizer step).
    a = load_file(ddp / "adapter" / "adapter_model.safetensors")
    b = load_file(one / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert any(not torch.all(t == 0) for n, t in a.items() if "lora_B" in n)  # training moved the weights
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.slow
def test_multirun_sweep_of_ddp_jobs(tiny_model_dir, tmp_path):
    """`-m` with trainer=ddp: each job's extra rank runs that job alone, not the sweep again."""
    from test_sweep import assert_two_job_summary, sweep_args

    sweep_dir = tmp_path / "sweep"
    args = sweep_args(tiny_model_dir, sweep_dir, "trainer=ddp", "trainer.devices=2", "dataset.batch_size=4")
    args = [a for a in args if a != "dataset.batch_size=8"]  # given once: a key given twice is warned of
    result = run_cli([*args, "trainer.accelerator=cpu"], timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_two_job_summary(sweep_dir)
    # The extra ranks ran their job in its folder, as plain runs: no second sweep, no extra job folders.
    assert result.stdout.count("Launching 2 jobs") + result.stderr.count("Launching 2 jobs") == 1
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0", "1"]
    for job in ("0", "1"):
        log = (sweep_dir / job / "train.log").read_text()
        assert "effective batch size: 8 (4 per device x 1 accumulation x 2 devices)" in log


@pytest.mark.slow
def test_two_process_dpo_matches_one_process(tiny_model_dir, tmp_path):
    """task=dpo under DDP: each rank's loss is divided by the pairs of the whole global batch, so 2 ranks x 4
    pairs take the same step as 1 process x 8 pairs; the validation metrics are summed over the ranks."""
    common = [
        "task=dpo",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "eval_generations.num_prompts=0",
    ]
    _run(tiny_model_dir, *common, "trainer=ddp", "trainer.devices=2", "dataset.batch_size=4",
         f"hydra.run.dir={tmp_path / 'ddp'}", one_val_batch=False)  # fmt: skip
    _run(
        tiny_model_dir,
        *common,
        "dataset.batch_size=8",
        f"hydra.run.dir={tmp_path / 'one'}",
        one_val_batch=False,
    )
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    for key in ("val_loss", "val_accuracy", "val_margin"):
        assert ddp[key] == pytest.approx(one[key], abs=1e-5), key
    a = load_file(tmp_path / "ddp" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "one" / "adapter" / "adapter_model.safetensors")
    assert any(not torch.all(t == 0) for n, t in a.items() if "lora_B" in n)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4, msg=name)
