"""Train with a Hydra-composed config: `python train.py [group=option ...] [key=value ...]`."""

import os
import sys
from pathlib import Path

import hydra

# conf/paths/default.yaml finds the shipped model and data relative to this folder.
os.environ.setdefault("HYDRATUNE_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg) -> float:
    from hydratune.config import mask_url
    from hydratune.console import quiet_console
    from hydratune.errors import UserError
    from hydratune.sweep import sweep_job
    from hydratune.train import run  # imported here so --help and --cfg stay fast

    quiet_console()  # in a sweep's or DDP's fresh process too
    try:
        with sweep_job():  # in a sweep, DDP ranks 1.. re-run this job alone
            return run(cfg)
    except SystemExit as stop:  # a stop signal: in a sweep, Hydra ends it here without its callbacks
        from hydratune.sweep import stopped_job

        stopped_job(stop.code)
        raise
    except UserError as err:
        if os.environ.get("HYDRATUNE_DEBUG") == "1":
            raise
        print(f"hydratune: error: {mask_url(str(err))}", file=sys.stderr)
        from hydratune.console import to_log_files

        to_log_files(f"hydratune: error: {mask_url(str(err))}")
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.get().mode == RunMode.MULTIRUN:  # this job failed (no metrics.json); the sweep goes on
            from hydratune.sweep import record_job_error

            record_job_error(HydraConfig.get().runtime.output_dir, err)  # the summary's error column says why
            return float("nan")
        sys.exit(2)


if __name__ == "__main__":
    from hydratune.config import mask_url
    from hydratune.console import quiet_console
    from hydratune.errors import UserError

    quiet_console()  # third-party noise, filtered before any library is imported (HYDRATUNE_DEBUG=1 shows it)
    from hydratune.preflight import check_command_line

    try:
        if {"--help", "-h"} & set(sys.argv[1:]):  # Hydra's help takes 2.5 s to list the groups; this, 1 s
            from hydratune.usage import train_help

            print(train_help([a for a in sys.argv[1:] if not a.startswith("-")]))
            sys.exit(0)
        check_command_line(sys.argv[1:])  # mistakes in the command line cost a second, not a run directory
    except UserError as err:
        if os.environ.get("HYDRATUNE_DEBUG") == "1":
            raise
        print(f"hydratune: error: {mask_url(str(err))}", file=sys.stderr)
        sys.exit(2)
    main()
