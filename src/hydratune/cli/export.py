"""`hydratune export RUN_DIR [--ckpt last|best|FILE] [--merge] [--out DIR]`: a run's checkpoint as the Hugging Face
folders a finished run exports (adapter/ or model/, merged/ with --merge, each with its card), without training.
A stopped run (checkpoints/ only) becomes usable by `generate`, `predict` and `score` as it is; a finished one's
earlier or best checkpoint goes to another folder. Imports nothing heavy until it runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from hydratune.errors import UserError


def add_parser(sub) -> None:
    """Register the `export` subcommand on an argparse subparsers object."""
    parser = sub.add_parser("export", help="write a checkpoint as adapter/ or model/ (a stopped run too)")
    parser.add_argument("run_dir", help="a run directory of python train.py (holds .hydra/ and checkpoints/)")
    parser.add_argument(
        "--ckpt",
        default="last",
        help="last (the newest checkpoint, as resume=auto picks it; default), best (checkpoints/best.ckpt), "
        "a step the run kept a checkpoint of (e.g. 200), or a checkpoint file",
    )
    parser.add_argument("--merge", action="store_true", help="also fold an adapter into its base (merged/)")
    parser.add_argument(
        "--out", help="the folder to write into (default: RUN_DIR, when it has no export yet)"
    )
    parser.set_defaults(func=main)


def checkpoint_file(run_dir: Path, which: str) -> Path:
    """The checkpoint `--ckpt` names, checked to be a file this command can read."""
    from hydratune.checkpoint import BEST, LAST, STEP_FILE, resume_file

    if which == "last":
        found = resume_file(run_dir)
        if found is None:
            raise UserError(
                f"{run_dir} has no checkpoint (checkpoints/{LAST}, step=N.ckpt): nothing to export"
            )
    elif which == "best":
        found = run_dir / "checkpoints" / f"{BEST}.ckpt"
        if not found.is_file():
            raise UserError(
                f"--ckpt best: {found} does not exist (a best checkpoint is kept when "
                "callbacks.model_checkpoint.metric_for_best_model is set); use --ckpt last or a file"
            )
    elif which.isdigit():  # a step the run kept a checkpoint of (callbacks.model_checkpoint.save_steps)
        folder = run_dir / "checkpoints"
        kept = {int(m[1]): p for p in folder.glob("step=*.ckpt") if (m := STEP_FILE.fullmatch(p.name))}
        if int(which) not in kept:
            steps = ", ".join(map(str, sorted(kept))) or "none"
            raise UserError(
                f"--ckpt {which}: {folder} has no checkpoint of step {which} (it has steps: {steps})"
            )
        found = kept[int(which)]
    else:
        found = Path(which)
        if not found.exists():
            raise UserError(
                f"--ckpt {which}: no such file (give last, best, a kept step or a checkpoint file)"
            )
    if found.is_dir():  # FSDP's sharded checkpoint: its shards join only under the strategy that wrote them
        raise UserError(
            f"--ckpt {found} is a sharded checkpoint (a folder of FSDP shards); export it with the training "
            f"launch: python train.py <the run's overrides> ckpt_path={found} trainer.max_steps=ITS_STEP"
        )
    return found


def target_folder(run_dir: Path, out: str | None) -> Path:
    """Where the export goes: RUN_DIR unless it already has one (the run's own, which this would replace)."""
    from hydratune.export import ARTIFACTS

    target = Path(out) if out else run_dir
    if target.exists() and not target.is_dir():
        raise UserError(f"--out {target} is a file: give a folder")
    held = [name for name in ARTIFACTS if (target / name).is_dir()]
    if held:
        where = "the run's own export" if target == run_dir else "an export"
        raise UserError(
            f"{target} already has {held[0]}/ ({where}); export this checkpoint into another folder with --out DIR"
        )
    return target


def saved_run_config(run_dir: Path) -> dict:
    """The run's .hydra/config.yaml, resolved as at its launch: its output folder is RUN_DIR, and paths under the
    project folder are this one's (HYDRATUNE_ROOT, as `python train.py` sets it)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir}: no .hydra/config.yaml; give a run directory of python train.py")
    cfg = OmegaConf.load(path)
    cfg.paths.output_dir = str(run_dir)
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:
        raise UserError(f"{path}: {err.msg.splitlines()[0]} (key {err.full_key})") from None


def check_same_run(checkpoint: Path, cfg: dict, run_dir: Path) -> None:
    """A checkpoint file of another task's or adapter method's run would be read into this run's model: refused."""
    from hydratune.checkpoint import checkpoint_identity, task_id

    identity = checkpoint_identity(checkpoint) or {}
    ours = {"task": task_id(cfg.get("task") or {}), "peft": (cfg.get("peft") or {}).get("method", "none")}
    for key, now in ours.items():
        then = identity.get(key)
        if then is not None and then != now:
            raise UserError(
                f"--ckpt {checkpoint}: a checkpoint of a {key}={then} run, and {run_dir} is a {key}={now} run; "
                "give the folder of the run that wrote it"
            )


def main(args: argparse.Namespace) -> int:
    import json

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} does not exist (give the folder of a run: outputs/<name>/<date>)")
    from hydratune.locks import training

    if training(run_dir):
        raise UserError(f"{run_dir} is still training; its exports come at the end (or stop it, then export)")
    cfg = saved_run_config(run_dir)
    checkpoint = checkpoint_file(run_dir, args.ckpt)
    target = target_folder(run_dir, args.out)
    check_same_run(checkpoint, cfg, run_dir)
    from hydratune.card import cards
    from hydratune.checkpoint import load_trainable_weights
    from hydratune.config import read_json
    from hydratune.export import export_artifact
    from hydratune.model import load_tokenizer
    from hydratune.tasks.registry import get_task
    from hydratune.train import merge_export

    tokenizer = load_tokenizer(cfg["model"], cfg["model"].get("token"))
    task = get_task(cfg["task"])
    module = task.module(cfg, task.datamodule(tokenizer, cfg), tokenizer)
    module.configure_model()
    step = load_trainable_weights(module, checkpoint)
    stops = getattr(module, "stop_token_ids", None)  # GRPO: the stop strings that ended its samples
    target.mkdir(parents=True, exist_ok=True)
    artifact = export_artifact(module.model, tokenizer, target, stops(tokenizer) if stops else ())
    metrics = {"steps": step, "exported_step": step, "artifact": artifact.name, "checkpoint": str(checkpoint)}
    launched = read_json(run_dir / "run.json") or {}  # what the launch ran with, for the card
    metrics["effective_batch_size"] = launched.get("effective_batch_size")
    metrics["precision"] = (launched.get("device") or {}).get("precision")
    if args.merge and artifact.name == "adapter":
        metrics.update(merge_export(artifact, target, cfg))
    elif args.merge:
        print(
            f"hydratune export: note: {artifact.name}/ is already a whole model; --merge has nothing to fold"
        )
    cards(target, cfg, metrics, task, tokenizer, logged_in=run_dir)
    if target != run_dir:  # what was exported, for the folder's own reader; a run's metrics.json is its run's
        (target / "export.json").write_text(json.dumps(metrics | {"run_dir": str(run_dir)}, indent=2) + "\n")
    written = ", ".join(f"{name}/" for name in ("adapter", "model", "merged") if (target / name).is_dir())
    print(f"exported step {step} of {run_dir} ({checkpoint.name}) to {target}: {written}")
    return 0
