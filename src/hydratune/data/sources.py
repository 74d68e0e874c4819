"""Load each entry of `dataset.sources` into a `datasets.DatasetDict` (split name -> Dataset).

A source is either local files (`loader` + `data_files` or `data_dir`) or a hub dataset (`path`, which
may also be a local directory laid out like a hub dataset repository). Every failure a user can fix
becomes a one-line `UserError` naming the source, file or line.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import re
from pathlib import Path

from hydratune.errors import UserError

# Split names that serve as the validation split, in order of preference: the first one present is used.
VAL_SPLITS = ("validation", "eval", "test")


def validation_split(names) -> str | None:
    """The name among `names` that is the validation split, or None."""
    return next((n for n in VAL_SPLITS if n in names), None)


log = logging.getLogger(__name__)

LOADERS = ("json", "csv", "parquet", "text")
# File suffixes that `data_dir` picks up for each loader.
SUFFIXES = {"json": (".json", ".jsonl"), "csv": (".csv",), "parquet": (".parquet",), "text": (".txt",)}
SOURCE_KEYS = {
    "loader", "data_files", "data_dir", "path", "name", "split", "revision", "streaming", "max_rows",
    "cache_dir", "trust_remote_code", "fraction", "shuffle", "seed", "ops",
}  # fmt: skip


def load_source(
    source: dict, cache_dir: str | None = None, where: str = "dataset.sources[0]", text_columns=()
):
    """One source as a DatasetDict, with `fraction` and `shuffle` applied to each split.

    `text_columns`: columns the format reads as text, as the files name them; a null there is an error
    naming the file and line (local JSON files).
    """
    import datasets

    check_source(source, where)
    source = as_local(source)
    fraction = source.get("fraction", 1.0)
    cache_dir = source.get("cache_dir") or cache_dir
    if "path" in source:
        loaded = _load_hub(source, cache_dir, where)
    else:
        loaded = _load_local(source, cache_dir, where, text_columns)
    if isinstance(loaded, datasets.Dataset | datasets.IterableDataset):
        loaded = {"train": loaded}
    splits = {}
    for split, data in loaded.items():
        if isinstance(data, datasets.IterableDataset):
            # Streaming reads rows as they come instead of preparing the whole dataset first.
            if source.get("max_rows"):
                data = data.take(int(source["max_rows"]))
            data = datasets.Dataset.from_list(list(data))
        if source.get("shuffle"):
            data = data.shuffle(seed=source.get("seed", 0))
        if fraction < 1:
            data = data.select(range(math.ceil(fraction * len(data))))
        splits[split] = data
    return datasets.DatasetDict(splits)


def check_source(source: dict, where: str) -> None:
    """The checks of one source's keys that need no data (also run by `hydratune preflight`'s quick look)."""
    unknown = sorted(set(source) - SOURCE_KEYS)
    if "token" in unknown:
        raise UserError(
            f"{where}.token: hub tokens are read from the HF_TOKEN environment variable only; remove the key"
        )
    if unknown:
        raise UserError(f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(SOURCE_KEYS))}")
    fraction = source.get("fraction", 1.0)
    if not isinstance(fraction, int | float) or not 0 < fraction <= 1:
        raise UserError(f"{where}.fraction={fraction!r} is out of range; use a number with 0 < fraction <= 1")
    if source.get("path") in LOADERS and source.get("data_files") is None and source.get("data_dir") is None:
        raise UserError(
            f"{where}.path={source['path']!r} is datasets' {source['path']} file reader: give it "
            f"`data_files` (a path, a list, or split -> paths) or `data_dir`, or use a hub id or folder"
        )
    given, source = source, as_local(source)
    if "path" in source:
        return
    if "loader" not in source:
        raise UserError(
            f"{where}: give `loader` (json, csv, parquet, text) for local files or `path` for a hub dataset"
        )
    if source["loader"] not in LOADERS:
        raise UserError(f"{where}.loader={source['loader']!r} is not known; use one of: {', '.join(LOADERS)}")
    if (source.get("data_files") is None) == (source.get("data_dir") is None):
        raise UserError(
            f"{where}: give exactly one of `data_files` (a path, a list, or split -> paths) or `data_dir`"
        )
    check_file_kinds(source, where, key="path" if "path" in given else "loader")


def check_file_kinds(source: dict, where: str, key: str = "loader") -> None:
    """A file whose suffix is another reader's (a .csv or .parquet file given to the json reader, as replacing a
    preset's data_files does): one line naming the key to change. It read as malformed JSON, or not UTF-8."""
    files = source.get("data_files")
    paths = files.values() if isinstance(files, dict) else [files]
    for group in paths:
        for path in group if isinstance(group, list | tuple) else [group]:
            name = re.sub(r"\.(gz|bz2|xz|zst)$", "", str(path).lower())
            kind = next((loader for loader, suffixes in SUFFIXES.items() if name.endswith(suffixes)), None)
            if kind is not None and kind != source["loader"]:
                override = re.sub(r"\[(\d+)\]", r".\1", where)  # dataset.sources.0.loader on a command line
                raise UserError(
                    f"{where}.data_files: {path} is a {kind} file, read with the {source['loader']} reader: set "
                    f"{override}.{key}={kind}"
                )


def as_local(source: dict) -> dict:
    """`path: json` (or csv, parquet, text) with `data_files`, as in `datasets.load_dataset("json",
    data_files=...)`, is read as the local source `loader: json` it means."""
    if source.get("path") in LOADERS and (source.get("data_files") or source.get("data_dir")) is not None:
        return {**{k: v for k, v in source.items() if k != "path"}, "loader": source["path"]}
    return source


def _load_hub(source: dict, cache_dir: str | None, where: str):
    import datasets

    split = source.get("split")
    if source.get("trust_remote_code"):
        log.warning("%s.trust_remote_code=true: code from %s will run on this machine", where, source["path"])
    kwargs = dict(
        name=source.get("name"),
        revision=source.get("revision"),
        cache_dir=cache_dir,
        streaming=bool(source.get("streaming", False)),
        token=os.environ.get("HF_TOKEN"),  # from the environment only, never from a config
    )
    if source.get("data_dir"):  # one folder of the repository (lvwerra/stack-exchange-paired's data/rl)
        kwargs["data_dir"] = source["data_dir"]
    if source.get("trust_remote_code"):
        kwargs["trust_remote_code"] = True  # only passed when asked: newer `datasets` reject the key
    from hydratune.hub import hub_offline, hub_unreachable, read_cache_only

    local = os.path.isdir(os.path.expanduser(str(source["path"])))
    if not local and not hub_offline() and os.environ.get("HF_DATASETS_OFFLINE") != "1":
        unreachable = hub_unreachable()
        if unreachable:  # datasets would wait out its retries, then read its cache (review N1)
            read_cache_only(f"{where}.path={source['path']}: {unreachable}; reading the datasets cache only")
    try:
        if isinstance(split, dict):
            # Our split name -> the hub's split spec, e.g. {train: "train[:90%]", validation: "train[90%:]"}.
            return {
                ours: datasets.load_dataset(source["path"], split=theirs, **kwargs)
                for ours, theirs in split.items()
            }
        loaded = datasets.load_dataset(source["path"], split=split, **kwargs)
    except (ConnectionError, FileNotFoundError, ValueError) as err:
        offline = os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = (
            "the hub is offline (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE) and it is not cached; "
            "download it once online or point `path` at a local copy"
            if offline
            else "check the id, `name`, `split` and `revision`, and HF_TOKEN for gated datasets; without a network, "
            "set HF_HUB_OFFLINE=1 to read the hub cache only (no waiting)"  # review N2: no-network retries
        )
        raise UserError(f"{where}.path={source['path']!r}: cannot load ({_first_line(err)}); {hint}") from err
    # A single split loads as a Dataset: it becomes our train split.
    return {"train": loaded} if split else loaded


