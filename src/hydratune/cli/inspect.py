"""`hydratune inspect [overrides]`: what the model will be trained on, without loading model weights.

Shows K tokenized samples with the trained tokens marked [[like this]], the share of trainable
tokens, samples dropped, the truncation rate, a length histogram and the packing efficiency.
"""

from __future__ import annotations

import argparse

from hydratune.data.tokenize import IGNORE_INDEX


def marked_text(tokenizer, input_ids: list[int], labels: list[int]) -> str:
    """Decoded text with each run of trained tokens wrapped in [[ ]]."""
    out, run, trained = [], [], None
    for token, label in zip(input_ids, labels):
        flag = label != IGNORE_INDEX
        if flag != trained and run:
            text = tokenizer.decode(run)
            out.append(f"[[{text}]]" if trained else text)
            run = []
        run.append(token)
        trained = flag
    if run:
        text = tokenizer.decode(run)
        out.append(f"[[{text}]]" if trained else text)
    return "".join(out)


def histogram(lengths: list[int], bins: int = 8, width: int = 40) -> list[str]:
    lo, hi = min(lengths), max(lengths)
    step = max(1, -(-(hi - lo + 1) // bins))
    counts = [0] * bins
    for n in lengths:
        counts[min((n - lo) // step, bins - 1)] += 1
    top = max(counts)
    return [
        f"  {lo + i * step:>6}-{lo + (i + 1) * step - 1:<6} {c:>7} {'#' * round(width * c / top)}"
        for i, c in enumerate(counts)
        if c or i < bins - 1
    ]


def inspect_data(overrides: list[str], samples: int = 3) -> str:
    """The report as text (the datamodule's setup runs; the model is never built)."""
    from hydratune.config import to_plain
    from hydratune.data.datamodule import SFTDataModule
    from hydratune.data.packing import pack_bins, packing_efficiency
    from hydratune.model import load_tokenizer
    from hydratune.preflight import compose, project_root

    cfg = to_plain(compose(overrides, output_dir=str(project_root() / "outputs" / "inspect")))
    model_cfg = dict(cfg["model"])
    tokenizer = load_tokenizer(model_cfg, model_cfg.pop("token", None))
    data_cfg = cfg["dataset"]
    dm = SFTDataModule(tokenizer, data_cfg, seed=cfg.get("seed", 0), cache_dir=cfg["paths"].get("cache_dir"))
    dm.setup("fit")
    max_len = data_cfg["max_seq_length"]
    lines = []
    for split, stats in dm.stats.items():
        lines += [
            f"{split}: {stats['samples']} samples from {stats['rows']} rows",
            f"  trainable tokens: {100 * stats['trainable_fraction']:.1f}% "
            f"({stats['trained_tokens']:,} of {stats['tokens']:,})",
            f"  dropped: {stats['dropped_untrained']} with no trained token, {stats['dropped_truncated']} too long",
            f"  truncated: {stats['truncated']} ({100 * stats['truncation_rate']:.1f}%) longer than {max_len} tokens",
            "  length histogram (tokens, samples):",
            *histogram(dm.lengths[split]),
        ]
    train = dm.stats["train"]
    if "packing_efficiency" in train:
        lines.append(
            f"packing: {train['samples']} samples in {train['packed_rows']} rows, "
            f"{100 * train['packing_efficiency']:.1f}% of tokens real"
        )
    else:
        lengths = dm.lengths["train"]
        packed = packing_efficiency(
            [sum(lengths[i] for i in b) for b in pack_bins(lengths, max_len)], max_len
        )
        batch = data_cfg["batch_size"]
        padded = sum(
            max(lengths[i : i + batch]) * len(lengths[i : i + batch]) for i in range(0, len(lengths), batch)
        )
        lines.append(
            f"packing: off; padded batches in dataset order are {100 * sum(lengths) / padded:.1f}% real tokens, "
            f"packing=true would give {100 * packed:.1f}%"
        )
    lines.append("samples (trained tokens in [[ ]]):")
    for i in range(min(samples, len(dm.train_samples))):
        row = dm.train_samples[i]
        lines += [f"--- train[{i}] ({len(row['input_ids'])} tokens, {row['num_trained']} trained)",
                  marked_text(tokenizer, row["input_ids"], row["labels"])]  # fmt: skip
    return "\n".join(lines)


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="show the tokenized training data, masks and statistics (no model)")
    p.add_argument("overrides", nargs="*", help="the same overrides as python train.py takes")
    p.add_argument("--samples", type=int, default=3, help="how many samples to print (default 3)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    print(inspect_data(args.overrides, args.samples))
    return 0
