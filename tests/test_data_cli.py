"""`hydratune datasplit` and `hydratune inspect`."""

from __future__ import annotations

import json

from hydratune.cli import main


def test_datasplit_is_seeded_and_complete(tmp_path, capsys):
    src = tmp_path / "all.jsonl"
    src.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(50)))
    args = ["datasplit", "--input", str(src), "--eval-percentage", "10", "--seed", "3"]
    outs = []
    for name in ("a", "b"):
        train, evals = tmp_path / f"{name}_train.jsonl", tmp_path / f"{name}_eval.jsonl"
        assert main([*args, "--train-output", str(train), "--eval-output", str(evals)]) == 0
        outs.append((train.read_text(), evals.read_text()))
    assert outs[0] == outs[1]  # same seed, same split
    train = [json.loads(x)["i"] for x in outs[0][0].splitlines()]
    evals = [json.loads(x)["i"] for x in outs[0][1].splitlines()]
    assert len(evals) == 5 and sorted(train + evals) == list(range(50))
    assert "wrote 45 records" in capsys.readouterr().out


def test_datasplit_bad_line_is_one_line_error(tmp_path, capsys):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"i": 1}\n{"i": \n')
    code = main(["datasplit", "--input", str(src), "--train-output", "t", "--eval-output", "e"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and f"{src}:2: malformed JSON" in err and "\n" not in err


def test_inspect_marks_trained_tokens_without_a_model(tiny_model_dir, capsys):
    code = main(["inspect", f"model.pretrained_model_name_or_path={tiny_model_dir}", "--samples", "2"])
    out = capsys.readouterr().out
    assert code == 0
    assert "train: 2000 samples from 2000 rows" in out and "validation: 60 samples" in out
    assert "truncated: 0 (0.0%)" in out and "packing: off" in out
    # The answer and EOS are marked as trained; the prompt is not.
    assert "### Response:\n[[" in out and "</s>]]" in out
    assert "[[### Instruction" not in out


def test_inspect_reports_packing(tiny_model_dir, capsys):
    assert (
        main(
            [
                "inspect",
                f"model.pretrained_model_name_or_path={tiny_model_dir}",
                "dataset=packed",
                "--samples",
                "0",
            ]
        )
        == 0
    )
    assert "packing: 2000 samples in" in capsys.readouterr().out


def test_datasplit_refuses_one_file_for_two_roles(tmp_path, capsys):
    """The same path for both outputs overwrote the input with the train rows and lost the eval ones (review K5)."""
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"i": i}) + "\n" for i in range(10)))
    before = data.read_text()
    args = [
        "datasplit",
        "--input",
        str(data),
        "--train-output",
        str(data),
        "--eval-output",
        str(tmp_path / "e.jsonl"),
    ]
    assert main(args) == 2
    assert f"--train-output {data} is also --input: give three different files" in capsys.readouterr().err
    assert data.read_text() == before


def test_a_merge_that_fails_its_check_is_removed_and_said_in_one_line(tmp_path, capsys, monkeypatch):
    """A bf16 merge that disagreed with its adapter was a traceback, and its merged/ stayed where generate loads
    first (review K3); as export.merge=true does, it is removed, with the float32 hint."""
    from hydratune import export

    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)

    def merge(adapter, out, dtype):
        (tmp_path / "run" / "merged").mkdir()
        return out

    def parity(adapter, out, dtype):
        raise RuntimeError("merged model disagrees with its adapter: max |logit diff| 2.9 > 1.3 in bfloat16")

    monkeypatch.setattr(export, "merge_adapter", merge)
    monkeypatch.setattr(export, "logit_parity", parity)
    assert main(["merge", str(run), "--dtype", "bfloat16"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.endswith(f"{run / 'merged'} removed; try --dtype float32")
    assert not (run / "merged").exists()


def test_predict_refuses_a_text_pair_for_a_single_text_classifier(tmp_path, capsys):
    """--text-pair on a run trained on single texts was dropped without a word (review K10)."""
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(
        "task: {name: classification}\ndataset: {text_column: text, label_column: label}\n"
    )
    assert main(["predict", str(run), "--text", "a", "--text-pair", "b"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"hydratune predict: error: {run} classifies single texts (no dataset.text_pair_column): drop --text-pair"
    )


def test_small_cli_edges(tmp_path, capsys):
    """`hydratune --version`; a JSON array given to datasplit (it read as one record); a sweep key given twice,
    a comma forgotten, is a warning naming the last value (review K14)."""
    import pytest

    from hydratune.preflight import check_command_line

    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out.startswith("hydratune 0.")
    array = tmp_path / "a.json"
    array.write_text(json.dumps([{"i": 1}, {"i": 2}]))
    args = [
        "--input",
        str(array),
        "--train-output",
        str(tmp_path / "t"),
        "--eval-output",
        str(tmp_path / "e"),
    ]
    assert main(["datasplit", *args]) == 2
    assert "is a JSON array; datasplit reads JSON Lines" in capsys.readouterr().err
    check_command_line(["-m", "optimizer.lr=1e-3", "optimizer.lr=2e-3", "--no-data"][:3])
    assert "optimizer.lr is given twice (optimizer.lr=1e-3, optimizer.lr=2e-3): the last value is used" in (
        capsys.readouterr().err
    )
