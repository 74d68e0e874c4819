"""Bad input: each case is a one-line UserError naming the key, file or line, raised before any model loads."""

from __future__ import annotations

import json

import datasets
import pytest
from conftest import run_cli

from hydratune.data.ops import build_splits
from hydratune.errors import UserError
from hydratune.tasks.sft.data import SFTDataModule, tokenize_split

ROWS = [{"instruction": f"do {i}", "input": "", "output": f"out {i}"} for i in range(6)]


def _jsonl(path, rows=ROWS, extra: str = ""):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + extra)
    return str(path)


def _raises(match, fn, *args):
    with pytest.raises(UserError, match=match) as info:
        fn(*args)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_malformed_jsonl_names_file_and_line(tmp_path):
    file = _jsonl(tmp_path / "bad.jsonl", extra='{"instruction": "x", "output": \n')
    _raises(
        rf"{file}:7: malformed JSON",
        build_splits,
        {"sources": [{"loader": "json", "data_files": file}]},
        str(tmp_path),
    )


def test_malformed_json_array_names_file_and_line(tmp_path):
    file = tmp_path / "bad.json"
    file.write_text('[\n{"a": 1},\n{"a": 2,,}\n]\n')
    _raises(
        rf"{file}:3: malformed JSON",
        build_splits,
        {"sources": [{"loader": "json", "data_files": str(file)}]},
        None,
    )


def test_a_csv_file_that_does_not_parse_says_why(tmp_path):
    """datasets wraps the reader's error in "An error occurred while generating the dataset": the line says
    what pandas found."""
    file = tmp_path / "bad.csv"
    file.write_text('instruction,output\na,b\n"c,d\n')
    _raises(rf"cannot read {file} as csv \(Error tokenizing data.*EOF inside string", build_splits,
            {"sources": [{"loader": "csv", "data_files": str(file)}]}, str(tmp_path / "c"))  # fmt: skip


def test_datasets_reader_name_as_path_needs_files(tmp_path):
    _raises(r"sources\[0\]\.path='json' is datasets' json file reader: give it `data_files`", build_splits,
            {"sources": [{"path": "json", "split": "train"}]}, None)  # fmt: skip


def test_unknown_loader_lists_valid_ones(tmp_path):
    _raises(r"loader='yaml' is not known; use one of: json, csv, parquet, text", build_splits,
            {"sources": [{"loader": "yaml", "data_files": "x"}]}, None)  # fmt: skip


def test_missing_file(tmp_path):
    _raises(r"data_files: .*nope.jsonl does not exist", build_splits,
            {"sources": [{"loader": "json", "data_files": str(tmp_path / "nope.jsonl")}]}, None)  # fmt: skip


def test_a_folder_given_as_a_file_names_the_glob_and_data_dir(tmp_path):
    """It passed the existence check and ended in datasets' IsADirectoryError traceback."""
    _jsonl(tmp_path / "rows.jsonl")
    _raises(rf"data_files: {tmp_path} is a folder; name a file, a glob \({tmp_path}/\*\.jsonl\), or give the "
            r"folder as dataset.sources\[0\].data_dir", build_splits,
            {"sources": [{"loader": "json", "data_files": str(tmp_path)}]}, None)  # fmt: skip


@pytest.mark.parametrize("suffix", ["jsonl", "json", "csv"])
def test_a_file_with_a_byte_order_mark_reads_as_without(tmp_path, suffix):
    """A Windows editor's UTF-8 BOM: preflight read such a file, training refused its first line (JSON) or kept
    the mark in the first column's name (CSV)."""
    if suffix == "csv":
        text = "instruction,input,output\n" + "".join(f"do {i},,out {i}\n" for i in range(6))
    elif suffix == "json":
        text = json.dumps(ROWS)
    else:
        text = "".join(json.dumps(r) + "\n" for r in ROWS)
    file = tmp_path / f"bom.{suffix}"
    file.write_bytes(b"\xef\xbb\xbf" + text.encode())
    loader = "csv" if suffix == "csv" else "json"
    splits = build_splits({"sources": [{"loader": loader, "data_files": str(file)}]}, str(tmp_path / "c"))
    assert splits["train"].column_names == ["instruction", "input", "output"]
    assert splits["train"][0]["instruction"] == "do 0" and len(splits["train"]) == 6


