"""Hyperparameter search on Optuna's public API: the sweeper's loop, and the callback that prunes a trial.

The sweeper (hydra_plugins/hydratune_optuna, `hydra/sweeper=optuna`) asks the study for a trial, turns its
parameters into the overrides of one Hydra job, launches it through the launcher in use, and tells the
study how the job ended. Trials run one at a time with the basic launcher (it runs jobs in this process);
with any other launcher (submitit: local processes or SLURM) `n_jobs` trials run at once, each in its own
thread that launches one job, and a finished trial's slot goes to the next trial at once (ask/tell per
job, no batches).

The job learns which trial it is from two environment variables set through `hydra.job.env_set`:
HYDRATUNE_STUDY (the `study.json` in the sweep directory: storage, study name, pruner) and
HYDRATUNE_TRIAL (the trial number). `TrialPruning` then reports the validation metric at every
evaluation and stops the run at that optimizer step (checkpoint and metrics.json written) when the
pruner says so. The study lives in Optuna's journal file storage by default, which works from many
nodes on a shared filesystem; `sqlite:///...` works locally. Running the same search again (same study
name, same sweep directory) continues the study: finished trials are kept, trials that a killed sweep
left running are failed and their parameters run again.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import lightning as L

from hydratune.config import read_json
from hydratune.errors import UserError, install_hint
from hydratune.sweep import JOB_ERROR_FILE, STUDY_FILE, TRIAL_FILE

log = logging.getLogger(__name__)

STUDY_ENV = "HYDRATUNE_STUDY"  # path of the sweep's study.json
TRIAL_ENV = "HYDRATUNE_TRIAL"  # the trial number of this job
# Fewer finished trials than this and parameter importance says nothing.
MIN_TRIALS_FOR_IMPORTANCE = 4


def _optuna():
    try:
        import optuna
    except ImportError as err:
        raise UserError(f"hydra/sweeper=optuna needs optuna: {install_hint('sweep')}") from err
    if os.environ.get("HYDRATUNE_DEBUG") != "1":  # its INFO lines ("Using an existing study ...") repeat ours
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


# -- storage -------------------------------------------------------------------------------------------


def open_storage(url: str):
    """`sqlite:///path` (or another database URL) as Optuna's RDB storage; a path (or `journal:path`)
    as a journal file: appends under a lock file, safe from many processes and nodes on one filesystem."""
    optuna = _optuna()
    if "://" in url:
        return optuna.storages.RDBStorage(url)
    path = Path(url.removeprefix("journal:")).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(str(path)))


def build(node: dict | None, **call_site):
    """A sampler or pruner from its `_target_` node (None: None)."""
    if not node:
        return None
    from hydra.utils import instantiate

    return instantiate(dict(node), **call_site, _convert_="all")


# -- the search space ----------------------------------------------------------------------------------


def search_space(arguments: list[str]) -> tuple[dict[str, Any], list[str]]:
    """({key: distribution}, fixed overrides) from sweeper syntax: `choice(a, b)` and `a,b` are
    categorical, `range(lo, hi, step)` stepped ints/floats, `interval(lo, hi)` uniform (ints when both
    ends are ints), `tag(log, interval(...))` log-uniform. Other overrides pass through unchanged."""
    optuna = _optuna()
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Transformer

    dist = optuna.distributions
    space: dict[str, Any] = {}
    fixed: list[str] = []
    for override in OverridesParser.create().parse_overrides(arguments):
        key = override.get_key_element()
        if not override.is_sweep_override():
            fixed.append(override.input_line)
            continue
        value = override.value()
        if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
            space[key] = dist.CategoricalDistribution(list(override.sweep_iterator(Transformer.encode)))
        elif override.is_range_sweep():
            if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
                # range() excludes its end, an Optuna distribution includes it.
                high = value.start + (value.stop - value.start - 1) // value.step * value.step
                space[key] = dist.IntDistribution(value.start, high, step=value.step)
            else:
                high = value.stop - value.step
                space[key] = dist.FloatDistribution(value.start, high, step=value.step)
        elif override.is_interval_sweep():
            log_scale = "log" in value.tags
            if isinstance(value.start, int) and isinstance(value.end, int):
                space[key] = dist.IntDistribution(value.start, value.end, log=log_scale)
            else:
                space[key] = dist.FloatDistribution(float(value.start), float(value.end), log=log_scale)
        else:
            raise UserError(f"{override.input_line}: a search takes choice(), range() or interval() values")
    return space, fixed


def grid_values(space: dict[str, Any]) -> dict[str, list]:
    """The value lists of a grid search: every search key must be a choice or a stepped range."""
    optuna = _optuna()
    dist = optuna.distributions
    grid = {}
    for key, d in space.items():
        if isinstance(d, dist.CategoricalDistribution):
            grid[key] = list(d.choices)
        elif (
            isinstance(d, dist.IntDistribution | dist.FloatDistribution) and d.step is not None and not d.log
        ):
            n = int(round((d.high - d.low) / d.step)) + 1
            grid[key] = [d.low + i * d.step for i in range(n)]
        else:
            raise UserError(
                f"hydra.sweeper.params.{key}: the grid sampler needs choice(...) or range(...), not an interval"
            )
    return grid


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


# -- the sweeper's loop --------------------------------------------------------------------------------


def warn_if_settings_changed(before: list[str] | None, now: list[str], study: str) -> None:
    """A study continued with other fixed settings (trainer.max_steps=12 then 8): its new trials are ranked
    against, and pruned by, trials that ran another budget or setup. Said with the keys, before any trial."""
    if before is None:
        return  # a study.json from before the fixed settings were recorded
    old, new = (dict(o.partition("=")[::2] for o in overrides) for overrides in (before, now))
    changed = [
        f"{k}={old.get(k, '(unset)')} -> {new.get(k, '(unset)')}"
        for k in {**old, **new}
        if old.get(k) != new.get(k)
    ]
    if changed:
        log.warning(
            "continuing study %r with other settings than its earlier trials (%s): their objectives compare only "
            "if those settings do not matter; for a fresh study add hydra.sweeper.study_name=NEW_NAME",
            study, ", ".join(changed),
        )  # fmt: skip


class Search:
    """One invocation of a search: open (or continue) the study, run trials until it holds `n_trials`."""

    def __init__(self, settings: dict, config, launcher, sweep_dir: Path):
        self.settings = settings
        self.config = config
        self.launcher = launcher
        self.sweep_dir = sweep_dir
        self.lock = threading.Lock()  # the study and the summary are touched by the launch threads

    # The study and what the jobs need to reach it.
    def open_study(self, space: dict, fixed: list[str] = ()):
        optuna = _optuna()
        s = self.settings
        sampler_cfg = dict(s.get("sampler") or {})
        storage_url = str(s["storage"])
        if "://" not in storage_url:  # jobs run elsewhere (other cwd, other nodes): an absolute path
            storage_url = str(Path(storage_url.removeprefix("journal:")).expanduser().resolve())
        self.storage = open_storage(storage_url)
        earlier = _trial_count(self.storage, str(s["study_name"]))
        if earlier and sampler_cfg.get("seed") is not None:
            # A continued study with the first run's seed would draw the first run's samples again.
            sampler_cfg["seed"] = int(sampler_cfg["seed"]) + earlier
            log.info("continuing a study of %d trials: sampler seed %d", earlier, sampler_cfg["seed"])
        if str(sampler_cfg.get("_target_", "")).endswith("GridSampler"):
            sampler = build(sampler_cfg, search_space=grid_values(space))
        else:
            sampler = build(sampler_cfg)
        pruner = build(s.get("pruner")) or optuna.pruners.NopPruner()
        info_path = self.sweep_dir / STUDY_FILE
        info = {
            "study_name": str(s["study_name"]),
            "storage": storage_url,
            "direction": str(s.get("direction", "minimize")),
            "monitor": str(s.get("monitor") or "val/loss"),
            "objective": self.config.get("objective"),
            "pruner": s.get("pruner"),
            "params": list(space),  # the summary's columns (hydratune.sweep.declared_axes)
            "fixed": list(
                fixed
            ),  # the command line's other overrides: a continued study is warned of changes
        }
        if info_path.is_file():
            before = json.loads(info_path.read_text())
            if (before["study_name"], before["storage"]) != (info["study_name"], info["storage"]):
                raise UserError(
                    f"hydra.sweep.dir={self.sweep_dir} holds study {before['study_name']!r} "
                    f"({before['storage']}); continue it with hydra.sweeper.study_name={before['study_name']} "
                    "or choose another hydra.sweep.dir"
                )
            warn_if_settings_changed(before.get("fixed"), list(fixed), info["study_name"])
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        study = optuna.create_study(
            storage=self.storage,
            sampler=sampler,
            pruner=pruner,
            study_name=info["study_name"],
            direction=info["direction"],
            load_if_exists=True,
        )
        info_path.write_text(json.dumps(info, indent=2, default=str) + "\n")
        self.study = study
        return study

    def run(self, arguments: list[str]) -> None:
        optuna = _optuna()
        TrialState = optuna.trial.TrialState
        s = self.settings
        params = [f"{k}={v}" for k, v in (s.get("params") or {}).items()]
        space, fixed = search_space(params + list(arguments))
        check_objective(space, self.config, s)
        study = self.open_study(space, fixed)
        check_space(study, space, self.sweep_dir)
        self.fixed = fixed
        self.space = space
        self.recover_interrupted(study)
        n_trials = int(s["n_trials"])
        if str((s.get("sampler") or {}).get("_target_", "")).endswith("GridSampler"):
            grid = 1
            for values in grid_values(space).values():
                grid *= len(values)
            n_trials = min(n_trials, grid)
        parallel = not _runs_in_process(self.launcher)
        n_jobs = max(1, int(s.get("n_jobs") or 1)) if parallel else 1
        if not parallel and int(s.get("n_jobs") or 1) > 1:
            log.info("the basic launcher runs one trial at a time (n_jobs=%s ignored)", s.get("n_jobs"))
        counted = [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("interrupted")]
        counted = [t for t in counted if t.state != TrialState.WAITING]
        to_run = n_trials - len(counted)
        log.info(
            "study %r in %s: %d trials there, %d to run, %d at a time; sampler %s, pruner %s",
            study.study_name,
            s["storage"],
            len(counted),
            max(to_run, 0),
            n_jobs,
            type(study.sampler).__name__,
            type(study.pruner).__name__,
        )
        if to_run <= 0:
            log.info("the study already holds %d trials: raise hydra.sweeper.n_trials to run more", n_trials)
        if n_jobs == 1:
            for _ in range(max(to_run, 0)):
                self.finish(*self.launch(self.ask()))
        else:
            with ThreadPoolExecutor(n_jobs, thread_name_prefix="trial") as pool:
                running: dict = {}
                while to_run > 0 or running:
                    while to_run > 0 and len(running) < n_jobs:
                        trial = self.ask()
                        running[pool.submit(self.launch, trial)] = trial
                        to_run -= 1
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        running.pop(future)
                        self.finish(*future.result())
        self.report_end()

    def ask(self):
        with self.lock:
            trial = self.study.ask(self.space)
        return trial

    def overrides(self, trial) -> list[str]:
        info = str((self.sweep_dir / STUDY_FILE).resolve())
        sampled = [f"{k}={format_value(v)}" for k, v in trial.params.items()]
        return [
            *self.fixed,
            *sampled,
            *self.continued(trial),
            f"++hydra.job.env_set.{STUDY_ENV}={_quote(info)}",
            f"++hydra.job.env_set.{TRIAL_ENV}={trial.number}",
        ]

    def continued(self, trial) -> list[str]:
        """A rerun of a trial that a killed sweep left running starts from that trial's last.ckpt (review S11):
        the same parameters, and the steps it had trained are not spent again. Its own folder, as any trial's."""
        rerun_of = (getattr(trial, "user_attrs", None) or {}).get("rerun_of")
        ckpt = self.sweep_dir / str(rerun_of) / "checkpoints" / "last.ckpt"
        if (
            rerun_of is None
            or not ckpt.is_file()
            or any(o.startswith(("ckpt_path=", "resume=")) for o in self.fixed)
        ):
            return []
        log.info("trial %d: continues trial %d from %s", trial.number, rerun_of, ckpt)
        return [f"ckpt_path={_quote(str(ckpt.resolve()))}"]

    def launch(self, trial) -> tuple[Any, Any, Exception | None]:
        """Run the trial's job through the launcher (blocks until it ends). A stop signal (SystemExit from
        the job's handler, KeyboardInterrupt) ends the search; the trial stays RUNNING for the next run."""
        overrides = self.overrides(trial)
        log.info("trial %d: %s", trial.number, " ".join(o for o in overrides if not o.startswith("++hydra")))
        try:
            (ret,) = self.launcher.launch([overrides], initial_job_idx=trial.number)
            return trial, ret, None
        except Exception as err:  # submitit: the job died without a result (killed, node lost)
            return trial, None, err

    def finish(self, trial, ret, launch_error: Exception | None) -> None:
        """Tell the study how the trial ended; write trial.json into its job folder; rebuild the summary."""
        optuna = _optuna()
        from hydra.core.utils import JobStatus

        TrialState = optuna.trial.TrialState
        error = None
        value = None
        if launch_error is not None:
            error = f"{type(launch_error).__name__}: {launch_error}".splitlines()[0]
        elif ret.status != JobStatus.COMPLETED:
            error = f"{type(ret._return_value).__name__}: {ret._return_value}".splitlines()[0]
        else:
            try:
                value = float(ret.return_value)
            except (TypeError, ValueError):
                error = f"the job returned {ret.return_value!r}, not a number"
        with self.lock:
            reported = _fresh(self.study, trial.number)
            if reported.user_attrs.get("pruned_at_step") is not None:
                state, values = TrialState.PRUNED, None  # Optuna keeps the last reported value
            elif error is None and math.isfinite(value):
                state, values = TrialState.COMPLETE, value
            else:
                state, values = TrialState.FAIL, None
                # train.py returns nan for a config or data error and a missing metric, and the submitit
                # launchers for a job that died: the job's folder says which.
                recorded = (
                    read_json(_job_dir(ret, self.sweep_dir, trial.number) / JOB_ERROR_FILE) or {}
                ).get("message")
                error = (
                    error
                    or recorded
                    or f"the job returned {value} for objective {self.config.get('objective')!r}"
                )
                trial.set_user_attr("error", error[:500])
            frozen = tell(self.study, trial.number, values, state)
            job_dir = _job_dir(ret, self.sweep_dir, trial.number)
            write_trial_file(job_dir, frozen, self.study, error)
            log.info(
                "trial %d: %s%s",
                trial.number,
                state.name,
                f" value {frozen.value:.4f}" if frozen.value is not None else f" ({error})" if error else "",
            )
            self.rebuild_summary()

    def recover_interrupted(self, study) -> None:
        """Trials a killed sweep left RUNNING: told from their job folder when the job finished after all,
        else failed (marked interrupted) and their parameters queued to run again."""
        optuna = _optuna()
        TrialState = optuna.trial.TrialState
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            job_dir = self.sweep_dir / str(frozen.number)
            metrics = read_json(job_dir / "metrics.json")
            objective = self.config.get("objective") or "val_loss"
            if frozen.user_attrs.get("pruned_at_step") is not None and metrics is not None:
                state, values = TrialState.PRUNED, None
            elif metrics is not None and isinstance(metrics.get(objective), int | float):
                state, values = TrialState.COMPLETE, float(metrics[objective])
            else:
                state, values = TrialState.FAIL, None
                live_trial(study, self.storage, frozen.number).set_user_attr("interrupted", True)
                study.enqueue_trial(frozen.params, user_attrs={"rerun_of": frozen.number})
            told = tell(study, frozen.number, values, state)
            log.info("trial %d, left running by an earlier sweep: %s", frozen.number, told.state.name)
            if job_dir.is_dir():
                write_trial_file(job_dir, told, study, "interrupted" if state == TrialState.FAIL else None)

    def rebuild_summary(self) -> None:
        from hydratune.sweep import write_summary

        try:
            write_summary(self.sweep_dir)
        except Exception as err:  # a summary problem must never stop the search
            log.warning("could not write the sweep summary: %s", err)

    def report_end(self) -> None:
        study = self.study
        states = [t.state.name for t in study.get_trials(deepcopy=False)]
        counts = ", ".join(f"{states.count(s)} {s.lower()}" for s in sorted(set(states)))
        log.info("study %r: %d trials (%s)", study.study_name, len(states), counts)
        try:
            best = study.best_trial
        except ValueError:
            return
        log.info("best trial %d: value %.4f, %s", best.number, best.value, best.params)
        for line in importance_lines(study):
            log.info(line)
        (self.sweep_dir / "optimization_results.json").write_text(
            json.dumps(
                {"best_trial": best.number, "best_value": best.value, "best_params": best.params}, indent=2
            )
            + "\n"
        )


