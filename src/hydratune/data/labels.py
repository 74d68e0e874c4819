"""Classification data without torch: label names from the data, and texts to token ids.

Shared by `hydratune.tasks.classification` (training) and `hydratune preflight` (which checks the first rows
of a dataset without importing torch or transformers).
"""

from __future__ import annotations

from collections import Counter

from hydratune.errors import UserError


def encode_texts(
    tokenizer,
    texts: list[str],
    pairs: list[str] | None = None,
    max_length: int | None = None,
    separator: str = "\n",
) -> list[list[int]]:
    """Token ids of each text (or text pair), cut to `max_length`.

    A tokenizer with a separator token (BERT-style) encodes pairs itself (its cut takes from the longer text
    first); for one without (most decoder tokenizers) the two texts are joined with `separator`, and a pair too
    long is cut in its first text, so that the second one (MNLI's hypothesis, a question) is kept: a cut from
    the right lost it whole.
    """
    if pairs is None or tokenizer.sep_token is not None:
        return tokenizer(texts, pairs, truncation=max_length is not None, max_length=max_length)["input_ids"]
    joined = [f"{a}{separator}{b}" for a, b in zip(texts, pairs)]
    if max_length is None or not getattr(tokenizer, "is_fast", False):
        return tokenizer(joined, truncation=max_length is not None, max_length=max_length)["input_ids"]
    encoded = tokenizer(joined, return_offsets_mapping=True)
    out = []
    for ids, offsets, first in zip(encoded["input_ids"], encoded["offset_mapping"], texts):
        over = len(ids) - max_length
        if over > 0:  # the last `over` tokens that lie wholly in the first text go (special tokens stay)
            inside = [i for i, (start, end) in enumerate(offsets) if end > start and end <= len(first)]
            gone = set(inside[-over:]) if over <= len(inside) else set(inside)
            kept = [t for i, t in enumerate(ids) if i not in gone]
            ids = kept[:max_length]  # then from the right, if the second text alone is too long
        out.append(ids)
    return out


def classifier_cut_warning(split: str, cut: int, rows: int, max_len) -> str:
    """When dataset.max_seq_length cuts many texts: a classifier reads only what is kept (long reviews lose
    most of their words; a pair loses the end of its first text)."""
    return (
        f"dataset.max_seq_length={max_len}: {cut} of {rows} {split} texts are longer and cut short (the classifier "
        "reads only what is kept; a pair is cut in its first text); raise dataset.max_seq_length"
    )


def missing(value) -> bool:
    """No text, or no label: empty, or a negative integer (datasets' ClassLabel and GLUE's test rows write -1
    for a row without a label; as a class it would shift every class id by one)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value < 0 and float(value).is_integer()
    return value is None or (isinstance(value, str) and not value.strip())


def label_key(value, where: str):
    """A label value as used for counting: str, or int (whole floats become ints)."""
    if isinstance(value, bool) or isinstance(value, int | str):
        return int(value) if isinstance(value, bool) else value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list | tuple):
        what = "a list of labels (multi-label classification)"
    elif isinstance(value, float):
        what = "a fractional score (regression, as STS-B)"
    else:
        what = f"a {type(value).__name__}"
    raise UserError(
        f"{where}: label {value!r} is {what}; task=classification trains one class per row from an integer or "
        "string label, and does not do multi-label or regression"
    )


def build_label_names(
    train_values: list, names: list[str] | None, where: str, min_classes: int = 2
) -> tuple[list[str], dict]:
    """(label names by id, {raw label value: id}) from the train split's label values.

    Without `names`: the sorted distinct values (integers 0..K-1 keep their ids). With `names`:
    string labels must be among them (the list gives the order); integer labels index into them.
    `min_classes`: 1 when the values are only some rows (preflight's first rows may share one label).
    """
    counts = Counter(train_values)
    kinds = {type(v) for v in counts}
    if len(kinds) > 1:
        raise UserError(
            f"{where}: labels mix integers and strings ({sorted(map(str, counts))[:5]}); use one kind"
        )
    if names:
        names = [str(n) for n in names]
        if kinds == {int}:
            bad = sorted(v for v in counts if not 0 <= v < len(names))
            if bad:
                raise UserError(
                    f"dataset.labels has {len(names)} names but {where} has integer labels {bad[:5]}"
                )
            mapping = {i: i for i in range(len(names))}
        else:
            bad = sorted(v for v in counts if v not in names)
            if bad:
                raise UserError(
                    f"dataset.labels does not list {bad[:5]} found in {where}; add them or drop the rows"
                )
            mapping = {n: i for i, n in enumerate(names)}
    else:
        values = sorted(counts)
        names = [str(v) for v in values]
        mapping = {v: i for i, v in enumerate(values)}
    if len(counts) < min_classes:
        raise UserError(
            f"{where}: every labelled row has the label {next(iter(counts), None)!r}; classification needs "
            "at least 2 classes"
        )
    return names, mapping


def unread_classifier_columns(cfg: dict) -> list[str]:
    """A line for each column a `map` op makes that the classifier does not read (see unread_map_columns)."""
    from hydratune.data.ops import unread_map_columns

    reads = {cfg[key] for key in ("text_column", "text_pair_column", "label_column") if cfg.get(key)}
    return unread_map_columns(cfg, reads, "classification", "dataset.text_column={column}")


def unread_classifier_text(rows: list[dict], columns: list[str], cfg: dict) -> list[str]:
    """A line for each text column the classifier does not read: MNLI's hypothesis without text_pair_column
    trains on the premise alone (review L4)."""
    from hydratune.data.ops import unread_text_columns

    reads = {cfg[key] for key in ("text_column", "text_pair_column", "label_column") if cfg.get(key)}
    pair = "read it as the second text of a pair (dataset.text_pair_column={column})"
    fix = None if cfg.get("text_pair_column") else pair
    return unread_text_columns(rows, columns, cfg, reads, "task=classification", fix)
