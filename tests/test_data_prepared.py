"""Prepared rows (hydratune.data.prepared): a second run of the same data reads what the first wrote, the
same rows, without `datasets`; any change to the files, tokenizer or data settings prepares again."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import compose

import hydratune.tasks.sft.data as sft_data
from hydratune.config import to_plain
from hydratune.data.prepared import prepared_folder
from hydratune.tasks.sft.data import SFTDataModule


def _cfg(preset: str, tmp_path: Path, rows: int = 40, **changes) -> dict:
    """The preset's settings over a copy of the first `rows` rows of the shipped sample files."""
    cfg = to_plain(compose([f"dataset={preset}"]).dataset)
    files = {}
    for split, name in (("train", "train.jsonl"), ("validation", "eval.jsonl")):
        target = tmp_path / name
        if not target.exists():
            source = Path(cfg["sources"][0]["data_files"][split])
            target.write_text("".join(source.read_text().splitlines(keepends=True)[:rows]))
        files[split] = str(target)
    cfg["sources"] = [{"loader": "json", "data_files": files}]
    return cfg | changes


def _setup(tokenizer, cfg: dict, cache: Path, **kwargs) -> SFTDataModule:
    dm = SFTDataModule(tokenizer, cfg, seed=0, cache_dir=str(cache), **kwargs)
    dm.setup("fit")
    return dm


def _rows(data) -> list[dict]:
    return [data[i] for i in range(len(data))]


@pytest.mark.parametrize("preset", ["sample", "packed"])
def test_second_setup_reads_the_same_rows_without_datasets(preset, tokenizer, tmp_path, monkeypatch):
    cfg = _cfg(preset, tmp_path)
    first = _setup(tokenizer, cfg, tmp_path / "cache")
    assert type(first.train_dataset).__name__ == "Dataset"  # prepared through `datasets`

    def no_datasets(*_, **__):
        raise AssertionError("the second setup went through datasets")

    monkeypatch.setattr(sft_data, "build_splits", no_datasets)
    second = _setup(tokenizer, cfg, tmp_path / "cache")
    assert type(second.train_dataset).__name__ == "PreparedSplit"
    other_batches = _setup(tokenizer, cfg | {"batch_size": 3}, tmp_path / "cache")  # not part of the key
    assert type(other_batches.train_dataset).__name__ == "PreparedSplit"
    assert _rows(second.train_dataset) == [
        {k: v for k, v in row.items() if k in second.train_dataset.columns}
        for row in _rows(first.train_dataset)
    ]
    assert _rows(second.val_dataset) == [
        {k: v for k, v in row.items() if k in second.val_dataset.columns} for row in _rows(first.val_dataset)
    ]
    assert second.stats == first.stats and second.lengths == first.lengths
    assert second.row_lengths == first.row_lengths and (preset == "packed") == bool(second.row_lengths)
    assert second.train_dataset["num_trained"] == list(first.train_dataset["num_trained"])
    # The batches training sees, in the same order.
    for a, b in zip(first.train_dataloader(), second.train_dataloader()):
        assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    for a, b in zip(first.val_dataloader(), second.val_dataloader()):
        assert all((a[k] == b[k]).all() for k in a)
    # A DataLoader worker gets the folder, not a copy of the arrays.
    clone = pickle.loads(pickle.dumps(second.train_dataset))
    assert len(pickle.dumps(second.train_dataset)) < 2000 and _rows(clone) == _rows(second.train_dataset)


@pytest.mark.parametrize(
    "change, same",
    [
        ({"batch_size": 2, "eval_batch_size": 5, "num_workers": 1, "group_by_length": True}, True),
        ({"max_seq_length": 64}, False),
        ({"train_on": "all"}, False),
        ({"packing": True}, False),
        ({"ops": [{"filter": "len(output) > 3"}]}, False),
    ],
)
def test_the_key_follows_what_decides_the_rows(change, same, tokenizer, tmp_path):
    cfg = _cfg("sample", tmp_path)
    key = prepared_folder(cfg, "tok", str(tmp_path), [1])
    assert (prepared_folder(cfg | change, "tok", str(tmp_path), [1]) == key) is same
    assert prepared_folder(cfg, "other tokenizer", str(tmp_path), [1]) != key
    assert prepared_folder(cfg, "tok", str(tmp_path), [2]) != key  # tokenization or packing code changed
    assert prepared_folder(cfg | {"sources": [{"path": "tatsu-lab/alpaca"}]}, "tok", None, [1]) is None  # hub


