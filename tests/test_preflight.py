"""`hydratune preflight`'s quick data check (hydratune.data.peek) against the real data pipeline.

The quick check reads the first rows of each file without datasets/transformers/torch; its counts
must be the ones SFTDataModule gives for the same rows, and its errors one line naming file and line.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, compose

from hydratune.config import to_plain
from hydratune.data.peek import Fallback, FastTokenizer, build_splits, peek, sft_split
from hydratune.errors import UserError
from hydratune.preflight import check_config, data_check
from hydratune.tasks.registry import get_task


def _peek(cfg: dict, limit: int = 200) -> dict:
    """The quick data check with the run's own task, as `hydratune preflight` calls it."""
    return peek(cfg, get_task(cfg.get("task")), limit)


HYDRATUNE = str(Path(sys.executable).parent / "hydratune")
STATS = ("rows", "truncated", "dropped_truncated", "dropped_untrained", "truncation_rate", "samples",
         "tokens", "trained_tokens", "trainable_fraction")  # fmt: skip


def _config(overrides: list[str] | None = None) -> dict:
    return to_plain(compose(overrides or []))


def _tricky_rows() -> list[dict]:
    """Rows that truncate, lose every trained token to truncation, have empty or missing fields, carry a
    literal EOS, characters outside the vocabulary, and blank lines between them."""
    return [
        {"instruction": "Reverse the word.", "input": "abc", "output": "cba"},
        {"instruction": "Say nothing.", "input": "", "output": ""},  # only EOS is trained
        {"instruction": "Long answer.", "input": "x", "output": "y" * 200},  # truncated, still trained
        {"instruction": "A prompt longer than the limit " + "p" * 200, "output": "z"},  # no trained token
        {"instruction": "Missing input key.", "output": "ok"},
        {"instruction": "Null input.", "input": None, "output": "fine</s>"},  # ends with a literal EOS
        {"instruction": "Unicode é ✓", "input": "ü", "output": "ß"},  # unknown characters -> <unk>
        {"instruction": "", "input": "", "output": ""},  # empty prompt and answer
        {"instruction": "Exactly at the limit " + "q" * 31, "input": "", "output": "r" * 9},
    ]


def _full_pipeline(dataset_cfg: dict, model_dir: str, cache_dir: Path):
    from hydratune.model import load_tokenizer
    from hydratune.tasks.sft.data import SFTDataModule

    tokenizer = load_tokenizer({"pretrained_model_name_or_path": model_dir})
    datamodule = SFTDataModule(tokenizer, dataset_cfg, cache_dir=str(cache_dir))
    datamodule.setup("fit")
    return datamodule


@pytest.mark.parametrize("case", ["sample", "tricky", "tricky_drop", "segments"])
def test_quick_counts_match_the_full_pipeline_on_the_same_rows(case, tmp_path):
    """Same first N rows through both paths: identical counts and identical token ids of kept samples."""
    limit = 100
    cfg = _config()
    dataset = cfg["dataset"]
    if case == "segments":  # Axolotl's input_output rows: no chat template, so the quick check reads them
        data = tmp_path / "segments.jsonl"
        rows = [{"segments": [{"label": False, "text": f"Reverse: {w}\n"}, {"label": True, "text": w[::-1]}]}
                for w in ("abc", "hello", "", "x" * 120)]  # fmt: skip
        data.write_text("".join(json.dumps(row) + "\n" for row in rows))
        dataset |= {"sources": [{"loader": "json", "data_files": {"train": str(data)}}], "format": "segments"}
    elif case != "sample":
        data = tmp_path / "tricky.jsonl"
        lines = [json.dumps(row) for row in _tricky_rows()]
        data.write_text("\n".join(lines[:3]) + "\n\n" + "\n".join(lines[3:]) + "\n")
        dataset["sources"] = [{"loader": "json", "data_files": {"train": str(data)}}]
        dataset["max_seq_length"] = 96  # the last tricky row is exactly 96 tokens
        dataset["truncation"] = "drop" if case == "tricky_drop" else "truncate"
    model_dir = cfg["model"]["pretrained_model_name_or_path"]
    full_cfg = {**dataset, "ops": [{"select_rows": {"first": limit}}]}  # the rows the quick check reads
    datamodule = _full_pipeline(full_cfg, model_dir, tmp_path / "cache")

    report = data_check(cfg, limit)  # preflight's data check: the quick one here
    assert report["data_check"].startswith("quick")
    splits = build_splits(dataset, limit, [])
    tokenizer = FastTokenizer(cfg["model"])
    for split, expected in datamodule.stats.items():
        assert {k: report[split][k] for k in STATS} == {k: expected[k] for k in STATS}, split
        _, ids = sft_split(splits[split], tokenizer, dataset, split, [])
        full = datamodule.train_samples if split == "train" else datamodule.val_dataset
        assert ids == [list(x) for x in full["input_ids"]], split
    train = report["train"]
    if case == "sample":
        assert (train["rows"], report["validation"]["rows"]) == (limit, 60)
    elif case == "segments":
        assert train["rows"] == 4 and train["truncated"] == 1
    else:  # the tricky rows exercise what they are meant to
        assert train["rows"] == len(_tricky_rows()) and train["truncated"] == 2
        assert train["dropped_untrained"] == (1 if case == "tricky" else 0)
        assert train["untrained_rate"] == pytest.approx(train["dropped_untrained"] / train["rows"])


