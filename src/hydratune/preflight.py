"""Preflight: catch bad configs and data in seconds, before a GPU hour (or a model load) is spent.

Checks, in order: the command line composes (Hydra errors become one line with a did-you-mean),
the schema (unknown keys, ranges), the cross-group rules, the run name, the output directory, and
(for `hydratune preflight`) the data: files parse, rows format and tokenize, how many samples keep
a trained token, how many are truncated. No model weights are loaded.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
from pathlib import Path

from hydratune import rules, schema
from hydratune.errors import UserError

# Flags after which Hydra does not run the task, or runs many (multirun sweeps are checked per job).
SKIP_FLAGS = {
    "--help",
    "-h",
    "--hydra-help",
    "--cfg",
    "-c",
    "--info",
    "-i",
    "--shell-completion",
    "-sc",
    "--multirun",
    "-m",
    "--version",
    "--resolve",
    "--package",
    "-p",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--experimental-rerun",
}
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=,+-]*$")


def project_root() -> Path:
    return Path(os.environ.get("HYDRATUNE_ROOT") or Path.cwd())


def conf_dir() -> Path:
    return project_root() / "conf"


def _options(group: str) -> list[str]:
    folder = conf_dir() / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def _explain_hydra_error(err: Exception, overrides: list[str]) -> UserError:
    """One line from Hydra's multi-line composition errors."""
    text = str(err)
    missing = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if missing:
        group, option = missing.groups()
        options = _options(group)
        guess = difflib.get_close_matches(option, options, n=1)
        hint = f"did you mean {group}={guess[0]}? " if guess else ""
        return UserError(f"{group}={option}: no such option; {hint}options: {', '.join(options)}")
    not_in_struct = re.search(r"Could not override '([^']+)'", text) or re.search(
        r"Key '([^']+)' is not in struct", text
    )
    if not_in_struct:
        key = not_in_struct.group(1)
        known = schema.known_keys(str(conf_dir()))
        if key in known:
            return UserError(f"{key} is not set by the chosen options; add it with +{key}=VALUE")
        err = schema.unknown_key_error(key, known)
        return UserError(f"{err} (a new key needs a leading +, e.g. +{key}=VALUE)")
    first = next((line.strip() for line in text.splitlines() if line.strip()), text)
    return UserError(f"cannot compose the config from {' '.join(overrides) or 'the defaults'}: {first}")


def compose(overrides: list[str], output_dir: str | None = None):
    """The composed config (as `python train.py OVERRIDES` would build it), or a one-line UserError."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    extra = [f"paths.output_dir={output_dir}"] if output_dir else []
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            return hydra_compose(config_name="train", overrides=[*overrides, *extra])
    except (HydraException, OmegaConfBaseException) as err:
        raise _explain_hydra_error(err, overrides) from err


def check_config(cfg: dict) -> None:
    """Schema, cross-group rules and the run name, on the plain-dict config."""
    schema.validate(cfg, conf_dir())
    rules.check(cfg)
    name = str(cfg.get("name", ""))
    if not SAFE_NAME.match(name) or ".." in name:
        raise UserError(f"name={name!r}: a run name must be letters, digits and _.-=,+ with no '..' or '/'")


def check_output_dir(path: str | Path, needed_bytes: int = 0) -> None:
    """The run directory can be created and written, with room for the checkpoints."""
    path = Path(path)
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise UserError(f"paths.output_dir: {probe} is not writable; choose another hydra.run.dir")
    free = shutil.disk_usage(probe).free
    if needed_bytes and free < needed_bytes:
        raise UserError(
            f"paths.output_dir: {free / 1e9:.1f} GB free at {probe}, checkpoints need ~{needed_bytes / 1e9:.1f} GB; "
            "lower callbacks.model_checkpoint.save_total_limit or free disk"
        )


def check_command_line(argv: list[str]) -> None:
    """Before Hydra starts a run from `argv`: compose and check, so mistakes cost seconds, not a run dir."""
    if any(arg.split("=")[0] in SKIP_FLAGS for arg in argv):
        return
    overrides = [arg for arg in argv if not arg.startswith("-")]
    run_dir = next((a.split("=", 1)[1] for a in overrides if a.startswith("hydra.run.dir=")), None)
    resuming = any(a.startswith(("resume=", "ckpt_path=")) for a in overrides)
    if run_dir and not resuming and (Path(run_dir) / "metrics.json").exists():
        raise UserError(
            f"hydra.run.dir={run_dir} holds a finished run; choose a new directory "
            "(or resume with ckpt_path=...); nothing was written"
        )
    cfg = compose([o for o in overrides if not o.startswith(("hydra.", "hydra/"))], output_dir="/tmp")
    check_config(_plain(cfg))


def _plain(cfg) -> dict:
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception as err:  # an interpolation that cannot resolve
        raise UserError(f"config: {str(err).splitlines()[0]}") from err


def data_report(cfg: dict, sample_rows: int = 3) -> dict:
    """Load the tokenizer (not the model) and prepare the data; counts that say whether it will train."""
    from hydratune.data.datamodule import SFTDataModule
    from hydratune.model import load_tokenizer

    model_cfg = dict(cfg["model"])
    token = model_cfg.pop("token", None)
    tokenizer = load_tokenizer(model_cfg, token)
    report: dict = {
        "pad_token": tokenizer.pad_token,
        "eos_token": tokenizer.eos_token,
        "pad_is_eos": tokenizer.pad_token_id == tokenizer.eos_token_id,
    }
    if cfg.get("task", {}).get("name", "sft") != "sft":
        return report
    datamodule = SFTDataModule(
        tokenizer, cfg["dataset"], seed=cfg.get("seed", 0), cache_dir=cfg["paths"].get("cache_dir")
    )
    datamodule.setup("fit")
    # Per split: rows, samples kept, dropped (no trained token / too long), truncation rate,
    # trained-token fraction, packing efficiency (see hydratune.data.datamodule.tokenize_split).
    report |= {f"{split}": stats for split, stats in datamodule.stats.items()}
    samples = datamodule.train_samples
    report["examples"] = [
        tokenizer.decode(samples[i]["input_ids"]) for i in range(min(sample_rows, len(samples)))
    ]
    return report


def run_preflight(overrides: list[str], with_data: bool = True) -> dict:
    """Everything `hydratune preflight` checks; raises UserError at the first problem."""
    import time

    started = time.time()
    cfg = compose(overrides, output_dir=str(project_root() / "outputs" / "preflight"))
    plain = _plain(cfg)
    check_config(plain)
    check_output_dir(plain["paths"]["log_dir"])
    report = {"config": "ok", "rules": f"{len(rules.RULES)} checked"}
    if with_data:
        report |= data_report(plain)
    report["seconds"] = round(time.time() - started, 2)
    return report
