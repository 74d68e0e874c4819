"""Sweeps: the summary of a multirun (status per job, swept values, metrics), rebuilt by sweep-report."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml
from conftest import run_cli

from hydratune.cli import main as cli_main
from hydratune.sweep import JOB_ERROR_FILE, write_summary


def _job(
    sweep: Path,
    num: int,
    overrides: list[str],
    metrics: dict | None = None,
    error: dict | None = None,
    config: dict | None = None,
):
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if config is not None:
        (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    if metrics is not None:
        (job / "metrics.json").write_text(json.dumps(metrics))
    if error is not None:
        (job / JOB_ERROR_FILE).write_text(json.dumps(error))


def _metrics(best: float, final: float) -> dict:
    return {
        "steps": 4,
        "train_loss": final + 0.1,
        "initial_val_loss": 5.0,
        "val_loss": final,
        "best_val_loss": best,
        "val_curve": [[0, 5.0], [2, best], [4, final]],
        "tokens_per_s": 1234.5,
        "wall_seconds": 12.0,
    }


@pytest.fixture
def fake_sweep(tmp_path) -> Path:
    sweep = tmp_path / "sweep"
    _job(sweep, 0, ["optimizer.lr=1e-3", "peft.config.r=8"], _metrics(3.0, 3.2))
    _job(sweep, 1, ["optimizer.lr=1e-2", "peft.config.r=8"], _metrics(2.5, 2.6))
    # Job numbers sort numerically (10 after 2), not as text.
    _job(sweep, 10, ["optimizer.lr=1e-1", "peft.config.r=8"], _metrics(4.0, math.nan))
    _job(sweep, 2, ["optimizer.lr=1e-3", "peft.config.r=16"])  # died without a word: failed
    _job(
        sweep,
        3,
        ["optimizer.lr=1e-2", "peft.config.r=16"],
        error={"type": "OutOfMemoryError", "message": "OutOfMemoryError: CUDA out of memory."},
    )
    return sweep


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_summary_rows_statuses_and_axes(fake_sweep):
    write_summary(fake_sweep)
    rows = _read_csv(fake_sweep / "sweep_summary.csv")
    assert [r["job"] for r in rows] == ["0", "1", "2", "3", "10"]
    assert [r["status"] for r in rows] == ["ok", "ok", "failed", "OOM", "NaN"]
    # Both swept keys get a column; values as given on the command line.
    assert [r["optimizer.lr"] for r in rows] == ["1e-3", "1e-2", "1e-3", "1e-2", "1e-1"]
    assert [r["peft.config.r"] for r in rows] == ["8", "8", "16", "16", "8"]
    assert float(rows[1]["best_val_loss"]) == 2.5
    assert float(rows[1]["final_val_loss"]) == 2.6
    assert float(rows[0]["tokens_per_s"]) == 1234.5
    assert float(rows[0]["wall_s"]) == 12.0
    assert rows[2]["best_val_loss"] == ""
    assert "out of memory" in rows[3]["error"]

    md = (fake_sweep / "sweep_summary.md").read_text()
    assert "5 jobs: 2 ok, 1 failed, 1 NaN, 1 OOM" in md
    assert "best: job 1 (best_val_loss 2.5000)" in md
    assert md.count("\n| ") == 6  # header + 5 jobs
    assert (fake_sweep / "sweep.png").stat().st_size > 5000


def test_sweep_report_rebuilds_the_summary(fake_sweep, capsys):
    assert cli_main(["sweep-report", str(fake_sweep)]) == 0
    assert "best: job 1" in capsys.readouterr().out
    # A job finishing later (e.g. a partial sweep completed by hand) shows up in the rebuilt table.
    (fake_sweep / "2" / "metrics.json").write_text(json.dumps(_metrics(2.0, 2.1)))
    assert cli_main(["sweep-report", str(fake_sweep)]) == 0
    rows = _read_csv(fake_sweep / "sweep_summary.csv")
    assert rows[2]["status"] == "ok"
    assert "best: job 2 (best_val_loss 2.0000)" in (fake_sweep / "sweep_summary.md").read_text()


def _pairs_job(
    sweep: Path, num: int, task: dict, val_loss: float, accuracy: float, checkpoint: dict | None = None
):
    overrides = [f"task.{k}={v}" for k, v in task.items() if k != "name"]
    metrics = _metrics(val_loss, val_loss) | {"val_accuracy": accuracy}
    config = {
        "task": task,
        "callbacks": {"model_checkpoint": checkpoint or {"metric_for_best_model": "val/loss"}},
    }
    _job(sweep, num, overrides, metrics, config=config)


def test_a_sweep_over_what_scales_the_loss_is_ranked_by_a_metric_that_compares(tmp_path):
    """DPO's val loss is -log sigmoid(beta x margin): a larger beta gives a lower loss at the same ranking of
    pairs. A beta sweep is ranked by the share of held-out pairs ranked right; a learning-rate sweep, whose
    losses do compare, still by best_val_loss; the jobs' own metric_for_best_model is followed."""
    betas = tmp_path / "betas"
    _pairs_job(betas, 0, {"name": "dpo", "beta": 0.01}, 0.68, 0.55)
    _pairs_job(betas, 1, {"name": "dpo", "beta": 0.1}, 0.45, 0.80)
    _pairs_job(betas, 2, {"name": "dpo", "beta": 0.5}, 0.30, 0.75)  # the lowest loss, not the best ranking
    write_summary(betas)
    md = (betas / "sweep_summary.md").read_text()
    assert "ranked by final val_accuracy: task.beta changes the scale of task=dpo's val/loss" in md
    assert "best: job 1 (val_accuracy 0.8000)" in md
    assert [r["val_accuracy"] for r in _read_csv(betas / "sweep_summary.csv")] == ["0.55", "0.8", "0.75"]

    rates = tmp_path / "rates"
    for num, (loss, accuracy) in enumerate([(0.5, 0.9), (0.4, 0.7)]):
        _pairs_job(rates, num, {"name": "dpo", "beta": 0.1}, loss, accuracy)
        (rates / str(num) / ".hydra" / "overrides.yaml").write_text(
            yaml.safe_dump([f"optimizer.lr={num + 1}e-4"])
        )
    write_summary(rates)
    assert "best: job 1 (best_val_loss 0.4000)" in (rates / "sweep_summary.md").read_text()

    chosen = tmp_path / "chosen"
    for num, (loss, accuracy) in enumerate([(0.5, 0.9), (0.4, 0.7)]):
        checkpoint = {"metric_for_best_model": "val/accuracy", "greater_is_better": True}
        _pairs_job(chosen, num, {"name": "dpo", "beta": 0.1 * (num + 1)}, loss, accuracy, checkpoint)
    write_summary(chosen)
    md = (chosen / "sweep_summary.md").read_text()
    assert "ranked by final val_accuracy (callbacks.model_checkpoint.metric_for_best_model)" in md
    assert "best: job 0 (val_accuracy 0.9000)" in md
    _pairs_job(chosen, 2, {"name": "dpo", "beta": 0.3}, 0.45, 0.9, checkpoint)
    write_summary(chosen)
    assert "best: job 0 (val_accuracy 0.9000; tied with job 2)" in (chosen / "sweep_summary.md").read_text()