def check_space(study, space: dict, sweep_dir: Path) -> None:
    """A continued study searched its parameters in distributions that a new space must stay compatible with
    (Optuna refuses another choice() list mid-ask, leaving a trial RUNNING): refused before the first ask."""
    optuna = _optuna()
    before = {}
    for trial in study.get_trials(deepcopy=False):
        before.update(trial.distributions)
    for name, distribution in space.items():
        if name not in before:
            continue
        try:
            optuna.distributions.check_distribution_compatibility(before[name], distribution)
        except ValueError:
            raise UserError(
                f"{name}: study {study.study_name!r} in {sweep_dir} searched it as {_describe(before[name])}; a "
                f"different space needs a new study: name=NEW (or hydra.sweeper.study_name=NEW); nothing was run"
            ) from None


def _describe(distribution) -> str:
    choices = getattr(distribution, "choices", None)
    if choices is not None:
        return f"choice({', '.join(map(str, choices))})"
    return f"interval({distribution.low}, {distribution.high})"


def check_objective(space: dict, config, settings: dict) -> None:
    """A search over a setting that changes the scale of the task's val/loss (DPO's beta) cannot rank its
    trials by that loss: refused before the first trial, with the objective that does compare."""
    from hydratune.sweep import loss_scale

    objective = str(config.get("objective") or "best_val_loss")
    if objective not in ("best_val_loss", "val_loss"):
        return
    task_cfg = config.get("task") or {}
    task, varied, comparable = loss_scale(dict(task_cfg), list(space))
    if not varied:
        return
    if comparable is None:
        raise UserError(
            f"hydra.sweeper.params: {', '.join(varied)} changes what task={task}'s validation measures, so "
            f"objective={objective} cannot compare trials and no val metric does: fix it, or sweep it as a "
            "grid (-m without hydra/sweeper=optuna) and compare the jobs' generations"
        )
    name, higher = comparable
    raise UserError(
        f"hydra.sweeper.params: {', '.join(varied)} changes the scale of task={task}'s val/loss, so "
        f"objective={objective} does not compare trials: use objective={name.replace('/', '_')} "
        f"hydra.sweeper.direction={'maximize' if higher else 'minimize'} hydra.sweeper.monitor={name}"
    )


