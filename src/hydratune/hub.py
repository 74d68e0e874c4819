"""Models named by a local path or a hub id: where their files are on this disk (hub cache included), with
one-line errors naming the config key. Shared by the config checks and the reward-model loader."""

from __future__ import annotations

import os
from pathlib import Path

from hydratune.errors import UserError


def looks_like_path(name: str) -> bool:
    """A local path, not a hub id: hub ids are `name` or `owner/name`."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)


def hub_folder(
    name: str, key: str, cache_dir: str | None = None, revision: str | None = None, tiny_hint: bool = False
) -> Path | None:
    """The folder on this disk of a model named by a path or a hub id (its cached snapshot); None when the
    hub will be asked. A path that is not on disk, or a hub id not cached while the hub is offline, is a
    UserError naming `key`."""
    local = Path(name).expanduser()
    if local.is_dir():
        return local
    if looks_like_path(name):
        raise UserError(
            f"{key}={name}: no such folder; give the folder of a saved model (config.json and weights), "
            "or a hub id such as Qwen/Qwen2.5-0.5B"
        )
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError

    try:
        cached = try_to_load_from_cache(name, "config.json", cache_dir=cache_dir, revision=revision)
    except HFValidationError:
        raise UserError(
            f"{key}={name}: neither a folder on this disk nor a hub id (owner/name); check the spelling"
        ) from None
    if isinstance(cached, str):
        return Path(cached).parent
    if hub_offline():
        hint = (
            f" (to try a config on the shipped tiny model: '{key}=${{paths.assets_dir}}/tiny-llama'; an experiment's "
            "model path wins over model=...)"
            if tiny_hint
            else ""
        )
        at = f" at revision {revision}" if revision not in (None, "", "main") else ""
        download = f"hf download {name}" + (
            f" --revision {revision}" if at else ""
        )  # main again was no help (T13)
        raise UserError(
            f"{key}={name}: not a folder on this disk and not in the hub cache{at}, and the hub is offline "
            f"(HF_HUB_OFFLINE=1); download it once online ({download}) or give a local folder{hint}"
        )
    return None


def hub_offline() -> bool:
    return any(
        os.environ.get(var, "").upper() in ("1", "ON", "YES", "TRUE")
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
