"""A quick look at a dataset's first rows, for `hydratune preflight`: no datasets, transformers or torch.

Training loads every row with `datasets` and tokenizes with `transformers`; importing them alone takes
seconds. Here the first `limit` rows of each local file are read directly (json/jsonl and text with the
standard library, csv with pandas and parquet with pyarrow, as `datasets` itself reads them), the
dataset ops run as `hydratune.data.ops`' own functions on those rows, and the rows are formatted and
tokenized by `formats` and `tokenize_samples`, so the counts are the ones `SFTDataModule` gives for the
same rows (see datamodule.tokenize_split). The tokenizer is the model directory's `tokenizer.json`
loaded with `tokenizers`, as `AutoTokenizer` loads a generic (TokenizersBackend) tokenizer.

Whatever cannot be reproduced that way raises `Fallback` with the reason (a hub dataset, a chat
template, a model that is not on this disk, ...); preflight then prepares the data as training does.
Ops that reorder or move rows (shuffle, split, interleave) run at training time: the rows read are
checked where they were read, and the report says so.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from hydratune.data.formats import FORMATS, check_config, layout_hint, required_columns
from hydratune.data.labels import (
    build_label_names,
    classifier_cut_warning,
    encode_texts,
    label_key,
    missing,
    unread_classifier_text,
)
from hydratune.data.ops import COMBINE, OPS, op_name
from hydratune.data.sources import check_source, parse_json_line, resolve_files, validation_split
from hydratune.data.tokenize import (
    WARN_CUT,
    answer_column,
    count_empty,
    empty_answer_warning,
    keep_and_count,
    nothing_left,
    tokenize_samples,
)
from hydratune.errors import UserError

# A JSON file up to this size is parsed whole, so a malformed line anywhere in it is found; beyond it,
# only the rows read are parsed (a 64 MiB file parses in about a second).
PARSE_BYTES = 64 * 2**20
CSV_CHUNK = 10_000  # rows per pandas chunk in datasets' csv loader: column types are inferred per chunk
GENERIC_TOKENIZERS = ("TokenizersBackend", "PreTrainedTokenizerFast")  # loaded from tokenizer.json as is
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


class Fallback(Exception):
    """The quick look cannot reproduce training's data pipeline for this config; the message says why."""


class Rows:
    """The rows of one split as dicts (every column present, None where a file lacks it), where each one
    came from (`file:line`), and the few `datasets.Dataset` methods that `hydratune.data.ops` calls.

    `complete`: every row of the files was read, so an empty result is an error, not a sampling accident.
    `held_out_from`: the split is made at training time from that split's rows (a `split` op).
    """

    _fingerprint = "peek"  # the ops pass it on to datasets' cache; unused here

    def __init__(self, rows, columns, origins, files, complete=True, held_out_from=None):
        self.rows, self.column_names, self.origins = rows, list(columns), origins
        self.files, self.complete, self.held_out_from = files, complete, held_out_from

    @classmethod
    def from_dataset(cls, dataset, split: str) -> Rows:
        """All rows of a `datasets.Dataset` (the full path uses the same checks)."""
        rows = dataset.to_list()
        return cls(rows, dataset.column_names, [f"split {split!r} row {i}" for i in range(len(rows))], [])

    def __len__(self) -> int:
        return len(self.rows)

    def _new(self, rows, origins, columns=None) -> Rows:
        columns = self.column_names if columns is None else columns
        return Rows(rows, columns, origins, self.files, self.complete, self.held_out_from)

    def _batch(self, rows) -> dict[str, list]:
        return {c: [r[c] for r in rows] for c in self.column_names}

    def filter(self, function, batched: bool = True, **_) -> Rows:
        keep = function(self._batch(self.rows))
        kept = [i for i, k in enumerate(keep) if k]
        return self.select(kept)

    def map(self, function, batched: bool = True, **_) -> Rows:
        new = function(self._batch(self.rows))
        rows = [{**row, **{c: values[i] for c, values in new.items()}} for i, row in enumerate(self.rows)]
        return self._new(
            rows, self.origins, [*self.column_names, *(c for c in new if c not in self.column_names)]
        )

    def select(self, indices) -> Rows:
        indices = list(indices)
        return self._new([self.rows[i] for i in indices], [self.origins[i] for i in indices])

    def select_columns(self, columns) -> Rows:
        return self._new([{c: r[c] for c in columns} for r in self.rows], self.origins, list(columns))

    def remove_columns(self, columns) -> Rows:
        return self.select_columns([c for c in self.column_names if c not in columns])

    def rename_columns(self, mapping: dict) -> Rows:
        rows = [{mapping.get(c, c): v for c, v in r.items()} for r in self.rows]
        return self._new(rows, self.origins, [mapping.get(c, c) for c in self.column_names])

    def iter(self, batch_size: int):
        for start in range(0, len(self.rows), batch_size):
            yield self._batch(self.rows[start : start + batch_size])


def concat(parts: list[Rows]) -> Rows:
    """Rows of several files or sources one after another; columns are the union (None where missing)."""
    real = [p for p in parts if p.held_out_from is None]
    if not real:
        return parts[0]
    columns = list(dict.fromkeys(c for p in real for c in p.column_names))
    rows = [{c: r.get(c) for c in columns} for p in real for r in p.rows]
    origins = [o for p in real for o in p.origins]
    files = [f for p in real for f in p.files]
    return Rows(rows, columns, origins, files, all(p.complete for p in real))


# ---------------------------------------------------------------------------------------------- reading


def read_file(path: str, loader: str, limit: int) -> Rows:
    """The first `limit` rows of one local file, as `datasets.load_dataset(loader, ...)` would give them."""
    read = {"json": _read_json, "text": _read_text, "csv": _read_csv, "parquet": _read_parquet}[loader]
    try:
        rows, columns, origins, complete = read(path, limit)
    except UnicodeDecodeError:
        from hydratune.data.sources import check_utf8

        check_utf8(path)  # names the line
        raise
    if loader == "json" and not rows and complete:  # as training's reader says it (hydratune.data.sources)
        raise UserError(f"{path}: the file is empty (no JSON record); add rows or remove it from the data")
    return Rows(rows, columns, origins, [path], complete)


def _read_json(path: str, limit: int):
    """JSON Lines, or one JSON array; a file up to PARSE_BYTES is parsed whole (every line checked)."""
    with open(path, encoding="utf-8-sig") as f:  # datasets drops a leading byte-order mark too
        whole = os.path.getsize(path) <= PARSE_BYTES
        text = f.read() if whole else ""
        if whole and not path.endswith(".jsonl") and text.lstrip()[:1] in ("[", "{"):
            try:
                document = json.loads(text)
            except json.JSONDecodeError as err:
                if text.lstrip().startswith("["):
                    raise UserError(
                        f"{path}:{err.lineno}: malformed JSON ({err.msg}); fix that line"
                    ) from err
                document = None  # JSON Lines
            if isinstance(document, list):
                return _json_array(path, document, limit)
            if isinstance(document, dict) and "\n" in text.strip():
                raise UserError(
                    f"{path}: one JSON object, not rows; write JSON Lines (an object per line) or an array of objects"
                )
        rows, origins, complete = [], [], True
        for lineno, line in enumerate(io.StringIO(text) if whole else f, 1):
            record = parse_json_line(line, path, lineno)
            if record is None:
                continue
            if len(rows) < limit:
                rows.append(record)
                origins.append(f"{path}:{lineno}")
            else:
                complete = False
                if not whole:
                    break
    columns = list(dict.fromkeys(c for r in rows for c in r))
    _check_json_types(path, rows, columns)
    return [{c: r.get(c) for c in columns} for r in rows], columns, origins, complete


def _json_array(path: str, document: list, limit: int):
    """datasets reads an array of objects as rows, and an array of strings as a `text` column."""
    if all(isinstance(item, str) for item in document):
        document = [{"text": item} for item in document]
    bad = next((i for i, item in enumerate(document) if not isinstance(item, dict)), None)
    if bad is not None:
        raise UserError(f"{path}: array item {bad} is a {type(document[bad]).__name__}, not a JSON object")
    rows = document[:limit]
    columns = list(dict.fromkeys(c for r in rows for c in r))
    _check_json_types(path, rows, columns)
    origins = [f"{path} item {i}" for i in range(len(rows))]
    return [{c: r.get(c) for c in columns} for r in rows], columns, origins, len(document) <= limit


