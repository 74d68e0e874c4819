"""Load the dataset config's sources into a `datasets.DatasetDict` with train/validation splits."""

from __future__ import annotations

LOADERS = ("json", "csv", "parquet", "text")


def load_source(source: dict, cache_dir: str | None = None):
    """One source: a local loader (`json`, `csv`, `parquet`, `text`) with `data_files` or `data_dir`."""
    import datasets

    loader = source["loader"]
    if loader not in LOADERS:
        raise ValueError(
            f"dataset.sources[].loader={loader!r} is not known; use one of: {', '.join(LOADERS)}"
        )
    return datasets.load_dataset(
        loader,
        data_files=source.get("data_files"),
        data_dir=source.get("data_dir"),
        cache_dir=cache_dir,
    )


def load_splits(sources: list[dict], cache_dir: str | None = None):
    """All sources, concatenated split by split."""
    import datasets

    loaded = [load_source(s, cache_dir) for s in sources]
    names = sorted({name for d in loaded for name in d})
    return datasets.DatasetDict(
        {name: datasets.concatenate_datasets([d[name] for d in loaded if name in d]) for name in names}
    )
