"""Experiment loggers from the `logger` group: the ids that let a resumed run log into the same run, and their
step axis (optimizer steps, nothing logged twice for a resumed run)."""

from __future__ import annotations

import csv
import json
import os
import uuid
from pathlib import Path

import lightning as L
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from hydratune.config import build
from hydratune.errors import UserError, missing_logger_extra

IDS_FILE = "logger_ids.json"


def build_loggers(cfg: dict, run_dir: str | Path, resumed_step: int | None = None) -> list:
    """One Lightning logger per node of the `logger` group.

    W&B and MLflow run ids are kept in `<run>/logger_ids.json`, so a run continued with resume=auto
    logs into the same W&B run (resume="allow") and the same MLflow run. A run resumed after
    `resumed_step` hides TensorBoard's events of later steps, which it logs again (`StepAxis`).
    """
    ids_path = Path(run_dir) / IDS_FILE
    ids = json.loads(ids_path.read_text()) if ids_path.is_file() else {}
    loggers = []
    from lightning.pytorch.utilities import rank_zero_only

    restarted = resumed_step is None and _earlier_records(Path(run_dir))
    if (
        restarted and rank_zero_only.rank == 0
    ):  # a launch from step 0 into a folder an attempt that saved nothing logged into (review L15)
        trim_csv(Path(run_dir) / "csv" / "metrics.csv", -1)
        for name in ("generations.jsonl", "completions.jsonl"):
            trim_jsonl(Path(run_dir) / name, -1)
    for key, node in cfg.items():
        kind = node["_target_"].rsplit(".", 1)[-1]
        missing = missing_logger_extra(key, node)  # preflight says so first; kept for a hand-built config
        if missing is not None:
            raise missing
        kwargs = {}
        if kind == "MLFlowLogger" and str(node.get("tracking_uri", "")).startswith("file:"):
            # MLflow 3 refuses its file store unless asked; a local folder per run is what we want here.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        if kind == "WandbLogger":
            kwargs = {"id": ids.setdefault(key, uuid.uuid4().hex[:8]), "resume": "allow"}
        elif kind == "MLFlowLogger" and key in ids:
            kwargs = {"run_id": ids[key]}
        elif kind == "MLFlowLogger" and not node.get("run_name"):
            # MLflow drew a name after the seed was set: every run was "capable-auk-759" (review L6)
            here = Path(run_dir).absolute()
            kwargs = {"run_name": f"{here.parent.name}/{here.name}"}
        elif kind == "TensorBoardLogger" and (resumed_step is not None or restarted):
            kwargs = {
                "purge_step": 0 if restarted else resumed_step + 1
            }  # a restart: every earlier event hidden
        try:
            logger = build(node, **kwargs)
            # Lightning always passes `anonymous`; wandb warns on stderr that it does nothing (review L7)
            if kind == "WandbLogger":
                getattr(logger, "_wandb_init", {}).pop("anonymous", None)
            if kind == "MLFlowLogger":
                ids[key] = logger.run_id  # creates the MLflow run now, so its id is known
        except Exception as err:
            # a tracking server that cannot be reached was MLflow's traceback, its URL's credentials and all
            if os.environ.get("HYDRATUNE_DEBUG") == "1":
                raise
            from hydratune.config import mask_url

            cause = err.__cause__ or err
            text = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
            raise UserError(f"logger.{key} ({kind}) could not start: {mask_url(text)}") from None
        loggers.append(logger)
    if ids:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        ids_path.write_text(json.dumps(ids, indent=2) + "\n")
    return loggers