@pytest.mark.parametrize("fraction", [0, 1.5, -0.1])
def test_fraction_out_of_range(tmp_path, fraction):
    source = {"loader": "json", "data_files": _jsonl(tmp_path / "a.jsonl"), "fraction": fraction}
    _raises(r"sources\[0\]\.fraction=.* 0 < fraction <= 1", build_splits, {"sources": [source]}, None)


def test_token_in_config_is_refused(tmp_path):
    _raises(r"HF_TOKEN", build_splits, {"sources": [{"path": "a/b", "token": "hf_x"}]}, None)


def test_empty_after_filter_and_after_split(tmp_path):
    source = {"loader": "json", "data_files": _jsonl(tmp_path / "a.jsonl")}
    _raises(r"dataset.ops\[0\]: no rows left in split 'train' after filter", build_splits,
            {"sources": [source], "ops": [{"filter": "len(output) > 100"}]}, None)  # fmt: skip
    _raises(r"split.eval=6 leaves an empty split of 6 rows", build_splits,
            {"sources": [source], "ops": [{"split": {"eval": 6}}]}, None)  # fmt: skip


def test_condition_and_template_naming_a_missing_column(tmp_path):
    source = {"loader": "json", "data_files": _jsonl(tmp_path / "a.jsonl")}
    msg = _raises(r"ops\[0\].map.text: column 'answer' is not in the data; available columns: instruction, input, output",
                  build_splits, {"sources": [source], "ops": [{"map": {"text": "{instruction} {answer}"}}]}, None)  # fmt: skip
    assert "answer" in msg
    _raises(r"ops\[0\].filter: column 'outptu' is not in the data", build_splits,
            {"sources": [source], "ops": [{"filter": "len(outptu) > 1"}]}, None)  # fmt: skip
    _raises(r"unknown op", build_splits, {"sources": [source], "ops": [{"eval": "1"}]}, None)


def test_missing_format_column_names_available_columns(tokenizer):
    data = datasets.Dataset.from_list([{"question": "q", "answer": "a"}])
    _raises(r"column 'prompt' is not in split 'train'; available columns: question, answer", tokenize_split,
            data, tokenizer, {"prompt_column": "prompt", "response_column": "answer", "max_seq_length": 32})  # fmt: skip


def test_non_text_value_in_text_column(tokenizer):
    data = datasets.Dataset.from_list([{"text": "fine"}, {"text": "fine"}, {"text": None}])
    _raises(r"split 'train' row 2: dataset: no 'text' in this row", tokenize_split, data, tokenizer,
            {"text_column": "text", "max_seq_length": 32})  # fmt: skip


def test_a_row_without_the_column_says_so_and_what_it_has(tokenizer):
    """JSON rows with other keys (`inp`/`answer` for `input`/`output`) read as nulls: named as missing."""
    columns = {"instruction": ["a", "x"], "input": ["b", None], "output": ["c", None], "inp": [None, "y"],
               "answer": [None, "z"]}  # as `datasets` reads such a JSONL file  # fmt: skip
    _raises(r"split 'train' row 1: dataset: no 'output' in this row \(null or missing; it has: instruction, "
            r"inp, answer\)", tokenize_split, datasets.Dataset.from_dict(columns), tokenizer,
            {"format": "alpaca", "template": "alpaca_short", "max_seq_length": 64})  # fmt: skip


def test_a_conversation_in_a_text_column_points_at_the_chat_formats(tokenizer):
    """TRL's conversational rows (chosen/rejected as message lists) read as strings: the fix names the formats."""
    turns = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    data = datasets.Dataset.from_list([{"prompt": "q", "answer": turns}])
    _raises(r"column 'answer' holds list .*dataset.format=messages \(SFT rows; prompt and completion columns of "
            r"messages: dataset=chat 'dataset.messages_column=\[prompt,completion\]'\) or chat_pairs", tokenize_split,
            data, tokenizer, {"prompt_column": "prompt", "response_column": "answer", "max_seq_length": 32})  # fmt: skip