def test_a_relative_and_an_absolute_path_to_the_same_files_share_the_key(tmp_path, monkeypatch):
    cfg = _cfg("sample", tmp_path)
    monkeypatch.chdir(tmp_path)
    relative = cfg | {
        "sources": [{"loader": "json", "data_files": {"train": "train.jsonl", "validation": "./eval.jsonl"}}]
    }
    swapped = cfg | {
        "sources": [{"loader": "json", "data_files": {"train": "eval.jsonl", "validation": "train.jsonl"}}]
    }
    key = prepared_folder(cfg, "tok", str(tmp_path), [1])
    assert prepared_folder(relative, "tok", str(tmp_path), [1]) == key
    assert prepared_folder(swapped, "tok", str(tmp_path), [1]) != key  # the same files in other splits


def test_edited_data_is_prepared_again(tokenizer, tmp_path):
    cfg = _cfg("sample", tmp_path)
    first = _setup(tokenizer, cfg, tmp_path / "cache")
    train = Path(cfg["sources"][0]["data_files"]["train"])
    lines = train.read_text().splitlines(keepends=True)
    record = json.loads(lines[0]) | {"output": "something else entirely"}
    train.write_text(json.dumps(record) + "\n" + "".join(lines[1:]))
    second = _setup(tokenizer, cfg, tmp_path / "cache")
    assert type(second.train_dataset).__name__ == "Dataset"  # not the old prepared rows
    assert second.train_dataset[0]["input_ids"] != first.train_dataset[0]["input_ids"]
    assert len(list((tmp_path / "cache" / "prepared").iterdir())) == 2


def test_unwritable_cache_trains_from_memory_and_leaves_nothing(tokenizer, tmp_path, monkeypatch, caplog):
    import numpy as np

    def full_disk(*_, **__):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", full_disk)
    cfg = _cfg("packed", tmp_path)
    with caplog.at_level("INFO", logger="hydratune.data.prepared"):
        dm = _setup(tokenizer, cfg, tmp_path / "cache")
    assert "No space left on device" in caplog.text
    assert next(iter(dm.train_dataloader()))["input_ids"].shape[0] > 0
    assert list((tmp_path / "cache" / "prepared").iterdir()) == []  # no partial folder left behind


@pytest.mark.parametrize("damage", ["manifest", "missing", "truncated"])
def test_a_damaged_folder_is_prepared_again(damage, tokenizer, tmp_path):
    import numpy as np

    cfg = _cfg("sample", tmp_path)
    first = _setup(tokenizer, cfg, tmp_path / "cache")
    (folder,) = (tmp_path / "cache" / "prepared").iterdir()
    if damage == "manifest":
        (folder / "manifest.json").unlink()
    elif damage == "missing":
        (folder / "train.labels.npy").unlink()
    else:
        ids = np.load(folder / "validation.input_ids.npy")
        np.save(folder / "validation.input_ids.npy", ids[:-5])
    dm = _setup(tokenizer, cfg, tmp_path / "cache")
    assert type(dm.train_dataset).__name__ == "Dataset"
    assert _rows(dm.val_dataset) == _rows(first.val_dataset)
    again = _setup(tokenizer, cfg, tmp_path / "cache")  # the folder was written again, whole
    assert type(again.train_dataset).__name__ == "PreparedSplit"
    assert _rows(again.val_dataset) == [
        {k: r[k] for k in again.val_dataset.columns} for r in _rows(first.val_dataset)
    ]


