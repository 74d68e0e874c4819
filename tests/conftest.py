"""Shared fixtures: a tiny random-init model saved like a hub checkpoint, hubs forced offline."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# No test may reach a hub: set before transformers/datasets are imported anywhere.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
os.environ["HYDRATUNE_ROOT"] = str(ROOT)
CONF_DIR = ROOT / "conf"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer random-init Llama and its tokenizer in `save_pretrained` layout."""
    from hydratune.tiny import save_random_model

    return save_random_model(
        tmp_path_factory.mktemp("tiny-random"),
        seed=0,
        num_hidden_layers=2,
        hidden_size=64,
        intermediate_size=128,
    )


@pytest.fixture(scope="session")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def compose(overrides: list[str] | None = None, output_dir: str | Path = "/tmp/hydratune-test"):
    """The composed training config, as `python train.py OVERRIDES` would see it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    overrides = [f"paths.output_dir={output_dir}", *(overrides or [])]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=overrides)


def run_cli(args: list[str], cwd: Path = ROOT, env: dict | None = None, timeout: int = 600):
    """Run `python train.py ARGS` (or another script) in a subprocess; returns CompletedProcess."""
    import subprocess

    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )
