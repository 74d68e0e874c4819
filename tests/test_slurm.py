"""A real SLURM cluster on localhost (scripts/slurm_cluster.sh): a 2-job sweep through submitit."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess

import pytest
from conftest import ROOT, run_cli
from test_sweep import assert_two_job_summary, sweep_args

SCRIPT = ROOT / "scripts" / "slurm_cluster.sh"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _can_install() -> str | None:
    """None when slurm is here or apt-get can install it; else the reason to skip."""
    if shutil.which("slurmctld") and shutil.which("slurmd") and shutil.which("munged"):
        return None
    if not shutil.which("apt-get"):
        return "slurm-wlm is not installed and there is no apt-get to install it"
    if os.geteuid() != 0 and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode != 0:
        return "slurm-wlm is not installed and installing it needs root or passwordless sudo"
    return None


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    reason = _can_install()
    if reason:
        pytest.skip(reason)
    state = tmp_path_factory.mktemp("slurm")
    env = {
        **os.environ,
        "HYDRATUNE_SLURMCTLD_PORT": str(_free_port()),
        "HYDRATUNE_SLURMD_PORT": str(_free_port()),
    }
    started = subprocess.run(
        ["bash", str(SCRIPT), "start", str(state)], env=env, capture_output=True, text=True, timeout=600
    )
    if started.returncode != 0 and "apt-get" in started.stderr and not shutil.which("slurmctld"):
        pytest.skip(f"apt-get could not install slurm-wlm: {started.stderr[-500:]}")
    assert started.returncode == 0, started.stderr[-3000:]
    yield {"SLURM_CONF": str(state / "slurm.conf")}
    stopped = subprocess.run(["bash", str(SCRIPT), "stop", str(state)], capture_output=True, text=True)
    assert stopped.returncode == 0, stopped.stderr
    for pid_file in ("slurmctld.pid", "slurmd.pid"):
        assert not (state / pid_file).exists()


def test_slurm_launcher_preset_composes():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            [
                "hydra/launcher=submitit_slurm",
                "hydra.launcher.partition=gpu",
                "hydra.launcher.gpus_per_node=4",
            ],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node) == ("gpu", 4)
    for key in (
        "nodes",
        "tasks_per_node",
        "cpus_per_task",
        "mem_gb",
        "timeout_min",
        "account",
        "qos",
        "constraint",
    ):
        assert key in launcher, key
    assert list(launcher.setup)
    # Lightning's SLURMEnvironment requeues on USR1; submitit's default signal (USR2) is replaced.
    assert launcher.additional_parameters.signal == f"USR1@{launcher.signal_delay_s}"


@pytest.mark.slow
def test_sweep_on_a_real_slurm_cluster(slurm_cluster, tiny_model_dir, tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = sweep_args(
        tiny_model_dir,
        sweep_dir,
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=2",
        "hydra.launcher.timeout_min=10",
    )
    result = run_cli(args, env=slurm_cluster)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_two_job_summary(sweep_dir)
    # Each job ran as a SLURM job: submitit kept its sbatch script and logs under .submitit/<job id>.
    scripts = list((sweep_dir / ".submitit").glob("*/*submission.sh"))
    assert len(scripts) >= 1
    assert "#SBATCH --signal=USR1@90" in scripts[0].read_text()
    logs = list((sweep_dir / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2
