"""Operations on loaded data: an ordered list in the dataset config, applied after loading.

Each op is a one-key mapping, optionally with `splits: [train, ...]` to limit it to some splits::

    ops:
      - interleave: {probabilities: [0.7, 0.3], seed: 0, stopping_strategy: first_exhausted}
      - filter: "len(output) > 0 and not (instruction in ['', null])"
      - map: {prompt: "{instruction}\\n\\n{input}"}
      - rename_columns: {output: response}
      - dedup: [prompt, response]
      - split: {eval: 0.1, seed: 0}      # shuffle: false holds out the last rows instead

`concat` / `interleave` combine the sources and may only come first (several sources without one are
concatenated). Every other op runs on each split. Filters and maps are the small expression language
and string templates of `hydratune.data.expr`, never Python code.

Ops that call user functions pass an explicit fingerprint built from the op's config, so `datasets`
caches their results between runs (its own hashing of closures is not stable across processes).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Callable

from hydratune.data.expr import Expr, Template, check_columns
from hydratune.data.sources import load_source
from hydratune.errors import UserError

log = logging.getLogger(__name__)

COMBINE = ("concat", "interleave")


def fingerprint(*parts) -> str:
    """A short stable hash of JSON-able parts (dataset fingerprints, config values)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of everything about the tokenizer that changes token ids: vocab, merges, specials, template
    (part of the cache key of every task's tokenized data)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # Not the truncation and padding that the last call left set on the backend (transformers sets them
        # per call): the same tokenizer would key the same data differently after a `truncation=True` call.
        state = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
        vocab = json.dumps(state, sort_keys=True)
    else:
        vocab = sorted(tokenizer.get_vocab().items())
    return fingerprint(
        type(tokenizer).__name__, vocab, tokenizer.bos_token_id, tokenizer.eos_token_id,
        getattr(tokenizer, "chat_template", None),
    )  # fmt: skip


def build_splits(cfg: dict, cache_dir: str | None = None):
    """Load every source, apply its own `ops`, combine them, then apply the dataset-level `ops`."""
    sources = cfg.get("sources") or []
    if not sources:
        raise UserError("dataset.sources is empty; add at least one source (loader + data_files, or path)")
    loaded = []
    for i, source in enumerate(sources):
        where = f"dataset.sources[{i}]"
        text = () if source.get("ops") or cfg.get("ops") else text_columns(cfg)  # ops may rename or fill
        data = load_source(source, cache_dir, where, text)
        loaded.append(apply_ops(data, source.get("ops") or [], f"{where}.ops"))
    ops = list(cfg.get("ops") or [])
    first = op_name(ops[0], "dataset.ops[0]") if ops else None
    combined = combine(loaded, ops[0] if first in COMBINE else {"concat": {}}, "dataset.ops[0]")
    offset = 1 if first in COMBINE else 0
    return apply_ops(combined, ops[offset:], "dataset.ops", offset)


def text_columns(cfg: dict) -> list[str]:
    """The columns the dataset's format reads as text (none for chat messages or a config that does not
    name a format: the format's own check speaks then)."""
    from hydratune.data.formats import required_columns, resolve_format

    try:
        fmt = resolve_format(cfg)
    except UserError:
        return []
    return [c for c in required_columns(fmt, cfg) if c] if fmt != "messages" else []


def unread_map_columns(cfg: dict, reads: set[str], what: str, fix: str) -> list[str]:
    """One line for each column a `map` op makes that neither `reads` (the columns the format reads, named
    by `what`) nor a later op mentions: that op changes nothing the model sees. `fix` is an override that
    would read it, with `{column}` for its name."""
    ops = [(f"dataset.sources[{i}].ops[{k}]", op) for i, source in enumerate(cfg.get("sources") or [])
           for k, op in enumerate(source.get("ops") or [])]  # fmt: skip
    ops += [(f"dataset.ops[{k}]", op) for k, op in enumerate(cfg.get("ops") or [])]
    lines = []
    for n, (where, op) in enumerate(ops):
        if not isinstance(op, dict) or not isinstance(op.get("map"), dict):
            continue
        later = " ".join(json.dumps(spec, default=str) for _, spec in ops[n + 1 :])
        for column in op["map"]:
            if column in reads or re.search(rf"\b{re.escape(str(column))}\b", later):
                continue
            lines.append(
                f"{where}.map makes column {column!r}, which nothing reads ({what} reads "
                f"{', '.join(sorted(reads))}): map onto one of those, or point the format at it "
                f"(e.g. {fix.format(column=column)})"
            )
    return lines


def unread_text_columns(
    rows: list[dict], columns: list[str], cfg: dict, reads: set[str], what: str, fix: str | None = None
) -> list[str]:
    """A line for each column of `rows` that holds text (a string of 20+ characters in most rows) that neither
    the format (`reads`, named by `what`) nor an op reads: Dolly's `context`, MNLI's hypothesis without
    text_pair_column. Its text never reaches the model. `fix`: how to read it ({column} is filled in), instead
    of the map op."""
    ops = [
        *(op for source in cfg.get("sources") or [] for op in source.get("ops") or []),
        *(cfg.get("ops") or []),
    ]
    mentioned = " ".join(json.dumps(op, default=str) for op in ops)
    lines, into = [], sorted(reads)[0] if reads else "text"
    for column in columns:
        if column in reads or re.search(rf"\b{re.escape(str(column))}\b", mentioned) or not rows:
            continue
        texts = [
            r.get(column) for r in rows if isinstance(r.get(column), str) and len(r[column].strip()) >= 20
        ]
        if len(texts) * 2 > len(rows):
            read = (
                fix.format(column=column)
                if fix
                else f"map it into a column that is read (e.g. dataset.ops=[{{map:{{{into}:'{{{into}}} {{{column}}}'}}}}])"
            )
            lines.append(
                f"column {column!r} holds text ({len(texts)} of {len(rows)} rows) that {what} does not read: it never "
                f"reaches the model; {read}, or drop it (dataset.ops=[{{drop_columns:[{column}]}}])"
            )
    return lines


def op_name(op, where: str) -> str:
    if not isinstance(op, dict):
        raise UserError(f'{where}: an op is a one-key mapping like `filter: "len(output) > 0"`, got {op!r}')
    names = [k for k in op if k != "splits"]
    if len(names) != 1 or (names[0] not in OPS and names[0] not in COMBINE):
        raise UserError(f"{where}: unknown op {names}; known ops: {', '.join(sorted([*OPS, *COMBINE]))}")
    return names[0]


def combine(loaded: list, op: dict, where: str):
    """Concatenate or interleave the sources, split by split."""
    import datasets

    name = op_name(op, where)
    args = op[name] or {}
    split_names = sorted({split for data in loaded for split in data}, key=lambda s: (s != "train", s))
    out = {}
    for split in split_names:
        parts = [data[split] for data in loaded if split in data]
        if len(parts) == 1:
            out[split] = parts[0]
            continue
        try:
            if name == "concat":
                try:
                    out[split] = datasets.concatenate_datasets(parts)
                except ValueError:  # message lists whose keys differ: give them one type, then again
                    out[split] = datasets.concatenate_datasets(_same_message_keys(parts))
                continue
            probabilities = args.get("probabilities")
            if probabilities is not None:
                if len(probabilities) != len(parts) or abs(sum(probabilities) - 1) > 1e-6:
                    raise UserError(
                        f"{where}.interleave.probabilities={probabilities}: give one per source "
                        f"({len(parts)} in split {split!r}) summing to 1"
                    )
            # first_exhausted stops when one source runs out (the mix keeps its ratios, some rows of the
            # others go unseen); all_exhausted restarts the finished sources until every row was seen.
            out[split] = datasets.interleave_datasets(
                _same_message_keys(parts),
                probabilities=probabilities,
                seed=args.get("seed", 0),
                stopping_strategy=args.get("stopping_strategy", "first_exhausted"),
            )
        except ValueError as err:
            raise UserError(
                f"{where}.{name}: the sources' columns differ in split {split!r} ({str(err).splitlines()[0][:160]}); "
                "align them with per-source ops (select_columns, rename_columns)"
            ) from err
    return datasets.DatasetDict(out)


def _same_message_keys(parts: list) -> list:
    """The sources with one type for each column of lists of records (chat messages): every key any source's
    records have (a `name`, or `tool_calls` on assistant turns), null where a record lacks it. No op can
    change a record's keys, so sources differing there could not be combined."""
    import datasets

    def records(feature) -> dict | None:
        inner = getattr(feature, "feature", None) if isinstance(feature, datasets.List) else None
        return inner if isinstance(inner, dict) else None

    parts = list(parts)
    for column in set.intersection(*(set(p.column_names) for p in parts)):
        features = [p.features[column] for p in parts]
        # A JSON file whose messages hold tool_calls (or null content) loads them as JSON values: the others too.
        as_json = next((f for f in features if isinstance(getattr(f, "feature", None), datasets.Json)), None)
        if as_json is not None and all(records(f) is not None or f == as_json for f in features):
            parts = [p if f == as_json else p.cast(datasets.Features({**p.features, column: as_json}))
                     for p, f in zip(parts, features)]  # fmt: skip
            continue
        kinds = [records(f) for f in features]
        if any(kind is None for kind in kinds) or all(kind == kinds[0] for kind in kinds):
            continue
        union: dict = {}
        for kind in kinds:
            for key, value in kind.items():
                if union.get(key) in (None, datasets.Value("null")):
                    union[key] = value
        keys = list(union)

        def fill(batch: dict, column=column, keys=keys) -> dict:
            return {column: [[{k: r.get(k) for k in keys} for r in rows or []] for rows in batch[column]]}

        for i, part in enumerate(parts):
            if set(records(part.features[column])) != set(keys):
                part = part.map(
                    fill, batched=True, new_fingerprint=fingerprint(part._fingerprint, "keys", keys)
                )
            parts[i] = part.cast(datasets.Features({**part.features, column: datasets.List(union)}))
    return parts


def apply_ops(data, ops: list, where: str, offset: int = 0):
    """Apply `ops` in order to every split of a DatasetDict (or the splits an op names)."""
    import datasets

    for i, op in enumerate(ops, offset):
        at = f"{where}[{i}]"
        name = op_name(op, at)
        if name in COMBINE:
            raise UserError(f"{at}: {name} combines sources and can only be the first op of dataset.ops")
        if name == "split":
            data = split_op(data, op[name] or {}, at)
            continue
        targets = op.get("splits") or list(data)
        out = dict(data)
        for split in targets:
            if split not in data:
                raise UserError(f"{at}.splits: no split {split!r}; splits here: {', '.join(data)}")
            # Named with the split when there are several: a row index out of range names the one it is.
            out[split] = OPS[name](
                data[split], op[name], f"{at}.{name}" + (f" (split {split!r})" if len(data) > 1 else "")
            )
            if len(out[split]) == 0:
                raise UserError(
                    f"{at}: no rows left in split {split!r} after {name}; loosen the op or remove it"
                )
        data = datasets.DatasetDict(out)
    return data


def _filter(ds, condition, where):
    expr = Expr(condition, where)
    check_columns(expr.names, ds.column_names, where)
    before = len(ds)

    def keep(batch: dict) -> list[bool]:
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        return [bool(expr(row)) for row in rows]

    try:
        ds = ds.filter(keep, batched=True, new_fingerprint=fingerprint(ds._fingerprint, "filter", condition))
    except TypeError as err:
        raise UserError(f"{where}: {condition!r} cannot be evaluated on this data ({err})") from err
    log.info("filter %r kept %d of %d rows", condition, len(ds), before)
    return ds


def _map(ds, templates, where):
    if not isinstance(templates, dict) or not templates:
        raise UserError(
            f'{where}: give new columns as {{column: template}}, e.g. {{text: "{{instruction}} {{output}}"}}'
        )
    compiled = {col: Template(text, f"{where}.{col}") for col, text in templates.items()}
    for col, template in compiled.items():
        check_columns(template.names, ds.column_names, f"{where}.{col}")

    def render(batch: dict) -> dict:
        rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
        return {col: [t(row) for row in rows] for col, t in compiled.items()}

    return ds.map(render, batched=True, new_fingerprint=fingerprint(ds._fingerprint, "map", templates))


def _select_rows(ds, spec, where):
    """`first: N`, `range: [start, stop]` or `indices: [...]` (a bare int or list means first / indices)."""
    if isinstance(spec, int):
        spec = {"first": spec}
    elif isinstance(spec, list):
        spec = {"indices": spec}
    if not isinstance(spec, dict) or len(spec) != 1:
        raise UserError(f"{where}: give one of first: N, range: [start, stop], indices: [i, ...]")
    (kind, value), n = next(iter(spec.items())), len(ds)
    if kind == "first":
        indices = range(min(int(value), n))
    elif kind == "range":
        indices = range(*value)
    elif kind == "indices":
        indices = list(value)
    else:
        raise UserError(f"{where}: unknown row selection {kind!r}; use first, range or indices")
    bad = [i for i in indices if not -n <= i < n]
    if bad:
        raise UserError(f"{where}: row {bad[0]} is out of range for {n} rows")
    return ds.select([i % n for i in indices])


def _columns(ds, columns, where):
    columns = [columns] if isinstance(columns, str) else list(columns)
    check_columns(set(columns), ds.column_names, where)
    return columns


def _select_columns(ds, columns, where):
    return ds.select_columns(_columns(ds, columns, where))


def _drop_columns(ds, columns, where):
    return ds.remove_columns(_columns(ds, columns, where))


def _rename_columns(ds, mapping, where):
    check_columns(set(mapping), ds.column_names, where)
    return ds.rename_columns(dict(mapping))


def _shuffle(ds, spec, where):
    return ds.shuffle(seed=(spec or {}).get("seed", 0) if isinstance(spec, dict) else 0)


def _dedup(ds, columns, where):
    """Keep the first of rows that are equal on `columns` (`true`: on every column)."""
    columns = ds.column_names if columns is True else _columns(ds, columns, where)
    seen, keep, index = set(), [], 0
    for batch in ds.select_columns(columns).iter(batch_size=1000):
        for values in zip(*(batch[c] for c in columns)):
            key = hashlib.sha1(json.dumps(values, sort_keys=True, default=str).encode()).digest()
            if key not in seen:
                seen.add(key)
                keep.append(index)
            index += 1
    if len(keep) < len(ds):
        log.info("dedup removed %d exact duplicates of %d rows", len(ds) - len(keep), len(ds))
        return ds.select(keep)
    return ds


def split_op(data, spec: dict, where: str):
    """Hold out `eval` rows (a fraction < 1, rounded up as `datasets` rounds it, or a count) of split `from`
    (train) as split `to` (validation): drawn at random with `seed`, or the last rows with `shuffle: false`."""
    import datasets

    source, target = spec.get("from", "train"), spec.get("to", "validation")
    if source not in data:
        raise UserError(f"{where}.split.from={source!r}: no such split; splits here: {', '.join(data)}")
    if target in data and target != source:
        raise UserError(
            f"{where}.split: the data already has a {target!r} split ({len(data[target])} rows), which the rows held "
            f"out would replace; remove that file (e.g. '~dataset.sources.0.data_files.{target}'), or drop the split op"
        )
    size = spec.get("eval", 0.1)
    n = len(data[source])
    count = math.ceil(size * n) if isinstance(size, float) and size < 1 else int(size)
    if not isinstance(size, int | float) or size <= 0 or count < 1 or count >= n:
        raise UserError(
            f"{where}.split.eval={size!r} leaves an empty split of {n} rows; use a fraction in (0, 1) or a count in [1, {n - 1}]"
        )
    shuffle = spec.get("shuffle", True)
    if not isinstance(shuffle, bool):
        raise UserError(
            f"{where}.split.shuffle={shuffle!r}: true (rows drawn with seed) or false (the last rows)"
        )
    parts = data[source].train_test_split(test_size=count, seed=spec.get("seed", 0), shuffle=shuffle)
    return datasets.DatasetDict({**data, source: parts["train"], target: parts["test"]})


OPS: dict[str, Callable] = {
    "filter": _filter,
    "map": _map,
    "select_rows": _select_rows,
    "select_columns": _select_columns,
    "drop_columns": _drop_columns,
    "rename_columns": _rename_columns,
    "shuffle": _shuffle,
    "dedup": _dedup,
    "split": split_op,  # called with the whole DatasetDict: it changes the set of splits
}
