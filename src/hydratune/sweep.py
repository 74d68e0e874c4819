"""The sweep summary: one row per job of a multirun, written into the sweep directory.

`SweepSummary` is a Hydra callback (registered in conf/hydra/default.yaml). It builds
`sweep_summary.csv`, `sweep_summary.md` and `sweep.png` from what the jobs left on disk — each job's
`.hydra/overrides.yaml` and `metrics.json`, and for an Optuna search the `trial.json` that the sweeper
writes (trial number, state COMPLETE/PRUNED/FAIL, value) — so `hydratune sweep-report SWEEP_DIR`
rebuilds the same files later (after a partial sweep, or one whose jobs ran on a cluster).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Any

import yaml

from hydratune.config import read_json
from hydratune.locks import training
from hydratune.schema import is_number

SUMMARY_FILES = ("sweep_summary.csv", "sweep_summary.md", "sweep.png")
# Written by the callback into a job's directory when the job raised (the error, for the table).
JOB_ERROR_FILE = "job_error.json"
# Written by the Optuna sweeper (hydratune.search): into a trial's job directory (number, state, value),
# and into the sweep directory (where the study is: storage, study name, pruner).
TRIAL_FILE = "trial.json"
STUDY_FILE = "study.json"
STATUSES = ("ok", "pruned", "failed", "NaN", "OOM", "continued", "stopped", "running")
CONTINUED_FILE = "continued.json"  # hydratune.train: this launch trained on in an earlier run's folder
# Metric columns, in table order: (metrics.json key, column name).
METRICS = (
    ("best_val_loss", "best_val_loss"),
    ("val_loss", "final_val_loss"),
    ("train_loss", "final_train_loss"),
    ("initial_val_loss", "initial_val_loss"),
    ("steps", "steps"),
    ("tokens_per_s", "tokens_per_s"),
    ("wall_seconds", "wall_s"),
)


def job_dirs(sweep_dir: str | Path) -> list[Path]:
    """Every job directory under the sweep (one holding `.hydra/overrides.yaml`), in job order."""
    found = [p.parent.parent for p in Path(sweep_dir).rglob(".hydra/overrides.yaml")]

    def order(path: Path) -> list:
        # Natural order: 2 before 10, and a continued sweep's "c1_2" after its first jobs.
        name = str(path.relative_to(sweep_dir))
        return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t]

    return sorted(found, key=order)


def record_job_error(
    job_dir: str | Path, err: BaseException, message: str | None = None, kind: str | None = None
) -> None:
    """A job's error, for the summary: JOB_ERROR_FILE in its folder (the first line of `message`, else of
    the error's own text; `kind` instead of the error's type, e.g. STOPPED)."""
    text = (message or str(err)).splitlines()[0] if (message or str(err)) else type(err).__name__
    info = {
        "type": kind or type(err).__name__,
        "message": text,
        "traceback": "".join(traceback.format_exception(err))[-4000:],
    }
    Path(job_dir).mkdir(parents=True, exist_ok=True)
    (Path(job_dir) / JOB_ERROR_FILE).write_text(json.dumps(info, indent=2) + "\n")


STOPPED = "stopped"  # JOB_ERROR_FILE's type for a job that a stop signal ended (see stopped_job)


def stopped_job(code: object) -> None:
    """In a multirun, a job that SIGINT/SIGTERM ended (SystemExit 130/143): Hydra ends the sweep there
    without its callbacks, so the job's row says so and the summary of the jobs so far is written here."""
    import signal

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not (HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN):
        return
    if not isinstance(code, int) or code - 128 not in (signal.SIGINT, signal.SIGTERM):
        return  # a requeue signal (SLURM) or another exit: the job goes on elsewhere
    hydra_cfg = HydraConfig.get()
    name = signal.Signals(code - 128).name
    job_dir, sweep_dir = Path(hydra_cfg.runtime.output_dir), Path(hydra_cfg.sweep.dir)
    if not (job_dir / "metrics.json").exists():
        record_job_error(job_dir, SystemExit(code), f"stopped by {name}", kind=STOPPED)
    try:
        rows = write_summary(sweep_dir)
    except Exception as err:  # the stop must go on whatever the summary finds
        print(f"hydratune: could not write the sweep summary: {err}", file=sys.stderr)
        return
    search = str(hydra_cfg.sweeper.get("_target_", "")).startswith("hydra_plugins.hydratune_optuna")
    again = (
        "the same command continues the study"
        if search  # the same folder: its jobs run again as cK_N beside theirs, and one summary ranks them all
        else f"the same command plus resume=auto hydra.sweep.dir={sweep_dir} continues it in this folder"
    )
    print(
        f"hydratune: sweep stopped by {name} after {len(rows)} job{'s' * (len(rows) != 1)}; summary so far: "
        f"{sweep_dir / 'sweep_summary.md'}; {again}",
        file=sys.stderr,
    )


