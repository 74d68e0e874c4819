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
