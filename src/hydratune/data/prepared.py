"""Prepared rows: what a run trains on, kept as flat NumPy arrays that the next run memory-maps.

The first run of a dataset config reads its sources with `datasets`, formats, tokenizes and packs them
(each step cached by `datasets`). It then writes the rows training reads (token ids, labels, packed
positions, per-row counts) and the data statistics to `<cache_dir>/prepared/<key>/`. A later run with
the same key maps those files instead: it imports neither `datasets` nor pyarrow nor pandas (~80 MB of
resident memory and ~0.5 s of imports) and skips `datasets`' loading and cache lookups. Sweeps of many
short jobs and every DDP rank after the first pay the data step once.

The key hashes everything that decides the rows: the dataset config without the keys that only batch
them, the tokenizer, the caller's code versions, and the path, size and modification time of every
local file the sources name. Sources from the hub (`path`) have no such identity without asking
`datasets`' cache, so a config with one is always prepared by `datasets`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from pathlib import Path

from hydratune.data.ops import fingerprint
from hydratune.data.sources import check_source, resolve_files
from hydratune.errors import UserError

log = logging.getLogger(__name__)

# Bump when the files' layout changes: older folders are then not read.
PREPARED_VERSION = 1
# Dataset keys that batch or load the rows but do not change them: not part of the key.
BATCHING_KEYS = frozenset({"batch_size", "eval_batch_size", "num_workers", "num_proc", "group_by_length"})
# Columns holding one list of token-level values per row; the others hold one integer per row.
TOKEN_COLUMNS = ("input_ids", "labels", "position_ids")


def source_files(cfg: dict) -> list[list] | None:
    """[path, size, mtime_ns] of every local file the sources read, or None when a source is not local
    files (a hub dataset) or the sources are not valid (the `datasets` path then says what is wrong)."""
    files = []
    for i, source in enumerate(cfg.get("sources") or []):
        if "path" in source or source.get("streaming"):
            return None
        where = f"dataset.sources[{i}]"
        try:
            check_source(source, where)
            found = resolve_files(source.get("data_files"), source.get("data_dir"), source["loader"], where)
        except UserError:
            return None
        for name in found:
            stat = os.stat(name)
            files.append([os.path.abspath(name), stat.st_size, stat.st_mtime_ns])
    return files or None


def prepared_folder(cfg: dict, tokenizer_key: str, cache_dir: str | None, versions) -> Path | None:
    """Where the rows of this dataset config and tokenizer are (or will be) kept; None when the config
    cannot be keyed without `datasets` (see `source_files`)."""
    files = source_files(cfg)
    if files is None:
        return None
    settings = {k: v for k, v in cfg.items() if k not in BATCHING_KEYS}
    settings["sources"] = [_absolute(source) for source in cfg["sources"]]
    key = fingerprint(settings, files, tokenizer_key, versions, PREPARED_VERSION)
    return Path(cache_dir or default_cache_dir()) / "prepared" / key


def _absolute(source: dict) -> dict:
    """A local source with its paths made absolute: `./data/x.jsonl` and `/project/data/x.jsonl` (how
    `hydratune inspect` and a training run may spell the same file) give one key."""

    def absolute(value):
        if isinstance(value, str):
            return os.path.abspath(value)
        if isinstance(value, dict):
            return {split: absolute(v) for split, v in value.items()}
        return [absolute(v) for v in value]

    return source | {k: absolute(source[k]) for k in ("data_files", "data_dir") if source.get(k) is not None}


def default_cache_dir() -> str:
    """`datasets`' own default cache folder, found without importing it."""
    if os.environ.get("HF_DATASETS_CACHE"):
        return os.environ["HF_DATASETS_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "huggingface"
    )
    return os.path.join(os.path.expanduser(home), "datasets")


class PreparedSplit:
    """One split of prepared rows, read-only, indexed like a `datasets.Dataset`: `split[i]` is a dict of
    Python lists and ints (what the collators take), `split["num_trained"]` a column as a list.

    The files are memory-mapped on first use and never pickled: a DataLoader worker maps them again
    instead of receiving a copy.
    """

    def __init__(self, folder: Path, split: str, columns: list[str], fingerprint: str | None = None):
        self.folder, self.split, self.columns = Path(folder), split, list(columns)
        self._fingerprint = fingerprint  # of the `datasets` data it was written from (run.json)
        self._arrays: dict | None = None

    def _load(self) -> dict:
        if self._arrays is None:
            import numpy as np

            self._arrays = {
                name: np.load(self.folder / f"{self.split}.{name}.npy", mmap_mode="r")
                for name in [*self.columns, "offsets"]
            }
        return self._arrays

    def __getstate__(self) -> dict:
        return self.__dict__ | {"_arrays": None}

    def __len__(self) -> int:
        return len(self._load()["offsets"]) - 1

    def __getitem__(self, key):
        arrays = self._load()
        if isinstance(key, str):
            if key not in self.columns:
                raise KeyError(f"column {key!r} not in {self.columns}")
            if key in TOKEN_COLUMNS:
                return [self[i][key] for i in range(len(self))]
            return arrays[key].tolist()
        index = range(len(self))[key]  # negative indices; IndexError past the end
        start, end = int(arrays["offsets"][index]), int(arrays["offsets"][index + 1])
        return {
            name: arrays[name][start:end].tolist() if name in TOKEN_COLUMNS else int(arrays[name][index])
            for name in self.columns
        }