def _check_json_types(path: str, rows: list[dict], columns: list[str]) -> None:
    """datasets stores a column that mixes kinds (text and numbers, objects and lists) as JSON strings."""
    kinds = {str: "text", int: "number", float: "number", bool: "bool", dict: "object", list: "list"}
    for column in columns:
        seen = {kinds.get(type(r.get(column)), "other") for r in rows if r.get(column) is not None}
        if len(seen) > 1:
            raise Fallback(
                f"{path}: column {column!r} mixes {' and '.join(sorted(seen))}; datasets re-encodes it"
            )


def _read_text(path: str, limit: int):
    """One row per line (`text` column), line breaks removed, as datasets' text loader does."""
    rows, origins, complete = [], [], True
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if len(rows) == limit:
                complete = False
                break
            rows.append({"text": line.rstrip("\n")})
            origins.append(f"{path}:{lineno}")
    return rows, ["text"], origins, complete


def _read_csv(path: str, limit: int):
    """pandas infers column types from a chunk of rows and pyarrow converts them, as datasets does."""
    import pandas as pd
    import pyarrow as pa

    try:
        frame = pd.read_csv(path, nrows=max(limit, CSV_CHUNK) + 1)
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise UserError(f"{path}: cannot read it as csv ({_first_line(err)})") from err
    rows = pa.Table.from_pandas(frame.head(limit), preserve_index=False).to_pylist()
    origins = [f"{path} row {i + 1}" for i in range(len(rows))]
    return rows, [str(c) for c in frame.columns], origins, len(frame) <= limit


def _read_parquet(path: str, limit: int):
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
        batch = next(file.iter_batches(batch_size=limit), None)
    except Exception as err:  # pyarrow.ArrowInvalid, OSError: not a parquet file, or a damaged one
        raise UserError(f"{path}: cannot read it as parquet ({_first_line(err)})") from err
    rows = batch.to_pylist() if batch is not None else []
    origins = [f"{path} row {i + 1}" for i in range(len(rows))]
    return rows, file.schema_arrow.names, origins, file.metadata.num_rows <= limit


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def full_path_reason(source: dict, where: str) -> str | None:
    """Why a source must be loaded by datasets (None when its files can be read here)."""
    if "path" in source:
        return f"{where}.path={source['path']!r} is loaded with datasets (a hub id or hub-style folder)"
    if source.get("data_dir") is not None:
        return f"{where}.data_dir: datasets names the splits after the files it finds"
    return None


def read_source(source: dict, where: str, limit: int, notes: list[str]) -> dict[str, Rows]:
    """A local source's splits: the first `limit` rows of each of its files, its own ops applied."""
    check_source(source, where)
    reason = full_path_reason(source, where)
    if reason:
        raise Fallback(reason)
    if source.get("shuffle") or source.get("fraction", 1.0) < 1:
        notes.append(
            f"{where}: shuffle/fraction apply at training time; the first rows of the files are checked"
        )
    data_files = source["data_files"]
    by_split = data_files if isinstance(data_files, dict) else {"train": data_files}
    splits = {}
    for split, patterns in by_split.items():
        files = resolve_files(patterns, None, source["loader"], where)
        splits[split] = concat([read_file(file, source["loader"], limit) for file in files])
    return apply_ops(splits, source.get("ops") or [], f"{where}.ops", notes)


def build_splits(cfg: dict, limit: int, notes: list[str]) -> dict[str, Rows]:
    """`hydratune.data.ops.build_splits` on the first rows: sources, their ops, combine, dataset ops."""
    sources = cfg.get("sources") or []
    if not sources:
        raise UserError("dataset.sources is empty; add at least one source (loader + data_files, or path)")
    loaded = [read_source(s, f"dataset.sources[{i}]", limit, notes) for i, s in enumerate(sources)]
    ops = list(cfg.get("ops") or [])
    first = op_name(ops[0], "dataset.ops[0]") if ops else None
    combined = combine(loaded, ops[0] if first in COMBINE else {"concat": {}}, "dataset.ops[0]", notes)
    offset = 1 if first in COMBINE else 0
    return apply_ops(combined, ops[offset:], "dataset.ops", notes, offset)