def _status(metrics: dict | None, error: dict | None, trial: dict | None = None) -> str:
    state = (trial or {}).get("state")
    if state == "PRUNED":
        return "pruned"
    if state == "FAIL" and metrics is not None:
        return "failed"  # e.g. interrupted, or an objective the run did not produce
    if metrics is None and (error or {}).get("type") == STOPPED:
        return "stopped"
    if metrics is None:
        text = f"{(error or {}).get('type', '')} {(error or {}).get('message', '')}".lower()
        oom = ("outofmemory", "out of memory", "out_of_memory")  # torch's error, and SLURM's state (submitit)
        return "OOM" if any(word in text for word in oom) else "failed"
    losses = [metrics.get(k) for k in ("val_loss", "train_loss", "best_val_loss")]
    if any(isinstance(v, float) and not math.isfinite(v) for v in losses):
        return "NaN"
    return "ok"


def job_row(job_dir: Path, sweep_dir: Path) -> dict[str, Any]:
    """The summary row of one job: overrides, status, metrics, and the validation curve."""
    overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or []
    metrics = read_json(job_dir / "metrics.json")
    error = read_json(job_dir / JOB_ERROR_FILE)
    trial = read_json(job_dir / TRIAL_FILE)
    continued = read_json(job_dir / CONTINUED_FILE)
    elsewhere = Path(str(continued.get("run"))) if metrics is None and error is None and continued else None
    if elsewhere is not None:  # resume=auto trained on in an earlier job's folder: its results are this job's
        metrics = read_json(elsewhere / "metrics.json")
    row: dict[str, Any] = {
        "job": str(job_dir.relative_to(sweep_dir)),
        "status": _status(metrics, error, trial),
        "overrides": [str(o) for o in overrides],
        "trial": (trial or {}).get("number"),
        "state": (trial or {}).get("state"),
        "value": (trial or {}).get("value"),
        "direction": (trial or {}).get("direction"),
        "pruned_at_step": (trial or {}).get("pruned_at_step"),
    }
    for key, column in METRICS:
        row[column] = (metrics or {}).get(key)
    row["metrics"] = metrics or {}
    config = _read_yaml(job_dir / ".hydra" / "config.yaml") or {}
    checkpoint = ((config.get("callbacks") or {}).get("model_checkpoint")) or {}
    row["config"] = config
    row["task"] = config.get("task") or {}
    from hydratune.config import greater_is_better

    row["metric"] = (checkpoint.get("metric_for_best_model"), greater_is_better(checkpoint))
    row["error"] = (error or {}).get("message", "")[:200] if metrics is None else ""
    row["continued"] = str(elsewhere) if elsewhere is not None else ""
    if elsewhere is not None and metrics is None:  # the continued run has not finished (or failed there)
        row["status"] = "continued"
    elif metrics is None and error is None and training(job_dir):  # a partial sweep: still at work
        row["status"] = "running"
    if not row["error"] and (trial or {}).get("error"):
        row["error"] = trial["error"][:200]
    curve = (metrics or {}).get("val_curve") or []
    row["val_curve"] = [(int(s), float(v)) for s, v in curve]
    return row


def _setting(config: dict, key: str):
    """The value a job ran with for a swept key it did not override (its composed config's), or None."""
    node = config
    for part in key.lstrip("+~").split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node if not isinstance(node, dict | list) else None


def _read_yaml(path: Path) -> dict | None:
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return loaded if isinstance(loaded, dict) else None


