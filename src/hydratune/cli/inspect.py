"""`hydratune inspect [overrides]`: what the model will be trained on, without loading model weights.

The view is the task's (`Task.inspect`): for SFT, K tokenized samples with the trained tokens marked
[[like this]], the share of trainable tokens, samples dropped, the truncation rate, a length histogram
and the packing efficiency; for classification, rows with their labels and the label counts.
"""

from __future__ import annotations

import argparse


def inspect_data(overrides: list[str], samples: int = 3) -> str:
    """The report as text (the task's data preparation runs; the model is never built)."""
    from hydratune.config import to_plain
    from hydratune.model import load_tokenizer
    from hydratune.preflight import compose, project_root
    from hydratune.tasks.registry import get_task

    cfg = to_plain(compose(overrides, output_dir=str(project_root() / "outputs" / "inspect")))
    model_cfg = dict(cfg["model"])
    tokenizer = load_tokenizer(model_cfg, model_cfg.pop("token", None))
    return "\n".join(get_task(cfg.get("task")).inspect(cfg, tokenizer, samples))


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="show the tokenized training data, masks and statistics (no model)")
    p.add_argument("overrides", nargs="*", help="the same overrides as python train.py takes")
    from hydratune.cli.args import count

    p.add_argument("--samples", type=count, default=3, help="how many samples to print (default 3)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    print(inspect_data(args.overrides, args.samples))
    return 0