def combine(loaded: list[dict[str, Rows]], op: dict, where: str, notes: list[str]) -> dict[str, Rows]:
    """The rows of every source, split by split (interleaving picks rows at training time)."""
    name = op_name(op, where)
    args = op[name] or {}
    split_names = sorted({split for data in loaded for split in data}, key=lambda s: (s != "train", s))
    out = {}
    for split in split_names:
        parts = [data[split] for data in loaded if split in data]
        if name == "interleave" and len(parts) > 1:
            probabilities = args.get("probabilities")
            if probabilities is not None and (
                len(probabilities) != len(parts) or abs(sum(probabilities) - 1) > 1e-6
            ):
                raise UserError(
                    f"{where}.interleave.probabilities={probabilities}: give one per source "
                    f"({len(parts)} in split {split!r}) summing to 1"
                )
            notes.append(
                f"{where}: interleave mixes the sources at training time; the rows read from each are checked"
            )
        out[split] = concat(parts)
    return out


def apply_ops(
    data: dict[str, Rows], ops: list, where: str, notes: list[str], offset: int = 0
) -> dict[str, Rows]:
    """`hydratune.data.ops.apply_ops` on the rows read: filters, maps, column ops and dedup are exact on
    the first rows; shuffle and split move rows at training time and are noted instead."""
    for i, op in enumerate(ops, offset):
        at = f"{where}[{i}]"
        name = op_name(op, at)
        if name in COMBINE:
            raise UserError(f"{at}: {name} combines sources and can only be the first op of dataset.ops")
        if name == "split":
            spec = op[name] or {}
            source, target = spec.get("from", "train"), spec.get("to", "validation")
            if source not in data:
                raise UserError(f"{at}.split.from={source!r}: no such split; splits here: {', '.join(data)}")
            notes.append(
                f"{at}: split holds out {target!r} rows at training time; they are checked as {source!r}"
            )
            data = {**data, target: Rows([], data[source].column_names, [], [], held_out_from=source)}
            continue
        if name == "shuffle":
            notes.append(f"{at}: shuffle runs at training time; the first rows of the files are checked")
            continue
        spec = op[name]
        if name == "select_rows" and not (
            isinstance(spec, int) or (isinstance(spec, dict) and "first" in spec)
        ):
            raise Fallback(f"{at}: select_rows by range or indices needs the whole split")
        targets = op.get("splits") or list(data)
        out = dict(data)
        for split in targets:
            if split not in data:
                raise UserError(f"{at}.splits: no split {split!r}; splits here: {', '.join(data)}")
            if data[split].held_out_from is not None:
                continue  # its rows are still in the split they are held out from
            out[split] = OPS[name](data[split], spec, f"{at}.{name}")
            if len(out[split]) == 0 and len(data[split]):
                if out[split].complete:
                    raise UserError(
                        f"{at}: no rows left in split {split!r} after {name}; loosen the op or remove it"
                    )
                notes.append(f"{at}: none of the rows read from split {split!r} is left after {name}")
        data = out
    return data


# -------------------------------------------------------------------------------------------- tokenizer