def _quote(text: str) -> str:
    if "'" in text:
        raise UserError(f"hydra.sweep.dir: {text} holds a quote character; choose a plain path")
    return f"'{text}'"


def _runs_in_process(launcher) -> bool:
    from hydra._internal.core_plugins.basic_launcher import BasicLauncher

    return isinstance(launcher, BasicLauncher)


def tell(study, number: int, values, state):
    """`study.tell`, returning the finished trial. The grid sampler calls `study.stop()` after the last
    grid point, which Optuna refuses outside `study.optimize` (after the state is stored): let it pass."""
    try:
        return study.tell(number, values, state=state, skip_if_finished=True)
    except RuntimeError as err:
        if "Study.stop" not in str(err):
            raise
        return _fresh(study, number)


def _trial_count(storage, study_name: str) -> int:
    """Trials the study already holds in `storage` (0 when there is no such study yet)."""
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return 0
    return len(storage.get_all_trials(study_id, deepcopy=False))


def live_trial(study, storage, number: int):
    """The `optuna.trial.Trial` of trial `number` (reports and attributes go to the storage)."""
    optuna = _optuna()
    study_id = storage.get_study_id_from_name(study.study_name)
    return optuna.trial.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, number))


def _fresh(study, number: int):
    """The trial as the storage holds it now (a job in another process may have written to it)."""
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def _job_dir(ret, sweep_dir: Path, number: int) -> Path:
    try:
        return Path(str(ret.hydra_cfg.hydra.runtime.output_dir))
    except AttributeError:
        return sweep_dir / str(number)


