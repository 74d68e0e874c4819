"""Batch sampling that knows the optimizer step: each micro-batch carries the trained-token count of
its whole accumulation window, so the loss can be normalised per optimizer step (see SFTModule)."""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset, Sampler


class WindowBatchSampler(Sampler[list[tuple[int, int]]]):
    """Shuffled micro-batches of `batch_size`, grouped in windows of `accumulate` micro-batches.

    Yields lists of `(index, window_tokens)` pairs, where `window_tokens` is the sum of
    `trained_tokens` over every sample of the window. Shuffling is seeded by `seed + epoch`;
    Lightning calls `set_epoch` at each epoch.
    """

    def __init__(
        self,
        trained_tokens: list[int],
        batch_size: int,
        accumulate: int = 1,
        seed: int = 0,
        shuffle: bool = True,
    ):
        self.trained_tokens = trained_tokens
        self.batch_size = batch_size
        self.accumulate = max(1, accumulate)
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.trained_tokens) / self.batch_size)

    def __iter__(self):
        n = len(self.trained_tokens)
        if self.shuffle:
            order = torch.randperm(
                n, generator=torch.Generator().manual_seed(self.seed + self.epoch)
            ).tolist()
        else:
            order = list(range(n))
        batches = [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        for start in range(0, len(batches), self.accumulate):
            window = batches[start : start + self.accumulate]
            total = sum(self.trained_tokens[i] for batch in window for i in batch)
            for batch in window:
                yield [(i, total) for i in batch]


class WindowDataset(Dataset):
    """Wraps a tokenized dataset so `dataset[(i, window_tokens)]` returns the sample with its window count."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, window_tokens = key
        return {**self.dataset[index], "window_tokens": window_tokens}