@pytest.mark.parametrize(
    ("task", "axis"),
    [({"name": "kto", "beta": 0.1}, "task.beta"), ({"name": "dpo", "loss": "sigmoid"}, "task.loss")],
)
def test_a_sweep_that_no_val_metric_compares_names_no_best_job(tmp_path, task, axis):
    """KTO reports nothing that beta leaves comparable; between DPO losses the implicit reward means another
    thing: the summary says so instead of naming the job with the lowest number."""
    key = axis.split(".")[1]
    for num, value in enumerate([0.05, 0.5] if key == "beta" else ["sigmoid", "simpo"]):
        _pairs_job(tmp_path, num, task | {key: value}, 0.6 - num * 0.3, 0.7)
    write_summary(tmp_path)
    md = (tmp_path / "sweep_summary.md").read_text()
    assert f"no best job: {axis} changes what task={task['name']}'s validation measures" in md
    assert "best: job" not in md


def test_sweep_report_rejects_a_folder_without_jobs(tmp_path, capsys):
    """One line and exit 2, as the README says of mistakes (it exited 1: review K7)."""
    assert cli_main(["sweep-report", str(tmp_path)]) == 2
    assert "holds no job directory" in capsys.readouterr().err


def sweep_args(tiny_model_dir: Path, sweep_dir: Path, *overrides: str) -> list[str]:
    """`python train.py -m` with two tiny 4-step jobs (the learning rate swept)."""
    return [
        "train.py",
        "-m",
        f"model.pretrained_model_name_or_path={tiny_model_dir}",
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
        "+trainer.limit_val_batches=2",
        "trainer.enable_progress_bar=false",
        "eval_before_training=false",
        "dataset.batch_size=8",
        "logger=csv",
        "optimizer.lr=1e-3,3e-3",
        f"hydra.sweep.dir={sweep_dir}",
        *overrides,
    ]


