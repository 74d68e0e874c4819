"""Pruned vs unpruned Optuna search: optimizer steps spent and the best validation loss found.

    OMP_NUM_THREADS=1 python scripts/bench_search.py --trials 12 --out outputs/bench_search.json
    OMP_NUM_THREADS=1 python scripts/bench_search.py --trials 24 --steps 80 --pruners none percentile  # ~15 min

The same search (conf/hparams_search/lr_rank.yaml: log-uniform lr x LoRA rank, TPE, same seed, same
number of trials) runs once per pruner on the shipped tiny model, every trial `--steps` optimizer steps
long with an evaluation every `--every` steps. Figures come from each sweep's summary (metrics.json
of every job) and from the study itself. Target (issue 21): a pruned search spends <= 50% of the
unpruned search's steps, and its best val loss is within 2% of (or better than) the unpruned best.
Hardware: any CPU; ~2-4 min per search on 2 shared cores (trials run one by one, in one process).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def search(spec: str, out_dir: Path, args) -> dict:
    """One search; `spec` is a pruner option, optionally with settings: `successive_halving:reduction_factor=4`."""
    pruner, _, settings = spec.partition(":")
    sweep_dir = out_dir / spec.replace(":", "_").replace("=", "").replace(",", "_")
    reused = dict(r.rsplit("=", 1) for r in args.reuse).get(spec)  # SPEC may hold "=" itself
    if reused:
        sweep_dir = Path(reused)  # an earlier search of the same settings (trials are deterministic)
    cmd = [
        sys.executable,
        "train.py",
        "hparams_search=lr_rank",
        f"hydra/sweeper/pruner={pruner}",
        *(f"hydra.sweeper.pruner.{kv}" for kv in settings.split(",") if kv),
        f"hydra.sweeper.n_trials={args.trials}",
        f"hydra.sweep.dir={sweep_dir}",
        f"seed={args.seed}",
        f"trainer.max_steps={args.steps}",
        f"trainer.val_check_interval={args.every}",
        "+trainer.limit_val_batches=2",
        "trainer.enable_progress_bar=false",
        "eval_before_training=false",
        "eval_generations.num_prompts=0",
        "logger=csv",
        "~callbacks.early_stopping",  # only the pruner stops trials early
        *args.extra,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.setdefault("OMP_NUM_THREADS", "1")
    started = time.perf_counter()
    if not reused:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"search with pruner={spec} failed:\n{done.stderr[-3000:]}")
    wall = time.perf_counter() - started
    from hydratune.search import load_study
    from hydratune.sweep import collect

    rows = collect(sweep_dir)
    study = load_study(sweep_dir)
    states = [t.state.name for t in study.trials]
    return {
        "pruner": spec,
        "sweep_dir": str(sweep_dir),
        "command": " ".join(cmd[1:]),
        "trials": len(rows),
        "complete": states.count("COMPLETE"),
        "pruned": states.count("PRUNED"),
        "failed": states.count("FAIL"),
        "steps": sum(int(r["steps"] or 0) for r in rows),
        "best_val_loss": min(r["best_val_loss"] for r in rows if r["status"] == "ok"),
        "best_trial": study.best_trial.number,
        "best_params": study.best_trial.params,
        "wall_s": None if reused else round(wall, 1),
    }


def replay(sweep_dir: Path) -> None:
    """Offline: the val curves of an unpruned search, trial by trial in their order, through Optuna's pruners
    (what each would have stopped, assuming the sampler proposed the same trials)."""
    import optuna
    from optuna import pruners as P

    from hydratune.sweep import collect

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    curves = [row["val_curve"] for row in collect(sweep_dir) if row["val_curve"]]
    base_steps = sum(c[-1][0] for c in curves)
    base_best = min(min(v for _, v in c) for c in curves)
    candidates = {
        "median (1 start-up trial)": lambda: P.MedianPruner(1),
        "median (4 start-up trials)": lambda: P.MedianPruner(4),
        **{
            f"percentile {q} (1 start-up trial)": (lambda q=q: P.PercentilePruner(q, 1)) for q in (10, 25, 40)
        },
        **{
            f"successive halving (first rung {r}, factor {f})": (
                lambda r=r, f=f: P.SuccessiveHalvingPruner(r, f)
            )
            for r in (5, 10)
            for f in (2, 3, 4)
        },
        "hyperband (5..40, factor 3)": lambda: P.HyperbandPruner(5, curves[0][-1][0], 3),
    }
    print("| pruner (replayed) | optimizer steps | vs unpruned | best val loss | vs unpruned |")
    print("|---|---|---|---|---|")
    for name, make in candidates.items():
        study = optuna.create_study(pruner=make())
        steps, best = 0, math.inf
        for curve in curves:
            trial = study.ask()
            for step, value in curve:
                trial.report(value, step)
                if trial.should_prune():
                    steps += step
                    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                    break
            else:
                steps += curve[-1][0]
                value = min(v for _, v in curve)  # the objective: best_val_loss
                best = min(best, value)
                study.tell(trial, value)
        print(
            f"| {name} | {steps} | {100 * steps / base_steps:.0f}% | {best:.4f} | "
            f"{100 * (best / base_best - 1):+.2f}% |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--every", type=int, default=5, help="optimizer steps between evaluations")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--pruners",
        nargs="+",
        default=["none", "successive_halving", "median"],
        help="pruner options, each optionally with settings: successive_halving:reduction_factor=4",
    )
    parser.add_argument(
        "--reuse",
        nargs="*",
        default=[],
        metavar="SPEC=DIR",
        help="the sweep dir of an earlier search of the same settings, read instead of running it again",
    )
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "bench_search")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_search.json")
    parser.add_argument("extra", nargs="*", help="more overrides for every trial")
    parser.add_argument(
        "--replay", type=Path, help="an unpruned search's sweep dir: replay its curves offline"
    )
    args = parser.parse_args()
    if args.replay:
        return replay(args.replay)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results = [search(p, args.work / stamp, args) for p in args.pruners]
    base = next((r for r in results if r["pruner"] == "none"), results[0])
    for r in results:
        r["steps_vs_unpruned"] = round(r["steps"] / base["steps"], 3)
        r["best_vs_unpruned"] = round(r["best_val_loss"] / base["best_val_loss"] - 1, 4)
    report = {
        "settings": {k: v for k, v in vars(args).items() if k not in ("work", "out")},
        "note": "timings under contention: 2 CPU cores shared with other jobs",
        "machine": f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')}",
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(
        "| pruner | trials (complete/pruned) | optimizer steps | vs unpruned | best val loss | vs unpruned | wall s |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['pruner']} | {r['trials']} ({r['complete']}/{r['pruned']}) | {r['steps']} | "
            f"{100 * r['steps_vs_unpruned']:.0f}% | {r['best_val_loss']:.4f} | "
            f"{100 * r['best_vs_unpruned']:+.2f}% | {r['wall_s'] or 'reused'} |"
        )
    print(f"figures: {args.out}")


if __name__ == "__main__":
    main()
