"""What `hydratune inspect` shows for SFT: per-split counts, length histograms, packing, marked samples."""

from __future__ import annotations

from hydratune.data.display import histogram, marked_text
from hydratune.data.packing import pack_bins, packing_efficiency


def inspect_lines(datamodule, tokenizer, data_cfg: dict, samples: int) -> list[str]:
    """The inspect report of a prepared SFTDataModule, as lines."""
    max_len = data_cfg["max_seq_length"]
    lines = []
    for split, stats in datamodule.stats.items():
        lines += [
            f"{split}: {stats['samples']} samples from {stats['rows']} rows",
            f"  trainable tokens: {100 * stats['trainable_fraction']:.1f}% "
            f"({stats['trained_tokens']:,} of {stats['tokens']:,})",
            f"  dropped: {stats['dropped_untrained']} with no trained token, {stats['dropped_truncated']} too long",
            f"  truncated: {stats['truncated']} ({100 * stats['truncation_rate']:.1f}%) longer than {max_len} tokens",
            "  length histogram (tokens, samples):",
            *histogram(datamodule.lengths[split]),
        ]
    train = datamodule.stats["train"]
    if "packing_efficiency" in train:
        lines.append(
            f"packing: {train['samples']} samples in {train['packed_rows']} rows, "
            f"{100 * train['packing_efficiency']:.1f}% of tokens real"
        )
    else:
        lengths = datamodule.lengths["train"]
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
    for i in range(min(samples, len(datamodule.train_samples))):
        row = datamodule.train_samples[i]
        lines += [
            f"--- train[{i}] ({len(row['input_ids'])} tokens, {row['num_trained']} trained)",
            marked_text(tokenizer, row["input_ids"], row["labels"]),
        ]
    return lines
