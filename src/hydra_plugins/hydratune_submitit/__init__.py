"""hydratune's submitit launchers (`hydra/launcher=submitit_slurm` and `submitit_local`, conf/hydra/launcher/).

They are the hydra-submitit-launcher plugin's, with two differences for sweeps on a cluster:
- a job that ends without a result (killed, out of memory, its node lost) or with a crash is recorded in its
  folder (job_error.json, which the sweep summary reads) and the sweep waits for its other jobs, then writes
  its summary; the plugin raised at the first such job and left the rest unreported;
- jobs that cannot be submitted (sbatch missing or refusing them) are one line, not a traceback.

Hydra imports every module of `hydra_plugins` at start-up: this one imports nothing heavy, and nothing at all
when the `sweep` extra is not installed (preflight then names the extra).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

try:
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher as _plugin
except ImportError:  # the sweep extra is not installed
    _plugin = None

log = logging.getLogger(__name__)


class _Guarded:
    """launch() of the plugin's launchers, reporting each job on its own (see the module's docstring)."""

    _EXECUTOR: str

    def _executor(self):
        import submitit
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

        params = dict(self.params)
        folder = params.pop("submitit_folder")
        at_init = {}
        if "max_num_timeout" in params:  # an executor setting, not a per-job one
            at_init[f"{self._EXECUTOR}_max_num_timeout"] = params.pop("max_num_timeout")
        executor = submitit.AutoExecutor(folder=folder, cluster=self._EXECUTOR, **at_init)
        shared = {field.name for field in dataclasses.fields(BaseQueueConf)}  # the others are prefixed
        executor.update_parameters(
            **{k if k in shared else f"{self._EXECUTOR}_{k}": v for k, v in params.items()}
        )
        return executor

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
        from hydra.core.singleton import Singleton
        from hydra.core.utils import filter_overrides
        from submitit.core.utils import FailedJobError

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        log.info("Submitit '%s' sweep output dir : %s", self._EXECUTOR, sweep_dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        numbers = list(range(initial_job_idx, initial_job_idx + len(job_overrides)))
        for number, overrides in zip(numbers, job_overrides):
            log.info("\t#%d : %s", number, " ".join(filter_overrides(overrides)))
        count, state = len(numbers), Singleton.get_state()
        said = io.StringIO()  # what sbatch prints on stderr: an error is in the one line, a warning passed on
        try:
            with contextlib.redirect_stderr(said):
                jobs = self._executor().map_array(
                    self,
                    [list(o) for o in job_overrides],
                    ["hydra.sweep.dir"] * count,
                    numbers,
                    [f"job_id_for_{n}" for n in numbers],
                    [state] * count,
                )
        except (
            FailedJobError,
            OSError,
        ) as err:  # sbatch missing, or refusing the jobs (no cluster, bad option)
            lines = [line for line in f"{said.getvalue()}\n{err}".splitlines() if line.strip()]
            print(
                f"hydratune: error: hydra/launcher=submitit_{self._EXECUTOR}: the jobs could not be submitted: "
                f"{lines[-1].strip() if lines else type(err).__name__}; run the sweep where submitting works (the "
                "cluster's login node) or fix the hydra.launcher.* setting it names; nothing was launched",
                file=sys.stderr,
            )
            raise SystemExit(2) from None
        sys.stderr.write(said.getvalue())
        return [
            self._result(job, number, overrides)
            for job, number, overrides in zip(jobs, numbers, job_overrides)
        ]

    def _result(self, job, number: int, overrides: Sequence[str]):
        """The job's JobReturn. A job that died or crashed gets one the sweep goes on from (the value nan, as
        train.py returns for a job that a config or data error ended), with its error in its folder."""
        from hydra.core.utils import JobReturn, JobStatus
        from submitit.core.utils import UncompletedJobError

        try:
            ret = job.results()[0]
        except UncompletedJobError as err:  # no result: the process was killed (FailedJobError: it raised
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]  # outside Hydra's job)
            raised = "Traceback" in str(err) and lines
            what = f"crashed: {lines[-1]}" if raised else f"ended without a result ({_state(job)})"
            message = f"{what}; its log: {job.paths.stderr}"
            log.error("job %d %s", number, message)
            self._record(number, overrides, err, message)
            return JobReturn(
                overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=float("nan")
            )
        if ret.status == JobStatus.FAILED:  # the job raised; SweepSummary.on_job_end saved its error
            err = ret._return_value
            log.error("job %d crashed: %s: %s; its traceback: %s", number, type(err).__name__,
                      (str(err).splitlines() or [""])[0], job.paths.stderr)  # fmt: skip
            ret.status, ret._return_value = JobStatus.COMPLETED, float("nan")
        return ret

    def _record(self, number: int, overrides: Sequence[str], err: BaseException, message: str) -> None:
        """job_error.json in the job's folder, and its overrides where the job died before Hydra wrote them
        (the summary lists the folders that hold them)."""
        import yaml
        from omegaconf import open_dict

        from hydratune.sweep import record_job_error

        try:
            config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(config.hydra.job):
                config.hydra.job.num = number
            job_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
        except Exception:  # the folder cannot be had: the log line above is what is left
            return
        record_job_error(job_dir, err, message)
        saved = job_dir / ".hydra" / "overrides.yaml"
        if not saved.exists():
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.write_text(yaml.safe_dump(list(overrides)))


def _state(job) -> str:
    """Why a job may have no result, with the scheduler's word for its end (SLURM's OUT_OF_MEMORY, NODE_FAIL,
    CANCELLED; the local executor's FINISHED)."""
    try:
        state = f"submitit state {job.state}: "
    except Exception:
        state = ""
    return f"{state}killed (by the scheduler or the OOM killer) or its node was lost"


if _plugin is not None:

    class SlurmLauncher(_Guarded, _plugin.SlurmLauncher):
        """The plugin's SLURM launcher; see the module's docstring."""

    class LocalLauncher(_Guarded, _plugin.LocalLauncher):
        """The plugin's local-process launcher (the SLURM code path without a cluster)."""
