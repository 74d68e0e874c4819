"""Packing: several tokenized samples share one row of `max_seq_length` tokens.

Position ids restart at 0 for each sample and no attention mask is passed, so transformers builds
block-diagonal (varlen) attention from the position ids: a sample never attends to its neighbours.
This needs `use_cache=False` in the forward pass (DESIGN.md; SFTModule.forward passes it).
"""

from __future__ import annotations

import bisect

from hydratune.data.tokenize import IGNORE_INDEX

STRATEGIES = ("bfd", "greedy")


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
    """
    import datasets

    # Plain lists straight from the Arrow table: indexing a `datasets` Column row by row is slow.
    table = dataset.with_format("arrow")  # the rows this Dataset shows (its indices mapping applied)
    input_ids, labels, trained = (table[k].to_pylist() for k in ("input_ids", "labels", "num_trained"))
    bins = pack_bins([len(ids) for ids in input_ids], capacity, strategy)
    rows: dict[str, list] = {
        "input_ids": [],
        "labels": [],
        "position_ids": [],
        "num_trained": [],
        "num_samples": [],
    }
    for members in bins:
        ids, lab, pos = [], [], []
        for i in members:
            ids += input_ids[i]
            lab += [IGNORE_INDEX] + labels[i][1:]
            pos += range(len(input_ids[i]))
        rows["input_ids"].append(ids)
        rows["labels"].append(lab)
        rows["position_ids"].append(pos)
        rows["num_trained"].append(sum(trained[i] for i in members))
        rows["num_samples"].append(len(members))
    return datasets.Dataset.from_dict(rows)


def row_lengths(dataset) -> list[int]:
    """The length of every row's input_ids, read from the Arrow table without converting the rows."""
    import pyarrow.compute as pc

    return pc.list_value_length(dataset.with_format("arrow")["input_ids"]).to_pylist()


def packing_efficiency(row_lengths: list[int], capacity: int) -> float:
    """Non-pad fraction of the tokens when every row is `capacity` long."""
    return sum(row_lengths) / max(len(row_lengths) * capacity, 1)
