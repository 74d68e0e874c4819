"""`hydratune import FILE [--name NAME] [--dataset-info PATH] [--stage STAGE]`: another trainer's config as
conf/experiment/NAME.yaml."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

# TRL's trainers (`trl sft|dpo|kto|reward|grpo`), and the alignment-handbook's ORPO recipes.
STAGES = ("sft", "dpo", "kto", "reward", "grpo", "orpo")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "import",
        help="turn a model-compose, SimpleFoundation, LlamaFarm, torchtune, LLaMA-Factory, Axolotl, litgpt or TRL "
        "config into an experiment",
    )
    p.add_argument("file", help="the config file to import")
    p.add_argument("--name", help="the experiment name (default: the file name); run it with experiment=NAME")
    p.add_argument(
        "--dataset-info",
        metavar="PATH",
        help="LLaMA-Factory's dataset_info.json: its dataset names become dataset.sources",
    )
    p.add_argument(
        "--stage",
        choices=STAGES,
        help="the trainer a TRL file was written for (`trl dpo --config FILE`: --stage dpo); a file that "
        "names its own stage (LLaMA-Factory, Axolotl) must agree",
    )
    p.add_argument("--force", action="store_true", help="overwrite an existing experiment of that name")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from hydratune import schema
    from hydratune.config_import import write_experiment
    from hydratune.errors import UserError
    from hydratune.importer import ImportContext
    from hydratune.preflight import _plain, compose, conf_dir

    name = args.name or re.sub(r"[^A-Za-z0-9_-]+", "_", Path(args.file).stem).strip("_-")
    context = ImportContext(args.dataset_info, args.stage)
    target = conf_dir() / "experiment" / f"{name}.yaml"
    # --force: what is there now is put back if the import does not check
    before = target.read_bytes() if target.is_file() else None
    out, fmt, unmapped = write_experiment(args.file, name, conf_dir(), force=args.force, context=context)
    try:  # the overlay must compose and name only known keys, or it is not written at all
        schema.validate(_plain(compose([f"experiment={name}"], output_dir="/tmp")), conf_dir())
    except UserError as err:
        if before is None:
            out.unlink()
        else:  # the experiment it would have replaced (a shipped one too) stays as it was (review K2)
            out.write_bytes(before)
        raise UserError(f"the imported config does not check ({err}); nothing was written") from err
    for line in unmapped:
        print(f"not mapped: {line}", file=sys.stderr)
    for line in context.notes:
        print(f"note: {line}", file=sys.stderr)
    print(
        f"read {args.file} as {fmt}; wrote {out} ({len(unmapped)} key(s) not mapped); "
        f"train with: python train.py experiment={name}"
    )
    return 0
