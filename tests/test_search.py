"""Optuna searches (hydratune.search, hydra/sweeper=optuna): search space, samplers, pruners, pruned trials."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from conftest import compose, run_cli

optuna = pytest.importorskip("optuna")

from hydratune.errors import UserError  # noqa: E402
from hydratune.search import Search, check_objective, grid_values, open_storage, search_space  # noqa: E402


def test_old_plugin_syntax_becomes_optuna_distributions():
    space, fixed = search_space(
        [
            "optimizer.lr=tag(log, interval(1e-4, 1e-2))",
            "peft.config.r=choice(4, 8, 16, 32)",
            "trainer.max_steps=range(10, 40, 10)",
            "optimizer.weight_decay=interval(0.0, 0.1)",
            "dataset.batch_size=8",
        ]
    )
    d = optuna.distributions
    assert space["optimizer.lr"] == d.FloatDistribution(1e-4, 1e-2, log=True)
    assert space["peft.config.r"] == d.CategoricalDistribution([4, 8, 16, 32])
    assert space["trainer.max_steps"] == d.IntDistribution(10, 30, step=10)  # range() excludes its end
    assert space["optimizer.weight_decay"] == d.FloatDistribution(0.0, 0.1)
    assert fixed == ["dataset.batch_size=8"]
    assert grid_values({k: space[k] for k in ("peft.config.r", "trainer.max_steps")}) == {
        "peft.config.r": [4, 8, 16, 32],
        "trainer.max_steps": [10, 20, 30],
    }
    with pytest.raises(Exception, match="grid sampler needs choice"):
        grid_values({"optimizer.lr": space["optimizer.lr"]})


SAMPLERS = ["tpe", "random", "grid", "cmaes", "gp"]
PRUNERS = ["none", "median", "percentile", "successive_halving", "hyperband"]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_builds_with_the_seed_from_config(sampler):
    from conftest import CONF_DIR
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from hydratune.search import build

    if sampler == "gp":
        pytest.importorskip("scipy", reason="optuna's GPSampler needs scipy")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(
            "train",
            ["hparams_search=lr_rank", f"hydra/sweeper/sampler={sampler}", "seed=7"],
            return_hydra_config=True,
        )
    node = OmegaConf.to_container(cfg.hydra.sweeper.sampler, resolve=True)
    assert node["seed"] == 7
    extra = {"search_space": {"peft.config.r": [4, 8]}} if sampler == "grid" else {}
    built = build(node, **extra)
    assert isinstance(built, optuna.samplers.BaseSampler)


@pytest.mark.parametrize("pruner", PRUNERS)
def test_every_pruner_builds(pruner):
    from conftest import CONF_DIR
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from hydratune.search import build

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(
            "train", ["hparams_search=lr_rank", f"hydra/sweeper/pruner={pruner}"], return_hydra_config=True
        )
    assert isinstance(
        build(OmegaConf.to_container(cfg.hydra.sweeper.pruner, resolve=True)), optuna.pruners.BasePruner
    )


def test_a_search_over_what_scales_the_loss_needs_an_objective_that_compares():
    """A search over DPO's beta ranked by val loss would favour the beta that shrinks the loss: refused before
    the first trial, with the objective that compares (a learning-rate search is not touched)."""
    from omegaconf import OmegaConf

    space, _ = search_space(["task.beta=interval(0.05, 0.5)", "optimizer.lr=tag(log, interval(1e-4, 1e-2))"])
    dpo = OmegaConf.create({"task": {"name": "dpo", "beta": 0.1}, "objective": "best_val_loss"})
    with pytest.raises(UserError, match=r"task.beta changes the scale of task=dpo's val/loss.*use objective="
                       r"val_accuracy hydra.sweeper.direction=maximize hydra.sweeper.monitor=val/accuracy"):  # fmt: skip
        check_objective(space, dpo, {})
    check_objective(space, OmegaConf.merge(dpo, {"objective": "val_accuracy"}), {})
    check_objective({"optimizer.lr": space["optimizer.lr"]}, dpo, {})
    kto = OmegaConf.create({"task": {"name": "kto"}, "objective": None})
    with pytest.raises(
        UserError, match=r"task.beta changes what task=kto's validation measures.*no val metric"
    ):
        check_objective(space, kto, {})


def test_search_config_still_composes_as_a_training_config():
    cfg = compose(["hparams_search=lr_rank"])
    assert cfg.objective == "best_val_loss"


def test_a_killed_sweeps_running_trials_are_failed_and_run_again(tmp_path):
    """Continuing a study: a trial the killed sweep left RUNNING (no metrics.json) is failed, marked
    interrupted and its parameters queued; one whose job finished after all is told its result."""
    storage = str(tmp_path / "optuna.journal")
    study = optuna.create_study(study_name="s", storage=open_storage(storage))
    finished, lost = (
        study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}),
        study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}),
    )
    for trial in (finished, lost):
        (tmp_path / str(trial.number) / ".hydra").mkdir(parents=True)
    (tmp_path / "0" / "metrics.json").write_text(json.dumps({"best_val_loss": 1.5}))
    search = Search(
        {"study_name": "s", "storage": storage, "sampler": None, "pruner": None},
        {"objective": "best_val_loss"},
        launcher=None,
        sweep_dir=tmp_path,
    )
    search.open_study({})
    search.recover_interrupted(search.study)
    trials = search.study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "WAITING"]
    assert trials[0].value == 1.5
    assert trials[1].user_attrs["interrupted"] is True
    rerun = search.study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})  # what the search asks next
    assert rerun.number == 2 and rerun.params == trials[1].params
    # ... and it continues from the interrupted trial's checkpoint when that has one (review S11)
    search.fixed = ["optimizer.lr=1e-3"]
    assert not [o for o in search.overrides(rerun) if o.startswith("ckpt_path=")]
    (tmp_path / "1" / "checkpoints").mkdir()
    (tmp_path / "1" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert f"ckpt_path='{tmp_path / '1' / 'checkpoints' / 'last.ckpt'}'" in search.overrides(rerun)
    assert json.loads((tmp_path / "1" / "trial.json").read_text())["state"] == "FAIL"


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def search_args(tiny_model_dir: Path, sweep_dir: Path, *overrides: str) -> list[str]:
    """A 4-trial grid search (lr x rank) of 12-step trials evaluated every 3 steps, median pruner."""
    return [
        "train.py",
        "-m",
        "hydra/sweeper=optuna",
        "hydra/sweeper/sampler=grid",
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=1",
        "hydra.sweeper.n_trials=4",
        "+objective=best_val_loss",
        "optimizer.lr=choice(0.003, 0.00001)",
        "peft.config.r=choice(4, 8)",
        f"model.pretrained_model_name_or_path={tiny_model_dir}",
        "trainer.max_steps=12",
        "trainer.val_check_interval=3",
        "+trainer.limit_val_batches=2",
        "trainer.enable_progress_bar=false",
        "eval_before_training=false",
        "eval_generations.num_prompts=0",
        "dataset.batch_size=8",
        "logger=csv",
        f"hydra.sweep.dir={sweep_dir}",
        *overrides,
    ]


@pytest.mark.slow
def test_pruned_search_marks_pruned_trials_and_stops_them_at_the_named_step(tiny_model_dir, tmp_path):
    import torch

    sweep_dir = tmp_path / "search"
    result = run_cli(search_args(tiny_model_dir, sweep_dir), env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    storage = sweep_dir / "optuna.journal"
    study = optuna.load_study(study_name="default", storage=open_storage(str(storage)))
    states = {t.number: t.state.name for t in study.trials}
    assert len(states) == 4 and set(states.values()) == {"COMPLETE", "PRUNED"}, states

    rows = {int(r["trial"]): r for r in _read_csv(sweep_dir / "sweep_summary.csv")}
    for trial in study.trials:
        row, job = rows[trial.number], sweep_dir / str(trial.number)
        assert row["state"] == trial.state.name
        assert row["status"] == {"COMPLETE": "ok", "PRUNED": "pruned"}[trial.state.name]
        metrics = json.loads((job / "metrics.json").read_text())
        saved = torch.load(job / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
        if trial.state.name == "PRUNED":
            # Stopped at the evaluation whose report the pruner judged: nothing trained past it.
            named = trial.user_attrs["pruned_at_step"]
            assert named == max(trial.intermediate_values) < 12
            assert metrics["steps"] == saved == named == int(row["steps"])
            assert trial.value == trial.intermediate_values[named]
        else:
            assert metrics["steps"] == saved == 12
            assert sorted(trial.intermediate_values) == [3, 6, 9, 12]
            assert trial.value == pytest.approx(metrics["best_val_loss"])
        assert json.loads((job / "trial.json").read_text())["state"] == trial.state.name

    md = (sweep_dir / "sweep_summary.md").read_text()
    n_pruned = sum(s == "PRUNED" for s in states.values())
    assert f"4 jobs: {4 - n_pruned} ok, {n_pruned} pruned" in md
    spent = sum(json.loads((sweep_dir / str(n) / "metrics.json").read_text())["steps"] for n in states)
    assert f"steps spent: {spent} optimizer steps" in md
    best = study.best_trial
    assert f"best: trial {best.number} " in md and f"optimizer.lr={best.params['optimizer.lr']}" in md
    assert (sweep_dir / "sweep.png").stat().st_size > 5000


@pytest.mark.slow
def test_a_failing_trial_fails_only_itself(tiny_model_dir, tmp_path):
    """A sampled value out of range fails its trial's config check (before any model load); the other
    trials of the search run and complete."""
    sweep_dir = tmp_path / "search"
    drop = ("optimizer.lr=", "peft.config.r=", "hydra/sweeper/", "hydra.sweeper.")
    args = [a for a in search_args(tiny_model_dir, sweep_dir) if not a.startswith(drop)]
    args += [
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.n_trials=3",
        "optimizer.weight_decay=interval(-1.0, 1.0)",
    ]
    result = run_cli(args, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="default", storage=open_storage(str(sweep_dir / "optuna.journal")))
    states = [(t.params["optimizer.weight_decay"] < 0, t.state.name) for t in study.trials]
    assert sorted(states) == [(False, "COMPLETE"), (False, "COMPLETE"), (True, "FAIL")]  # seed 42
    rows = _read_csv(sweep_dir / "sweep_summary.csv")
    assert sorted(r["status"] for r in rows) == ["failed", "ok", "ok"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert all(r["state"] == "FAIL" for r in failed)
    assert all("optimizer.weight_decay=-" in r["error"] and "out of range" in r["error"] for r in failed), (
        failed
    )


def test_an_interval_with_no_valid_value_is_refused_before_the_search():
    from hydratune.errors import UserError
    from hydratune.preflight import check_command_line

    with pytest.raises(UserError, match=r"optimizer.lr=interval\(-1, 0\): no value in it is valid \(optimizer.lr=-1.0 "
                       r"is out of range.*nothing was launched"):  # fmt: skip
        check_command_line(["-m", "hparams_search=lr_rank", "optimizer.lr=interval(-1, 0)"])
    check_command_line(
        ["-m", "hparams_search=lr_rank", "optimizer.weight_decay=interval(-1.0, 1.0)"]
    )  # half valid
    # without a search, Hydra's grid sweeper raised a traceback for it
    with pytest.raises(UserError, match=r"optimizer.lr=interval\(1e-4, 1e-3\): an interval is sampled by a "
                       r"search: add hparams_search=lr_rank"):  # fmt: skip
        check_command_line(["-m", "optimizer.lr=interval(1e-4, 1e-3)"])


def test_sweep_report_prints_parameter_importance(tmp_path, capsys):
    """With enough complete trials, sweep-report adds the importance of each searched parameter."""
    from hydratune.cli import main as cli_main
    from hydratune.search import STUDY_FILE

    storage = str(tmp_path / "optuna.journal")
    study = optuna.create_study(
        study_name="s", storage=open_storage(storage), sampler=optuna.samplers.RandomSampler(0)
    )
    space = {
        "optimizer.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
        "peft.config.r": optuna.distributions.CategoricalDistribution([4, 8]),
    }
    for n in range(8):
        trial = study.ask(space)
        study.tell(trial, -1000 * trial.params["optimizer.lr"])  # lr decides, the rank does not
        (tmp_path / str(n) / ".hydra").mkdir(parents=True)
        (tmp_path / str(n) / ".hydra" / "overrides.yaml").write_text(
            f"- optimizer.lr={trial.params['optimizer.lr']}\n"
        )
    (tmp_path / STUDY_FILE).write_text(json.dumps({"study_name": "s", "storage": storage}))
    assert cli_main(["sweep-report", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "parameter importance (Optuna's default evaluator, 8 complete trials):" in out
    importance = {
        line.split(":")[0].strip(): float(line.split(":")[1])
        for line in out.splitlines()
        if line.startswith("  ")
    }
    assert importance["optimizer.lr"] > importance["peft.config.r"]


@pytest.mark.slow
def test_search_of_ddp_trials_reports_from_rank_zero_and_prunes_every_rank(tiny_model_dir, tmp_path):
    """trainer=ddp trials: rank 0 reports to the study, the decision reaches both ranks (the pruned
    trial's two processes stop at the same step), and the extra rank never runs the search itself."""
    sweep_dir = tmp_path / "search"
    args = search_args(
        tiny_model_dir, sweep_dir, "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu"
    )
    args = [a.replace("dataset.batch_size=8", "dataset.batch_size=4") for a in args]
    args = [a for a in args if not a.startswith("peft.config.r=")] + ["hydra.sweeper.n_trials=2"]
    args = [a for a in args if not a.startswith("hydra.sweeper.n_trials=")]
    result = run_cli(args, env={"OMP_NUM_THREADS": "1"}, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="default", storage=open_storage(str(sweep_dir / "optuna.journal")))
    assert len(study.trials) == 2  # no rank asked for trials of its own
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) == [
        "0",
        "1",
    ]
    for trial in study.trials:
        assert trial.state.name in ("COMPLETE", "PRUNED")
        metrics = json.loads((sweep_dir / str(trial.number) / "metrics.json").read_text())
        assert max(trial.intermediate_values) == metrics["steps"]
        log = (sweep_dir / str(trial.number) / "train.log").read_text()
        assert "4 per device x 1 accumulation x 2 devices" in log