def tensorboard_hparams(logger: TensorBoardLogger, params: dict, metric_tags: list[str]) -> None:
    """The run's settings in TensorBoard's HPARAMS tab, beside the metrics that compare runs (`val/loss`, the
    best-model metric). Lightning writes them only with a metric value, which would put a made-up point on those
    curves: the tab was empty (review L5). The tags name curves the run logs; no value is written here."""
    from lightning.fabric.utilities.logger import _convert_params, _flatten_dict
    from torch.utils.tensorboard.summary import hparams

    flat = logger._sanitize_params(_flatten_dict(_convert_params(params)))
    flat = {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in flat.items()}
    writer = logger.experiment._get_file_writer()
    for summary in hparams(flat, dict.fromkeys(metric_tags, 0.0)):
        writer.add_summary(summary)


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv when it starts; a resumed run appends to it."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = next(csv.reader(f), [])  # appended rows follow the existing header


class CSVLogger(_LightningCSVLogger):
    """`<run>/csv/metrics.csv`, continued (not replaced) when the run resumes."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class StepAxis(L.Callback):
    """The loggers' x axis is hydratune's step count: optimizer steps done, as in the checkpoints' names,
    the val curve and metrics.json. Lightning logged with the count before the step (an evaluation after
    step 2 landed at 1 in TensorBoard, W&B and metrics.csv).

    A resumed run first removes what the launch it continues logged after its checkpoint, which it will
    log again: metrics.csv rows and generations.jsonl/completions.jsonl lines past the checkpoint's step
    are dropped, and TensorBoard purges its events past that step. W&B and MLflow keep both.
    """

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)

    def setup(self, trainer, pl_module, stage: str) -> None:
        connector = trainer._logger_connector
        if getattr(connector.log_metrics, "hydratune_steps", False):
            return
        log_metrics = connector.log_metrics

        def at_optimizer_step(metrics: dict, step: int | None = None) -> None:
            if metrics and step is None and "step" not in metrics:
                metrics = {"epoch": trainer.current_epoch, **metrics}
                step = trainer.global_step
            log_metrics(metrics, step)

        at_optimizer_step.hydratune_steps = True
        connector.log_metrics = at_optimizer_step

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.ckpt_path is None or not trainer.is_global_zero:
            return
        step = trainer.global_step
        trim_csv(self.run_dir / "csv" / "metrics.csv", step)
        for name in ("generations.jsonl", "completions.jsonl"):
            trim_jsonl(self.run_dir / name, step)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger) and logger._kwargs.get("purge_step") != step + 1:
                # The step was not known when the logger was made (FSDP's checkpoint folder): hide the earlier
                # launch's events past the checkpoint from here on.
                logger._kwargs["purge_step"] = step + 1
                if logger._experiment is not None:
                    logger._experiment.close()
                    logger._experiment = None


def _earlier_records(run_dir: Path) -> bool:
    """Rows or events of an earlier launch in the run folder (one killed before its first checkpoint)."""
    return (
        (run_dir / "csv" / "metrics.csv").is_file()
        or any((run_dir / name).is_file() for name in ("generations.jsonl", "completions.jsonl"))
        or any((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    )


def trim_csv(path: Path, step: int) -> None:
    """Drop the rows of `path` (a CSVLogger's metrics.csv) logged after `step`."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        rows = list(reader)
    if header is None or "step" not in header:
        return
    at = header.index("step")
    kept = [row for row in rows if not _after(row[at] if at < len(row) else "", step)]
    if len(kept) < len(rows):
        _replace(path, lambda f: csv.writer(f).writerows([header, *kept]))


def trim_jsonl(path: Path, step: int) -> None:
    """Drop the lines of `path` (one JSON object each, with its "step") written after `step`."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if not _after(_step_of(line), step)]
    if len(kept) < len(lines):
        _replace(path, lambda f: f.writelines(kept))


def _step_of(line: str) -> str:
    try:
        return str(json.loads(line).get("step", ""))
    except (ValueError, AttributeError):
        return ""


def _after(value: str, step: int) -> bool:
    try:
        return int(float(value)) > step
    except ValueError:
        return False


def _replace(path: Path, write) -> None:
    """Rewrite `path` through a file beside it, so a kill leaves the old file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        write(f)
    os.replace(tmp, path)
