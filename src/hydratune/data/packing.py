"""Packing: several tokenized samples share one row of `max_seq_length` tokens.

Position ids restart at 0 for each sample and no attention mask is passed, so transformers builds
block-diagonal (varlen) attention from the position ids: a sample never attends to its neighbours.
This needs `use_cache=False` in the forward pass (DESIGN.md; SFTModule.forward passes it).
"""

from __future__ import annotations

import bisect

from hydratune.data.tokenize import IGNORE_INDEX

STRATEGIES = ("bfd", "greedy")
PACKED_COLUMNS = ("input_ids", "labels", "position_ids", "num_trained", "num_samples")


def pack_bins(lengths: list[int], capacity: int, strategy: str = "bfd") -> list[list[int]]:
    """Group sample indices into bins whose total length is at most `capacity`.

    `bfd` (best-fit decreasing): longest first, each into the fullest bin it still fits; few, full bins.
    `greedy`: in dataset order, a new bin whenever the next sample does not fit; keeps neighbours together.
    """
    if strategy == "greedy":
        bins, used = [], capacity + 1
        for i, n in enumerate(lengths):
            if used + n > capacity:
                bins.append([])
                used = 0
            bins[-1].append(i)
            used += n
        return bins
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (space left, bin index), sorted
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        n = lengths[i]
        at = bisect.bisect_left(free, (n, -1))  # the bin with the least space that still fits
        if at < len(free):
            space, b = free.pop(at)
        else:
            space, b = capacity, len(bins)
            bins.append([])
        bins[b].append(i)
        bisect.insort(free, (space - n, b))
    return bins


def pack_dataset(dataset, capacity: int, strategy: str = "bfd"):
    """A `datasets.Dataset` of packed rows: input_ids, labels, position_ids, num_trained, num_samples.

    The first label of every sample is set to -100: the previous sample's last token must not be
    trained to predict it (num_trained already ignores each sample's first label).

    Built on the Arrow columns as flat numpy arrays (one gather for the tokens of every row), never as
    Python lists of token ids: those cost seconds and hundreds of MB on a large dataset.
    """
    import datasets
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    table = dataset.with_format("arrow")[:]  # the rows this Dataset shows (its indices mapping applied)
    ids_column, labels_column = (table[k].combine_chunks() for k in ("input_ids", "labels"))
    lengths = pc.list_value_length(ids_column).to_numpy(zero_copy_only=False).astype(np.int64)
    trained = table["num_trained"].to_numpy().astype(np.int64)
    bins = pack_bins(lengths.tolist(), capacity, strategy)
    if not bins:
        return datasets.Dataset.from_dict({k: [] for k in PACKED_COLUMNS})

    order = np.fromiter((i for members in bins for i in members), dtype=np.int64, count=len(lengths))
    starts = np.cumsum(lengths) - lengths  # where each sample's tokens begin in the flat columns
    taken = lengths[order]
    placed = np.cumsum(taken) - taken  # where each sample's tokens begin in the packed rows
    offset_in_sample = np.arange(int(taken.sum())) - np.repeat(placed, taken)
    gather = np.repeat(starts[order], taken) + offset_in_sample
    labels = labels_column.flatten().to_numpy()[gather]
    labels[placed] = IGNORE_INDEX
    first_sample = np.cumsum([0] + [len(members) for members in bins[:-1]])
    row_offsets = np.concatenate([[0], np.cumsum(np.add.reduceat(taken, first_sample))])
    # Arrow lists index their values with int32 offsets; more than 2**31 - 1 tokens need 64-bit ones.
    lists = pa.ListArray if row_offsets[-1] < 2**31 else pa.LargeListArray
    row_offsets = pa.array(row_offsets, pa.int32() if lists is pa.ListArray else pa.int64())

    def rows(values: np.ndarray) -> pa.Array:
        return lists.from_arrays(row_offsets, pa.array(values))

    packed = pa.table(
        {
            "input_ids": rows(ids_column.flatten().to_numpy()[gather]),
            "labels": rows(labels),
            "position_ids": rows(offset_in_sample),
            "num_trained": pa.array(np.add.reduceat(trained[order], first_sample)),
            "num_samples": pa.array([len(members) for members in bins], pa.int64()),
        }
    )
    return datasets.Dataset(datasets.table.InMemoryTable(packed))


def row_lengths(dataset) -> list[int]:
    """The length of every row's input_ids, read from the Arrow table without converting the rows."""
    import pyarrow.compute as pc

    return pc.list_value_length(dataset.with_format("arrow")["input_ids"]).to_pylist()


def packing_efficiency(row_lengths: list[int], capacity: int) -> float:
    """Non-pad fraction of the tokens when every row is `capacity` long."""
    return sum(row_lengths) / max(len(row_lengths) * capacity, 1)
