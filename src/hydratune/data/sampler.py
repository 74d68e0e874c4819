"""Batch sampling that knows the optimizer step: each micro-batch carries the trained-token count of
its whole accumulation window, so the loss can be normalised per optimizer step (see SFTModule)."""

from __future__ import annotations

import logging
import math

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

log = logging.getLogger(__name__)


class WindowBatchSampler(Sampler[list[tuple[int, int]]]):
    """Shuffled micro-batches of `batch_size`, grouped in windows of `accumulate` micro-batches.

    Yields lists of `(index, window_tokens)` pairs, where `window_tokens` is the sum of
    `trained_tokens` over every sample of the window. Shuffling is seeded by `seed + epoch`;
    Lightning calls `set_epoch` at each epoch.

    With `lengths` (group_by_length; samples, or packed rows), each run of MEGABATCH global batches of
    shuffled indices is sorted by length before it is cut into batches, and the batches are shuffled
    again: the members of a batch have similar lengths, so padding to the longest wastes little, while
    the order of batches stays random (like the Hugging Face Trainer's LengthGroupedSampler). The batch
    with the longest member then goes first, so a batch too large for memory fails at step 1, not
    hours in; a short last batch stays last. Runs are counted in global batches, so N ranks draw the
    batches of one process with N times the batch size.
    """

    MEGABATCH = 50

    def __init__(
        self,
        trained_tokens: list[int],
        batch_size: int,
        accumulate: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        lengths: list[int] | None = None,
        num_replicas: int = 1,
        rank: int = 0,
    ):
        self.trained_tokens = trained_tokens
        # DDP: every rank draws the same global batches of batch_size * num_replicas and keeps its slice.
        self.num_replicas = max(1, num_replicas)
        self.rank = rank
        self.batch_size = batch_size
        self.accumulate = max(1, accumulate)
        self.seed = seed
        self.shuffle = shuffle
        self.lengths = lengths
        self.epoch = 0
        # Resume support (see ResumableDataLoader): micro-batches of `epoch` the training loop consumed,
        # and a position loaded from a checkpoint that the next iteration of that epoch starts from.
        self.consumed = 0
        self._resume_at: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def sampler(self) -> WindowBatchSampler:
        # Lightning calls set_epoch on `batch_sampler.sampler`, never on the batch sampler itself:
        # without this, every epoch would repeat the first epoch's order.
        return self

    def state_dict(self) -> dict:
        # The global batch too: a resume with another dataset.batch_size or trainer.devices converts.
        return {
            "epoch": self.epoch,
            "consumed": self.consumed,
            "global_batch": self.batch_size * self.num_replicas,
        }

    def load_state_dict(self, state: dict) -> None:
        consumed, size = int(state["consumed"]), self.batch_size * self.num_replicas
        saved = int(state.get("global_batch") or size)
        if saved != size and consumed:
            # The same samples consumed, counted in this launch's batches (rounded up: a part batch is not
            # trained twice). The order of the rest holds unless batches are grouped by length (size-bound).
            converted = -(-consumed * saved // size)
            log.warning(
                "resume: %d batches of %d samples were trained in this epoch; with batches of %d it goes on after "
                "%d batches%s", consumed, saved, size, converted,
                "" if self.lengths is None else " (batches grouped by length change with their size: samples of "
                "this epoch may repeat or be left out)",
            )  # fmt: skip
            consumed = converted
        self._resume_at = (int(state["epoch"]), consumed)

    def __len__(self) -> int:
        n, size = len(self.trained_tokens), self.batch_size * self.num_replicas
        return n // size if self.num_replicas > 1 else math.ceil(n / size)

    def __iter__(self):
        n = len(self.trained_tokens)
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(n, generator=generator).tolist() if self.shuffle else list(range(n))
        size = self.batch_size * self.num_replicas
        if self.lengths is not None:
            mega = size * self.MEGABATCH
            order = [
                i
                for start in range(0, n, mega)
                for i in sorted(order[start : start + mega], key=lambda i: -self.lengths[i])
            ]
        batches = [order[i : i + size] for i in range(0, n, size)]
        short = batches.pop() if batches and len(batches[-1]) < size else None
        if self.lengths is not None and self.shuffle and batches:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
            # Members are sorted longest first, so batch[0] is a batch's longest.
            longest = max(range(len(batches)), key=lambda b: self.lengths[batches[b][0]])
            batches[0], batches[longest] = batches[longest], batches[0]
        # A short last batch stays last. With several ranks it is dropped: every rank needs a full share,
        # or the ranks' step counts diverge (and the full batches are those of one process).
        if short is not None and self.num_replicas == 1:
            batches.append(short)
        # A resumed epoch skips the micro-batches trained before the checkpoint (same order: same seed).
        skip = self._resume_at[1] if self._resume_at and self._resume_at[0] == self.epoch else 0
        self._resume_at, self.consumed = None, skip
        for start in range(0, len(batches), self.accumulate):
            window = batches[start : start + self.accumulate]
            total = sum(self.trained_tokens[i] for batch in window for i in batch)
            # DDP averages the ranks' gradients: each rank divides by its share of the global count.
            share = total / self.num_replicas if self.num_replicas > 1 else total
            for k, batch in enumerate(window, start):
                if k >= skip:
                    mine = batch[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
                    yield [(i, share) for i in mine]


class ResumableDataLoader(DataLoader):
    """A DataLoader over a WindowBatchSampler that Lightning can checkpoint mid-epoch.

    Lightning saves `state_dict()` of a loader that has one and loads it before iterating again,
    so a resumed run continues with the next unseen batch. Batches are counted here, as they leave
    the loader in the main process, so indices that workers prefetched are not counted as trained.
    """

    def __init__(self, *args, **kwargs):
        # Each new iterator draws a worker base seed from `generator`, by default from the global RNG:
        # that would shift the dropout stream at every epoch start, so a resumed run would differ.
        kwargs.setdefault("generator", torch.Generator().manual_seed(0))
        super().__init__(*args, **kwargs)

    def __iter__(self):
        for batch in super().__iter__():
            self.batch_sampler.consumed += 1
            yield batch

    def state_dict(self) -> dict:
        return self.batch_sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.batch_sampler.load_state_dict(state)


class WindowDataset(Dataset):
    """Wraps a tokenized dataset so `dataset[(i, window_tokens)]` returns the sample with its window count."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, window_tokens = key
        return {**self.dataset[index], "window_tokens": window_tokens}


def train_loader(dataset, trained_tokens: list[int], cfg: dict, trainer, seed: int, collate, lengths=None):
    """The training DataLoader of both tasks: seeded shuffling per epoch, resumable mid-epoch, each DDP
    rank its slice of every global batch (`trainer` is None outside a Trainer: one process)."""
    sampler = WindowBatchSampler(
        trained_tokens,
        cfg["batch_size"],
        trainer.accumulate_grad_batches if trainer is not None else 1,
        seed=seed,
        lengths=lengths,
        num_replicas=trainer.world_size if trainer is not None else 1,
        rank=trainer.global_rank if trainer is not None else 0,
    )
    return ResumableDataLoader(
        WindowDataset(dataset),
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=workers(cfg),
    )


def workers(cfg: dict) -> int:
    """dataset.num_workers, at most the CPU cores this process may use (an imported config's 4 or 8 workers on
    a small machine only slowed the loop, and each loader warned about it). Said once when cut."""
    asked = int(cfg.get("num_workers") or 0)
    cores = cpu_cores()
    if asked > cores:
        if not _said.get("workers"):
            log.info("dataset.num_workers=%d: %d CPU cores here, so %d loader workers", asked, cores, cores)
            _said["workers"] = True
        return cores
    return asked


_said: dict[str, bool] = {}


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS tells it)."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def eval_loader(dataset, cfg: dict, collate, trainer=None) -> DataLoader:
    """The validation DataLoader of every task: in order, `eval_batch_size` rows at a time. Under DDP each
    rank takes every world_size-th row from its rank on, with no padding rows (a DistributedSampler would
    repeat rows to even the shares, and count them twice); the tasks sum their validation totals over
    the ranks, so the shares may differ in size."""
    world = trainer.world_size if trainer is not None else 1
    rank = trainer.global_rank if trainer is not None else 0
    return DataLoader(
        dataset,
        batch_size=cfg.get("eval_batch_size", cfg["batch_size"]),
        sampler=list(range(rank, len(dataset), world)),
        collate_fn=collate,
        num_workers=workers(cfg),
    )
