"""A pruned Optuna search on a real SLURM cluster (scripts/slurm_cluster.sh): 2 trials at once through
submitit, the study in a journal file; the sweep process is killed mid-search and started again.

    OMP_NUM_THREADS=1 python scripts/search_slurm_check.py --out outputs/search_slurm_check.json

Steps: start a one-node cluster on this machine (installs slurm-wlm with apt-get if missing), run
`train.py hparams_search=lr_rank hydra/launcher=submitit_slurm hydra.sweeper.n_jobs=2 ...` with the
median pruner, SIGKILL the sweep once some trials have finished and two are running, run the same command
again, and check the study: every finished trial kept, the interrupted ones failed and re-run, the
search ending with `n_trials` counted trials. Prints what it saw and writes it to --out.
Hardware: a Debian/Ubuntu machine with root (or passwordless sudo). Expected time: 3-5 min on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def finished_trials(storage: Path) -> list[str]:
    import optuna

    from hydratune.search import open_storage

    if not storage.exists():
        return []
    try:
        study = optuna.load_study(study_name="slurm_search", storage=open_storage(str(storage)))
    except KeyError:
        return []
    return [t.state.name for t in study.trials]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--kill-after", type=int, default=2, help="finished trials before the kill")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "search_slurm_check.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hydratune-search-slurm-"))
    state, sweep_dir = work / "slurm", work / "search"
    env = {
        **os.environ,
        "HYDRATUNE_SLURMCTLD_PORT": str(free_port()),
        "HYDRATUNE_SLURMD_PORT": str(free_port()),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    script = ROOT / "scripts" / "slurm_cluster.sh"
    started = subprocess.run(
        ["bash", str(script), "start", str(state)], env=env, capture_output=True, text=True
    )
    if started.returncode != 0:
        raise SystemExit(f"the SLURM cluster did not start:\n{started.stderr[-2000:]}")
    env["SLURM_CONF"] = str(state / "slurm.conf")
    cmd = [
        sys.executable,
        "train.py",
        "hparams_search=lr_rank",
        "name=slurm_search",
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=2",
        "hydra.launcher.timeout_min=10",
        "hydra.sweeper.n_jobs=2",
        f"hydra.sweeper.n_trials={args.trials}",
        "hydra/sweeper/pruner=median",
        "hydra.sweeper.pruner.n_startup_trials=2",
        f"hydra.sweep.dir={sweep_dir}",
        f"trainer.max_steps={args.steps}",
        "trainer.val_check_interval=5",
        "+trainer.limit_val_batches=2",
        "trainer.enable_progress_bar=false",
        "eval_before_training=false",
        "eval_generations.num_prompts=0",
        "logger=csv",
    ]
    report: dict = {"command": " ".join(cmd[1:]), "work_dir": str(work)}
    storage = sweep_dir / "optuna.journal"
    try:
        t0 = time.monotonic()
        first = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=open(work / "first.log", "w"), stderr=subprocess.STDOUT
        )
        while first.poll() is None:
            states = finished_trials(storage)
            done = [s for s in states if s in ("COMPLETE", "PRUNED", "FAIL")]
            if len(done) >= args.kill_after and states.count("RUNNING") >= 1:
                break
            time.sleep(1)
        if first.poll() is not None:
            raise SystemExit(f"the first sweep ended before it could be killed; see {work / 'first.log'}")
        report["killed_at_s"] = round(time.monotonic() - t0, 1)
        report["states_when_killed"] = finished_trials(storage)
        first.send_signal(signal.SIGKILL)  # no clean-up at all: what a lost login node does
        first.wait()
        print(f"killed the sweep after {report['killed_at_s']} s; study: {report['states_when_killed']}")
        second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        (work / "second.log").write_text(second.stdout + second.stderr)
        report["second_returncode"] = second.returncode
        report["total_s"] = round(time.monotonic() - t0, 1)
        if second.returncode != 0:
            raise SystemExit(f"the continued sweep failed; see {work / 'second.log'}")
        import optuna

        from hydratune.search import open_storage

        study = optuna.load_study(study_name="slurm_search", storage=open_storage(str(storage)))
        trials = [
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "pruned_at_step": t.user_attrs.get("pruned_at_step"),
                "interrupted": bool(t.user_attrs.get("interrupted")),
                "params": t.params,
            }
            for t in study.trials
        ]
        report["trials"] = trials
        report["storage"] = type(study._storage).__name__ + f" ({storage.name})"
        counted = [t for t in trials if not t["interrupted"]]
        report["slurm_jobs"] = sorted(p.name for p in (sweep_dir / ".submitit").iterdir() if p.name.isdigit())
        report["summary"] = (sweep_dir / "sweep_summary.md").read_text().splitlines()[:6]
        checks = {
            "journal storage": storage.is_file() and "Journal" in report["storage"],
            "n_trials counted trials": len(counted) == args.trials,
            "some trials pruned": any(t["state"] == "PRUNED" for t in trials),
            "interrupted trials failed and re-run": all(
                any(u["params"] == t["params"] and u["number"] > t["number"] for u in trials)
                for t in trials
                if t["interrupted"]
            ),
            "every counted trial finished": all(t["state"] in ("COMPLETE", "PRUNED") for t in counted),
            "ran as SLURM jobs": len(report["slurm_jobs"]) >= args.trials,
        }
        report["checks"] = checks
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
        for t in trials:
            print(t)
        print("\n".join(report["summary"]))
        for name, ok in checks.items():
            print(f"{'ok  ' if ok else 'FAIL'} {name}")
        print(f"total {report['total_s']} s; report: {args.out}")
        if not all(checks.values()):
            raise SystemExit(1)
    finally:
        subprocess.run(["bash", str(script), "stop", str(state)], env=env, capture_output=True, text=True)


if __name__ == "__main__":
    main()
