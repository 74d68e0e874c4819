"""Experiment loggers from the `logger` group, with the ids that let a resumed run log into the same run."""

from __future__ import annotations

import csv
import json
import os
import uuid
from importlib.util import find_spec
from pathlib import Path

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from hydratune.config import build
from hydratune.errors import UserError, install_hint

# Logger class -> (module it imports, the pyproject extra that installs it).
EXTRAS = {"WandbLogger": ("wandb", "wandb"), "MLFlowLogger": ("mlflow", "mlflow")}
IDS_FILE = "logger_ids.json"


def build_loggers(cfg: dict, run_dir: str | Path) -> list:
    """One Lightning logger per node of the `logger` group.

    W&B and MLflow run ids are kept in `<run>/logger_ids.json`, so a run continued with resume=auto
    logs into the same W&B run (resume="allow") and the same MLflow run.
    """
    ids_path = Path(run_dir) / IDS_FILE
    ids = json.loads(ids_path.read_text()) if ids_path.is_file() else {}
    loggers = []
    for key, node in cfg.items():
        kind = node["_target_"].rsplit(".", 1)[-1]
        if kind in EXTRAS and find_spec(EXTRAS[kind][0]) is None:
            extra = EXTRAS[kind][1]
            raise UserError(
                f"logger.{key} needs the {extra} extra: {install_hint(extra)} (or choose logger=tensorboard)"
            )
        kwargs = {}
        if kind == "MLFlowLogger" and str(node.get("tracking_uri", "")).startswith("file:"):
            # MLflow 3 refuses its file store unless asked; a local folder per run is what we want here.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        if kind == "WandbLogger":
            kwargs = {"id": ids.setdefault(key, uuid.uuid4().hex[:8]), "resume": "allow"}
        elif kind == "MLFlowLogger" and key in ids:
            kwargs = {"run_id": ids[key]}
        logger = build(node, **kwargs)
        if kind == "MLFlowLogger":
            ids[key] = logger.run_id  # creates the MLflow run now, so its id is known
        loggers.append(logger)
    if ids:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        ids_path.write_text(json.dumps(ids, indent=2) + "\n")
    return loggers


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