class FastTokenizer:
    """The model's tokenizer as `AutoTokenizer.from_pretrained` builds a generic one from `tokenizer.json`
    and `tokenizer_config.json`, with the call that `tokenize_samples` and `encode_texts` make.

    Raises Fallback for anything transformers would build differently: a model that is not a local
    folder, a model-specific tokenizer class (they rebuild the pipeline in Python), special tokens that
    transformers would add, or a post-processor that transformers would rewrite.
    """

    def __init__(self, model_cfg: dict):
        from tokenizers import Tokenizer

        name = str(model_cfg["pretrained_model_name_or_path"])
        folder = Path(name)
        where = f"model.pretrained_model_name_or_path={name!r}"
        if not (folder / "tokenizer.json").is_file() or not (folder / "tokenizer_config.json").is_file():
            raise Fallback(f"{where} is not a local folder with tokenizer.json and tokenizer_config.json")
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        if config.get("tokenizer_class") not in GENERIC_TOKENIZERS or "auto_map" in config:
            raise Fallback(
                f"{where}: tokenizer_class {config.get('tokenizer_class')!r} is built by transformers"
            )
        if (folder / "added_tokens.json").exists():
            raise Fallback(f"{where}: added_tokens.json is merged by transformers")
        specials_map = folder / "special_tokens_map.json"
        if "added_tokens_decoder" not in config and specials_map.is_file():
            # transformers reads the legacy special_tokens_map.json only then, and lets it win
            config |= json.loads(specials_map.read_text(encoding="utf-8"))
        self.backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
        if self.backend.get_vocab_size() > 100_000:
            raise Fallback(
                f"{where}: transformers may patch the pre-tokenizer of large (Mistral) vocabularies"
            )
        self.backend.no_truncation()
        self.backend.no_padding()
        self.backend.encode_special_tokens = bool(config.get("split_special_tokens", False))
        self.path = str(folder / "tokenizer.json")
        self.tokens = {key: _content(config.get(key)) for key in SPECIAL_TOKENS}
        extra = config.get("extra_special_tokens") or config.get("additional_special_tokens") or []
        extra = list(extra.values()) if isinstance(extra, dict) else list(extra)
        added = [t for t in (config.get("added_tokens_decoder") or {}).values()]
        for token in [*self.tokens.values(), *extra, *added]:
            content = _content(token)
            if content is not None and self.backend.token_to_id(content) is None:
                raise Fallback(
                    f"{where}: transformers adds the special token {content!r} missing from tokenizer.json"
                )
        # transformers rewrites the post-processor (BOS/EOS added by __call__) when these are set.
        self.exact_special_tokens = self.backend.post_processor is not None and not (
            "add_bos_token" in config or "add_eos_token" in config
        )
        if self.tokens["pad_token"] is None:  # as hydratune.model.load_tokenizer
            from hydratune.data.tokenize import stand_in_pad

            self.tokens["pad_token"] = stand_in_pad(
                self.tokens["eos_token"],
                self.tokens["unk_token"],
                lambda text: self.backend.token_to_id(text) is not None,
            )

    def __getattr__(self, name: str):
        # bos_token, eos_token_id, sep_token, ... as on a transformers tokenizer
        if name.endswith("_token_id") and name[: -len("_id")] in SPECIAL_TOKENS:
            token = self.tokens[name[: -len("_id")]]
            return None if token is None else self.backend.token_to_id(token)
        if name in SPECIAL_TOKENS:
            return self.tokens[name]
        raise AttributeError(name)

    def __call__(self, texts, pairs=None, add_special_tokens: bool = True, truncation: bool = False, **_):
        if truncation:
            raise ValueError("FastTokenizer does not truncate; count lengths instead")
        if add_special_tokens and not self.exact_special_tokens:
            raise Fallback(
                "the tokenizer's special tokens are placed by transformers (add_bos_token/add_eos_token)"
            )
        inputs = list(texts) if pairs is None else list(zip(texts, pairs))
        encodings = self.backend.encode_batch(inputs, add_special_tokens=add_special_tokens) if inputs else []
        return {"input_ids": [e.ids for e in encodings]}

    def decode(self, ids: list[int]) -> str:
        return self.backend.decode(ids, skip_special_tokens=False)


def _content(token) -> str | None:
    """A special token as written in tokenizer_config.json: a string or an AddedToken dict."""
    return token.get("content") if isinstance(token, dict) else token


def tokenizer_report(tokenizer) -> dict:
    """The pad and EOS tokens; a pad that is EOS is fine here (padding is never trained), and said so."""
    report = {
        "pad_token": tokenizer.pad_token,
        "eos_token": tokenizer.eos_token,
        "pad_is_eos": tokenizer.pad_token_id == tokenizer.eos_token_id,
    }
    if report["pad_is_eos"]:
        report["pad_note"] = (
            "padding uses the EOS token; handled: padded positions get label -100, so only each sample's own "
            "EOS is trained (a classifier or reward model reads the token before a row's EOS)"
        )
    return report


# ----------------------------------------------------------------------------------------------- checks


def _files(rows: Rows) -> str:
    return f" ({', '.join(dict.fromkeys(rows.files))})" if rows.files else ""


