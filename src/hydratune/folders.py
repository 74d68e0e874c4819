"""Folders written whole or not at all: a checkpoint of FSDP's shards, an exported model. The new folder is
written beside the old one under a hidden temporary name and swapped in at the end, so a kill or a full disk
mid-write never leaves a folder that looks complete and is not."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def replace_folder(tmp: Path, final: Path) -> None:
    """A complete folder `tmp` in `final`'s place. A folder cannot be renamed over a non-empty one: the old one is
    renamed aside first, then removed; a kill between the two renames leaves both whole (for a checkpoint,
    `hydratune.checkpoint.restore_interrupted_swaps` puts the new one in place)."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def temporary_sibling(final: Path) -> Path:
    """An empty `.NAME.tmp-PID` folder beside `final`, for `replace_folder`; earlier ones a kill left, removed."""
    for stale in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True)
    return tmp


def readable_by_all(folder: Path) -> None:
    """The files of an exported folder readable as the rest of the run's are (the umask's mode): safetensors
    writes its files owner-only (0600), which a serving container running as another user cannot read."""
    mask = os.umask(0)
    os.umask(mask)
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~mask)
