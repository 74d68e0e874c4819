"""Exact resume: a run killed with SIGKILL and resumed trains exactly like one that never stopped."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_cli
from safetensors.torch import load_file

STEPS = 12


def write_data(folder: Path) -> tuple[Path, Path]:
    """36 train rows (9 micro-batches of 4: an accumulation window straddles each epoch end) and 4 eval rows."""
    words = [
        "alpha",
        "bravo",
        "charlie",
        "delta",
        "echo",
        "foxtrot",
        "golf",
        "hotel",
        "india",
        "juliet",
        "kilo",
        "lima",
        "mike",
        "november",
        "oscar",
        "papa",
        "quebec",
        "romeo",
        "sierra",
        "tango",
    ]
    rows = [
        {
            "instruction": "Write the word in capital letters.",
            "input": w + str(i),
            "output": (w + str(i)).upper(),
        }
        for i, w in enumerate(words * 2)
    ]
    train, val = folder / "train.jsonl", folder / "eval.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows[:36]))
    val.write_text("".join(json.dumps(r) + "\n" for r in rows[36:]))
    return train, val


def command(tiny_model_dir: Path, data: tuple[Path, Path], run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "train.py",
        f"model.pretrained_model_name_or_path={tiny_model_dir}",
        f"dataset.sources.0.data_files.train={data[0]}",
        f"dataset.sources.0.data_files.validation={data[1]}",
        "dataset.batch_size=4",
        "peft.config.lora_dropout=0.1",  # dropout draws random numbers: the RNG state must resume too
        f"trainer.max_steps={STEPS}",
        "trainer.accumulate_grad_batches=2",
        "trainer.val_check_interval=6",
        "+trainer.limit_val_batches=1",
        "trainer.log_every_n_steps=1",
        "trainer.deterministic=true",
        "trainer.enable_progress_bar=false",
        "callbacks.model_checkpoint.save_steps=5",  # step 5 ends epoch 0: resume at an epoch start
        "eval_before_training=false",
        "logger=csv",
        "optimizer.lr=1e-2",  # large steps, so that a wrong batch or state shows in the losses
        f"hydra.run.dir={run_dir}",
        *extra,
    ]


def step_losses(run_dir: Path) -> dict[int, float]:
    """Each optimizer step's train loss from metrics.csv, which holds it once (a resumed run drops the rows of
    the steps it redoes)."""
    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = [(int(r["step"]), float(r["train/loss"])) for r in csv.DictReader(f) if r.get("train/loss")]
    steps = [step for step, _ in rows]
    assert len(steps) == len(set(steps)), (
        f"steps logged twice: {sorted(s for s in set(steps) if steps.count(s) > 1)}"
    )
    return dict(rows)


# One thread: the three runs do the same float operations, and a loaded 2-core machine spins less.
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted_run(tiny_model_dir, tmp_path):
    data = write_data(tmp_path)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    # The uninterrupted run and the one to kill run side by side (one thread each).
    uninterrupted = subprocess.Popen(
        command(tiny_model_dir, data, straight),
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc = subprocess.Popen(
        command(tiny_model_dir, data, killed),
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = killed / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "metrics.json").exists(), "the run finished before it could be killed"
    saved_at = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
    assert 5 <= saved_at < STEPS

    _, stderr = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, stderr[-3000:]
    run(command(tiny_model_dir, data, killed, "resume=auto"))
    expected, resumed = step_losses(straight), step_losses(killed)
    after = {step: loss for step, loss in expected.items() if step > saved_at}
    assert len(after) >= STEPS - saved_at
    assert {step: resumed[step] for step in after} == after  # every step after the kill, bit for bit
    want, got = (
        load_file(straight / "adapter" / "adapter_model.safetensors"),
        load_file(killed / "adapter" / "adapter_model.safetensors"),
    )
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(want[name], got[name]), name
    finished, resumed_metrics = (json.loads((d / "metrics.json").read_text()) for d in (straight, killed))
    assert resumed_metrics["steps"] == STEPS
    # The loss history and token counts travel in the checkpoint: the summary covers the whole run.
    for key in ("train_loss", "val_loss", "tokens_seen", "trained_tokens"):
        assert resumed_metrics[key] == finished[key], key
    # save_steps=5 with save_total_limit=2: the newest two step files (10, and 12 at the end), last and best.
    names = sorted(p.name for p in (straight / "checkpoints").iterdir())
    assert names == ["best.ckpt", "last.ckpt", "step=000010.ckpt", "step=000012.ckpt"]
    generations = [json.loads(line) for line in (straight / "generations.jsonl").read_text().splitlines()]
    assert len(generations) == 4 * len(finished["val_curve"])  # 4 prompts (the default) per evaluation
    assert {row["step"] for row in generations} == {step for step, _ in finished["val_curve"]}
    assert all(row["prompt"] and row["reference"] for row in generations)
    # The same run folder and logger run: one metrics.csv, one run.json recording the resume.
    assert json.loads((killed / "run.json").read_text())["resumes"][0]["checkpoint"].endswith("last.ckpt")


@pytest.mark.slow
def test_steps_redone_after_a_resume_are_logged_once(tmp_path):
    """A run continued from an earlier checkpoint logs its later steps again: metrics.csv, TensorBoard and
    generations.jsonl then hold each step once, at hydratune's step count (R4, O9)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = tmp_path / "run"
    args = ["train.py", "debug=fast", "trainer.max_steps=6", "trainer.val_check_interval=2", "logger=many",
            "trainer.log_every_n_steps=1", "callbacks.model_checkpoint.save_steps=2", "trainer.deterministic=true",
            "callbacks.model_checkpoint.save_total_limit=null", "eval_generations.num_prompts=2",
            f"hydra.run.dir={run_dir}"]  # fmt: skip
    env = {"OMP_NUM_THREADS": "1"}
    assert (result := run_cli(args, env=env)).returncode == 0, result.stderr[-3000:]
    first = (run_dir / "csv" / "metrics.csv").read_text()
    rewind = f"ckpt_path='{run_dir / 'checkpoints' / 'step=000002.ckpt'}'"  # the first save: no last.ckpt before it
    assert (result := run_cli([*args, rewind], env=env)).returncode == 0, result.stderr[-3000:]

    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").read_text().splitlines()))
    steps = {
        key: [int(r["step"]) for r in rows if r.get(key)] for key in ("train/loss", "val/loss", "train/lr")
    }
    # An evaluation after step 2 is at 2, as in metrics.json's val curve and the checkpoints' names.
    assert steps == {"train/loss": [1, 2, 3, 4, 5, 6], "val/loss": [2, 4, 6], "train/lr": [1, 2, 3, 4, 5, 6]}
    timing = ("train/tokens_per_s", "train/samples_per_s", "train/peak_memory_mb")  # a clock's, not the run's

    def steady(text: str) -> list[dict]:
        return [
            {k: v for k, v in row.items() if k not in timing} for row in csv.DictReader(text.splitlines())
        ]

    # steps 3 to 6 again, bit for bit
    assert steady((run_dir / "csv" / "metrics.csv").read_text()) == steady(first)
    # The redone steps' checkpoints replace the abandoned ones: no last-v1.ckpt beside last.ckpt (review V11)
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "best.ckpt", "last.ckpt", "step=000002.ckpt", "step=000004.ckpt", "step=000006.ckpt"
    ]  # fmt: skip
    val_curve = json.loads((run_dir / "metrics.json").read_text())["val_curve"]
    assert [step for step, _ in val_curve] == steps["val/loss"]
    generations = [
        json.loads(line)["step"] for line in (run_dir / "generations.jsonl").read_text().splitlines()
    ]
    assert generations == [2, 2, 4, 4, 6, 6]
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]
    assert [e.step for e in events.Scalars("val/loss")] == [2, 4, 6]