@pytest.mark.parametrize(
    "cfg",
    [{"text_column": "t", "prompt_column": "p", "response_column": "r"}, {}],
    ids=["both", "neither"],
)
def test_text_column_xor_prompt_response_columns(tokenizer, cfg):
    data = datasets.Dataset.from_list([{"t": "x"}])
    _raises(
        r"dataset.text_column.*dataset.prompt_column",
        tokenize_split,
        data,
        tokenizer,
        cfg | {"max_seq_length": 32},
    )


def test_datamodule_setup_reports_bad_data(tokenizer, tmp_path):
    file = _jsonl(tmp_path / "bad.jsonl", extra="not json\n")
    cfg = {
        "sources": [{"loader": "json", "data_files": file}],
        "format": "alpaca",
        "max_seq_length": 64,
        "batch_size": 2,
    }
    _raises(r"bad.jsonl:7: malformed JSON", SFTDataModule(tokenizer, cfg, 0, str(tmp_path / "c")).setup)


@pytest.mark.slow
def test_train_exits_with_one_line_before_loading_the_model(tiny_model_dir, tmp_path):
    file = _jsonl(tmp_path / "bad.jsonl", extra="{oops\n")
    result = run_cli(
        [
            "train.py",
            f"model.pretrained_model_name_or_path={tiny_model_dir}",
            "dataset.sources=[{loader: json, data_files: " + file + "}]",
            f"hydra.run.dir={tmp_path / 'run'}",
        ]
    )
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("hydratune: error: ") and f"{file}:7: malformed JSON" in last
    assert "trainable of" not in result.stdout + result.stderr  # configure_model never ran


def test_no_sample_left_names_the_length_that_keeps_one(tokenizer):
    """Prompts longer than max_seq_length leave no trained token: the error says so and by how much."""
    data = datasets.Dataset.from_list(
        [{"prompt": "p" * 40, "response": "r"}, {"prompt": "q" * 30, "response": "s"}]
    )
    _raises(r"no sample of split 'train' is left to train on \(2 had no trained token, 2 of them longer than "
            r"dataset.max_seq_length=16; 0 dropped as too long\); raise dataset.max_seq_length above 16 \(the "
            r"shortest sample has 33 tokens\)", tokenize_split, data, tokenizer,
            {"prompt_column": "prompt", "response_column": "response", "max_seq_length": 16})  # fmt: skip


def test_a_split_holds_out_the_rows_the_trainers_split_holds_out(tmp_path):
    """A fraction is rounded up as `datasets` rounds it, so an imported val_size with the file's seed holds out
    the rows LLaMA-Factory holds out (its `train_test_split(test_size=val_size, seed=seed)`); shuffle: false
    holds out the last rows; a shuffle that is not a bool is one line."""
    rows = [{"instruction": f"i{k}", "input": "", "output": f"o{k}"} for k in range(25)]
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = {"loader": "json", "data_files": str(path)}
    splits = build_splits({"sources": [source], "ops": [{"split": {"eval": 0.1, "seed": 42}}]}, None)
    theirs = datasets.Dataset.from_list(rows).train_test_split(test_size=0.1, seed=42)
    assert len(splits["validation"]) == 3  # ceil(2.5)
    assert splits["validation"]["instruction"] == theirs["test"]["instruction"]
    assert splits["train"]["instruction"] == theirs["train"]["instruction"]
    last = build_splits({"sources": [source], "ops": [{"split": {"eval": 2, "shuffle": False}}]}, None)
    assert last["validation"]["instruction"] == ["i23", "i24"] and len(last["train"]) == 23
    _raises(r"ops\[0\].split.shuffle='no': true \(rows drawn with seed\) or false", build_splits,
            {"sources": [source], "ops": [{"split": {"eval": 2, "shuffle": "no"}}]}, None)  # fmt: skip


