"""Every worked example of the reference docs (conf/experiment) composes, passes the checks, and trains on the tiny model.

The examples name 7B-70B hub models, hub datasets and GPUs; here the model becomes the shipped tiny
one, the data the shipped sample and the device the CPU, by overrides: exactly what a user without
a GPU types to try one.
"""

from __future__ import annotations

import json

import pytest
from conftest import CONF_DIR, compose

from hydratune import rules, schema
from hydratune.config import to_plain
from hydratune.tasks.registry import task_class

# Rules about the machine, not the config: a GPU example breaks them on this CPU and nowhere else.
HARDWARE_RULES = {
    "cuda_only_optimizer",
    "flash_attention_needs_cuda",
    "deepspeed_installed",
    "sharded_strategy_needs_cuda",
}

# Cheap: 2 optimizer steps of 2 samples from 5% of the rows, no baseline evaluation, callbacks or loggers.
CHEAP = [
    "++dataset.sources.0.fraction=0.05",
    "trainer.max_steps=2",
    "trainer.accumulate_grad_batches=1",
    "trainer.precision=32-true",  # bf16 autocast is several times slower on most CPUs
    "dataset.batch_size=2",
    "eval_before_training=false",
    "callbacks=none",
    "logger=none",
]
# What stands in for the hub model, the hub dataset and the GPU, per example.
OFFLINE = ["model=tiny_llama", "dataset=sample", "trainer=cpu"]
SWAPS: dict[str, list[str]] = {
    "alpaca_lora": ["dataset=sample"],
    "custom_dataset": [],  # local data already
    # The text format needs a `text` column; Alpaca has one, the sample gets one from a map op.
    "qlora_large": [
        *OFFLINE,
        'dataset.ops=[{map:{text:"{instruction} -> {output}"}}]',
        "dataset.max_seq_length=128",
    ],
    "simplefoundation_default": OFFLINE,
    "llamafarm_minimal_memory": OFFLINE,
    "llamafarm_max_performance": [*OFFLINE, "model.attn_implementation=sdpa"],
}


def _machine_independent_violations(cfg: dict) -> list[str]:
    return [
        rule.name
        for rule in (*rules.RULES, *task_class(cfg["task"]).rules)
        if rule.name not in HARDWARE_RULES and rule.applies(cfg)
    ]


# The reference docs' worked examples (docs/options.md lists them); other experiments have their own tests.
EXPERIMENTS = sorted(SWAPS)


def test_every_worked_example_exists():
    assert {p.stem for p in (CONF_DIR / "experiment").glob("*.yaml")} >= set(EXPERIMENTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_checks(name):
    """As written (real model, hub data, GPU): known keys, values in range, no broken combination."""
    cfg = to_plain(compose([f"experiment={name}"]))
    schema.validate(cfg, CONF_DIR)
    assert _machine_independent_violations(cfg) == []
    assert cfg["name"] == name  # each example names its run folder


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_offline_passes_preflight(name):
    from hydratune.preflight import check_config

    check_config(to_plain(compose([f"experiment={name}", *SWAPS[name], *CHEAP])))


def test_examples_keep_the_documented_values():
    """Spot checks against the reference docs' numbers (the rest is read the same way)."""
    qlora = to_plain(compose(["experiment=qlora_large"]))
    assert qlora["quantization"]["config"]["bnb_4bit_quant_type"] == "nf4"
    assert (qlora["peft"]["config"]["r"], qlora["peft"]["config"]["lora_alpha"]) == (64, 16)
    assert qlora["dataset"]["packing"] and qlora["dataset"]["max_seq_length"] == 2048
    assert qlora["optimizer"]["_target_"] == "bitsandbytes.optim.AdamW8bit"
    assert qlora["trainer"]["accumulate_grad_batches"] == 16
    minimal = to_plain(compose(["experiment=llamafarm_minimal_memory"]))
    assert minimal["optimizer"]["_target_"] == "bitsandbytes.optim.PagedAdamW8bit"
    assert minimal["trainer"]["accelerator"] == "gpu" and minimal["trainer"]["precision"] == "16-mixed"
    custom = to_plain(compose(["experiment=custom_dataset"]))
    assert "map" in custom["dataset"]["ops"][0]
    assert custom["dataset"]["prompt_column"] == "user_input"


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_trains_two_steps_on_cpu(name, tmp_path):
    from hydratune.train import run

    cfg = compose([f"experiment={name}", *SWAPS[name], *CHEAP], output_dir=tmp_path)
    run(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["steps"] == 2
    assert metrics["train_loss"] > 0
    # LoRA and QLoRA examples all: the export is a PEFT adapter the peft library can load.
    assert metrics["artifact"] == "adapter"
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    adapter = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert adapter["r"] == to_plain(cfg.peft)["config"]["r"]
