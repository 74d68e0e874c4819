"""`hydratune export`: a run's checkpoint as the folders a finished run exports, without training (review O9:
a stopped run could be exported only by a training launch, documented nowhere)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import ROOT, run_cli
from safetensors.torch import load_file

from hydratune.cli import main


@pytest.fixture(scope="module")
def finished(tiny_model_dir, tmp_path_factory):
    """A LoRA run of 4 steps that kept checkpoints at steps 2 and 4 (last.ckpt is step 4's)."""
    folder = tmp_path_factory.mktemp("export")
    rows = [
        {"instruction": "Upper-case the word.", "input": w, "output": w.upper()}
        for w in "abc de fgh ij klm".split()
    ]
    data = folder / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows * 4))
    run_dir = folder / "run"
    result = run_cli(["train.py", f"model.pretrained_model_name_or_path={tiny_model_dir}",
                      f"dataset.sources.0.data_files.train={data}", f"dataset.sources.0.data_files.validation={data}",
                      "dataset.batch_size=4", "trainer.max_steps=4", "trainer.val_check_interval=2",
                      "callbacks.model_checkpoint.save_steps=2", "callbacks.model_checkpoint.save_total_limit=3",
                      "optimizer.lr=1e-2", "logger=csv", "trainer.enable_progress_bar=false",
                      f"hydra.run.dir={run_dir}"])  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def tensors(folder):
    return load_file(folder / "adapter_model.safetensors")


def test_a_stopped_run_exports_its_last_checkpoint_as_the_finished_run_did(finished, tmp_path, capsys):
    stopped = tmp_path / "stopped"
    shutil.copytree(finished, stopped, ignore=shutil.ignore_patterns("adapter", "metrics.json", "merged"))
    assert main(["generate", str(stopped), "--prompt", "abc"]) == 2  # the way to its weights is named
    assert f"resume=auto finishes it, and hydratune export {stopped} writes its weights as they are" in (
        capsys.readouterr().err
    )
    assert main(["export", str(stopped)]) == 0
    assert f"exported step 4 of {stopped} (last.ckpt) to {stopped}: adapter/" in capsys.readouterr().out
    ours, theirs = tensors(stopped / "adapter"), tensors(finished / "adapter")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    card = (stopped / "adapter" / "README.md").read_text()
    assert "- exported_step: 4" in card and "AutoPeftModelForCausalLM" in card
    launched = json.loads(
        (finished / "run.json").read_text()
    )  # the launch's settings, as the finished card has
    assert (
        f"- steps: 4, effective batch 4, learning rate 0.01, precision {launched['device']['precision']}"
        in card
    )
    assert not (stopped / "metrics.json").exists()  # a stopped run's results are not a finished run's
    from hydratune.export import load_artifact

    model, tokenizer = load_artifact(stopped / "adapter")
    assert model.peft_config["default"].r == 16 and tokenizer.eos_token_id is not None
    # A second export would replace the first: refused, with the way to export elsewhere.
    assert main(["export", str(stopped)]) == 2
    assert (
        "already has adapter/ (the run's own export); export this checkpoint into another folder with --out DIR"
        in (capsys.readouterr().err)
    )


