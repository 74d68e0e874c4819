"""A real SLURM cluster on localhost (scripts/slurm_cluster.sh): a 2-job sweep through submitit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, run_cli
from test_resume import ENV, STEPS, command, step_losses, write_data
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
    # submitit's requeue signal (USR2) reaches hydratune's handler, which checkpoints first.
    assert launcher.signal_delay_s == 90 and launcher.max_num_timeout == 3
    assert "signal" not in launcher.get("additional_parameters", {})


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
    assert "#SBATCH --signal=USR2@90" in scripts[0].read_text()
    logs = list((sweep_dir / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2


def _signal_after_first_checkpoint(proc: subprocess.Popen, run_dir: Path, signum: int) -> None:
    first = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be signalled"
    os.kill(proc.pid, signum)


@pytest.mark.slow
def test_requeue_signal_checkpoints_requeues_and_the_restart_resumes(tiny_model_dir, tmp_path):
    """A job started by the user's own sbatch script: USR2 -> checkpoint -> `scontrol requeue` -> resume."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol.calls"
    fake = bin_dir / "scontrol"  # records what it was asked; SLURM itself is the next test's business
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(0o755)
    env = {**ENV, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242"}
    data, run_dir = write_data(tmp_path), tmp_path / "run"
    cmd = command(tiny_model_dir, data, run_dir)
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    _signal_after_first_checkpoint(proc, run_dir, signal.SIGUSR2)
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 128 + signal.SIGUSR2, stderr[-3000:]
    assert calls.read_text().split() == ["requeue", "4242"]
    assert not (run_dir / "metrics.json").exists()
    import torch

    saved_at = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
    assert 5 <= saved_at < STEPS
    # SLURM runs the same command again, with SLURM_RESTART_COUNT=1: it resumes without being told.
    again = subprocess.run(
        cmd, cwd=ROOT, env={**env, "SLURM_RESTART_COUNT": "1"}, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == STEPS
    log = (run_dir / "train.log").read_text()
    assert "SLURM requeued this job (restart 1)" in log and "resuming from" in log
    # every step once, the first ones not redone
    assert sorted(step_losses(run_dir)) == list(range(1, STEPS + 1))


@pytest.mark.slow
def test_preempted_job_on_a_real_slurm_cluster_is_requeued_and_resumes(
    slurm_cluster, tiny_model_dir, tmp_path
):
    """`scancel --signal=USR2` (what SLURM sends before a time limit): submitit requeues, the job resumes."""
    data, sweep_dir = write_data(tmp_path), tmp_path / "sweep"
    args = [a for a in command(tiny_model_dir, data, tmp_path / "unused")[1:] if not a.startswith("hydra.")]
    args = [a for a in args if not a.startswith("trainer.max_steps")] + ["trainer.max_steps=60"]
    launcher = [
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=2",
        "hydra.launcher.timeout_min=10",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    sweep = subprocess.Popen(
        [sys.executable, args[0], "-m", *args[1:], *launcher],
        cwd=ROOT,
        env={**ENV, **slurm_cluster},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    job_dir = sweep_dir / "0"
    first = job_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not first.exists() and sweep.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.exists(), "the job never wrote its first checkpoint"
    job_id = next(p.name for p in (sweep_dir / ".submitit").iterdir() if p.name.isdigit())
    subprocess.run(["scancel", "--signal=USR2", job_id], env={**os.environ, **slurm_cluster}, check=True)
    out, err = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, (out + err)[-3000:]
    metrics = json.loads((job_dir / "metrics.json").read_text())
    assert metrics["steps"] == 60
    log = (job_dir / "train.log").read_text()
    assert "SLURM requeued this job (restart 1)" in log and "resuming from" in log
    assert sorted(step_losses(job_dir)) == list(range(1, 61))
    shown = subprocess.run(
        ["scontrol", "show", "job", job_id],
        env={**os.environ, **slurm_cluster},
        capture_output=True,
        text=True,
    )
    assert "Restarts=1" in shown.stdout, shown.stdout


def test_a_requeue_without_scontrol_is_one_line_and_the_signals_exit_code(monkeypatch, caplog):
    """Inside a container SLURM's scontrol is often missing: the requeue was a FileNotFoundError traceback
    and exit 1 after the checkpoint (review S6). One line says to resubmit with resume=auto."""
    from hydratune.signals import GracefulStop

    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("SLURM_JOB_ID", "999")
    stop = GracefulStop()
    stop.received = signal.SIGUSR2
    monkeypatch.setattr(signal, "getsignal", lambda signum: signal.SIG_DFL)
    with caplog.at_level("ERROR", logger="hydratune.signals"), pytest.raises(SystemExit) as exited:
        stop.requeue_job()
    assert exited.value.code == 128 + signal.SIGUSR2
    assert (
        "could not requeue SLURM job 999" in caplog.text
        and "resubmit the job with resume=auto" in caplog.text
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["model.token=hf_FAKE123"], "model.token: a secret on the command line is saved in clear text"),
        (["-m", "optimizer.lr=1e-4,2e-4", "+logger.wandb.api_key=FAKE"], "export WANDB_API_KEY=... in the environment"),
        (["hydra/launcher=submitit_slurm", "optimizer.lr=1e-4"], "hydra/launcher=submitit_slurm: a launcher starts the jobs of a sweep (-m)"),
        # a key the plugin does not have: Hydra advised +hydra.launcher.gpus=1, which then failed in submitit (S9)
        (["-m", "hydra/launcher=submitit_local", "hydra.launcher.gpus=1", "optimizer.lr=1e-4"],
         "hydra.launcher.gpus: submitit_local has no such setting; did you mean hydra.launcher.gpus_per_node?"),
        (["-m", "hydra/launcher=submitit_slurm", "hydra.launcher.reservation=x", "optimizer.lr=1e-4"],
         "another sbatch option goes in hydra.launcher.additional_parameters={reservation: ...}"),
    ],
)  # fmt: skip
def test_a_secret_on_the_command_line_and_a_launcher_without_a_sweep_are_refused(args, says):
    """A token given on the command line was written in clear text into .hydra/, multirun.yaml and the sweep's
    summaries (S7); a SLURM launcher without -m trained on the login node (S8)."""
    from hydratune.errors import UserError
    from hydratune.preflight import check_command_line

    with pytest.raises(UserError) as error:
        check_command_line(args)
    assert says in str(error.value) and "hf_FAKE123" not in str(error.value) and "\n" not in str(error.value)


def test_a_slurm_sweep_where_there_is_no_slurm_is_one_line(monkeypatch):
    """Without SLURM's commands, submitit_slurm printed 59 lines ending in `Could not detect "srun"` (S9)."""
    from hydratune.errors import UserError
    from hydratune.preflight import check_command_line

    monkeypatch.setattr(
        shutil, "which", lambda tool: None if tool in ("sbatch", "srun") else f"/usr/bin/{tool}"
    )
    with pytest.raises(
        UserError, match=r"sbatch is not on PATH, so there is no SLURM here: .*submitit_local"
    ):
        check_command_line(["-m", "hydra/launcher=submitit_slurm", "optimizer.lr=1e-4,2e-4"])


def test_jobs_that_sbatch_refuses_are_one_line_and_nothing_is_launched(tmp_path):
    """sbatch that cannot reach a cluster (here: a stand-in that fails as SLURM's does without a config) was a
    traceback through Hydra; it is one line naming what sbatch said (S9)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).write_text(
            "#!/bin/sh\necho 'sbatch: fatal: Could not establish a configuration source' >&2\nexit 1\n"
        )
        (bin_dir / tool).chmod(0o755)
    sweep_dir = tmp_path / "sweep"
    result = run_cli(
        [
            "train.py",
            "-m",
            "hydra/launcher=submitit_slurm",
            "optimizer.lr=1e-4,2e-4",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}"},
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors == [
        "hydratune: error: hydra/launcher=submitit_slurm: the jobs could not be submitted: sbatch: fatal: Could not "
        "establish a configuration source; run the sweep where submitting works (the cluster's login node) or fix "
        "the hydra.launcher.* setting it names; nothing was launched"
    ]
    assert not list(sweep_dir.glob("*/metrics.json"))