def sft_split(rows: Rows, tokenizer, cfg: dict, split: str, notes: list[str]) -> tuple[dict, list[list[int]]]:
    """Format and tokenize the rows; the counts of datamodule.tokenize_split, and the kept samples' ids."""
    fmt = check_config(cfg)
    columns = [c for c in required_columns(fmt, cfg) if c not in rows.column_names]
    if columns:
        raise UserError(
            f"dataset.format={fmt}: column {columns[0]!r} is not in split {split!r}{_files(rows)}; "
            f"available columns: {', '.join(rows.column_names)}{layout_hint(fmt, rows.column_names)}"
        )
    render, samples = FORMATS[fmt], []
    for index, (row, origin) in enumerate(zip(rows.rows, rows.origins)):
        try:
            samples.append(render(row, cfg))
        except UserError as err:
            raise UserError(f"{origin} (split {split!r} row {index}): {err}") from None
    max_len, drop_long = cfg["max_seq_length"], cfg.get("truncation", "truncate") == "drop"
    split_long = cfg.get("truncation") == "split"
    out = tokenize_samples(samples, tokenizer, max_len, cfg.get("train_on", "response"), split_long)
    lengths, trained = out["length"], out["num_trained"]
    keep, stats = keep_and_count(lengths, trained, max_len, drop_long)
    if not keep:
        message = nothing_left(split, stats, lengths, max_len)
        if rows.complete:
            raise UserError(message)
        notes.append(f"{message} (among the rows read)")
    answers = answer_column(fmt, cfg)
    if answers is not None:
        stats["empty_answers"] = count_empty(row.get(answers) for row in rows.rows)
        if stats["empty_answers"]:
            notes.append(
                f"{empty_answer_warning(split, stats['empty_answers'], len(rows.rows), answers)} (among the rows read)"
            )
    stats["samples"] = len(keep)
    stats["tokens"] = sum(min(lengths[i], max_len) for i in keep)
    stats["trained_tokens"] = sum(trained[i] for i in keep)
    stats["trainable_fraction"] = stats["trained_tokens"] / max(stats["tokens"], 1)
    return stats, [out["input_ids"][i] for i in keep]


def sft_report(splits: dict[str, Rows], tokenizer, cfg: dict, notes: list[str], examples: int = 3) -> dict:
    """Per split (train and the first of validation/eval/test): the counts of SFTDataModule.stats."""
    if "train" not in splits:
        raise UserError(
            f"dataset: the sources give splits {', '.join(splits)} but no 'train'; "
            "map one with data_files: {train: ...} or a hub source's split"
        )
    if tokenizer.eos_token_id is None:
        raise UserError(
            "model: the tokenizer has no eos_token (tokenizer_config.json); every SFT sample ends with one"
        )
    report: dict = {}
    val_name = validation_split(splits)
    for split in ["train", *([val_name] if val_name else [])]:
        rows = splits[split]
        if rows.held_out_from is not None:
            report[split] = f"held out from {rows.held_out_from!r} at training time"
            continue
        report[split], ids = sft_split(rows, tokenizer, cfg, split, notes)
        if split == "train":
            report["examples"] = [tokenizer.decode(x) for x in ids[:examples]]
    return report


