"""Sources (local files of each loader, every data_files form, hub layout offline) and ops."""

from __future__ import annotations

import json

import datasets
import pytest

from hydratune.data.expr import Expr, Template
from hydratune.data.ops import build_splits
from hydratune.errors import UserError

ROWS = [
    {"instruction": f"do {i}", "input": "" if i % 2 else f"x{i}", "output": f"out {i}"} for i in range(10)
]


def _write(path, rows=ROWS):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        datasets.Dataset.from_list(rows).to_csv(
            path
        ) if path.suffix == ".csv" else datasets.Dataset.from_list(rows).to_parquet(path)
    return str(path)


@pytest.mark.parametrize(
    ("loader", "suffix"), [("json", ".jsonl"), ("json", ".json"), ("csv", ".csv"), ("parquet", ".parquet")]
)
def test_local_loaders(tmp_path, loader, suffix):
    file = _write(tmp_path / f"d{suffix}")
    splits = build_splits({"sources": [{"loader": loader, "data_files": file}]}, str(tmp_path / "c"))
    assert splits["train"].num_rows == 10
    assert splits["train"][3]["output"] == "out 3"


def test_datasets_reader_name_as_path_reads_local_files(tmp_path):
    """`path: json` + `data_files`, as one writes `datasets.load_dataset("json", data_files=...)`, is a local
    source: the file's rows, with a bad line named as for `loader: json`."""
    file = _write(tmp_path / "d.jsonl")
    source = {"path": "json", "data_files": {"train": file}, "split": "train"}
    splits = build_splits({"sources": [source]}, str(tmp_path / "c"))
    assert splits["train"].num_rows == 10 and splits["train"][3]["output"] == "out 3"
    with open(file, "a") as f:
        f.write('{"instruction": "x", "output": \n')
    with pytest.raises(UserError, match=rf"{file}:11: malformed JSON"):
        build_splits({"sources": [source]}, str(tmp_path / "c2"))


def test_text_loader_and_data_dir(tmp_path):
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "a.txt").write_text("one\ntwo\n")
    (tmp_path / "txt" / "b.txt").write_text("three\n")
    splits = build_splits(
        {"sources": [{"loader": "text", "data_dir": str(tmp_path / "txt")}]}, str(tmp_path / "c")
    )
    assert sorted(splits["train"]["text"]) == ["one", "three", "two"]


def test_a_json_data_dir_reads_its_json_files_only_and_splits_by_name(tmp_path):
    """model-compose's `data_dir: ./data/training  # All JSON files in directory`: a CSV or notes beside
    them were handed to the JSON reader too (an error naming only the JSON files). Files named for a split
    (train*, validation*, dev*) are that split, as datasets names them."""
    folder = tmp_path / "training"
    folder.mkdir()
    _write(folder / "a.json", ROWS[:3])
    _write(folder / "b.jsonl", ROWS[3:5])
    (folder / "stats.csv").write_text("rows,source\n5,notes\n")
    (folder / "README.md").write_text("# notes\n")
    splits = build_splits({"sources": [{"loader": "json", "data_dir": str(folder)}]}, str(tmp_path / "c"))
    assert splits["train"].num_rows == 5
    _write(folder / "validation.json", ROWS[5:7])
    (folder / "a.json").rename(folder / "train.json")
    splits = build_splits({"sources": [{"loader": "json", "data_dir": str(folder)}]}, str(tmp_path / "c2"))
    assert (splits["train"].num_rows, splits["validation"].num_rows) == (3, 2)


def test_data_files_list_and_mapping_and_several_sources(tmp_path):
    a, b = _write(tmp_path / "a.jsonl"), _write(tmp_path / "b.jsonl", ROWS[:4])
    cfg = {
        "sources": [
            {"loader": "json", "data_files": [a, b]},  # a list: one train split
            {"loader": "json", "data_files": {"train": b, "validation": a}, "fraction": 0.5},
        ]
    }
    splits = build_splits(cfg, str(tmp_path / "c"))
    assert splits["train"].num_rows == 14 + 2
    assert splits["validation"].num_rows == 5


def _hub_repo(root):
    """A directory laid out like a hub dataset repository (README + data/<split>-*.parquet)."""
    (root / "data").mkdir(parents=True)
    (root / "README.md").write_text("---\nlicense: mit\n---\n# tiny alpaca\n")
    datasets.Dataset.from_list(ROWS).to_parquet(root / "data" / "train-00000-of-00001.parquet")
    datasets.Dataset.from_list(ROWS[:3]).to_parquet(root / "data" / "test-00000-of-00001.parquet")
    return str(root)


def test_hub_layout_offline_with_split_mapping_fraction_and_shuffle(tmp_path):
    repo = _hub_repo(tmp_path / "repo")
    source = {
        "path": repo,
        "split": {"train": "train", "validation": "test"},
        "fraction": 0.5,
        "shuffle": True,
    }
    splits = build_splits({"sources": [source]}, str(tmp_path / "c"))
    assert (splits["train"].num_rows, splits["validation"].num_rows) == (5, 2)
    assert list(splits["train"]["output"]) != [r["output"] for r in ROWS[:5]]  # shuffled before the fraction
    one = build_splits(
        {"sources": [{"path": repo, "split": "train", "streaming": True, "max_rows": 4}]}, None
    )
    assert list(one) == ["train"] and one["train"].num_rows == 4