def test_a_file_that_is_not_utf8_names_its_line_in_every_command(tmp_path):
    """A latin-1 byte in a JSONL file: hydratune inspect crashed with a traceback deep in datasets (pyarrow read
    the file), preflight named a byte offset (review F7). Every reader names the line; a character whose
    bytes straddle two 1 MiB reads is fine."""
    from hydratune.data.peek import read_file
    from hydratune.data.sources import check_utf8

    good = '{"instruction": "a", "output": "b"}\n'
    path = tmp_path / "latin1.jsonl"
    path.write_bytes((good * 3).encode() + b'{"instruction": "caf\xe9", "output": "e"}\n')
    for load in (
        lambda: build_splits({"sources": [{"loader": "json", "data_files": str(path)}]}, None),
        lambda: read_file(str(path), "json", 10),
    ):
        _raises(
            r"latin1.jsonl:4: not UTF-8 text \(invalid continuation byte at byte \d+\); save the file as UTF-8",
            load,
        )
    straddling = tmp_path / "big.jsonl"
    head = b'{"instruction": "'
    straddling.write_bytes(head + b"x" * ((1 << 20) - 1 - len(head)) + "é".encode() + b'", "output": "e"}\n')
    assert straddling.read_bytes()[(1 << 20) - 1 : (1 << 20) + 1] == "é".encode()  # 2 bytes over 2 reads
    check_utf8(str(straddling))
    far = tmp_path / "far.jsonl"
    far.write_bytes((good * 40_000).encode() + b'{"instruction": "\xff", "output": "e"}\n')
    _raises(r"far.jsonl:40001: not UTF-8 text", check_utf8, str(far))


def test_a_csv_column_of_numbers_trains_as_the_file_wrote_them(tmp_path):
    """pandas reads a CSV column of numbers as int, or as float where a cell is empty: the answer "4" was
    refused as not text, and the map op the error advised trained "4.0" (review F6). Numbers read as the file
    wrote them; an empty cell is still a null named by its row."""
    from hydratune.data.formats import format_prompt_response

    path = tmp_path / "qa.csv"
    path.write_text("question,answer\nWhat is 2+2?,4\nWhat is 5+5?,10\nHalf of 7?,3.5\nWhat is 1+1?,\n")
    rows = build_splits({"sources": [{"loader": "csv", "data_files": str(path)}]}, None)["train"]
    cfg = {"prompt_column": "question", "response_column": "answer"}
    assert [format_prompt_response(rows[i], cfg)[-1][0] for i in range(3)] == ["4", "10", "3.5"]
    _raises(r"no 'answer' in this row \(null or missing", format_prompt_response, rows[3], cfg)


def test_a_missing_column_of_another_layout_names_its_preset(tokenizer):
    """dataset=chat on ShareGPT rows said only "column 'messages' is not in split ... available: conversations"
    (review F15); the error names the preset that reads the rows."""
    sharegpt = datasets.Dataset.from_list([{"conversations": [{"from": "human", "value": "hi"}]}])
    with pytest.raises(
        UserError,
        match=r"available columns: conversations; these look like ShareGPT turns: dataset.format=sharegpt$",
    ):
        tokenize_split(sharegpt, tokenizer, {"format": "messages", "max_seq_length": 16})
    pairs = datasets.Dataset.from_list([{"prompt": "q", "chosen": "a", "rejected": "b"}])
    with pytest.raises(UserError, match=r"these look like preference pairs: task=dpo \(or kto, reward\)$"):
        tokenize_split(pairs, tokenizer, {"format": "alpaca", "max_seq_length": 16})


def test_overrides_after_an_option_are_overrides(tmp_path):
    """`hydratune inspect A=1 --samples 1 B=2` failed with 'unrecognized arguments: B=2' (review F15)."""
    result = run_cli(
        ["-m", "hydratune.cli", "inspect", "--samples", "1", "dataset.max_seq_length=200"], timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "longer than 200 tokens" in result.stdout
    result = run_cli(["-m", "hydratune.cli", "merge", str(tmp_path), "--bogus"], timeout=120)
    assert result.returncode == 2 and "unrecognized arguments: --bogus" in result.stderr