def _load_local(source: dict, cache_dir: str | None, where: str, text_columns=()):
    import datasets

    loader, data_files, data_dir = source["loader"], source.get("data_files"), source.get("data_dir")
    files = resolve_files(data_files, data_dir, loader, where)
    options = {}
    if loader in ("json", "csv") and any(_has_bom(f) for f in files):
        # Windows editors write a byte-order mark; the JSON reader refuses it, the CSV one keeps it in the first
        # column's name. Read as utf-8-sig (which also reads files without one) as pandas and peek do.
        options = {"encoding": "utf-8-sig"}
    if loader in ("json", "csv", "text"):
        for file in files:
            check_utf8(file)
    if data_dir is not None:  # the folder's files of this loader only (datasets would read a CSV beside JSON)
        data_files, data_dir = dir_files(data_dir, files), None
    try:
        loaded = datasets.load_dataset(
            loader, data_files=data_files, data_dir=data_dir, cache_dir=cache_dir, **options
        )
    except Exception as err:  # pyarrow and datasets raise many types for one bad line
        if loader == "json":
            find_bad_json(files, text_columns)
        raise UserError(f"{where}: cannot read {', '.join(files)} as {loader} ({_first_line(err)})") from err
    if loader == "json" and _needs_a_look(loaded, files, text_columns):
        find_bad_json(files, text_columns)
    return loaded


NEWLINE = b"\n"


def check_utf8(file: str) -> None:
    """A text file that is not UTF-8 is one line naming its line (pyarrow reads such a file, and a row's
    text then fails to decode deep in `datasets`, or in hydratune inspect)."""
    import codecs

    decoder, line, offset = codecs.getincrementaldecoder("utf-8")(), 1, 0
    with open(file, "rb") as handle:
        while chunk := handle.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as err:
                at = max(err.start - len(err.object) + len(chunk), 0)  # the bad byte's index in this chunk
                bad_line = line + chunk[:at].count(NEWLINE)
                raise UserError(
                    f"{file}:{bad_line}: not UTF-8 text ({err.reason} at byte {offset + at}); save the file as UTF-8"
                ) from None
            line, offset = line + chunk.count(NEWLINE), offset + len(chunk)


def _has_bom(file: str) -> bool:
    with open(file, "rb") as handle:
        return handle.read(3) == b"\xef\xbb\xbf"


# Several JSON files of one source are read again (in Python) up to this size, to check their types agree.
JSON_RECHECK_BYTES = 256 * 2**20


def _needs_a_look(loaded, files: list[str], text_columns) -> bool:
    """datasets loaded the files, but a column mixes JSON types (it becomes a `Json` feature) or a text
    column holds nulls: read the files again to say where. Several files: datasets casts each to the first
    one's types (a number becomes the string "3"), so they are read again if they are not too large."""
    if len(files) > 1 and sum(Path(f).stat().st_size for f in files) <= JSON_RECHECK_BYTES:
        return True
    for split in loaded.values():
        for column, feature in split.features.items():
            if type(feature).__name__ == "Json":
                return True
            if column in text_columns and split.data.column(column).null_count:
                return True
    return False


def dir_files(data_dir: str, files: list[str]) -> dict[str, list[str]]:
    """A data_dir's files by split, as `datasets` names the splits from file names (train*, validation*, dev*,
    ...; every file is train when none is named so), kept to `files` (the loader's suffixes)."""
    from datasets.data_files import DataFilesDict, get_data_patterns

    keep = {str(Path(f).resolve()) for f in files}
    by_split = DataFilesDict.from_patterns(get_data_patterns(data_dir), base_path=data_dir)
    out = {
        str(split): [f for f in found if str(Path(f).resolve()) in keep] for split, found in by_split.items()
    }
    return {split: found for split, found in out.items() if found} or {"train": files}


def resolve_files(data_files, data_dir: str | None, loader: str, where: str) -> list[str]:
    """The local files a source names (globs expanded); a UserError when one is missing."""
    if data_dir is not None:
        if not Path(data_dir).is_dir():
            raise UserError(f"{where}.data_dir={data_dir!r} is not a directory")
        files = sorted(
            str(p) for p in Path(data_dir).rglob("*") if p.is_file() and p.name.endswith(SUFFIXES[loader])
        )
        if not files:
            raise UserError(f"{where}.data_dir={data_dir!r} holds no {'/'.join(SUFFIXES[loader])} file")
        return files
    if isinstance(data_files, str):
        patterns = [data_files]
    elif isinstance(data_files, dict):
        patterns = [p for v in data_files.values() for p in ([v] if isinstance(v, str) else v)]
    else:
        patterns = list(data_files)
    files = []
    for pattern in patterns:
        found = sorted(glob.glob(str(pattern)))
        if not found:
            raise UserError(f"{where}.data_files: {pattern} does not exist")
        if len(found) == 1 and Path(found[0]).is_dir():
            inside = [p.name for p in Path(found[0]).iterdir() if p.name.endswith(SUFFIXES[loader])]
            suffix = Path(inside[0]).suffix if inside else SUFFIXES[loader][-1]
            raise UserError(
                f"{where}.data_files: {pattern} is a folder; name a file, a glob ({str(pattern).rstrip('/')}/*"
                f"{suffix}), or give the folder as {where}.data_dir"
            )
        files += [f for f in found if Path(f).is_file()]
    return files


