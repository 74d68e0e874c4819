"""`python train.py --help`: the config groups and the composed config, in about a second.

Hydra's own help rebuilds its config repository once per group option (~2.5 s for our groups);
here the options come from the conf/ folders and the config from one composition. `--hydra-help`
is still Hydra's.
"""

from __future__ import annotations

from pathlib import Path

from hydratune.preflight import compose_with_choices, conf_dir

USAGE = """\
hydratune: fine-tune a language model; one run per command, a sweep with -m.

usage: python train.py [GROUP=OPTION ...] [KEY=VALUE ...] [+NEW_KEY=VALUE ...]
       python train.py -m KEY=A,B [KEY2=X,Y ...]         a sweep: one job per combination
       python train.py -m hydra/launcher=submitit_slurm ...   the same sweep as SLURM jobs
       python train.py --cfg job [OVERRIDES]              print the composed config and exit
       hydratune preflight [OVERRIDES]                    check config and data without a model
"""


def group_options(root: Path | None = None) -> dict[str, list[str]]:
    """{group: options} from the conf/ folders (Hydra's own groups under hydra/ left out)."""
    root = root or conf_dir()
    return {
        folder.name: sorted(p.stem for p in folder.glob("*.yaml"))
        for folder in sorted(root.iterdir())
        if folder.is_dir() and folder.name != "hydra"
    }


def train_help(overrides: list[str]) -> str:
    """The help text for `python train.py OVERRIDES --help`; the chosen option of each group is starred."""
    from omegaconf import OmegaConf

    cfg, choices = compose_with_choices(overrides)
    lines = [USAGE, "== Config groups (GROUP=OPTION; * = chosen) =="]
    for group, options in group_options().items():
        chosen = str(choices.get(group))
        lines.append(f"{group}: " + ", ".join(f"*{o}" if o == chosen else o for o in options))
    lines += ["", "== Config (any key: KEY=VALUE) ==", OmegaConf.to_yaml(cfg)]
    return "\n".join(lines)
