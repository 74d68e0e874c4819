"""Train with a Hydra-composed config: `python train.py [group=option ...] [key=value ...]`."""

import os
from pathlib import Path

import hydra

# conf/paths/default.yaml finds the shipped model and data relative to this folder.
os.environ.setdefault("HYDRATUNE_ROOT", str(Path(__file__).resolve().parent))


@hydra.main(config_path="conf", config_name="train", version_base="1.3")
def main(cfg) -> float:
    from hydratune.train import run  # imported here so --help and --cfg stay fast

    return run(cfg)


if __name__ == "__main__":
    main()
