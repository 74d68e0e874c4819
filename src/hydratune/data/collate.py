"""Batch collation: dynamic padding to the longest sample in the batch."""

from __future__ import annotations

import torch

from hydratune.data.tokenize import IGNORE_INDEX


class PadCollator:
    """Right-pads `input_ids` with the pad id, `labels` with -100, and builds the attention mask."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, samples: list[dict]) -> dict[str, torch.Tensor]:
        length = max(len(s["input_ids"]) for s in samples)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(samples), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(samples), length), dtype=torch.long)
        for i, sample in enumerate(samples):
            n = len(sample["input_ids"])
            input_ids[i, :n] = torch.as_tensor(sample["input_ids"])
            labels[i, :n] = torch.as_tensor(sample["labels"])
            attention_mask[i, :n] = 1
        batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}
        if "window_tokens" in samples[0]:
            batch["window_tokens"] = torch.tensor(samples[0]["window_tokens"])
        return batch


class PackedCollator:
    """Packed rows: right-padded, with `position_ids` and no attention mask (see hydratune.data.packing).

    The pad tail gets its own restarting positions, so it forms one more (untrained) block.
    `real_tokens` counts the non-pad tokens and `num_samples` the samples, for throughput figures.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        length = max(len(r["input_ids"]) for r in rows)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.arange(length).repeat(len(rows), 1)
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            input_ids[i, :n] = torch.as_tensor(row["input_ids"])
            labels[i, :n] = torch.as_tensor(row["labels"])
            position_ids[i, :n] = torch.as_tensor(row["position_ids"])
            position_ids[i, n:] = torch.arange(length - n)
        batch = {
            "input_ids": input_ids,
            "labels": labels,
            "position_ids": position_ids,
            "real_tokens": torch.tensor(sum(len(r["input_ids"]) for r in rows)),
            # the samples packed into the rows (each restarts its positions at 0): samples_per_s counts these
            "num_samples": torch.tensor(
                sum(
                    r["num_samples"] if "num_samples" in r else list(r["position_ids"]).count(0) for r in rows
                )
            ),
        }
        if "window_tokens" in rows[0]:
            batch["window_tokens"] = torch.tensor(rows[0]["window_tokens"])
        return batch