@pytest.mark.slow
def test_a_step_checkpoint_due_with_an_evaluation_holds_its_result(tiny_model_dir, tmp_path):
    """save_steps on an evaluation step: the checkpoint is written after that evaluation, so a run resumed from
    it keeps the step's val loss (curve, best score, early stopping's count) instead of losing it; and the
    evaluation's dataloader, which draws a seed before any callback sees it, does not shift the dropout
    masks of the steps after it (the resumed run, which does not evaluate there, trains bit for bit alike)."""
    data = write_data(tmp_path)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    settings = [
        "callbacks.model_checkpoint.save_steps=6",
        "callbacks.model_checkpoint.save_total_limit=null",
        "trainer.accumulate_grad_batches=1",
    ]
    run(command(tiny_model_dir, data, straight, *settings))
    step6 = straight / "checkpoints" / "step=000006.ckpt"
    state = torch.load(step6, weights_only=False)
    assert state["global_step"] == 6
    finished = json.loads((straight / "metrics.json").read_text())
    assert 6 in [step for step, _ in finished["val_curve"]]
    run(command(tiny_model_dir, data, resumed, *settings, f'ckpt_path="{step6}"'))
    again = json.loads((resumed / "metrics.json").read_text())
    assert again["val_curve"] == finished["val_curve"]  # step 6's evaluation came with the checkpoint
    assert again["best_val_loss"] == finished["best_val_loss"]
    expected = {step: loss for step, loss in step_losses(straight).items() if step > 6}
    assert {step: step_losses(resumed)[step] for step in expected} == expected


