"""The console of a run holds hydratune's lines and no third-party noise (hydratune.console), whatever CPU
runs it; HYDRATUNE_DEBUG=1 shows everything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

# What the libraries print that a user cannot act on (issue 16's first run on a pipe).
NOISE = [
    "Failed to load CPU gemm_4bit_forward",  # bitsandbytes on AVX512-BF16 CPUs
    "is_gradient_checkpointing",  # transformers FutureWarning (peft reads the old property)
    "LeafSpec",  # torch's pytree deprecation, through Lightning
    "srun",  # Lightning, wherever SLURM is installed
    "litlogger",  # Lightning's advertisement
    "exists and is not empty",  # Lightning's ModelCheckpoint on resume=auto
    "dirpath has changed",  # and on ckpt_path= into a new run folder
    "Failed to load JSON",  # datasets' JSON reader, before it raises (hydratune names the file and line)
    "smaller than the logging interval",  # Lightning, an epoch shorter than log_every_n_steps
    "AdamW is deprecated",  # galore_torch's GaLoreAdamW (optimizer=galore_adamw)
    "autocast",  # grokadamw's step, on a CPU
    "Paged optimizers are not supported on CPU",  # bitsandbytes' paged optimizers, on a CPU
    "Warning",
]

# Each noisy import and call that the console must silence; prints "done" at the end.
NOISY = """
from hydratune.console import quiet_console
quiet_console()
import bitsandbytes, datasets, lightning, peft, torch, transformers
import hydratune.tasks.sft.module
from lightning.fabric.plugins.environments import SLURMEnvironment
from torch.utils._pytree import LeafSpec
from transformers import PreTrainedModel
class Model(torch.nn.Linear):
    is_activation_checkpointing = False
SLURMEnvironment._validate_srun_used()
LeafSpec()
PreTrainedModel.is_gradient_checkpointing.fget(Model(1, 1))
import tempfile
from lightning.pytorch.callbacks import ModelCheckpoint
with tempfile.TemporaryDirectory() as folder:
    open(f"{folder}/last.ckpt", "w").close()
    ModelCheckpoint(dirpath=folder)._ModelCheckpoint__warn_if_dir_not_empty(folder)
    checkpoint = ModelCheckpoint(dirpath=folder)
    checkpoint.load_state_dict({"dirpath": folder + "/elsewhere", "best_model_path": ""})
    open(f"{folder}/bad.jsonl", "w").write('{"a": \\n')
    try:
        datasets.load_dataset("json", data_files=f"{folder}/bad.jsonl", cache_dir=f"{folder}/cache")
    except Exception:
        pass
from lightning.fabric.utilities.warnings import PossibleUserWarning
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
rank_zero_warn("The number of training batches (6) is smaller than the logging interval "
               "Trainer(log_every_n_steps=10).", category=PossibleUserWarning)  # as the fit loop says it
import galore_torch
galore_torch.GaLoreAdamW([torch.nn.Parameter(torch.zeros(2, 2))], lr=1e-3)
import grokadamw
from bitsandbytes.optim import PagedAdamW8bit
for optimizer_class in (grokadamw.GrokAdamW, PagedAdamW8bit):  # one step each, on the CPU
    weight = torch.nn.Parameter(torch.ones(64, 64))
    weight.grad = torch.ones(64, 64)
    optimizer_class([weight], lr=1e-3).step()
print("done")
"""


def _fake_srun(folder: Path) -> dict:
    """PATH with an `srun` on it, as on a SLURM login node."""
    (folder / "srun").write_text("#!/bin/sh\nexit 0\n")
    (folder / "srun").chmod(0o755)
    return {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


def _noisy_imports(debug: bool, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", NOISY],
        cwd=ROOT,
        env={**os.environ, **env, "HYDRATUNE_DEBUG": "1" if debug else "0"},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _cpu_has_avx512_bf16() -> bool:
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def test_noisy_libraries_print_nothing_after_quiet_console_and_everything_with_debug(tmp_path):
    env = _fake_srun(tmp_path)
    quiet = _noisy_imports(False, env)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert quiet.stdout.strip() == "done"
    assert quiet.stderr.strip() == "", quiet.stderr
    # HYDRATUNE_DEBUG=1 shows it all, and is the control: this noise is real on any CPU (srun, the
    # deprecations), and on an AVX512-BF16 CPU bitsandbytes' kernels line comes too.
    shown = _noisy_imports(True, env)
    assert shown.returncode == 0, shown.stderr[-2000:]
    for text in (
        "srun",
        "is_gradient_checkpointing",
        "LeafSpec",
        "exists and is not empty",
        "dirpath has changed",
        "Failed to load JSON",
        "smaller than the logging interval",
        "AdamW is deprecated",
        "torch.cuda.amp.autocast",  # (its "Disabling autocast" comes only where there is no CUDA)
        "Paged optimizers are not supported on CPU",
    ):
        assert text in shown.stderr, shown.stderr
    if _cpu_has_avx512_bf16():
        assert "Failed to load CPU gemm_4bit_forward" in shown.stderr


@pytest.mark.slow
def test_default_run_on_a_pipe_prints_hydratune_lines_once_and_no_library_noise(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(
        ["train.py", "trainer.max_steps=2", "trainer.val_check_interval=2", f"hydra.run.dir={run_dir}"],
        env={**_fake_srun(tmp_path), "HYDRATUNE_DEBUG": "0"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    console = result.stdout + result.stderr
    for text in NOISE:
        assert text not in console, f"{text!r} in the console:\n{console[-3000:]}"
    assert result.stderr.strip() == "", result.stderr  # on a pipe: no progress bars, no second handler
    # Lightning's lines come once, through the log (not also through its own "INFO:" handler).
    assert console.count("GPU available") == 1
    assert console.count("effective batch size") == 1
    assert "summary" in result.stdout and (run_dir / "metrics.json").is_file()


def test_a_new_classifier_head_is_one_line_and_a_lost_backbone_weight_a_warning(
    tiny_model_dir, tmp_path, capfd, caplog
):
    """transformers' LOAD REPORT table (score MISSING "newly initialized", lm_head UNEXPECTED) is what every
    classifier on a causal checkpoint must see: hydratune says it in one line. A backbone weight that the
    checkpoint lacks is not expected, and stays loud."""
    import logging
    import shutil

    from safetensors.torch import load_file, save_file

    from hydratune.model import classifier_head, load_model

    with caplog.at_level(logging.INFO, logger="hydratune.model"):
        model = load_model(
            {"pretrained_model_name_or_path": str(tiny_model_dir)}, head=classifier_head(list("abc"), 0)
        )
    assert model.config.num_labels == 3
    assert "LOAD REPORT" not in capfd.readouterr().err
    assert "classifier head score: 3 label(s), randomly initialised" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_model_dir, damaged)
    weights = load_file(damaged / "model.safetensors")
    del weights["model.norm.weight"]
    save_file(weights, damaged / "model.safetensors", metadata={"format": "pt"})
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hydratune.model"):
        load_model({"pretrained_model_name_or_path": str(damaged)}, head=classifier_head(list("ab"), 0))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        len(warnings) == 1
        and "lacks 1 backbone weight(s), which start random: model.norm.weight" in warnings[0]
    )