def test_uncached_hub_id_offline_fails_fast_with_a_clear_error(tmp_path):
    with pytest.raises(UserError, match=r"sources\[0\]\.path='nobody/nothing'.*offline"):
        build_splits({"sources": [{"path": "nobody/nothing", "split": "train"}]}, str(tmp_path))


def test_a_hub_dataset_with_no_route_to_the_hub_reads_the_cache_only(tmp_path, monkeypatch, caplog):
    """HF_HUB_OFFLINE unset and no network: datasets waited out its retries before reading its cache or failing
    (review N1). A hub host that does not resolve, with no proxy set, reads the cache at once."""
    import logging
    import os
    import socket

    import datasets.config
    import huggingface_hub.constants

    from hydratune import hub

    for var in (
        "HF_HUB_OFFLINE",
        "HF_DATASETS_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_ENDPOINT",
        *hub.PROXY_VARIABLES,
    ):
        monkeypatch.delenv(var, raising=False)
    for module in (datasets.config, huggingface_hub.constants):
        monkeypatch.setattr(module, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False)
    monkeypatch.setattr(hub, "_CACHE_ONLY", [])

    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with caplog.at_level(logging.INFO, logger="hydratune.hub"), pytest.raises(UserError, match="not cached"):
        build_splits({"sources": [{"path": "nobody/nothing", "split": "train"}]}, str(tmp_path))
    assert "sources[0].path=nobody/nothing: huggingface.co does not resolve on this machine" in caplog.text
    assert datasets.config.HF_HUB_OFFLINE is True and os.environ["HF_HUB_OFFLINE"] == "1"


def test_expression_language():
    row = {"output": "Sorry, no", "input": "", "n": 3}
    assert Expr("len(output) > 3 and not n == 2")(row)
    assert Expr('"sorry" in lower(output) or input != ""')(row)
    assert Expr("input in ['', null]")(row)
    assert Expr("n + 1 >= 4 and 'x' not in output")(row)
    assert not Expr("not (n < 5)")(row)
    assert Expr("len(output) - len(input) == 9").names == {"output", "input"}
    for bad in ("__import__('os')", "n ==", "output.upper()", "n ; 1"):
        with pytest.raises(UserError):
            Expr(bad)(row)


def test_templates_format_and_jinja_sandbox():
    row = {"instruction": "Up.", "input": None}
    assert Template("{instruction}|{input}")(row) == "Up.|"
    assert Template("{% if input %}{{ input }}{% else %}none{% endif %}")(row) == "none"
    for bad in ("{instruction.__class__}", "{0}"):
        with pytest.raises(UserError, match="plain column name"):
            Template(bad)


def test_ops_in_order(tmp_path):
    a = _write(tmp_path / "a.jsonl")
    rows = ROWS[:3] + ROWS[:3]
    b = _write(tmp_path / "b.jsonl", [{"prompt": r["instruction"], "answer": r["output"]} for r in rows])
    cfg = {
        "sources": [
            {"loader": "json", "data_files": a, "ops": [{"select_columns": ["instruction", "output"]}]},
            {
                "loader": "json",
                "data_files": b,
                "ops": [{"rename_columns": {"prompt": "instruction", "answer": "output"}}],
            },
        ],
        "ops": [
            {"concat": {}},
            {"dedup": ["instruction", "output"]},
            {"filter": "output != 'out 9'"},
            {"map": {"text": "{instruction} -> {output}"}},
            {"drop_columns": ["instruction"]},
            {"select_rows": {"range": [0, 8]}},
            {"split": {"eval": 2, "seed": 1}},
        ],
    }
    splits = build_splits(cfg, str(tmp_path / "c"))
    assert (splits["train"].num_rows, splits["validation"].num_rows) == (6, 2)
    assert splits["train"].column_names == ["output", "text"]
    texts = list(splits["train"]["text"]) + list(splits["validation"]["text"])
    assert len(set(texts)) == 8 and "do 9 -> out 9" not in texts
    again = build_splits(cfg, str(tmp_path / "c"))  # seeded: the same split twice
    assert list(again["validation"]["text"]) == list(splits["validation"]["text"])


def test_interleave_with_probabilities(tmp_path):
    a = _write(tmp_path / "a.jsonl", [{"t": "a"}] * 200)
    b = _write(tmp_path / "b.jsonl", [{"t": "b"}] * 200)
    cfg = {
        "sources": [{"loader": "json", "data_files": a}, {"loader": "json", "data_files": b}],
        "ops": [{"interleave": {"probabilities": [0.8, 0.2], "seed": 0}}],
    }
    mixed = list(build_splits(cfg, str(tmp_path / "c"))["train"]["t"])
    # first_exhausted: stops when the 200 a-rows run out, so about 50 b-rows come along.
    assert mixed.count("a") == 200 and 25 < mixed.count("b") < 80