def test_resume_names_the_settings_a_launch_changes():
    """resume=auto with other values than the run it continues (the config its checkpoint records, or its
    .hydra/config.yaml) says which; where files go and what to resume are the resume itself, not changes."""
    from omegaconf import OmegaConf

    from hydratune.train import changed_settings

    first = {"task": {"name": "dpo", "beta": 0.1}, "trainer": {"max_steps": 40}, "paths": {"output_dir": "a"},
             "resume": None, "seed": 42, "model": {"token": "hf_secret"}}  # fmt: skip
    again = OmegaConf.create(first | {"paths": {"output_dir": "b"}, "resume": "auto"})
    assert changed_settings(first, again) == []
    again.task.beta, again.trainer.max_steps, again.model.token = 0.5, 50, "hf_other"
    changes = changed_settings(first, again)
    assert changes == ["task.beta=0.1 -> 0.5", "trainer.max_steps=40 -> 50"]  # a token is never shown
    # resolved (the checkpoint's config): what lives in the run folder moves with it, not a change (review S12)
    saved = {
        "paths": {"output_dir": "/runs/a"},
        "logger": {"tensorboard": {"save_dir": "/runs/a/tensorboard"}},
    }
    now = OmegaConf.create(
        {
            "paths": {"output_dir": "/runs/b"},
            "logger": {"tensorboard": {"save_dir": "${paths.output_dir}/tensorboard"}},
        }
    )
    assert changed_settings(saved, now, resolve=True) == []
    now.logger.tensorboard.save_dir = "/elsewhere"
    assert changed_settings(saved, now, resolve=True) == [
        "logger.tensorboard.save_dir=/runs/b/tensorboard -> /elsewhere"
    ]
    # a logger or callback dropped or added is one entry, not its keys one by one with None (review L14)
    saved["logger"]["wandb"] = {"project": "p", "name": "n", "save_dir": "/runs/a"}
    now.logger.tensorboard.save_dir = "${paths.output_dir}/tensorboard"
    now.callbacks = {"early_stopping": {"patience": 3, "threshold": 0.0}}
    assert changed_settings(saved, now, resolve=True) == [
        "callbacks.early_stopping added",
        "logger.wandb removed",
    ]


def _run_folder(folder: Path, name: str = "default", task: str = "sft", checkpoint: str | None = "last.ckpt"):
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(f"name: {name}\ntask:\n  name: {task}\n")
    if checkpoint:
        (folder / "checkpoints").mkdir()
        (folder / "checkpoints" / checkpoint).write_bytes(b"x")
    return folder


def test_resume_auto_continues_only_a_run_of_the_same_name_and_task(tmp_path):
    """Every task's runs share name=default: `task=dpo resume=auto` continued the newest SFT run. And a
    folder given with hydra.run.dir has no earlier runs beside it: its siblings are other runs (R2)."""
    from hydratune.checkpoint import find_resume_run

    runs = tmp_path / "outputs" / "default"
    sft = _run_folder(runs / "2026-01-01_00-00-00")
    dpo = _run_folder(runs / "2026-01-02_00-00-00", task="dpo")
    os.utime(dpo / "checkpoints" / "last.ckpt", (2, 2))
    os.utime(sft / "checkpoints" / "last.ckpt", (1, 1))
    new = runs / "2026-01-03_00-00-00"
    assert find_resume_run(new, "default", "sft") == sft  # not the newer DPO run
    assert find_resume_run(new, "default", "dpo") == dpo
    assert find_resume_run(new, "default", "kto") is None
    _run_folder(tmp_path / "mine" / "first")
    assert (
        find_resume_run(tmp_path / "mine" / "second", "default", "sft") is None
    )  # hydra.run.dir=mine/second


