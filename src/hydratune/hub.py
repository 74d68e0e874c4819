"""Models named by a local path or a hub id: where their files are on this disk (hub cache included), with
one-line errors naming the config key. Shared by the config checks and the reward-model loader."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hydratune.errors import UserError

log = logging.getLogger(__name__)


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
        if _CACHE_ONLY:  # said again: the command line's check ran before the run's log was set up
            log.info("%s (as with HF_HUB_OFFLINE=1)", _CACHE_ONLY[0])
        elif not hub_offline():
            unreachable = hub_unreachable()
            if unreachable:  # each file asked the hub first: ~3 minutes of retries for the tiny model (N1)
                read_cache_only(f"{key}={name}: {unreachable}; reading its hub cache only")
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
    unreachable = hub_unreachable()
    if unreachable:  # the hub's client would retry for ~50 s, then fail the same way (review N1)
        raise UserError(
            f"{key}={name}: not a folder on this disk and not in the hub cache, and {unreachable}; download "
            f"it on a machine with a network (hf download {name}) into this machine's hub cache, or give a "
            "local folder; HF_HUB_OFFLINE=1 reads the cache without asking the hub"
        )
    return None


_CACHE_ONLY: list[str] = []  # why this process reads the hub cache only


def read_cache_only(why: str) -> None:
    """From here on, this process and the processes it starts read the hub cache without asking the hub, as
    HF_HUB_OFFLINE=1 would have (huggingface_hub and datasets read the variable once, when imported)."""
    import sys

    log.info("%s (as with HF_HUB_OFFLINE=1)", why)
    _CACHE_ONLY.append(why)
    os.environ["HF_HUB_OFFLINE"] = "1"
    for module in ("huggingface_hub.constants", "datasets.config"):
        loaded = sys.modules.get(module)
        for flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
            if loaded is not None and hasattr(loaded, flag):
                setattr(loaded, flag, True)


PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def hub_unreachable(timeout: float = 5.0) -> str | None:
    """Why the hub cannot be asked from here, or None when it may be. Only a certain answer counts: the hub's
    host name does not resolve and no proxy is set (the hub's client connects directly, so it would fail the
    same way after its retries). Behind a proxy, or when the lookup is slow, the client is left to try."""
    if any(os.environ.get(var) for var in PROXY_VARIABLES):
        return None
    import socket
    import threading
    from urllib.parse import urlparse

    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    host = urlparse(endpoint).hostname
    if not host:
        return None
    failure: list[str] = []

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, 443)
        except socket.gaierror as err:
            failure.append(f"{host} does not resolve on this machine ({err.strerror or err}; no network?)")

    thread = threading.Thread(target=lookup, daemon=True)
    thread.start()
    thread.join(timeout)
    return failure[0] if failure and not thread.is_alive() else None


def hub_offline() -> bool:
    return any(
        os.environ.get(var, "").upper() in ("1", "ON", "YES", "TRUE")
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