def write_trial_file(job_dir: Path, frozen, study, error: str | None) -> None:
    """trial.json: what the sweep summary shows for an Optuna trial (state, value, where it was pruned)."""
    if not job_dir.is_dir():
        return
    info = {
        "study": study.study_name,
        "number": frozen.number,
        "state": frozen.state.name,
        "value": frozen.value,
        "direction": study.direction.name.lower(),
        "params": frozen.params,
        "pruned_at_step": frozen.user_attrs.get("pruned_at_step"),
        "intermediate_values": {str(k): v for k, v in sorted(frozen.intermediate_values.items())},
    }
    if error:
        info["error"] = error
    tmp = job_dir / f".{TRIAL_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, job_dir / TRIAL_FILE)


# -- in the job: report and prune ---------------------------------------------------------------------


def trial_callbacks() -> list[L.Callback]:
    """[TrialPruning] when this run is a trial of a search (HYDRATUNE_STUDY/HYDRATUNE_TRIAL set), else []."""
    study_file, number = os.environ.get(STUDY_ENV), os.environ.get(TRIAL_ENV)
    if not study_file or number is None:
        return []
    return [TrialPruning(Path(study_file), int(number))]


class TrialPruning(L.Callback):
    """Reports the monitored validation metric to the trial after every evaluation during training and
    stops the run at that optimizer step when the pruner says so (last.ckpt, metrics.json still written).

    Only global rank 0 talks to the study; its decision is broadcast, so every DDP rank stops together.
    The pruned step is saved in the trial (`pruned_at_step`), from which the sweeper marks it PRUNED.
    """

    def __init__(self, study_file: Path, number: int):
        self.study_file = study_file
        self.number = number
        self.info = json.loads(study_file.read_text())
        self.monitor = self.info.get("monitor") or "val/loss"
        self.trial = None
        self.pruned_at: int | None = None

    def _open(self):
        optuna = _optuna()
        storage = open_storage(self.info["storage"])
        study = optuna.load_study(
            study_name=self.info["study_name"], storage=storage, pruner=build(self.info.get("pruner"))
        )
        return live_trial(study, storage, self.number)

    def on_fit_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self.trial = self._open()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit" or self.pruned_at is not None:
            return
        stop = self._report(trainer) if trainer.is_global_zero else None
        stop = trainer.strategy.broadcast(stop, src=0)  # every DDP rank stops at the same step
        if stop is None:
            return
        self.pruned_at = trainer.global_step
        log.warning(
            "trial %d stops at step %d (%s %.4f): %s",
            self.number,
            trainer.global_step,
            self.monitor,
            float(trainer.callback_metrics.get(self.monitor, float("nan"))),
            stop,
        )
        stop_here(trainer, "pruned")

    def _report(self, trainer) -> str | None:
        """Report the metric at this step; the reason to stop (pruned, abandoned), or None to go on."""
        optuna = _optuna()
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return None
        step = trainer.global_step
        try:
            self.trial.report(float(value), step)
            if 0 < trainer.max_steps <= step or not self.trial.should_prune():
                return None  # at the last step there is nothing left to save: the trial completes
            self.trial.set_user_attr("pruned_at_step", step)
            return "pruned"
        except optuna.exceptions.UpdateFinishedTrialError:
            # A continued sweep failed this trial (its sweep was killed) and runs its parameters again.
            return "abandoned: a continued sweep failed this trial as interrupted and runs it again"