def test_a_kill_between_a_step_file_and_last_ckpt_resumes_from_the_step_file(tmp_path):
    """The step file is written before last.ckpt: a kill between them left a whole step=N.ckpt and no (or an
    older) last.ckpt, and resume=auto took the folder for one without a checkpoint (R1). best.ckpt is the
    best state, not the latest: never resumed from. A kill mid-save also leaves a .tmp file, removed."""
    from hydratune.checkpoint import remove_stale_temporaries, resume_file

    run = _run_folder(tmp_path / "run", checkpoint="step=000005.ckpt")
    (run / "checkpoints" / "best.ckpt").write_bytes(b"x")
    (run / "checkpoints" / ".last.ckpt.tmp-360").write_bytes(b"half")
    os.utime(run / "checkpoints" / "best.ckpt", (9, 9))
    assert resume_file(run) == run / "checkpoints" / "step=000005.ckpt"
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    os.utime(run / "checkpoints" / "last.ckpt", (1, 1))  # last.ckpt of step 4, then step 5's file
    os.utime(run / "checkpoints" / "step=000005.ckpt", (2, 2))
    assert resume_file(run) == run / "checkpoints" / "step=000005.ckpt"
    os.utime(run / "checkpoints" / "last.ckpt", (2, 2))  # the same save: last.ckpt
    assert resume_file(run) == run / "checkpoints" / "last.ckpt"
    assert remove_stale_temporaries(run) == [run / "checkpoints" / ".last.ckpt.tmp-360"]
    assert not (run / "checkpoints" / ".last.ckpt.tmp-360").exists()


def test_a_sharded_checkpoint_folder_is_swapped_in_whole_and_a_kill_mid_swap_recovers(tmp_path):
    """FSDP's sharded last.ckpt/ was rewritten in place: a kill mid-write left new shards beside the old meta.pt,
    which resume=auto took as whole (review R4). It is written to .last.ckpt.tmp-stepN/ and swapped in."""
    from hydratune.checkpoint import remove_stale_temporaries, replace_folder, resume_file

    run = _run_folder(tmp_path / "run", checkpoint=None)
    folder = run / "checkpoints"

    def shards(path: Path, step: int) -> Path:
        path.mkdir(parents=True)
        (path / "__0_0.distcp").write_text(f"step {step}")
        (path / "meta.pt").write_text(f"step {step}")  # written last, once every shard is
        return path

    shards(folder / "last.ckpt", 2)
    replace_folder(shards(folder / ".last.ckpt.tmp-step4", 4), folder / "last.ckpt")
    assert (folder / "last.ckpt" / "__0_0.distcp").read_text() == "step 4" and sorted(os.listdir(folder)) == [
        "last.ckpt"
    ]
    # killed between the two renames: the old one aside, the new one complete, no last.ckpt
    os.replace(folder / "last.ckpt", folder / ".last.ckpt.old-77")
    shards(folder / ".last.ckpt.tmp-step6", 6)
    assert (
        resume_file(run) == folder / "last.ckpt"
        and (folder / "last.ckpt" / "meta.pt").read_text() == "step 6"
    )
    # killed mid-write: shards without meta.pt are not a checkpoint, and go with the old folder
    (folder / ".last.ckpt.tmp-step8").mkdir()
    (folder / ".last.ckpt.tmp-step8" / "__0_0.distcp").write_text("half")
    assert resume_file(run) == folder / "last.ckpt"
    removed = remove_stale_temporaries(run)
    assert sorted(p.name for p in removed) == [".last.ckpt.old-77", ".last.ckpt.tmp-step8"]
    assert sorted(os.listdir(folder)) == ["last.ckpt"]


