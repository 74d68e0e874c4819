"""Shared fixtures: a tiny random-init model saved like a hub checkpoint, hubs forced offline."""

from __future__ import annotations

import os

# No test may reach a hub: set before huggingface_hub reads them at its import, which Lightning's import does (set
# after it, the hub stayed online for every test in this process, and a missing model waited ~50 s on the network).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import shutil  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import lightning as L  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from hydratune.config import to_plain  # noqa: E402

# trainer.precision: auto is fp32 in every test run, whatever the CPU (hydratune.precision); the tests of
# the choice itself set the probe's answer. `HYDRATUNE_CPU_BF16=1 pytest ...` runs them in bf16-mixed.
os.environ.setdefault("HYDRATUNE_CPU_BF16", "0")

# `make test` runs the suite in pytest-xdist workers: each one (and every run it starts) gets its share of the
# cores, else two workers with a torch thread per core each spend their time waiting on each other.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1 and "OMP_NUM_THREADS" not in os.environ:
    _cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    os.environ["OMP_NUM_THREADS"] = str(max(1, _cpus // _WORKERS))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

ROOT = Path(__file__).resolve().parents[1]
os.environ["HYDRATUNE_ROOT"] = str(ROOT)
CONF_DIR = ROOT / "conf"


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A copy of conf/ for `hydratune import` to write into, so the checkout's conf/experiment stays as it is."""
    from hydratune import schema

    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    monkeypatch.setenv("HYDRATUNE_ROOT", str(tmp_path))
    schema.known_keys.cache_clear()
    return tmp_path


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
def _session_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture()
def tokenizer(_session_tokenizer):
    """A copy per test: one that sets a chat template or a padding side leaves the next test's alone (the chat
    tests failed after a GRPO test had set chatml on the shared one)."""
    import copy

    return copy.deepcopy(_session_tokenizer)


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


# Helpers for in-process training on the tiny model.
def make_module(
    tiny_model_dir,
    optimizer: str = "adamw_torch",
    scheduler: str = "constant",
    peft: str = "lora",
    overrides: list[str] | None = None,
):
    """An SFTModule for the tiny model, configured as `python train.py` with these options would."""
    cfg = compose([f"optimizer={optimizer}", f"scheduler={scheduler}", f"peft={peft}", *(overrides or [])])
    model_cfg = to_plain(cfg.model)
    model_cfg["pretrained_model_name_or_path"] = str(tiny_model_dir)
    model_cfg.pop("token")
    return _sft_module()(
        model=model_cfg,
        peft=to_plain(cfg.peft),
        optimizer=to_plain(cfg.optimizer),
        scheduler=to_plain(cfg.scheduler),
        quantization=to_plain(cfg.quantization),
    )


def batch_samples(tokenizer, n: int = 8, seed: int = 0) -> list[dict]:
    """Samples of unequal length with only the second half trained."""
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(n):
        length = 6 + 3 * i
        ids = [tokenizer.bos_token_id] + torch.randint(4, 60, (length,), generator=g).tolist()
        labels = [-100] * (length // 2 + 1) + ids[length // 2 + 1 :]
        samples.append({"input_ids": ids, "labels": labels})
    return samples


class Repeat(torch.utils.data.IterableDataset):
    """The same collated batch forever: overfitting it must lower the loss."""

    def __init__(self, batch):
        self.batch = batch

    def __iter__(self):
        while True:
            yield self.batch


def fit_repeated(module, batch, steps: int, **trainer_kwargs):
    """Train `steps` steps on one batch (on the CPU unless `accelerator=` says otherwise); the losses."""
    from hydratune.callbacks import History

    history = History()
    loader = torch.utils.data.DataLoader(Repeat(batch), batch_size=None)
    trainer = L.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[history, *trainer_kwargs.pop("callbacks", [])],
        **({"accelerator": "cpu"} | trainer_kwargs),
    )
    trainer.fit(module, train_dataloaders=loader)
    return [loss for _, loss in history.train_loss]


def _sft_module():
    from hydratune.tasks.sft.module import SFTModule

    return SFTModule


def pytest_collection_modifyitems(config, items):
    """`gpu` tests are skipped, not faked, where CUDA is missing."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