def find_bad_json(files: list[str], text_columns=()) -> None:
    """Raise a UserError naming the file and line (and column) of the first record that breaks the data:
    malformed JSON, an empty file, a file whose columns differ from the first file's, a value of another
    JSON type than the column's first value, or a null in a column the format reads as text."""
    first: tuple[str, dict] | None = None  # (where, record) of the first record
    kinds: dict[str, tuple[str, str]] = {}  # column -> (kind of its first non-null value, where)
    for file in files:
        records = _json_records(file)
        if not records:
            raise UserError(
                f"{file}: the file is empty (no JSON record); add rows or remove it from the data"
            )
        for at, record in records:
            if first is None:
                first = (at, record)
            elif at == records[0][0] and set(record) != set(first[1]):
                raise UserError(
                    f"{at}: columns {', '.join(record)} differ from {first[0]}'s ({', '.join(first[1])}); "
                    "every file of a source (train and validation) needs the same columns"
                )
            for column, value in record.items():
                kind = _kind(value)
                if kind is None:
                    if column in text_columns:
                        raise UserError(
                            f"{at}: column {column!r} is null, expected a string (the text to train on)"
                        )
                    continue
                expected, seen_at = kinds.setdefault(column, (kind, at))
                if kind != expected:
                    raise UserError(
                        f"{at}: column {column!r} holds {kind} ({json.dumps(value)[:40]}), expected {expected} "
                        f"as at {seen_at}; every row of a column needs the same type"
                    )
                if column in text_columns and kind != "a string":
                    raise UserError(
                        f"{at}: column {column!r} holds {kind} ({json.dumps(value)[:40]}), expected a string"
                    )


def _json_records(file: str) -> list[tuple[str, dict]]:
    """(file:line, record) for each record of a JSON Lines file, or of a JSON document holding a list."""
    text = Path(file).read_text(encoding="utf-8-sig", errors="replace")
    if not file.endswith(".jsonl") and text.lstrip().startswith(("[", "{")):
        try:
            document = json.loads(text)
        except json.JSONDecodeError as err:
            if text.lstrip().startswith("["):  # one JSON document, not JSON Lines
                raise UserError(f"{file}:{err.lineno}: malformed JSON ({err.msg}); fix that line") from err
        else:
            if isinstance(document, list):
                return [(f"{file} item {i}", r) for i, r in enumerate(document) if isinstance(r, dict)]
    records = []
    for lineno, line in enumerate(text.splitlines(), 1):
        record = parse_json_line(line, file, lineno)
        if record is not None:
            records.append((f"{file}:{lineno}", record))
    return records


def _kind(value) -> str | None:
    """The JSON type of a value, as the error messages say it (None for null)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return {str: "a string", list: "a list", dict: "an object"}[type(value)]


def parse_json_line(line: str, file: str, lineno: int) -> dict | None:
    """One JSON Lines record (None for a blank line), or a UserError naming the file and line."""
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise UserError(f"{file}:{lineno}: malformed JSON ({err.msg}); fix or remove that line") from err
    if not isinstance(record, dict):
        raise UserError(f"{file}:{lineno}: expected a JSON object per line, got {type(record).__name__}")
    return record


def _first_line(err: BaseException) -> str:
    while err.__cause__ is not None and type(err).__name__ == "DatasetGenerationError":
        err = err.__cause__  # "An error occurred while generating the dataset": the reader's error says why
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__