def ranking(rows: list[dict]) -> tuple[str | None, bool, str]:
    """How the jobs of a grid are ranked: (metrics.json key or None for no ranking, higher is better, a
    note for the summary). The jobs' own `metric_for_best_model` (what best.ckpt and early stopping
    follow); val/loss is ranked by best_val_loss, unless the sweep varies a task setting that changes what
    the loss measures (`Task.loss_settings`, e.g. DPO's beta): then by the task's comparable metric."""
    tasks = sorted({str((r["task"] or {}).get("name")) for r in rows if r["task"]})
    if len(tasks) > 1:  # an SFT loss (nats/token), a DPO loss and a reward margin are not one scale
        return (
            None,
            False,
            f"no best job: the jobs train different tasks ({', '.join(tasks)}), whose metrics do not compare",
        )
    metric, higher = next((r["metric"] for r in rows if r["metric"][0]), ("val/loss", False))
    if metric != "val/loss":
        key = metric.replace("/", "_")
        return key, higher, f"ranked by final {key} (callbacks.model_checkpoint.metric_for_best_model)"
    task, varied, comparable = loss_scale(next((r["task"] for r in rows if r["task"]), {}), swept_keys(rows))
    if not varied:
        return "best_val_loss", False, ""
    if comparable is None:
        return None, False, (
            f"no best job: {', '.join(varied)} changes what task={task}'s validation measures, so no val "
            "metric compares across jobs; compare their held-out generations"
        )  # fmt: skip
    key = comparable[0].replace("/", "_")
    return key, comparable[1], (
        f"ranked by final {key}: {', '.join(varied)} changes the scale of task={task}'s val/loss, so val "
        "losses do not compare across jobs"
    )  # fmt: skip


def loss_scale(task_cfg: dict, keys) -> tuple[str, list[str], tuple[str, bool] | None]:
    """Of the swept `keys`, the task settings that change what its val/loss measures: (task name, those
    keys, the val metric that compares across them and whether higher is better, or None)."""
    task = _task_class(task_cfg)
    if task is None:
        return "", [], None

    def varied(settings) -> list[str]:
        return [k for k in keys if k.startswith("task.") and k.split(".")[1] in settings]

    unranked, scaled = varied(task.unranked_settings), varied(task.loss_settings)
    return task.name, unranked + scaled, None if unranked else task.settings_metric


def task_metrics(rows: list[dict]) -> list[str]:
    """The metrics.json keys of the jobs' tasks' `summary_metrics` that some job has (classification's val_acc
    and val_f1_macro: on imbalanced classes the loss alone does not tell the jobs apart)."""
    keys: list[str] = []
    for task_cfg in {
        json.dumps(r["task"], sort_keys=True, default=str): r["task"] for r in rows if r["task"]
    }.values():
        task = _task_class(task_cfg)
        keys += [m.replace("/", "_") for m in getattr(task, "summary_metrics", ())]
    return [k for k in dict.fromkeys(keys) if any(k in r["metrics"] for r in rows)]


def _task_class(task_cfg: dict):
    """The Task class of the jobs' config, or None where it cannot be had (a user's task not importable)."""
    from hydratune.errors import UserError
    from hydratune.tasks.registry import task_class

    try:
        return task_class(task_cfg)
    except UserError:
        return None


def declared_axes(sweep_dir: Path) -> list[str]:
    """The keys the sweep's command line sweeps (a,b / range() / interval() ...) and a search's
    `hydra.sweeper.params`, from Hydra's multirun.yaml or the search's study.json: columns even when the jobs so far share a value
    (one trial, a grid stopped after its first job)."""
    saved = _read_yaml(sweep_dir / "multirun.yaml") or {}
    hydra_node = saved.get("hydra") or {}
    keys = list(((hydra_node.get("sweeper") or {}).get("params") or {}).keys())
    keys += (read_json(sweep_dir / STUDY_FILE) or {}).get("params") or []  # a search writes no multirun.yaml
    task = (hydra_node.get("overrides") or {}).get("task") or []
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        parsed = OverridesParser.create().parse_overrides([str(o) for o in task])
        keys += [o.get_key_element() for o in parsed if o.is_sweep_override()]
    except Exception:  # an unreadable override: the varying keys still make the columns
        pass
    return list(dict.fromkeys(str(k) for k in keys))