def test_inspection_still_sees_the_unpacked_samples(tokenizer, tmp_path):
    from hydratune.tasks.sft import SFTTask

    cfg = _cfg("packed", tmp_path)
    _setup(tokenizer, cfg, tmp_path / "cache")
    run_cfg = {"dataset": cfg, "seed": 0, "paths": {"cache_dir": str(tmp_path / "cache")}}
    report = SFTTask().full_data_report(run_cfg, tokenizer)
    assert report["train"]["packed_rows"] > 0 and len(report["examples"]) == 3


def test_a_process_reading_prepared_rows_imports_no_datasets(tiny_model_dir, tmp_path):
    cfg = _cfg("packed", tmp_path)
    script = textwrap.dedent(
        f"""
        import json, sys
        from transformers import AutoTokenizer
        from hydratune.tasks.sft.data import SFTDataModule
        dm = SFTDataModule(AutoTokenizer.from_pretrained({str(tiny_model_dir)!r}), json.loads(sys.argv[1]),
                           cache_dir={str(tmp_path / "cache")!r})
        dm.setup("fit")
        next(iter(dm.train_dataloader()))
        print(json.dumps([m for m in ("datasets", "pyarrow", "pandas") if m in sys.modules]))
        """
    )
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    imported = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", script, json.dumps(cfg)],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            ).stdout.splitlines()[-1]
        )
        for _ in range(2)
    ]
    assert "datasets" in imported[0] and imported[1] == []


def test_rows_are_written_batch_by_batch_with_an_indices_mapping(tmp_path, monkeypatch):
    import datasets

    import hydratune.data.prepared as prepared

    monkeypatch.setattr(prepared, "WRITE_BATCH", 7)  # several batches, the last one short
    rows = [
        {
            "input_ids": list(range(i, 2 * i + 1)),
            "labels": [-100] + list(range(i + 1, 2 * i + 1)),
            "num_trained": i,
        }
        for i in range(30)
    ]
    data = datasets.Dataset.from_list(rows).select([29, 3, 17, *range(5, 15), 0])  # reordered, some dropped
    assert prepared.write_prepared(tmp_path / "rows", {"train": data}, {"stats": {}})
    split = prepared.read_prepared(tmp_path / "rows")["datasets"]["train"]
    assert _rows(split) == [rows[i] for i in (29, 3, 17, *range(5, 15), 0)]


def test_the_cache_key_ignores_what_the_last_tokenizer_call_left_set(tokenizer):
    """transformers leaves the last call's truncation/padding on the backend tokenizer; the data's cache key
    must not change with it (a run that calls the tokenizer with truncation=True would miss its own rows)."""
    from hydratune.data.ops import tokenizer_fingerprint

    before = tokenizer_fingerprint(tokenizer)
    tokenizer(["abcdef", "ab"], truncation=True, max_length=3, padding=True)
    assert tokenizer.backend_tokenizer.truncation is not None  # the state the key must not read
    assert tokenizer_fingerprint(tokenizer) == before
    tokenizer(["abcdef"])  # and back
    assert tokenizer_fingerprint(tokenizer) == before


def test_a_run_reading_prepared_rows_says_what_their_preparation_cut(tokenizer, tmp_path, caplog):
    """A run after `hydratune inspect` (or a rerun) read the prepared rows and said nothing of the samples that
    max_seq_length cut or dropped: 42% in a review run (T7). The same lines come from the prepared rows."""
    cfg = _cfg("sample", tmp_path, max_seq_length=92)
    with caplog.at_level("INFO", logger="hydratune.tasks.sft.data"):
        first = _setup(tokenizer, cfg, tmp_path / "cache")
    said = [r.getMessage() for r in caplog.records if "read from the prepared rows" not in r.getMessage()]
    assert any("dataset.max_seq_length=92: in split 'train'" in line for line in said)
    caplog.clear()
    with caplog.at_level("INFO", logger="hydratune.tasks.sft.data"):
        second = _setup(tokenizer, cfg, tmp_path / "cache")
    assert type(second.train_dataset).__name__ == "PreparedSplit" and second.stats == first.stats
    again = [r.getMessage() for r in caplog.records]
    assert "read from the prepared rows" in again[0]
    assert again[1:] == [line for line in said if ": tokenized " not in line]  # all but the timing lines
