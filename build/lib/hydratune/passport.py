"""run.json: what a run was made of, to reproduce or compare it. No secrets: the config is not copied
(.hydra/config.yaml has it, redacted), and nothing is read from the environment but versions."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "hydratune",
    "torch",
    "transformers",
    "peft",
    "lightning",
    "hydra-core",
    "datasets",
    "tokenizers",
    "accelerate",
    "bitsandbytes",
)


def git_state(folder: str | Path) -> dict:
    """Commit and dirty flag of the checkout at `folder`; empty when it is not a git checkout."""

    def git(*args: str) -> str:
        # --no-optional-locks: a read that never rewrites the index, so concurrent git commands are safe.
        return subprocess.run(
            ["git", "--no-optional-locks", "-C", str(folder), *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()

    try:
        return {
            "commit": git("rev-parse", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        }
    except (OSError, subprocess.SubprocessError):
        return {}


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def tokenizer_hash(tokenizer) -> str:
    """sha256 of the tokenizer's vocabulary, merges and special tokens (what decides the token ids)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    text += json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def dataset_fingerprint(datamodule) -> dict:
    """The `datasets` fingerprints (a hash of the source files and every transform) and sizes of the splits."""
    out = {}
    for split in ("train", "val"):
        data = getattr(datamodule, f"{split}_dataset", None)
        if data is not None:
            out[split] = {"fingerprint": getattr(data, "_fingerprint", None), "rows": len(data)}
    return out


def device_info(trainer) -> dict:
    import torch

    info = {
        "accelerator": type(trainer.accelerator).__name__,
        "devices": trainer.num_devices,
        "precision": str(trainer.precision),
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def write_passport(
    path: str | Path,
    cfg: dict,
    tokenizer,
    datamodule,
    trainer,
    effective_batch_size: int,
    resumed_from: str | None = None,
) -> dict:
    """Write run.json. A resumed run keeps the first launch's record and appends its own under `resumes`."""
    path = Path(path)
    datamodule.setup("fit")  # idempotent; the fingerprints exist only once the data is prepared
    record = {
        "name": cfg.get("name"),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git": git_state(cfg["paths"]["root_dir"]),
        "packages": package_versions(),
        "dataset": dataset_fingerprint(datamodule),
        "tokenizer_sha256": tokenizer_hash(tokenizer),
        "seed": cfg.get("seed"),
        "effective_batch_size": effective_batch_size,
        "device": device_info(trainer),
    }
    if resumed_from and path.is_file():
        first = json.loads(path.read_text())
        first.setdefault("resumes", []).append(record | {"checkpoint": resumed_from})
        record = first
    path.write_text(json.dumps(record, indent=2) + "\n")
    return record
