"""Packing: several tokenized samples share one row of `max_seq_length` tokens.

Position ids restart at 0 for each sample and no attention mask is passed, so transformers builds
block-diagonal (varlen) attention from the position ids: a sample never attends to its neighbours.
This needs `use_cache=False` in the forward pass (DESIGN.md; SFTModule.forward passes it).
"""

from __future__ import annotations

import bisect
import logging

from hydratune.data.tokenize import IGNORE_INDEX

log = logging.getLogger(__name__)

STRATEGIES = ("bfd", "greedy")
PACKED_COLUMNS = ("input_ids", "labels", "position_ids", "num_trained", "num_samples")
ROW_COLUMNS = ("input_ids", "labels", "position_ids")  # a list of int32 per row; the others: one int64
# Part of the packed rows' cache key: bump it when pack_table's output changes for the same input.
PACKING_VERSION = 2


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

    When `dataset` lives in `datasets`' cache (a tokenized file), so do the packed rows: an Arrow file
    beside it, keyed by its fingerprint, the capacity and the strategy, written once (atomically) and
    memory-mapped, as `datasets` maps its own cache files. A rerun or another DDP rank reads it instead
    of packing again, and the rows take page cache, shared between processes, not each process's heap.
    An in-memory `dataset` gives in-memory rows.
    """
    import datasets

    if not dataset.cache_files:
        return datasets.Dataset(datasets.table.InMemoryTable(pack_table(dataset, capacity, strategy)))
    from pathlib import Path

    import pyarrow as pa
    from datasets.fingerprint import Hasher

    key = Hasher.hash([dataset._fingerprint, capacity, strategy, PACKING_VERSION])
    path = Path(dataset.cache_files[0]["filename"]).with_name(f"packed-{key}.arrow")
    if not path.is_file():
        table = pack_table(dataset, capacity, strategy)
        try:
            write_arrow(table, path)
        except OSError as error:  # a read-only cache (shared, pre-tokenized): the rows stay in memory
            log.info("packed rows kept in memory, not cached: %s", error)
            return datasets.Dataset(datasets.table.InMemoryTable(table))
        del table
        pa.default_memory_pool().release_unused()  # the table's buffers: Arrow's allocator keeps them
    return datasets.Dataset.from_file(str(path))


def write_arrow(table, path) -> None:
    """`table` as an Arrow stream file (the layout of `datasets`' cache files), by rename: a reader never
    sees a partial file, and a crash leaves none behind under `path`."""
    import os
    import uuid

    import pyarrow as pa

    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        with open(partial, "xb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def pack_table(dataset, capacity: int, strategy: str = "bfd"):
    """`pack_dataset`'s rows as a `pyarrow.Table`.

    Built on the Arrow columns as flat numpy arrays (one gather for the tokens of every row), never as
    Python lists of token ids: those cost seconds and hundreds of MB on a large dataset. Labels and
    positions are int32 like the token ids (the collator makes the batch's int64 tensors).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    table = dataset.with_format("arrow")[:]  # the rows this Dataset shows (its indices mapping applied)
    ids_column, labels_column = (table[k].combine_chunks() for k in ("input_ids", "labels"))
    lengths = pc.list_value_length(ids_column).to_numpy(zero_copy_only=False).astype(np.int64)
    trained = table["num_trained"].to_numpy().astype(np.int64)
    bins = pack_bins(lengths.tolist(), capacity, strategy)
    if not bins:
        return pa.table(
            {
                k: pa.array([], pa.list_(pa.int32()) if k in ROW_COLUMNS else pa.int64())
                for k in PACKED_COLUMNS
            }
        )

    order = np.fromiter((i for members in bins for i in members), dtype=np.int64, count=len(lengths))
    starts = np.cumsum(lengths) - lengths  # where each sample's tokens begin in the flat columns
    taken = lengths[order]
    placed = np.cumsum(taken) - taken  # where each sample's tokens begin in the packed rows
    offset_in_sample = np.arange(int(taken.sum())) - np.repeat(placed, taken)
    gather = np.repeat(starts[order], taken) + offset_in_sample
    labels = labels_column.flatten().to_numpy()[gather].astype(np.int32, copy=False)
    labels[placed] = IGNORE_INDEX
    first_sample = np.cumsum([0] + [len(members) for members in bins[:-1]])
    row_offsets = np.concatenate([[0], np.cumsum(np.add.reduceat(taken, first_sample))])
    # Arrow lists index their values with int32 offsets; more than 2**31 - 1 tokens need 64-bit ones.
    lists = pa.ListArray if row_offsets[-1] < 2**31 else pa.LargeListArray
    row_offsets = pa.array(row_offsets, pa.int32() if lists is pa.ListArray else pa.int64())

    def rows(values: np.ndarray) -> pa.Array:
        return lists.from_arrays(row_offsets, pa.array(values))

    return pa.table(
        {
            "input_ids": rows(ids_column.flatten().to_numpy()[gather].astype(np.int32, copy=False)),
            "labels": rows(labels),
            "position_ids": rows(offset_in_sample.astype(np.int32)),
            "num_trained": pa.array(np.add.reduceat(trained[order], first_sample)),
            "num_samples": pa.array([len(members) for members in bins], pa.int64()),
        }
    )


def row_lengths(dataset) -> list[int]:
    """The length of every row's input_ids, read from the Arrow table without converting the rows."""
    import pyarrow.compute as pc

    return pc.list_value_length(dataset.with_format("arrow")["input_ids"]).to_pylist()


def packing_efficiency(row_lengths: list[int], capacity: int) -> float:
    """Non-pad fraction of the tokens when every row is `capacity` long."""
    return sum(row_lengths) / max(len(row_lengths) * capacity, 1)
