"""trainer=fsdp end to end on 2 CPU processes (Lightning's and PyTorch's FSDP over gloo, see gloo_fsdp.py): it
trains as DDP does, exports an adapter gathered from every rank's shard that loads and merges, resumes exactly
from its sharded checkpoints, and runs classification. (On a GPU: scripts/gpu_check.sh's fsdp check.)"""

from __future__ import annotations

import csv
import json
import shutil

import pytest
import torch
from conftest import ROOT, run_cli
from safetensors.torch import load_file

from hydratune.export import load_artifact
from hydratune.generate import generate

pytestmark = pytest.mark.slow
STEPS = 6


def _train(tiny_model_dir, run_dir, *overrides: str) -> None:
    result = run_cli(
        [
            "train.py",
            f"model.pretrained_model_name_or_path={tiny_model_dir}",
            f"trainer.max_steps={STEPS}",
            f"trainer.val_check_interval={STEPS // 2}",
            "+trainer.limit_val_batches=2",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.precision=32-true",
            "trainer.gradient_clip_val=0.01",  # small enough to clip every step: FSDP's norm is over all shards
            "trainer.enable_progress_bar=false",
            "dataset.batch_size=4",
            "logger=csv",
            "trainer.log_every_n_steps=1",
            f"hydra.run.dir={run_dir}",
            *overrides,
        ],
        env={"PYTHONPATH": str(ROOT / "tests")},
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]


FSDP = ["trainer=fsdp", "trainer.strategy._target_=gloo_fsdp.GlooFSDP"]


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    _train(tiny_model_dir, root / "fsdp", *FSDP, "export.merge=true")
    _train(tiny_model_dir, root / "ddp", "trainer=ddp", "export.merge=false", "eval_before_training=false")
    return root


def test_fsdp_trains_as_ddp_does_and_exports_the_whole_adapter(runs):
    fsdp, ddp = (
        load_file(runs / "fsdp/adapter/adapter_model.safetensors"),
        load_file(runs / "ddp/adapter/adapter_model.safetensors"),
    )
    assert fsdp.keys() == ddp.keys() and any("lora_B" in k for k in fsdp)
    for key, value in fsdp.items():
        assert value.shape == ddp[key].shape, key  # whole tensors, not one rank's shard
        assert torch.allclose(value, ddp[key], atol=1e-5), key
    assert any(v.abs().sum() > 0 for k, v in fsdp.items() if "lora_B" in k)  # trained (LoRA B starts at 0)
    fsdp_metrics = json.loads((runs / "fsdp/metrics.json").read_text())
    ddp_metrics = json.loads((runs / "ddp/metrics.json").read_text())
    assert fsdp_metrics["val_loss"] == pytest.approx(ddp_metrics["val_loss"], abs=1e-4)


def _grad_norms(run_dir) -> list[float]:
    rows = csv.DictReader((run_dir / "csv/metrics.csv").read_text().splitlines())
    return [float(row["train/grad_norm"]) for row in rows if row.get("train/grad_norm")]


def test_fsdp_logs_the_gradient_norm_of_the_whole_model(runs):
    # Each rank holds half of every gradient: a norm of its own shard would come out ~1/sqrt(2) of DDP's.
    fsdp, ddp = _grad_norms(runs / "fsdp"), _grad_norms(runs / "ddp")
    assert len(fsdp) == len(ddp) == STEPS
    assert fsdp == pytest.approx(ddp, rel=1e-4)


def test_fsdp_export_loads_generates_and_merges(runs):
    model, loaded = load_artifact(runs / "fsdp/adapter")
    assert isinstance(generate(model, loaded, ["abc"], max_new_tokens=4)[0], str)
    metrics = json.loads((runs / "fsdp/metrics.json").read_text())
    assert metrics["merge_max_abs_logit_diff"] <= 1e-3
    log = (runs / "fsdp/train.log").read_text()
    assert "eval_before_training: skipped under FSDP" in log and "samples: not generated" in log


def test_fsdp_resumes_exactly_from_its_sharded_checkpoint(runs, tiny_model_dir, tmp_path):
    middle = runs / "fsdp/checkpoints" / f"step={STEPS // 2:06d}.ckpt"
    assert (middle / "meta.pt").is_file()  # a folder of shards
    shutil.copytree(middle, tmp_path / "resumed/checkpoints/last.ckpt")  # as if stopped there
    _train(tiny_model_dir, tmp_path / "resumed", *FSDP, "export.merge=false", "resume=auto")
    resumed = load_file(tmp_path / "resumed/adapter/adapter_model.safetensors")
    straight = load_file(runs / "fsdp/adapter/adapter_model.safetensors")
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)


def test_fsdp_classification_reports_its_last_evaluation(tiny_model_dir, tmp_path):
    _train(tiny_model_dir, tmp_path / "cls", *FSDP, "task=classification", "dataset=topics")
    metrics = json.loads((tmp_path / "cls/metrics.json").read_text())
    assert 0 <= metrics["val_acc"] <= 1 and "confusion_matrix" in metrics and metrics["artifact"] == "adapter"
    assert (tmp_path / "cls/confusion_matrix.png").is_file()