def stop_here(trainer, reason: str) -> None:
    """Stop training at this optimizer step, with last.ckpt written for it (at the next step boundary when
    an evaluation fell inside a gradient-accumulation window)."""
    from hydratune.checkpoint import StepCheckpoint

    checkpoint = next((cb for cb in trainer.callbacks if isinstance(cb, StepCheckpoint)), None)
    if checkpoint is None:
        trainer.should_stop = True
    else:
        checkpoint.stop_now(trainer, reason)


# -- after the search: the report ----------------------------------------------------------------------


def load_study(sweep_dir: Path):
    """The study of a search's sweep directory (its study.json), or None for a plain multirun."""
    info = read_json(Path(sweep_dir) / STUDY_FILE)
    if info is None:
        return None
    optuna = _optuna()
    return optuna.load_study(study_name=info["study_name"], storage=open_storage(info["storage"]))


def importance_lines(study) -> list[str]:
    """Parameter importance (Optuna's default evaluator, over the complete trials), as text lines."""
    optuna = _optuna()
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return [
            f"parameter importance: needs {MIN_TRIALS_FOR_IMPORTANCE} complete trials, the study has "
            f"{len(complete)}"
        ]
    try:
        importances = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as err:
        return [f"parameter importance: not computed ({str(err).splitlines()[0]})"]
    lines = [f"parameter importance (Optuna's default evaluator, {len(complete)} complete trials):"]
    lines += [f"  {name}: {value:.3f}" for name, value in importances.items()]
    return lines