def test_a_damaged_newest_checkpoint_gives_way_to_the_one_before_it(tmp_path, caplog):
    """A cut-short last.ckpt stopped resume=auto though an intact step checkpoint lay beside it (review R5)."""
    from hydratune.checkpoint import resume_candidates
    from hydratune.errors import UserError
    from hydratune.train import usable_checkpoint

    run = _run_folder(tmp_path / "run", checkpoint=None)
    folder = run / "checkpoints"
    folder.mkdir()
    torch.save({"global_step": 4}, folder / "step=000004.ckpt")
    (folder / "last.ckpt").write_bytes(b"PK\x03\x04 cut short")
    os.utime(folder / "step=000004.ckpt", (1, 1))
    with caplog.at_level("WARNING"):
        assert usable_checkpoint(resume_candidates(run)) == folder / "step=000004.ckpt"
    assert "last.ckpt: not a readable checkpoint" in caplog.text and "step=000004.ckpt" in caplog.text
    (folder / "step=000004.ckpt").write_bytes(b"")  # nothing intact: the newest one's error
    with pytest.raises(UserError, match="last.ckpt: not a readable checkpoint"):
        usable_checkpoint(resume_candidates(run))


def test_a_run_early_stopping_ended_stays_ended_unless_patience_is_raised():
    """Lightning restored the stopped state but trained on until the next evaluation (R10), and restored the
    checkpoint's patience over this launch's, so raising it could not continue the run."""
    from types import SimpleNamespace

    from lightning.pytorch.callbacks import EarlyStopping

    from hydratune.checkpoint import StopEarly

    first = EarlyStopping(monitor="val/loss", patience=2)
    first.wait_count, first.best_score = 2, torch.tensor(1.0)
    first.stopping_reason_message = "Monitored metric val/loss did not improve in the last 2 records."
    state = first.state_dict()
    again = StopEarly(monitor="val/loss", patience=2)
    assert again.state_key == first.state_key  # checkpoints of either load into the other
    again.load_state_dict(state)
    trainer = SimpleNamespace(global_step=8, should_stop=False)
    again.on_train_start(trainer, None)
    assert trainer.should_stop
    raised = StopEarly(monitor="val/loss", patience=5)
    raised.load_state_dict(state)
    trainer.should_stop = False
    raised.on_train_start(trainer, None)
    assert raised.patience == 5 and raised.wait_count == 2 and not trainer.should_stop