def classification_report(splits: dict[str, Rows], tokenizer, cfg: dict, notes: list[str]) -> dict:
    """ClassificationDataModule's checks on the rows: text and label columns present, labels known,
    rows without text or label counted, and how many texts are longer than max_seq_length tokens."""
    for key in ("text_column", "label_column"):
        if not cfg.get(key):
            raise UserError(
                f"dataset.{key} is not set: task=classification needs a dataset with text_column and "
                "label_column (e.g. dataset=topics)"
            )
    val_name = validation_split(splits)
    if "train" not in splits:
        raise UserError(
            f"dataset: the sources give splits {', '.join(splits)} but no 'train'; "
            "map one with data_files: {train: ...} or a hub source's split"
        )
    text_col, pair_col, label_col = cfg["text_column"], cfg.get("text_pair_column"), cfg["label_column"]
    max_len = cfg.get("max_seq_length")
    report: dict = {}
    mapping: dict | None = None
    notes += [
        f"warning: {line}"
        for line in unread_classifier_text(splits["train"].rows, splits["train"].column_names, cfg)
    ]
    for split in ("train", *([val_name] if val_name else [])):
        rows = splits[split]
        if rows.held_out_from is not None:
            report[split] = f"held out from {rows.held_out_from!r} at training time"
            continue
        for key, column in (
            ("text_column", text_col),
            ("text_pair_column", pair_col),
            ("label_column", label_col),
        ):
            if column and column not in rows.column_names:
                raise UserError(
                    f"dataset.{key}={column!r}: no such column in the {split} split{_files(rows)} "
                    f"(columns: {', '.join(rows.column_names)})"
                )
        where = f"the {split} split ({label_col!r} column)"
        kept, stats = [], {"rows": len(rows), "dropped_no_text": 0, "dropped_no_label": 0}
        for row, origin in zip(rows.rows, rows.origins):
            if missing(row[text_col]) or (pair_col and missing(row[pair_col])):
                stats["dropped_no_text"] += 1
            elif missing(row[label_col]):
                stats["dropped_no_label"] += 1
            else:
                try:
                    kept.append((row, label_key(row[label_col], where)))
                except UserError as err:
                    raise UserError(f"{origin}: {err}") from None
        if mapping is None:  # the train split: it names the classes
            values = [k for _, k in kept]
            if not values:
                raise UserError(f"dataset: no row of {where} has both a text and a label{_files(rows)}")
            whole = rows.complete
            names, mapping = build_label_names(
                values, cfg.get("labels"), where, min_classes=2 if whole else 1
            )
            if len(set(values)) < 2:
                notes.append(
                    f"every train row read has the label {values[0]!r}; training needs at least 2 classes"
                )
            counts = [sum(mapping[k] == i for _, k in kept) for i in range(len(names))]
            stats |= {"labels": names, "class_counts": counts}
        else:
            unknown = sum(k not in mapping for _, k in kept)
            stats["dropped_unknown_label"] = unknown
            kept = [(r, k) for r, k in kept if k in mapping]
            # training refuses it ("has no usable row"); --full-data crashed in the tokenizer (L6)
            if not kept:
                message = f"dataset: the {split} split has no usable row ({_dropped(stats)}){_files(rows)}"
                if rows.complete:
                    raise UserError(message)
                notes.append(f"{message} (among the rows read)")
        if stats["dropped_no_label"]:
            notes.append(
                f"warning: {stats['dropped_no_label']} of {len(rows)} {split} rows read have no {label_col!r} (empty, "
                "or negative as the -1 of unlabelled rows): dropped"
            )
        texts = [r[text_col] for r, _ in kept]
        pairs = [r[pair_col] for r, _ in kept] if pair_col else None
        separator = cfg.get("pair_separator", "\n")
        lengths = [len(ids) for ids in encode_texts(tokenizer, texts, pairs, None, separator)] if kept else []
        stats["samples"] = len(kept)
        stats["truncated"] = sum(n > max_len for n in lengths) if max_len else 0
        stats["truncation_rate"] = stats["truncated"] / max(len(kept), 1)
        if stats["truncation_rate"] > WARN_CUT:
            notes.append(f"warning: {classifier_cut_warning(split, stats['truncated'], len(kept), max_len)}")
        report[split] = stats
    return report


def _dropped(stats: dict) -> str:
    counts = {k.removeprefix("dropped_"): v for k, v in stats.items() if k.startswith("dropped_") and v}
    return ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items()) or "no rows"


def peek(cfg: dict, task, limit: int = 200) -> dict:
    """The data checks of `hydratune preflight` on the first `limit` rows of each file (see the module
    docstring); what is checked is the task's (`Task.quick_data_report`). Raises Fallback when that cannot
    match training, UserError for bad data."""
    dataset = cfg["dataset"]
    for i, source in enumerate(dataset.get("sources") or []):  # fall back before reading anything
        check_source(source, f"dataset.sources[{i}]")
        reason = full_path_reason(source, f"dataset.sources[{i}]")
        if reason:
            raise Fallback(reason)
    tokenizer = FastTokenizer(cfg["model"])
    notes: list[str] = []
    splits = build_splits(dataset, limit, notes)
    report = {
        "data_check": f"quick: the first {limit} rows of each file, tokenized with {tokenizer.path}",
        **tokenizer_report(tokenizer),
    }
    report |= task.quick_data_report(splits, tokenizer, dataset, notes)
    if notes:
        report["notes"] = list(dict.fromkeys(notes))
    return report