def swept_keys(rows: list[dict]) -> list[str]:
    """The sweep's declared axes, then override keys whose value differs between jobs, in first-seen order."""
    declared = [k for k in (rows[0].get("axes") or []) if any(k in _keys(r) for r in rows)] if rows else []
    values: dict[str, set] = {}
    for row in rows:
        for override in row["overrides"]:
            key, _, value = override.partition("=")
            values.setdefault(key, set()).add(value)
    for row in rows:  # a key missing from some job varies too
        keys = {o.partition("=")[0] for o in row["overrides"]}
        for key in values:
            if key not in keys:
                values[key].add(None)
    return list(dict.fromkeys([*declared, *(k for k, v in values.items() if len(v) > 1)]))


def _keys(row: dict) -> set[str]:
    return {o.partition("=")[0] for o in row["overrides"]}


def collect(sweep_dir: str | Path) -> list[dict]:
    sweep_dir = Path(sweep_dir)
    axes = declared_axes(sweep_dir)
    return [job_row(d, sweep_dir) | {"axes": axes} for d in job_dirs(sweep_dir)]


def _fmt(value: Any, column: str = "") -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        four = column.endswith("loss") or column == "value" or column.startswith("val_")
        if four:
            return f"{value:.4f}"
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.4g}"  # tokens/s; an lr 2e-4 was "0.0" (S14)
    if isinstance(value, str) and re.fullmatch(r"-?\d*\.\d{7,}(e-?\d+)?", value):
        return f"{float(value):.4g}"  # a sampled value (0.0005611516415334506): the .csv keeps every digit
    return str(value)


def table(rows: list[dict]) -> tuple[list[str], list[list[Any]]]:
    """Header and rows: job, status, (Optuna: trial, state, value), one column per swept key, metrics,
    all overrides, error."""
    axes = swept_keys(rows)
    trials = TRIAL_COLUMNS if any(r["trial"] is not None for r in rows) else ()
    key = ranking(rows)[0]
    ranked = (key,) if key and key not in (c for _, c in METRICS) else ()
    ranked += tuple(k for k in task_metrics(rows) if k not in ranked)
    header = ["job", "status", *trials, *axes, *ranked, *(c for _, c in METRICS), "overrides", "error"]
    body = []
    for row in rows:
        given = dict(o.partition("=")[::2] for o in row["overrides"])
        body.append(
            [
                row["job"],
                row["status"],
                *(row[c] for c in trials),
                *(given[k] if k in given else _setting(row["config"], k) for k in axes),
                *(row["metrics"].get(c) for c in ranked),
                *(row[c] for _, c in METRICS),
                " ".join(row["overrides"]),
                row["error"],
            ]
        )
    return header, body


TRIAL_COLUMNS = ("trial", "state", "value")


def best_row(rows: list[dict]) -> dict | None:
    """The best job: for an Optuna search the best COMPLETE trial by its value (the objective, in the
    study's direction), else the ok job that `ranking` puts first (None when it ranks nothing)."""
    trials = [r for r in rows if r["state"] == "COMPLETE" and r["value"] is not None]
    if trials:
        sign = -1 if trials[0]["direction"] == "maximize" else 1
        return min(trials, key=lambda r: sign * r["value"])
    key, higher, _ = ranking(rows)
    scored = [r for r in rows if r["status"] == "ok" and is_number(r["metrics"].get(key))]
    return min(scored, key=lambda r: (-1 if higher else 1) * r["metrics"][key]) if scored else None


def steps_spent(rows: list[dict]) -> tuple[int, int]:
    """(optimizer steps of all jobs, of the pruned ones)."""
    total = sum(int(r["steps"] or 0) for r in rows)
    return total, sum(int(r["steps"] or 0) for r in rows if r["status"] == "pruned")