@pytest.mark.slow
def test_a_resume_reads_what_run_the_checkpoint_is_of(tiny_model_dir, tmp_path):
    """The checkpoint records its run's task, method and config: a checkpoint of another task is one line
    before any model loads (it trained DPO inside an SFT run's state, or crashed in the optimizer), and a
    resume into the same folder (hydra.run.dir), whose .hydra/config.yaml Hydra has just rewritten, still
    names what the launch changes (R5, R7)."""
    data = write_data(tmp_path)
    run_dir = tmp_path / "run"
    short = ("trainer.max_steps=4", "callbacks.model_checkpoint.save_steps=2")
    run(command(tiny_model_dir, data, run_dir, *short))
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    other = subprocess.run(
        command(tiny_model_dir, data, tmp_path / "dpo", "task=dpo", f"ckpt_path='{checkpoint}'"),
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert other.returncode == 2, other.stderr[-2000:]
    assert "a checkpoint of a task=sft run, and this launch is task=dpo" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1 and "Traceback" not in other.stderr
    # LoRA and DoRA share peft's method: a LoRA checkpoint has no DoRA magnitudes, and failed in the
    # optimizer's state (review S1)
    dora = subprocess.run(
        command(tiny_model_dir, data, tmp_path / "dora", "peft=dora", f"ckpt_path='{checkpoint}'"),
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert dora.returncode == 2 and "a peft.config.use_dora=False run, and this launch is" in dora.stderr
    # Another LoRA rank: 100 lines of size mismatches from load_state_dict after the model loaded (review R2)
    rank = subprocess.run(
        command(tiny_model_dir, data, tmp_path / "rank", "peft.config.r=4", f"ckpt_path='{checkpoint}'"),
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert rank.returncode == 2 and len(rank.stderr.strip().splitlines()) == 1, rank.stderr[-2000:]
    assert "trained with peft.config.r=16 and this launch has peft.config.r=4" in rank.stderr
    # ckpt_path= names what the launch changes, as resume=auto does (review R6)
    changed = run(command(tiny_model_dir, data, tmp_path / "changed", *short, "trainer.max_steps=5",
                          "peft.config.lora_dropout=0.2", f"ckpt_path='{checkpoint}'"))  # fmt: skip
    assert (
        "ckpt_path: this launch changes peft.config.lora_dropout=0.1 -> 0.2"
        in changed.stdout + changed.stderr
    )
    # A checkpoint past trainer.max_steps: nothing would train, and its weights were exported as an earlier step's.
    past = subprocess.run(
        command(tiny_model_dir, data, run_dir, *short, "resume=auto", "trainer.max_steps=2"),
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert past.returncode == 2 and "the checkpoint is at step 4, past trainer.max_steps=2" in past.stderr
    more = run(
        command(
            tiny_model_dir, data, run_dir, *short, "resume=auto", "trainer.max_steps=6", "optimizer.lr=5e-3"
        )
    )
    log = more.stdout + more.stderr
    assert "this launch changes optimizer.lr=0.01 -> 0.005, trainer.max_steps=4 -> 6" in log
    assert "optimizer.lr=0.01 -> 0.005 takes no effect" in log
    # the schedule is planned again over 6 steps: said, not only "changes trainer.max_steps" (review R3)
    assert "trainer.max_steps=4 -> 6: the cosine schedule is planned again over the new length" in log
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 6
    assert not (run_dir / ".hydratune.lock").exists()  # released at the end
    # Finished: nothing is loaded, trained or evaluated again (R13).
    again = run(command(tiny_model_dir, data, run_dir, *short, "resume=auto", "trainer.max_steps=6"))
    assert "already finished at step 6" in again.stdout + again.stderr
    assert "evaluating the final weights" not in again.stdout + again.stderr


def test_a_second_launch_into_a_folder_being_trained_is_refused(tmp_path):
    """Two launches training in one folder wrote last.ckpt, the step files and the logs over each other
    (R17): the folder's lock names the live process; a dead holder's lock (SIGKILL) is taken over."""
    from hydratune.errors import UserError
    from hydratune.train import RunLock

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        (tmp_path / RunLock.NAME).write_text(
            json.dumps({"pid": holder.pid, "host": socket.gethostname(), "started": "x"})
        )
        with pytest.raises(UserError, match=rf"is being trained by process {holder.pid} on "):
            RunLock(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    lock = RunLock(tmp_path)  # the holder is gone: taken over
    assert json.loads((tmp_path / RunLock.NAME).read_text())["pid"] == os.getpid()
    RunLock(tmp_path).release()  # the same process again (a sweep's next job in one process) is not refused
    lock.release()
    assert not (tmp_path / RunLock.NAME).exists()


def test_a_lost_rank_is_told_apart_from_other_errors():
    """A killed rank left rank 0 a 123-line gloo traceback; train.fit says in one line that resume=auto continues
    from the last checkpoint (review R9). These are the errors it recognises."""
    from torch.distributed import DistBackendError

    from hydratune.train import _peer_lost

    gloo = RuntimeError("[../gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:13748")
    assert _peer_lost(gloo) and _peer_lost(DistBackendError("NCCL error"))
    assert not _peer_lost(RuntimeError("CUDA out of memory")) and not _peer_lost(ValueError("bad value"))


def test_a_run_continued_past_its_end_keeps_its_final_evaluation(tmp_path):
    """The final step's checkpoint was written before that step's evaluation, so a run continued with a higher
    trainer.max_steps lost the evaluation from its val curve, best_val_loss and log (review D1)."""
    run_dir = tmp_path / "run"
    args = ["train.py", "trainer.val_check_interval=2", "eval_before_training=false", "+trainer.limit_val_batches=1",
            "eval_generations.num_prompts=0", "logger=csv", f"hydra.run.dir={run_dir}"]  # fmt: skip
    assert (result := run_cli([*args, "trainer.max_steps=4"])).returncode == 0, result.stderr[-3000:]
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    history = next(state for key, state in saved["callbacks"].items() if key.startswith("History"))
    assert [step for step, _ in history["val_loss"]] == [2, 4]
    first = json.loads((run_dir / "metrics.json").read_text())
    assert (result := run_cli([*args, "trainer.max_steps=6", "resume=auto"])).returncode == 0, result.stderr[
        -3000:
    ]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [step for step, _ in metrics["val_curve"]] == [2, 4, 6]
    assert metrics["val_curve"][:2] == first["val_curve"]
    assert metrics["best_val_loss"] == min(loss for _, loss in metrics["val_curve"])