def read_prepared(folder: Path) -> dict | None:
    """The manifest of a complete prepared folder, with a PreparedSplit per split; None when absent or
    written by other code."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("version") != PREPARED_VERSION:
        return None
    manifest["datasets"] = {
        split: PreparedSplit(folder, split, info["columns"], info.get("fingerprint"))
        for split, info in manifest["splits"].items()
    }
    try:  # every file there and whole (mapping reads no rows)
        for split in manifest["datasets"].values():
            arrays = split._load()
            rows, tokens = len(arrays["offsets"]) - 1, int(arrays["offsets"][-1])
            if any(
                len(a) != (tokens if n in TOKEN_COLUMNS else rows)
                for n, a in arrays.items()
                if n != "offsets"
            ):
                raise ValueError(f"{split.split}: the columns' lengths disagree")
    except (OSError, ValueError, IndexError) as error:
        log.info("prepared rows in %s not read (%s): preparing them again", folder, error)
        return None
    return manifest


def write_prepared(folder: Path, splits: dict, extra: dict) -> bool:
    """Write `splits` (name -> `datasets.Dataset` of rows) and the JSON-able `extra` under `folder`.

    Written into a temporary folder beside it, then renamed: a reader sees the whole folder or none,
    and a crash leaves nothing under `folder`. Another process that got there first wins. A cache that
    cannot be written (read-only, full) is logged and training goes on from memory. Returns whether
    `folder` now holds the rows.
    """
    partial = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}.partial")
    try:
        partial.mkdir(parents=True)
        manifest = {"version": PREPARED_VERSION, "splits": {}, **extra}
        for split, dataset in splits.items():
            columns = [
                c for c in dataset.column_names if c in TOKEN_COLUMNS or c in ("num_trained", "num_samples")
            ]
            _write_split(partial, split, dataset, columns)
            manifest["splits"][split] = {
                "columns": columns,
                "fingerprint": getattr(dataset, "_fingerprint", None),
            }
        (partial / "manifest.json").write_text(json.dumps(manifest))
        try:
            partial.rename(folder)
        except OSError:
            if read_prepared(folder) is not None:  # another process wrote it first
                return True
            shutil.rmtree(folder, ignore_errors=True)  # a damaged one (a file lost or cut short): replaced
            partial.rename(folder)
        return True
    except OSError as error:
        log.info("prepared rows not kept in %s: %s", folder, error)
        return False
    finally:
        shutil.rmtree(partial, ignore_errors=True)


# Rows read from `datasets` at a time while writing: the memory a write holds, whatever the data's size.
WRITE_BATCH = 4096


def _write_split(partial: Path, split: str, dataset, columns: list[str]) -> None:
    """One split's columns as .npy files, filled batch by batch (a dataset larger than memory is fine):
    token columns flat (int32) with `offsets` (int64, one more than the rows), per-row columns int64."""
    import numpy as np
    import pyarrow.compute as pc
    from numpy.lib.format import open_memmap

    data = dataset.with_format("arrow")  # batches of the rows it shows (an indices mapping applied)
    lengths = [
        pc.list_value_length(batch["input_ids"]).to_numpy(zero_copy_only=False)
        for batch in data.select_columns(["input_ids"]).iter(batch_size=WRITE_BATCH)
    ]
    offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths) if lengths else [], dtype=np.int64)])
    np.save(partial / f"{split}.offsets.npy", offsets.astype(np.int64))
    rows, tokens = len(offsets) - 1, int(offsets[-1])
    files = {
        name: open_memmap(
            partial / f"{split}.{name}.npy",
            mode="w+",
            dtype=np.int32 if name in TOKEN_COLUMNS else np.int64,
            shape=(tokens if name in TOKEN_COLUMNS else rows,),
        )
        for name in columns
    }
    row = 0
    for batch in data.select_columns(columns).iter(batch_size=WRITE_BATCH):
        end = row + batch.num_rows
        for name, out in files.items():
            column = batch[name].combine_chunks()
            if name in TOKEN_COLUMNS:
                out[offsets[row] : offsets[end]] = column.flatten().to_numpy(zero_copy_only=False)
            else:
                out[row:end] = column.to_numpy(zero_copy_only=False)
        row = end
    for out in files.values():
        out.flush()