def test_fast_tokenizer_matches_transformers_on_a_byte_level_bpe(tmp_path):
    """A BPE tokenizer whose post-processor adds BOS (and SEP between pairs), with no pad token: the same
    ids as the transformers tokenizer training loads, for SFT samples and classification pairs."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from hydratune.data.formats import format_alpaca
    from hydratune.data.labels import encode_texts
    from hydratune.data.peek import tokenizer_report
    from hydratune.data.tokenize import tokenize_samples
    from hydratune.model import load_tokenizer

    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(
        single="<|bos|> $A", pair="<|bos|> $A <|sep|> $B", special_tokens=[("<|bos|>", 0), ("<|sep|>", 2)]
    )
    rows = _tricky_rows() + [json.loads(line) for line in (ROOT / "data/sample/train.jsonl").open()][:300]
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|bos|>", "<|eos|>", "<|sep|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator([f"{r['instruction']} {r['output']}" for r in rows], trainer)
    PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|bos|>", eos_token="<|eos|>", sep_token="<|sep|>"
    ).save_pretrained(tmp_path)

    fast, hf = (
        FastTokenizer({"pretrained_model_name_or_path": str(tmp_path)}),
        load_tokenizer({"pretrained_model_name_or_path": str(tmp_path)}),
    )
    assert tokenizer_report(fast) == tokenizer_report(hf) and tokenizer_report(fast)["pad_is_eos"]
    samples = [format_alpaca(r, {"template": "alpaca"}) for r in rows]
    assert tokenize_samples(samples, fast, 96) == tokenize_samples(samples, hf, 96)
    texts, pairs = [r["instruction"] for r in rows], [r["output"] for r in rows]
    assert encode_texts(fast, texts, pairs) == encode_texts(hf, texts, pairs)
    assert encode_texts(fast, texts)[0][0] == 0  # the post-processor's BOS is there


def test_quick_check_imports_no_heavy_library():
    """The default preflight (and the classification one) run without datasets, transformers or torch."""
    code = (
        "import sys, json\n"
        "from hydratune.preflight import run_preflight\n"
        "checks = [run_preflight([], rows=50)['data_check'],\n"
        "          run_preflight(['task=classification', 'dataset=topics'], rows=50)['data_check']]\n"
        "heavy = sorted(m for m in ('datasets', 'transformers', 'torch', 'lightning') if m in sys.modules)\n"
        "print(json.dumps([checks, heavy]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    checks, heavy = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(c.startswith("quick") for c in checks), checks
    assert heavy == []


def _preflight_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [HYDRATUNE, "preflight", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    return lines[0]


def test_classification_missing_label_column_is_one_line(tmp_path):
    rows = [{"text": f"sentence {i}", "category": ["a", "b"][i % 2]} for i in range(10)]
    for name in ("train", "eval"):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = _preflight_cli(
        "task=classification",
        "dataset=topics",
        f"dataset.sources.0.data_files.train={tmp_path / 'train.jsonl'}",
        f"dataset.sources.0.data_files.validation={tmp_path / 'eval.jsonl'}",
    )
    line = _one_line_error(result)
    assert "dataset.label_column='label'" in line and str(tmp_path / "train.jsonl") in line
    assert "category" in line  # the columns that are there

    # With the right column the same files pass, and the classes are counted.
    cfg = _config(["task=classification", "dataset=topics", "dataset.label_column=category"])
    cfg["dataset"]["sources"][0]["data_files"] = {
        "train": str(tmp_path / "train.jsonl"),
        "validation": str(tmp_path / "eval.jsonl"),
    }
    report = _peek(cfg, 200)
    assert report["train"]["labels"] == ["a", "b"] and report["train"]["class_counts"] == [5, 5]
    assert report["validation"]["dropped_unknown_label"] == 0


def test_classification_counts_match_the_datamodule(tmp_path):
    """Rows without text or label, and validation labels the train split lacks, are dropped alike."""
    from hydratune.model import load_tokenizer
    from hydratune.tasks.classification.data import ClassificationDataModule

    train = [{"text": "good " * i, "label": ["pos", "neg"][i % 3 == 0]} for i in range(1, 30)]
    train += [{"text": "", "label": "pos"}, {"text": "no label", "label": None}, {"text": "x"}]
    val = [{"text": "fine", "label": "pos"}, {"text": "new", "label": "meh"}, {"text": "  ", "label": "neg"}]
    for name, rows in (("train", train), ("val", val)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _config(["task=classification", "dataset=topics", "dataset.max_seq_length=64"])
    files = {"train": str(tmp_path / "train.jsonl"), "validation": str(tmp_path / "val.jsonl")}
    cfg["dataset"]["sources"][0]["data_files"] = files
    report = _peek(cfg, 200)
    tokenizer = load_tokenizer(
        {"pretrained_model_name_or_path": cfg["model"]["pretrained_model_name_or_path"]}
    )
    datamodule = ClassificationDataModule(tokenizer, cfg["dataset"], cache_dir=str(tmp_path / "cache"))
    datamodule.setup("fit")
    assert report["train"]["labels"] == datamodule.labels == ["neg", "pos"]
    assert report["train"]["class_counts"] == datamodule.class_counts
    assert report["train"]["samples"] == len(datamodule.train_dataset)
    assert report["validation"]["samples"] == len(datamodule.val_dataset) == 1
    assert (report["train"]["dropped_no_text"], report["train"]["dropped_no_label"]) == (1, 2)
    assert report["validation"]["dropped_unknown_label"] == 1
    at_limit = sum(len(ids) == 64 for ids in datamodule.train_dataset["input_ids"])
    assert report["train"]["truncated"] == at_limit > 0  # "good " * i passes 64 tokens from i = 13


def test_classification_preflight_knows_its_metric_names_weights_files_and_empty_validation(tmp_path):
    """What failed only once training ran: val/accuracy for a task that logs val/acc (L2), a class_weights list
    of the wrong length (L11), a validation split with no usable row (L6: --full-data crashed in the
    tokenizer), and a .csv file under the json reader (L7: 'malformed JSON')."""
    from hydratune.preflight import check_metric_name

    cfg = _config(["task=classification", "dataset=topics"])
    for metric, fix in (
        ("val/accuracy", "val/acc"),
        ("eval_accuracy", "val/acc"),
        ("val/f1", "val/f1_macro"),
    ):
        cfg["callbacks"]["model_checkpoint"]["metric_for_best_model"] = metric
        with pytest.raises(UserError, match=rf"metric_for_best_model={metric}: .*set it to {fix}$"):
            check_metric_name(cfg)
    dpo = _config(["task=dpo"])
    dpo["callbacks"]["model_checkpoint"]["metric_for_best_model"] = "val/acc"
    with pytest.raises(UserError, match="task=dpo logs it as val/accuracy"):
        check_metric_name(dpo)
    cfg["callbacks"]["model_checkpoint"]["metric_for_best_model"] = "val/acc"
    check_metric_name(cfg)

    weighted = _config(["task=classification", "dataset=topics", "task.class_weights=[1,2]"])
    with pytest.raises(UserError, match=r"task.class_weights has 2 numbers but the data have 4 classes"):
        _peek(weighted)

    train = [{"text": f"t{i}", "label": i % 2} for i in range(6)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (tmp_path / "test.jsonl").write_text(
        "".join(json.dumps({"text": "x", "label": -1}) + "\n" for _ in range(3))
    )
    cfg["dataset"]["sources"][0]["data_files"] = {
        "train": str(tmp_path / "train.jsonl"),
        "validation": str(tmp_path / "test.jsonl"),
    }
    with pytest.raises(UserError, match=r"the validation split has no usable row \(3 no label\)"):
        _peek(cfg)
    (tmp_path / "train.csv").write_text("text,label\na,0\nb,1\n")
    cfg["dataset"]["sources"][0]["data_files"] = {"train": str(tmp_path / "train.csv")}
    with pytest.raises(
        UserError,
        match=r"train.csv is a csv file, read with the json reader: set dataset.sources.0.loader=csv",
    ):
        _peek(cfg)


def test_classification_unknown_label_name_is_an_error(tmp_path):
    rows = [{"text": "t", "label": label} for label in ("pos", "neg", "meh")]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _config(["task=classification", "dataset=topics", "dataset.labels=[pos,neg]"])
    cfg["dataset"]["sources"][0]["data_files"] = {
        "train": str(tmp_path / "d.jsonl"),
        "test": str(tmp_path / "d.jsonl"),
    }
    with pytest.raises(UserError, match=r"dataset.labels does not list \['meh'\]"):
        _peek(cfg, 200)


def test_malformed_jsonl_names_file_and_line_even_past_the_rows_checked(tmp_path):
    data = tmp_path / "train.jsonl"
    good = json.dumps({"instruction": "a", "input": "", "output": "b"})
    data.write_text("\n".join([good] * 4 + ['{"instruction": "c", "output": '] + [good]) + "\n")
    result = _preflight_cli(
        "--rows",
        "2",
        f"dataset.sources.0.data_files.train={data}",
        "~dataset.sources.0.data_files.validation",
    )
    line = _one_line_error(result)
    assert f"{data}:5: malformed JSON" in line


def _with_file(cfg: dict, path: Path, **dataset) -> dict:
    sources = [{"loader": "json", "data_files": {"train": str(path)}}]
    return {**cfg, "dataset": {**cfg["dataset"], "sources": sources, **dataset}}


def test_missing_column_and_bad_value_name_the_file(tmp_path):
    cfg = _config()
    data = tmp_path / "qa.jsonl"
    data.write_text('{"question": "q", "reply": "a"}\n\n{"question": "q2", "reply": "b"}\n')
    pairs = {"format": "prompt_response", "prompt_column": "question", "template": None}
    with pytest.raises(UserError, match=rf"column 'answer' is not in split 'train' \({data}\); available"):
        _peek(_with_file(cfg, data, response_column="answer", **pairs))
    data.write_text('{"question": "q", "reply": "a"}\n\n{"question": "q2", "reply": 7}\n')
    with pytest.raises(Fallback, match="'reply' mixes number and text"):  # datasets re-encodes such a column
        _peek(_with_file(cfg, data, response_column="reply", **pairs))
    data.write_text('{"question": "q", "reply": {"x": 1}}\n{"question": "q2", "reply": {"x": 7}}\n')
    with pytest.raises(  # (numbers are text as written: review F6)
        UserError, match=rf"{data}:1 \(split 'train' row 0\): dataset: column 'reply' holds dict"
    ):
        _peek(_with_file(cfg, data, response_column="reply", **pairs))
    data.write_text("")  # said as training says it (it read: "available columns: " and nothing)
    with pytest.raises(UserError, match=rf"{data}: the file is empty \(no JSON record\)"):
        _peek(_with_file(cfg, data, response_column="reply", **pairs))


def test_what_the_quick_check_cannot_reproduce_falls_back():
    with pytest.raises(Fallback, match="format=messages"):
        _peek(_config(["dataset=chat"]))
    with pytest.raises(Fallback, match="format=sharegpt"):
        _peek(_config(["dataset=sharegpt"]))
    with pytest.raises(Fallback, match="tatsu-lab/alpaca"):
        _peek(_config(["dataset=alpaca"]))
    with pytest.raises(Fallback, match="not a local folder"):
        _peek(_config(["model=qwen2_5_0_5b"]))


def test_checkpoint_estimate_counts_the_lora_parameters_peft_trains():
    from hydratune.model import apply_peft, count_parameters, load_model
    from hydratune.preflight import checkpoint_bytes

    cfg = _config()
    model_cfg = {k: v for k, v in cfg["model"].items() if k != "token"}
    trainable, _ = count_parameters(apply_peft(load_model(model_cfg), cfg["peft"]))
    needed, how = checkpoint_bytes(cfg)
    assert f"of {trainable:,} trained parameters" in how
    assert needed >= trainable * 12 * 2
    # Under FSDP each (sharded) checkpoint holds the frozen base weights too.
    fsdp_needed, fsdp_how = checkpoint_bytes(_config(["trainer=fsdp"]))
    weights = sum(
        p.stat().st_size for p in Path(cfg["model"]["pretrained_model_name_or_path"]).glob("*.safetensors")
    )
    assert fsdp_needed - needed >= 2 * weights * 0.99 and "frozen weights (FSDP)" in fsdp_how


def _write(path: Path, loader: str) -> None:
    rows = [
        {"q": "What is 1+1?", "a": "2", "n": 1, "note": "x"},
        {"q": 'Ünïcode, "quoted"', "a": "", "n": 2, "note": None},
        {"q": "multi\nline", "a": "NA", "n": 3, "note": "y"},
    ]
    if loader == "csv":
        import csv

        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif loader == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    elif loader == "text":
        path.write_text("first line\n\n  indented\r\nwindows line\nlast without newline")
    else:
        path.write_text("\ufeff" + "\n".join(json.dumps(r) for r in rows[:2]) + '\n\n{"q": "only q"}\n')


@pytest.mark.parametrize("loader", ["json", "csv", "parquet", "text"])
def test_files_read_as_datasets_reads_them(loader, tmp_path):
    """Types, empty cells, missing keys, line endings and byte-order marks come out as datasets gives them."""
    import datasets

    from hydratune.data.peek import read_file

    path = tmp_path / f"data.{ {'json': 'jsonl', 'text': 'txt'}.get(loader, loader) }"
    _write(path, loader)
    expected = datasets.load_dataset(loader, data_files=str(path), cache_dir=str(tmp_path / "cache"))["train"]
    rows = read_file(str(path), loader, 200)
    assert rows.rows == expected.to_list() and rows.column_names == expected.column_names
    assert rows.complete
    assert read_file(str(path), loader, 2).rows == expected.to_list()[:2]


def test_the_cli_finds_its_project_from_any_folder_or_says_how(tmp_path):
    """`python /path/to/train.py` works from anywhere; `hydratune preflight` does too (the checkout it runs
    from), and where no project can be found the one line names HYDRATUNE_ROOT."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "HYDRATUNE_ROOT"}
    found = subprocess.run([HYDRATUNE, "preflight", "--no-data"], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    assert found.returncode == 0 and "preflight: ok" in found.stdout, found.stderr[-2000:]
    lost = subprocess.run([HYDRATUNE, "preflight", "--no-data"], cwd=tmp_path, env=env | {"HYDRATUNE_ROOT": str(tmp_path)},
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert lost.returncode == 2
    assert lost.stderr.strip().splitlines() == [
        f"hydratune preflight: error: no conf/train.yaml in {tmp_path}: run this from the project folder "
        "(where train.py is) or set HYDRATUNE_ROOT to it"
    ]


def test_a_max_seq_length_that_cuts_most_answers_is_a_warning_in_preflight_and_training():
    """It was an INFO line in training and `preflight: ok` (the pair tasks warned already): answers cut without
    their EOS teach the model to stop mid-word. (Training's warning: test_data's truncation test.)"""
    from hydratune.data.tokenize import cut_warning, keep_and_count

    cfg = to_plain(compose(["dataset.max_seq_length=90"]))
    report = data_check(cfg, rows=200)
    warnings = [n for n in report.get("notes", []) if n.startswith("warning: ")]
    assert [w.split(",")[0] for w in warnings] == [
        "warning: dataset.max_seq_length=90: in split 'train'",
        "warning: dataset.max_seq_length=90: in split 'validation'",
    ]
    assert not [n for n in data_check(to_plain(compose([])), rows=200).get("notes", []) if "warning" in n]
    # training says the same, from the same counts
    _, stats = keep_and_count([100, 100, 80, 50], [3, 0, 5, 5], 90, drop_long=False)
    assert cut_warning("train", stats, 90) == (
        "dataset.max_seq_length=90: in split 'train', 2 of 4 samples are longer and cut short (a cut answer loses "
        "its EOS) and 1 are dropped with no trained token left; raise dataset.max_seq_length (`hydratune inspect` "
        "shows the lengths)"
    )
    assert (
        cut_warning("train", stats, 90, truncation="split") is None
    )  # blocks of a long document lose nothing


def test_a_mapped_column_that_nothing_reads_is_a_warning():
    """A `map` op making a column the format does not read changed nothing trained on, without a word (O4)."""
    from hydratune.data.formats import READ_FIX
    from hydratune.data.ops import unread_map_columns

    mapped = 'dataset.ops=[{map:{text:"{instruction} {output}"}}]'
    notes = data_check(_config([mapped]), rows=50).get("notes", [])
    assert [n for n in notes if "map makes" in n] == [
        "warning: dataset.ops[0].map makes column 'text', which nothing reads (dataset.format=alpaca reads input, "
        "instruction, output): map onto one of those, or point the format at it (e.g. dataset.format=text "
        "++dataset.text_column=text)"
    ]
    read = _config([mapped, "dataset.format=text", "++dataset.text_column=text"])
    assert not [n for n in data_check(read, rows=50).get("notes", []) if "map makes" in n]
    # a classifier's columns (V9): the quick check says it too
    topics = _config(["task=classification", "dataset=topics", 'dataset.ops=[{map:{review:"{text}!"}}]'])
    assert [n for n in data_check(topics, rows=50).get("notes", []) if "map makes" in n] == [
        "warning: dataset.ops[0].map makes column 'review', which nothing reads (classification reads label, text): "
        "map onto one of those, or point the format at it (e.g. dataset.text_column=review)"
    ]
    # read by a later op, or made in a source's own ops and read there: no warning
    later = {"ops": [{"map": {"n": "{output}"}}, {"filter": "len(n) > 2"}]}
    assert unread_map_columns(later, {"instruction", "output"}, "alpaca", READ_FIX) == []
    source = {"sources": [{"ops": [{"map": {"prompt": "{q}"}}, {"map": {"other": "{q}"}}]}]}
    assert unread_map_columns(source, {"prompt", "response"}, "f", READ_FIX) == [
        "dataset.sources[0].ops[1].map makes column 'other', which nothing reads (f reads prompt, response): map "
        "onto one of those, or point the format at it (e.g. dataset.format=text ++dataset.text_column=other)"
    ]


def test_your_training_file_beside_the_demo_validation_file_is_refused(tmp_path):
    """Replacing only dataset.sources.0.data_files.train kept the sample's eval.jsonl: the val loss, best
    checkpoint and early stopping followed hydratune's demo rows, without a word (O11)."""
    mine = tmp_path / "train.jsonl"
    cfg = to_plain(compose([f"dataset.sources.0.data_files.train={mine}"]))
    with pytest.raises(
        UserError,
        match=r"^dataset.sources.0.data_files.validation is still the shipped sample's .*eval.jsonl beside your training file",
    ):
        check_config(cfg)
    check_config(to_plain(compose([])))  # the sample itself
    check_config(
        to_plain(
            compose(
                [
                    f"dataset.sources.0.data_files.train={mine}",
                    f"dataset.sources.0.data_files.validation={mine}",
                ]
            )
        )
    )
    check_config(
        to_plain(
            compose(
                [f"dataset.sources.0.data_files.train={mine}", "~dataset.sources.0.data_files.validation"]
            )
        )
    )


@pytest.mark.parametrize(
    ("metric", "fix"), [("eval_loss", "val/loss"), ("loss", "val/loss"), ("eval_accuracy", "val/accuracy")]
)
def test_the_hf_trainers_metric_names_are_refused_with_hydratunes(metric, fix):
    """The reference files' own metric_for_best_model values passed the checks and stopped the run at its first
    evaluation (O8)."""
    cfg = to_plain(compose([f"callbacks.model_checkpoint.metric_for_best_model={metric}"]))
    with pytest.raises(
        UserError, match=rf"^callbacks.model_checkpoint.metric_for_best_model={metric}: .*set it to {fix}$"
    ):
        check_config(cfg)


def test_a_tokenizer_without_a_pad_token_pads_with_one_that_is_not_eos(tmp_path):
    """With EOS as pad, transformers' sequence classifiers read a reward model's score at the token before
    the EOS that ends every row (a Llama 2/3 base has no pad token; review X3). A pad-named token the
    tokenizer holds stands in, else its UNK, else EOS; preflight's quick tokenizer agrees with training's."""
    import shutil

    from hydratune.data.peek import FastTokenizer, tokenizer_report
    from hydratune.model import load_tokenizer

    def without(name, *drop):
        folder = tmp_path / name
        shutil.copytree(ROOT / "assets" / "tiny-llama", folder)
        config = json.loads((folder / "tokenizer_config.json").read_text())
        for key in drop:
            config.pop(key, None)
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
        cfg = {"pretrained_model_name_or_path": str(folder)}
        hf, fast = load_tokenizer(cfg), FastTokenizer(cfg)
        assert tokenizer_report(hf) == tokenizer_report(fast)
        return hf.pad_token

    from hydratune.data.tokenize import stand_in_pad

    assert without("no_pad", "pad_token") == "<pad>"  # in the vocabulary, only not named pad
    assert stand_in_pad("</s>", "<unk>", {"</s>", "<unk>"}.__contains__) == "<unk>"  # Llama 2
    llama31 = {"<|end_of_text|>", "<|finetune_right_pad_id|>"}.__contains__
    assert stand_in_pad("<|end_of_text|>", None, llama31) == "<|finetune_right_pad_id|>"
    assert stand_in_pad("<|end_of_text|>", None, {"<|end_of_text|>"}.__contains__) == "<|end_of_text|>"
    assert stand_in_pad("</s>", "</s>", {"</s>"}.__contains__) == "</s>"


def test_a_text_column_the_format_does_not_read_is_a_note(tmp_path):
    """Dolly's `context` under prompt_response (instruction/response) never reached the model, without a word
    (review F11): the quick check notes it with the op that reads it, and the op quiets it."""
    rows = [{"instruction": f"Summarize passage {i}.", "context": "The river runs through the old stone town.",
             "response": f"A river town {i}.", "category": "summarization"} for i in range(12)]  # fmt: skip
    data = tmp_path / "dolly.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = [f"dataset.sources.0.data_files.train={data}", "~dataset.sources.0.data_files.validation",
            "dataset.format=prompt_response", "++dataset.prompt_column=instruction",
            "++dataset.response_column=response"]  # fmt: skip
    notes = data_check(_config([*base, "dataset.ops=[{split:{eval:2}}]"]), rows=50).get("notes", [])
    assert [n for n in notes if "holds text" in n] == [
        "column 'context' holds text (12 of 12 rows) that dataset.format=prompt_response does not read: it never "
        "reaches the model; map it into a column that is read (e.g. dataset.ops=[{map:{instruction:'{instruction} "
        "{context}'}}]), or drop it (dataset.ops=[{drop_columns:[context]}])"
    ]  # the short `category` column is no note
    read = _config([*base, "dataset.ops=[{split:{eval:2}},{map:{instruction:'{instruction} {context}'}}]"])
    assert not [n for n in data_check(read, rows=50).get("notes", []) if "holds text" in n]