def test_an_earlier_checkpoint_exports_into_another_folder_and_merges(finished, tmp_path, capsys):
    out = tmp_path / "step2"
    assert main(["export", str(finished), "--ckpt", "2", "--out", str(out), "--merge"]) == 0
    assert capsys.readouterr().out.strip().endswith(f"to {out}: adapter/, merged/")
    record = json.loads((out / "export.json").read_text())
    assert record["exported_step"] == 2 and record["run_dir"] == str(finished)
    assert record["merge_max_abs_logit_diff"] < 1e-3
    early, final = tensors(out / "adapter"), tensors(finished / "adapter")
    assert any(not torch.equal(early[k], final[k]) for k in early)  # step 2's weights, not step 4's
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out / "merged").config.architectures == ["LlamaForCausalLM"]
    # generate reads the run's template through export.json: the folder was refused as "no .hydra" (review D11)
    assert main(["generate", str(out), "--prompt", "Write the word in capital letters.", "--input", "x"]) == 0


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--ckpt", "3"], "--ckpt 3: {run}/checkpoints has no checkpoint of step 3 (it has steps: 2, 4)"),
        (["--ckpt", "nowhere.ckpt"], "--ckpt nowhere.ckpt: no such file (give last, best, a kept step or a checkpoint "
                                     "file)"),
        (["--out", "{run}/metrics.json"], "--out {run}/metrics.json is a file: give a folder"),
    ],
)  # fmt: skip
def test_export_refuses_in_one_line(finished, capsys, args, said):
    args = [a.format(run=finished) for a in args]
    assert main(["export", str(finished), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"hydratune export: error: {said.format(run=finished)}"


def test_the_best_checkpoint_exports_and_a_run_without_one_is_told_how_to_keep_it(finished, tmp_path, capsys):
    from hydratune.checkpoint import checkpoint_step

    best_step = checkpoint_step(finished / "checkpoints" / "best.ckpt")
    assert main(["export", str(finished), "--ckpt", "best", "--out", str(tmp_path / "best")]) == 0
    assert json.loads((tmp_path / "best" / "export.json").read_text())["exported_step"] == best_step
    bare = tmp_path / "no_best"
    shutil.copytree(finished, bare, ignore=shutil.ignore_patterns("adapter", "best.ckpt"))
    assert main(["export", str(bare), "--ckpt", "best"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (  # after the first export's loading bars
        f"hydratune export: error: --ckpt best: {bare}/checkpoints/best.ckpt does not exist (a best checkpoint is "
        "kept when callbacks.model_checkpoint.metric_for_best_model is set); use --ckpt last or a file"
    )


def test_a_folder_that_is_not_a_run_or_has_no_checkpoint_is_named(tmp_path, capsys):
    assert main(["export", str(tmp_path)]) == 2
    assert (
        f"{tmp_path}: no .hydra/config.yaml; give a run directory of python train.py"
        in capsys.readouterr().err
    )


def test_export_is_listed_in_the_commands_help():
    result = run_cli(["-m", "hydratune.cli", "--help"], cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "export      write a checkpoint as adapter/ or model/ (a stopped run too)" in result.stdout


def test_a_grpo_run_exports_with_the_stop_its_samples_ended_at(tmp_path, capsys):
    """GRPO's export carries task.stop's ids in generation_config (a plain generate stops where training did); the
    module read them through its trainer, which `hydratune export` does not build."""
    run_dir = tmp_path / "grpo"
    result = run_cli(["train.py", "task=grpo", "dataset=grpo", "trainer.max_steps=2", "debug=fast",
                      "trainer.enable_progress_bar=false", f"hydra.run.dir={run_dir}"])  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    stopped = tmp_path / "stopped"
    shutil.copytree(run_dir, stopped, ignore=shutil.ignore_patterns("adapter", "metrics.json"))
    assert main(["export", str(stopped)]) == 0
    ours, theirs = tensors(stopped / "adapter"), tensors(run_dir / "adapter")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    generation = json.loads((stopped / "adapter" / "generation_config.json").read_text())
    assert generation == json.loads((run_dir / "adapter" / "generation_config.json").read_text())
    assert isinstance(generation["eos_token_id"], list) and len(generation["eos_token_id"]) == 2


def test_a_run_named_relative_to_the_project_is_found_from_another_folder(
    finished, tmp_path, monkeypatch, capsys
):
    """Runs go to the project's outputs/ wherever train.py starts; `hydratune generate outputs/default/<date>`
    typed in another folder said the run did not exist (review N5)."""
    import hydratune.preflight

    project = tmp_path / "project"
    (project / "outputs" / "default").mkdir(parents=True)
    shutil.copytree(finished, project / "outputs" / "default" / "run")
    monkeypatch.setattr(hydratune.preflight, "project_root", lambda: project)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["generate", "outputs/default/run", "--prompt", "abc", "--max-new-tokens", "2"]) == 0
    assert main(["generate", "outputs/default/nowhere", "--prompt", "abc"]) == 2
    assert "outputs/default/nowhere has no merged/ or adapter/ or model/ directory: it does not exist" in (
        capsys.readouterr().err
    )
