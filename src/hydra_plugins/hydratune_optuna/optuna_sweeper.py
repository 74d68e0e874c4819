"""hydratune's Optuna sweeper (`hydra/sweeper=optuna`, conf/hydra/sweeper/optuna.yaml).

Hydra finds sweepers in the `hydra_plugins` namespace package and imports every module there at start-up,
so this file stays small and imports nothing heavy; the search itself is hydratune.search.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf


class OptunaSweeper(Sweeper):
    """Asks an Optuna study for trials, runs each as one job of the launcher in use, tells the study the
    result (complete, pruned or failed). Settings: see conf/hydra/sweeper/optuna.yaml."""

    def __init__(self, **settings: Any) -> None:
        self.settings = {
            k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
            for k, v in settings.items()
        }

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> None:
        from hydratune.config import mask_url
        from hydratune.errors import UserError
        from hydratune.search import Search

        sweep_dir = Path(str(self.config.hydra.sweep.dir)).resolve()
        try:
            Search(self.settings, self.config, self.launcher, sweep_dir).run(arguments)
        except UserError as err:  # a mistake in the search itself: one line, as train.py prints a job's
            if os.environ.get("HYDRATUNE_DEBUG") == "1":
                raise
            print(f"hydratune: error: {mask_url(str(err))}", file=sys.stderr)
            if sweep_dir.is_dir() and not any(sweep_dir.iterdir()):
                sweep_dir.rmdir()  # made for the study before the search was refused: nothing to keep
            sys.exit(2)
