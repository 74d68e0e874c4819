"""The run lock's file and who holds it: `.hydratune.lock` in a run folder while a launch trains there
(hydratune.train.RunLock writes it). Read by the sweep report, preflight and `generate`; imports nothing heavy."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from hydratune.config import read_json

LOCK_FILE = ".hydratune.lock"


def process_alive(pid) -> bool:
    """Whether process `pid` of this host lives (another user's counts)."""
    try:
        os.kill(int(pid), 0)
    except PermissionError:
        return True
    except (OSError, ValueError, TypeError):
        return False
    return True


def live_holder(run_dir: Path) -> dict | None:
    """The lock of a process of this host that trains in `run_dir` now, or None (no lock, or a dead one's)."""
    holder = read_json(Path(run_dir) / LOCK_FILE) or {}
    if holder.get("pid") and holder.get("host") == socket.gethostname() and process_alive(holder["pid"]):
        return holder
    return None


def training(run_dir: Path) -> bool:
    """Whether a launch holds the folder: its lock names a live process here, or a process on another host (a
    SLURM node), which this one cannot ask. A killed job (SIGKILL, the OOM killer) leaves a lock naming a dead one."""
    holder = read_json(Path(run_dir) / LOCK_FILE)
    if not holder or not holder.get("pid"):
        return False
    return holder.get("host") != socket.gethostname() or process_alive(holder["pid"])
