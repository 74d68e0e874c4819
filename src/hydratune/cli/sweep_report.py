"""`hydratune sweep-report SWEEP_DIR`: rebuild a sweep's summary from its job directories; for an Optuna
search (a study.json in SWEEP_DIR) also the importance of each searched parameter."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    report = sub.add_parser(
        "sweep-report",
        help="rebuild sweep_summary.{csv,md} and sweep.png of a (possibly partial) multirun or search",
    )
    report.add_argument("sweep_dir", help="a multirun directory (holds one folder per job)")
    report.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from hydratune.errors import UserError
    from hydratune.sweep import STUDY_FILE, job_dirs, write_summary

    sweep_dir = Path(args.sweep_dir)
    if not sweep_dir.is_dir():
        raise UserError(f"{sweep_dir} does not exist")
    if (sweep_dir / ".hydra" / "overrides.yaml").is_file() and (sweep_dir.parent / "multirun.yaml").is_file():
        raise UserError(
            f"{sweep_dir} is one job of the sweep {sweep_dir.parent}; run hydratune sweep-report {sweep_dir.parent}"
        )
    if (sweep_dir / ".hydra" / "overrides.yaml").is_file():  # it wrote sweep files into a single run (K8)
        raise UserError(f"{sweep_dir} is a single run, not a sweep (python train.py -m ... makes one)")
    if not job_dirs(sweep_dir):
        raise UserError(f"{sweep_dir} holds no job directory (.hydra/overrides.yaml)")
    write_summary(sweep_dir)
    md = sweep_dir / "sweep_summary.md"
    if (sweep_dir / STUDY_FILE).is_file():
        from hydratune.search import importance_lines, load_study

        lines = importance_lines(load_study(sweep_dir))
        with open(md, "a") as f:
            f.write("\n" + "\n".join(lines) + "\n")
    print(md.read_text(), end="")
    return 0