def _write_atomic(path: Path, text: str) -> None:
    # Jobs of a cluster sweep may rebuild the summary at the same time: never leave a half file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_summary(sweep_dir: str | Path, follow: bool = True) -> list[dict]:
    """Write sweep_summary.csv, sweep_summary.md and sweep.png into `sweep_dir`; returns the rows. With `follow`,
    the summary of a sweep whose jobs this one continued (resume=auto) is written again too."""
    sweep_dir = Path(sweep_dir)
    rows = collect(sweep_dir)
    header, body = table(rows)

    lines: list[str] = []

    class _Lines:
        def write(self, text: str) -> None:
            lines.append(text)

    writer = csv.writer(_Lines(), lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in r] for r in body])
    _write_atomic(sweep_dir / "sweep_summary.csv", "".join(lines))

    md = [f"# Sweep summary: {sweep_dir}", ""]
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    md.append(f"{len(rows)} jobs: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    total, pruned = steps_spent(rows)
    md.append("")
    md.append(f"steps spent: {total} optimizer steps" + (f" ({pruned} in pruned trials)" if pruned else ""))
    best = best_row(rows)
    if best and best["trial"] is not None:
        tied = [
            str(r["trial"])
            for r in rows
            if r is not best and r["state"] == "COMPLETE" and r["value"] == best["value"]
        ]
        tie = f"; tied with trial {', '.join(tied)}: the objective cannot tell them apart" if tied else ""
        md.append("")
        md.append(
            f"best: trial {best['trial']} (job {best['job']}, objective {best['value']:.4f}{tie}, "
            f"best_val_loss {best['best_val_loss'] or float('nan'):.4f}): `{' '.join(best['overrides'])}`"
        )
    else:
        key, _, note = ranking(rows)
        if note:
            md += ["", note]
        if best:
            value = best["metrics"][key]
            tied = [
                r["job"]
                for r in rows
                if r is not best and r["status"] == "ok" and r["metrics"].get(key) == value
            ]
            tie = f"; tied with job {', '.join(tied)}" if tied else ""
            md.append("")
            md.append(f"best: job {best['job']} ({key} {value:.4f}{tie}): `{' '.join(best['overrides'])}`")
    md += ["", "| " + " | ".join(header[:-2]) + " |", "|" + "---|" * (len(header) - 2)]
    for r in body:
        md.append("| " + " | ".join(_fmt(v, c).replace("|", "\\|") for v, c in zip(r[:-2], header)) + " |")
    failed = [(r["job"], r["error"]) for r in rows if r["error"]]
    if failed:
        md += ["", "Errors:", ""] + [f"- job {job}: {err}" for job, err in failed]
    continued = [(r["job"], r["continued"]) for r in rows if r.get("continued")]
    if continued:  # a relaunch with resume=auto trained on in an earlier job's folder: not an error
        md += ["", "Continued:", ""] + [f"- job {job}: resume=auto continued {run}" for job, run in continued]
    _write_atomic(sweep_dir / "sweep_summary.md", "\n".join(md) + "\n")
    plot(rows, sweep_dir / "sweep.png")
    if follow:  # the sweep those jobs were continued from has their results now: its summary too (review R8)
        for earlier in sorted({Path(run).parent for _, run in continued} - {sweep_dir}):
            if (earlier / "multirun.yaml").is_file():
                write_summary(earlier, follow=False)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    """sweep.png: every job's validation-loss curve, labelled by its swept values."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = swept_keys(rows)
    fig, ax = plt.subplots(figsize=(8, 5))
    for row in rows:
        given = dict(o.partition("=")[::2] for o in row["overrides"])
        label = f"{row['job']}: " + " ".join(f"{k}={given.get(k)}" for k in axes) + f" [{row['status']}]"
        curve = row["val_curve"] or (
            [(row["steps"], row["final_val_loss"])] if row["final_val_loss"] is not None else []
        )
        if curve:
            pruned = row["status"] == "pruned"
            (line,) = ax.plot(*zip(*curve), "--" if pruned else "-", marker="o", label=label, markersize=3)
            if pruned:  # where the pruner stopped it
                ax.plot(*curve[-1], "x", color=line.get_color(), markersize=9, markeredgewidth=2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("val/loss (nats / token)")
    counts = ", ".join(f"{n} {s}" for s in STATUSES if (n := sum(r["status"] == s for r in rows)))
    total, _ = steps_spent(rows)
    best = best_row(rows)
    title = f"{len(rows)} jobs ({counts}), {total} optimizer steps"
    if best is not None:
        title += f"; best: job {best['job']}"
    ax.set_title(title, fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


try:  # The callback needs Hydra; the report functions above do not.
    from hydra.experimental.callback import Callback as _HydraCallback
except ImportError:  # pragma: no cover
    _HydraCallback = object


class SweepSummary(_HydraCallback):
    """Hydra callback: keeps the sweep summary current while a multirun runs, and writes it at the end.

    After each job (in the job's process) the failed job's error is saved and the summary rebuilt,
    because Hydra stops a multirun at a failed job without calling `on_multirun_end`.
    """

    def on_multirun_start(self, config, **kwargs) -> None:
        from omegaconf import OmegaConf, read_write

        sweep_dir = Path(str(config.hydra.sweep.dir))
        # The Optuna sweeper opens its sqlite storage in the sweep directory before any job creates it.
        sweep_dir.mkdir(parents=True, exist_ok=True)
        # Running again into the same sweep directory (a continued Optuna study, a re-run grid) numbers
        # jobs from 0 again: put them in c1_0, c1_1, ... (c2_ the next time) instead of overwriting.
        subdir = OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir")
        # hydratune's Optuna sweeper numbers jobs by trial number: a continued study never reuses one.
        by_trial = str(config.hydra.sweeper.get("_target_", "")).startswith("hydra_plugins.hydratune_optuna")
        if subdir == "${hydra.job.num}" and job_dirs(sweep_dir) and not by_trial:
            taken = {p.name.split("_")[0] for p in sweep_dir.iterdir() if re.fullmatch(r"c\d+_\d+", p.name)}
            n = next(i for i in range(1, len(taken) + 2) if f"c{i}" not in taken)
            # Each job's config is recomposed from these overrides (Hydra's load_sweep_config).
            with read_write(config):
                config.hydra.sweep.subdir = f"c{n}_${{hydra.job.num}}"
                config.hydra.overrides.hydra.append(f"hydra.sweep.subdir=c{n}_${{hydra.job.num}}")

    def on_job_end(self, config, job_return, **kwargs) -> None:
        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

        if config.hydra.mode != RunMode.MULTIRUN:
            return
        job_dir = Path(str(config.hydra.runtime.output_dir))
        if job_return.status == JobStatus.FAILED:
            err = job_return._return_value
            record_job_error(job_dir, err, f"{type(err).__name__}: {err}" if str(err) else None)
        try:
            write_summary(config.hydra.sweep.dir)
        except Exception as err:  # a summary problem must never fail a training job
            print(f"hydratune: could not write the sweep summary: {err}")

    def on_multirun_end(self, config, **kwargs) -> None:
        rows = write_summary(config.hydra.sweep.dir)
        print(f"sweep summary ({len(rows)} jobs): {Path(str(config.hydra.sweep.dir)) / 'sweep_summary.md'}")


# Set by Lightning's process launcher in the launching process, and read by the next launch.
LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


@contextlib.contextmanager
def sweep_job():
    """One job of a multirun, so that DDP works inside a sweep (a no-op for a single run).

    Lightning starts DDP ranks 1..N-1 by re-running `sys.argv` plus `hydra.run.dir=<HydraConfig run.dir>`.
    In a sweep, `sys.argv` still holds `-m` and the swept values, so every extra rank would launch the
    sweep itself (and the Optuna sweeper would ask its study for new trials). Here `sys.argv` becomes
    this job's own overrides and `run.dir` this job's folder: the ranks start as plain runs of exactly
    this job, in its directory. Afterwards the job's process group is closed and the launcher's
    environment variables removed, so that the next job starts its own ranks.
    """
    import sys

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import read_write

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        yield
        return
    argv, env = list(sys.argv), {k: os.environ.get(k) for k in LAUNCH_ENV}
    # As Hydra keeps them (quoted where needed); hydra.mode=RUN because a search config (hparams_search)
    # sets MULTIRUN, which would make every extra rank run the search itself.
    sys.argv = [argv[0], *hydra_cfg.overrides.task, "hydra.mode=RUN"]
    with read_write(hydra_cfg):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    try:
        yield
    finally:
        sys.argv = argv
        torch = sys.modules.get("torch")
        if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