def assert_two_job_summary(sweep_dir: Path) -> None:
    for job in ("0", "1"):
        metrics = json.loads((sweep_dir / job / "metrics.json").read_text())
        assert metrics["steps"] == 4
        assert (sweep_dir / job / ".hydra" / "overrides.yaml").is_file()
    rows = _read_csv(sweep_dir / "sweep_summary.csv")
    assert [(r["job"], r["status"], r["optimizer.lr"]) for r in rows] == [
        ("0", "ok", "0.001"),
        ("1", "ok", "0.003"),
    ]
    assert all(math.isfinite(float(r["best_val_loss"])) for r in rows)
    assert "2 jobs: 2 ok" in (sweep_dir / "sweep_summary.md").read_text()
    assert (sweep_dir / "sweep.png").stat().st_size > 5000


@pytest.mark.slow
def test_multirun_writes_job_dirs_and_summary(tiny_model_dir, tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_cli(sweep_args(tiny_model_dir, sweep_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert_two_job_summary(sweep_dir)


@pytest.mark.slow
def test_optuna_study_continues_in_the_sweep_dir(tiny_model_dir, tmp_path):
    """hparams_search=lr_rank: each trial is a job; running again continues the journal-file study."""
    import optuna

    from hydratune.search import open_storage

    sweep_dir = tmp_path / "optuna"
    args = sweep_args(tiny_model_dir, sweep_dir, "hparams_search=lr_rank", "hydra/sweeper/pruner=none")
    args = [a for a in args if a not in ("-m", "optimizer.lr=1e-3,3e-3")]  # the sweeper picks lr and rank
    for n_trials in (1, 2):  # n_trials counts the study's trials: the second run adds one
        result = run_cli([*args, f"hydra.sweeper.n_trials={n_trials}"])
        assert result.returncode == 0, result.stderr[-3000:]
        if n_trials == 1:  # the searched keys are columns though one trial cannot vary them
            header = next(csv.reader((sweep_dir / "sweep_summary.csv").open()))
            assert {"optimizer.lr", "peft.config.r"} <= set(header), header
    study = optuna.load_study(study_name="default", storage=open_storage(str(sweep_dir / "optuna.journal")))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    # The trial's value is the objective (best_val_loss) of its job; job folders are trial numbers.
    rows = _read_csv(sweep_dir / "sweep_summary.csv")
    assert [(r["job"], r["trial"], r["state"]) for r in rows] == [
        ("0", "0", "COMPLETE"),
        ("1", "1", "COMPLETE"),
    ]
    assert [float(r["best_val_loss"]) for r in rows] == pytest.approx([t.value for t in study.trials])
    for trial, row in zip(study.trials, rows):
        assert f"peft.config.r={trial.params['peft.config.r']}" in row["overrides"].split()


SIGNAL_ON_EVAL = """
import os
import signal

import lightning as L


class SignalOnEval(L.Callback):
    def on_validation_start(self, trainer, pl_module):
        os.kill(os.getpid(), signal.SIGINT)
"""


@pytest.mark.slow
def test_a_stop_before_training_is_one_line_and_a_stopped_sweep_keeps_its_summary(tiny_model_dir, tmp_path):
    """Ctrl-C while a job loads its model or evaluates before training: hydratune's line and exit 130 (it was
    Lightning's 'Detected KeyboardInterrupt' and exit 1), and the sweep's summary so far is written, with the
    grid's axis as a column (Hydra ends a multirun at such a job without its callbacks)."""
    (tmp_path / "sigcb.py").write_text(SIGNAL_ON_EVAL)
    sweep_dir = tmp_path / "sweep"
    args = [a for a in sweep_args(tiny_model_dir, sweep_dir) if a != "eval_before_training=false"]
    result = run_cli([*args, "+callbacks.sig._target_=sigcb.SignalOnEval"], env={"PYTHONPATH": str(tmp_path)})
    out = result.stdout + result.stderr
    assert result.returncode == 130, out[-3000:]
    assert "stopped by SIGINT before training started; nothing was trained in this launch" in out
    assert "KeyboardInterrupt" not in out and "Traceback" not in out
    assert (
        f"sweep stopped by SIGINT after 1 job; summary so far: {sweep_dir / 'sweep_summary.md'}"
        in result.stderr
    )
    # the advice continues the sweep in its own folder, where one summary ranks all its jobs (review S2)
    assert f"the same command plus resume=auto hydra.sweep.dir={sweep_dir} continues it" in result.stderr
    rows = _read_csv(sweep_dir / "sweep_summary.csv")
    assert [(r["job"], r["status"], r["optimizer.lr"], r["error"]) for r in rows] == [
        ("0", "stopped", "0.001", "stopped by SIGINT")
    ]
    assert not (sweep_dir / "1").exists()


DIE = """
import os
import signal

import lightning as L


class Die(L.Callback):
    def __init__(self, how):
        self.how = how

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.how == "kill":  # what the OOM killer or a lost node does
            os.kill(os.getpid(), signal.SIGKILL)
        if self.how == "raise":
            raise RuntimeError("boom in the job")
"""


@pytest.mark.slow
def test_a_killed_or_crashed_submitit_job_is_reported_and_the_sweep_finishes(tiny_model_dir, tmp_path):
    """submitit: a job killed without a result ended the whole sweep with submitit's 30-line traceback, no
    summary, and the job's row 'failed' with no reason; a crashed job ended it at Hydra's traceback while the
    other jobs ran on unreported (review S5). Each is now its row's error, and the summary is written."""
    (tmp_path / "diecb.py").write_text(DIE)
    sweep_dir = tmp_path / "sweep"
    args = [
        a
        for a in sweep_args(tiny_model_dir, sweep_dir)
        if not a.startswith(("optimizer.lr=", "trainer.max_steps"))
    ]
    result = run_cli(
        [*args, "trainer.max_steps=2", "hydra/launcher=submitit_local", "+callbacks.die._target_=diecb.Die",
         "+callbacks.die.how=kill,raise,none"],
        env={"PYTHONPATH": str(tmp_path)},
    )  # fmt: skip
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "Traceback" not in out and "UncompletedJobError" not in out
    assert (
        "job 0 ended without a result (submitit state" in out
        and "job 1 crashed: RuntimeError: boom in the job" in out
    )
    rows = _read_csv(sweep_dir / "sweep_summary.csv")
    assert [(r["job"], r["status"]) for r in rows] == [("0", "failed"), ("1", "failed"), ("2", "ok")]
    assert (
        rows[0]["error"].startswith("ended without a result (submitit state")
        and "its log: " in rows[0]["error"]
    )
    assert rows[1]["error"] == "RuntimeError: boom in the job"
    assert "3 jobs: 1 ok, 2 failed" in (sweep_dir / "sweep_summary.md").read_text()


def test_a_classification_sweep_shows_accuracy_and_f1_whatever_it_ranks_by(tmp_path):
    """Ranked by the loss, a classification sweep's summary had no accuracy or F1 column, though on imbalanced
    classes the majority-class job scores 0.90 accuracy at F1 0.47 (review L3): the task's summary metrics are
    columns beside the losses."""
    config = {
        "task": {"name": "classification"},
        "callbacks": {"model_checkpoint": {"metric_for_best_model": "val/loss"}},
    }
    _job(
        tmp_path,
        0,
        ["optimizer.lr=1e-4"],
        _metrics(0.30, 0.31) | {"val_acc": 0.90, "val_f1_macro": 0.47},
        config=config,
    )
    _job(
        tmp_path,
        1,
        ["optimizer.lr=3e-3"],
        _metrics(0.25, 0.26) | {"val_acc": 0.975, "val_f1_macro": 0.92},
        config=config,
    )
    write_summary(tmp_path)
    rows = _read_csv(tmp_path / "sweep_summary.csv")
    assert [(r["val_acc"], r["val_f1_macro"]) for r in rows] == [("0.9", "0.47"), ("0.975", "0.92")]
    header = (tmp_path / "sweep_summary.md").read_text().split("| job |")[1].splitlines()[0]
    assert header.index("val_acc") < header.index("val_f1_macro") < header.index("best_val_loss")


def test_a_swept_key_a_job_left_alone_shows_the_value_it_ran_with_and_a_continued_job_says_so(tmp_path):
    """A sweep run again into its folder with another grid: its jobs did not set every swept key, and the cell
    holds the value they ran with (it was blank). A job whose resume=auto trained on in an earlier job's folder
    is 'continued', not 'failed' without a reason."""
    config = {"peft": {"config": {"r": 16}}, "optimizer": {"lr": 1e-3}}
    _job(tmp_path, 0, ["optimizer.lr=1e-3", "peft.config.r=4"], _metrics(3.0, 3.2), config=config)
    _job(tmp_path, 1, ["optimizer.lr=3e-3"], _metrics(2.9, 3.0), config=config)
    _job(tmp_path, 2, ["optimizer.lr=1e-3", "peft.config.r=4", "resume=auto"], config=config)
    (tmp_path / "2" / "continued.json").write_text(json.dumps({"run": str(tmp_path / "0")}))
    write_summary(tmp_path)
    rows = _read_csv(tmp_path / "sweep_summary.csv")
    assert [r["peft.config.r"] for r in rows] == ["4", "16", "4"]
    # its results are those of the run it trained on in (an empty row, review R8)
    assert (rows[2]["status"], rows[2]["error"], rows[2]["best_val_loss"]) == (
        "ok",
        "",
        rows[0]["best_val_loss"],
    )
    summary = (tmp_path / "sweep_summary.md").read_text()
    assert "3 jobs: 3 ok" in summary
    assert (
        "Errors:" not in summary
        and f"Continued:\n\n- job 2: resume=auto continued {tmp_path / '0'}" in summary
    )


def test_a_relaunched_sweep_has_the_results_and_so_has_the_sweep_it_continued(tmp_path):
    """A sweep killed in its second job and relaunched with resume=auto: the relaunch's summary had empty result
    columns, and the first sweep's stayed without the job that finished in its folder (review R8)."""
    first, again = tmp_path / "first", tmp_path / "again"
    _job(first, 0, ["optimizer.lr=1e-3"], _metrics(3.0, 3.2))
    _job(first, 1, ["optimizer.lr=5e-3"])  # killed: no metrics yet
    for sweep in (first, again):
        sweep.mkdir(exist_ok=True)
        (sweep / "multirun.yaml").write_text("hydra: {}\n")
    write_summary(first)
    assert "2 jobs: 1 ok" in (first / "sweep_summary.md").read_text()
    for num in (0, 1):
        _job(again, num, [f"optimizer.lr={'1e-3' if num == 0 else '5e-3'}", "resume=auto"])
        (again / str(num) / "continued.json").write_text(json.dumps({"run": str(first / str(num))}))
    (first / "1" / "metrics.json").write_text(json.dumps(_metrics(2.0, 2.1)))  # job 1 trained on there
    rows = write_summary(again)
    assert [r["status"] for r in rows] == ["ok", "ok"] and rows[1]["best_val_loss"] == _metrics(2.0, 2.1)[
        "best_val_loss"
    ]
    assert "best: job 1" in (again / "sweep_summary.md").read_text()
    assert "2 jobs: 2 ok" in (first / "sweep_summary.md").read_text()  # the first sweep's, written again


def test_a_search_summary_rounds_sampled_values_and_says_when_trials_tie(tmp_path):
    """A sampled learning rate reads 0.0005612 in the .md (all its digits stay in the .csv), and trials with
    the same objective are called a tie (a saturated val_accuracy picked trial 0 silently)."""
    from hydratune.sweep import TRIAL_FILE

    for num, lr in enumerate(["0.0005611516415334506", "0.00013066739238053285"]):
        _job(tmp_path, num, [f"optimizer.lr={lr}"], _metrics(3.0, 3.0))
        trial = {"number": num, "state": "COMPLETE", "value": 1.0, "direction": "maximize"}
        (tmp_path / str(num) / TRIAL_FILE).write_text(json.dumps(trial))
    write_summary(tmp_path)
    md = (tmp_path / "sweep_summary.md").read_text()
    assert "| 0.0005612 |" in md and "| 0.0001307 |" in md
    assert (
        "best: trial 0 (job 0, objective 1.0000; tied with trial 1: the objective cannot tell them apart"
        in md
    )
    assert _read_csv(tmp_path / "sweep_summary.csv")[0]["optimizer.lr"] == "0.0005611516415334506"


def test_sweep_report_on_one_job_names_its_sweep(fake_sweep, capsys):
    (fake_sweep / "multirun.yaml").write_text("{}")
    assert cli_main(["sweep-report", str(fake_sweep / "0")]) == 2
    assert (
        f"{fake_sweep / '0'} is one job of the sweep {fake_sweep}; run hydratune" in capsys.readouterr().err
    )
    assert not (fake_sweep / "0" / "sweep_summary.md").exists()
    (
        fake_sweep / "multirun.yaml"
    ).unlink()  # a single run is no sweep: nothing is written into it (review K8)
    assert cli_main(["sweep-report", str(fake_sweep / "0")]) == 2
    assert "is a single run, not a sweep" in capsys.readouterr().err
    assert not (fake_sweep / "0" / "sweep_summary.md").exists()


def test_a_sweep_over_tasks_names_no_best_job(tmp_path):
    """`-m task=sft,dpo,reward` named the reward job best: its loss (0.68) against SFT's nats per token and
    DPO's sigmoid loss (review S3)."""
    tasks = tmp_path / "tasks"
    for num, (name, loss) in enumerate([("sft", 15.3), ("dpo", 6.3), ("reward", 0.68)]):
        _pairs_job(tasks, num, {"name": name}, loss, 0.5)
        (tasks / str(num) / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"task={name}"]))
    write_summary(tasks)
    md = (tasks / "sweep_summary.md").read_text()
    assert "no best job: the jobs train different tasks (dpo, reward, sft)" in md and "best: job" not in md


def test_a_job_still_training_is_running_not_failed(tmp_path):
    """`hydratune sweep-report` on a partial sweep counted the job in progress as failed (review S4): a job
    whose folder lock names a live process is running; a dead holder's lock (SIGKILL) is a failed job."""
    import json
    import os
    import socket

    sweep = tmp_path / "sweep"
    _job(sweep, 0, ["optimizer.lr=1e-4"], _metrics(2.0, 2.0))
    _job(sweep, 1, ["optimizer.lr=2e-4"], None)
    lock = sweep / "1" / ".hydratune.lock"
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "now"}))
    write_summary(sweep)
    assert [r["status"] for r in _read_csv(sweep / "sweep_summary.csv")] == ["ok", "running"]
    lock.write_text(json.dumps({"pid": 2**22 + 7, "host": socket.gethostname(), "started": "then"}))
    write_summary(sweep)
    assert [r["status"] for r in _read_csv(sweep / "sweep_summary.csv")] == ["ok", "failed"]


def test_a_small_float_in_the_summary_keeps_its_digits():
    """An axis value read from a job's config (lr 0.0002) was written with one decimal: "0.0" (review S14)."""
    from hydratune.sweep import _fmt

    assert (_fmt(0.0002, "optimizer.lr"), _fmt(1234.56, "tokens_per_s"), _fmt(12.34, "wall_s")) == (
        "0.0002", "1234.6", "12.34"
    )  # fmt: skip
    assert _fmt(0.123456, "val_loss") == "0.1235"