def test_a_continued_study_with_another_choice_list_is_refused_before_any_trial(tmp_path):
    """Optuna cannot change a categorical's choices mid-study: it raised from `ask`, leaving a trial RUNNING in
    the journal. The search says so first, naming the study and how to start another."""
    from hydratune.search import check_space

    study = optuna.create_study(study_name="s")
    study.enqueue_trial({"peft.config.r": 8})
    study.optimize(lambda t: float(t.suggest_categorical("peft.config.r", [4, 8, 16])), n_trials=1)
    same, _ = search_space(["peft.config.r=choice(4, 8, 16)", "optimizer.lr=interval(1e-4, 1e-2)"])
    check_space(study, same, tmp_path)  # the same space, and a new parameter: fine
    other, _ = search_space(["peft.config.r=choice(2, 64)"])
    with pytest.raises(UserError, match=r"peft.config.r: study 's' .* searched it as choice\(4, 8, 16\); a "
                       r"different space needs a new study: name=NEW"):  # fmt: skip
        check_space(study, other, tmp_path)
    assert all(t.state.name == "COMPLETE" for t in study.get_trials())


def test_a_trial_is_not_pruned_at_its_last_step():
    """Pruning at the final evaluation saves nothing and throws the finished value away."""
    from types import SimpleNamespace

    from hydratune.search import TrialPruning

    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0))  # prunes any value above 0
    callback = SimpleNamespace(trial=study.ask(), monitor="val/loss")
    trainer = SimpleNamespace(callback_metrics={"val/loss": 1.0}, global_step=4, max_steps=8)
    assert TrialPruning._report(callback, trainer) == "pruned"
    callback.trial = study.ask()
    trainer.global_step = 8
    assert TrialPruning._report(callback, trainer) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["hparams_search=lr_rank", "hydra.sweeper.n_trial=2"],
         "hydra.sweeper.n_trial: the sweeper has no such setting; did you mean hydra.sweeper.n_trials?"),
        (["hydra.sweeper.n_trials=2", "optimizer.lr=1e-3,2e-3"],
         "hydra.sweeper.n_trials is a setting of the Optuna search: add hparams_search=lr_rank"),
        (["hparams_search=lr_rank", "hydra.sweeper.params.peft.config.r=choice(2,64)"],
         "give the search space as the key itself after -m: peft.config.r='choice(2,64)'"),
    ],
)  # fmt: skip
def test_sweeper_settings_are_checked_with_a_did_you_mean(args, message):
    """Hydra's own errors for these were a struct dump or 'Sweeping over Hydra's configuration is not supported',
    exit 1."""
    from hydratune.errors import UserError
    from hydratune.preflight import check_command_line

    with pytest.raises(UserError, match=re.escape(message)):
        check_command_line(["-m", *args])
    check_command_line(
        ["-m", "hparams_search=lr_rank", "hydra.sweeper.n_trials=2", "hydra.sweeper.sampler.seed=3"]
    )


def test_a_continued_study_with_other_fixed_settings_is_warned_of(caplog):
    """Review S6: trials of 8 steps were ranked against (and pruned by) trials of 12, without a word."""
    import logging

    from hydratune.search import warn_if_settings_changed

    with caplog.at_level(logging.WARNING, logger="hydratune.search"):
        warn_if_settings_changed(["trainer.max_steps=12", "seed=1"], ["trainer.max_steps=12", "seed=1"], "s")
        warn_if_settings_changed(None, ["trainer.max_steps=8"], "s")  # a study.json that kept no settings
        warn_if_settings_changed(["trainer.max_steps=12"], ["trainer.max_steps=8", "seed=3"], "s")
    assert [r.getMessage() for r in caplog.records] == [
        "continuing study 's' with other settings than its earlier trials (trainer.max_steps=12 -> 8, "
        "seed=(unset) -> 3): their objectives compare only if those settings do not matter; for a fresh study "
        "add hydra.sweeper.study_name=NEW_NAME"
    ]
