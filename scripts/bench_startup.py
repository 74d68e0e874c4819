"""Start-up times of the commands a user runs before any training: wall-clock seconds, median of N.

    python scripts/bench_startup.py --repeats 5 --out outputs/bench_startup.json

Each command runs in a fresh process from the project root, as a user would type it (the first run
is a warm-up for the file cache and is not counted). Targets (issue "Benchmark and speed"):
`python train.py --help` and `hydratune preflight` on the defaults under 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HYDRATUNE = str(Path(sys.executable).parent / "hydratune")
COMMANDS = {
    "python train.py --help": [sys.executable, "train.py", "--help"],
    "hydratune preflight": [HYDRATUNE, "preflight"],
    "hydratune preflight --no-data": [HYDRATUNE, "preflight", "--no-data"],
    "python train.py --cfg job": [sys.executable, "train.py", "--cfg", "job"],
}


def seconds(cmd: list[str]) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {done.stderr.strip().splitlines()[-1:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "outputs" / "bench_startup.json"))
    args = parser.parse_args()
    results = {}
    for name, cmd in COMMANDS.items():
        seconds(cmd)  # warm-up
        runs = [round(seconds(cmd), 3) for _ in range(args.repeats)]
        results[name] = {"median_s": round(statistics.median(runs), 3), "runs_s": runs}
        print(f"{name}: median {results[name]['median_s']} s {runs}", flush=True)
    load = os.getloadavg()[0]
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU threads, load {load:.2f}",
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print("| command | median wall time (s) | runs (s) |\n|---|---|---|")
    for name, r in results.items():
        print(f"| `{name}` | {r['median_s']} | {', '.join(map(str, r['runs_s']))} |")


if __name__ == "__main__":
    main()
