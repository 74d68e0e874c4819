"""Preflight: catch bad configs and data in seconds, before a GPU hour (or a model load) is spent.

Checks, in order: the command line composes (Hydra errors become one line with a did-you-mean),
the schema (unknown keys, ranges), the cross-group rules, the run name, the output directory (writable,
room for the checkpoints), and (for `hydratune preflight`) the data: files parse, rows format and
tokenize, how many samples keep a trained token, how many are truncated. No model weights are loaded.

The data check reads the first rows of each file without datasets, transformers or torch
(hydratune.data.peek, about a second); where that cannot match training (hub datasets, chat
templates, a model not on this disk) it prepares every row as training does, and says which ran.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import sys
from pathlib import Path

from hydratune import rules, schema
from hydratune.errors import UserError, did_you_mean, install_hint, missing_logger_extra
from hydratune.hub import hub_folder

log = logging.getLogger(__name__)

# Flags after which Hydra does not run the task, or runs many (multirun sweeps are checked per job).
SKIP_FLAGS = {
    "--help",
    "-h",
    "--hydra-help",
    "--cfg",
    "-c",
    "--info",
    "-i",
    "--shell-completion",
    "-sc",
    "--multirun",
    "-m",
    "--version",
    "--resolve",
    "--package",
    "-p",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--experimental-rerun",
}
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=,+-]*$")


def project_root() -> Path:
    """HYDRATUNE_ROOT; else the working folder when it holds conf/train.yaml; else the checkout this package
    runs from (`pip install -e .`), as `python /path/to/train.py` finds its own folder from anywhere."""
    if os.environ.get("HYDRATUNE_ROOT"):
        return Path(os.environ["HYDRATUNE_ROOT"])
    here, checkout = Path.cwd(), Path(__file__).resolve().parents[2]
    if not (here / "conf" / "train.yaml").is_file() and (checkout / "conf" / "train.yaml").is_file():
        return checkout
    return here


def conf_dir() -> Path:
    return project_root() / "conf"


def _options(group: str) -> list[str]:
    folder = conf_dir() / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def _explain_hydra_error(err: Exception, overrides: list[str]) -> UserError:
    """One line from Hydra's multi-line composition errors."""
    text = str(err)
    if "Primary config directory not found" in text:
        return UserError(
            f"no conf/train.yaml in {project_root()}: run this from the project folder (where train.py is) "
            "or set HYDRATUNE_ROOT to it"
        )
    twice = re.search(r"Multiple values for ([\w/]+)", text) or re.search(
        r"([\w/]+) appears more than once in the final defaults list", text
    )
    if twice:  # +group=option for a group the defaults list already has
        group = twice.group(1)
        given = next((o for o in overrides if o.lstrip("+").startswith(f"{group}=")), f"+{group}=...")
        return UserError(f"{given}: {group} is a config group already: drop the + ({given.lstrip('+')})")
    missing = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if missing:
        group, option = missing.groups()
        options = _options(group)
        hint = did_you_mean(option, options, prefix=f"{group}=")
        return UserError(f"{group}={option}: no such option; {hint}options: {', '.join(options)}")
    not_in_struct = re.search(r"Could not override '([^']+)'", text) or re.search(
        r"Key '([^']+)' is not in struct", text
    )
    if not_in_struct:
        key = not_in_struct.group(1)
        known = schema.known_keys(str(conf_dir()))
        if key in known:
            setters = schema.options_setting(str(conf_dir()), key)
            if key.startswith("task.") and setters:  # a task reads only its own settings
                return UserError(
                    f"{key} is a setting of {', '.join(setters)}, not of the chosen task: "
                    f"choose one, e.g. {setters[0]} {key}=..."
                )
            ruled = _rule_on_added_key(key, overrides)
            if (
                ruled is not None
            ):  # a rule about the key speaks, not "choose a preset that has it" (review X11)
                return ruled
            where = (
                f" ({', '.join(setters)} set it: choose one, or add it with +{key}=VALUE)" if setters else ""
            )
            return UserError(
                f"{key} is not set by the chosen options{where or f'; add it with +{key}=VALUE'}"
            )
        err = schema.unknown_key_error(key, known)
        parent, _, leaf = key.rpartition(".")
        target = _target_of(parent, [o for o in overrides if not o.startswith(f"{key}=")])
        if target and schema._target_accepts(target, leaf):  # a keyword the class takes (Trainer's, say)
            return UserError(f"{key} is not in the config, but {target} takes it: add it with +{key}=VALUE")
        if schema._inside_free_mapping(key, known):  # data_files, kwargs, ...: any key is data
            return UserError(f"{key} is not in the config: add it with +{key}=VALUE")
        return err  # a typo, or a key nothing reads: adding it with + would be refused the same way
    for override in overrides:  # Lightning names checkpoints step=000240.ckpt: Hydra's grammar reads that '='
        key, _, value = override.partition("=")
        if "=" in value and value[:1] not in "'\"[{":
            return UserError(
                f"{key}={value}: Hydra reads the '=' inside the value as syntax; quote the value: "
                f"'{key}=\"{value}\"'"
            )
    first = next((line.strip() for line in text.splitlines() if line.strip()), text)
    return UserError(f"cannot compose the config from {' '.join(overrides) or 'the defaults'}: {first}")


def _target_of(section: str, overrides: list[str]) -> str | None:
    """The `_target_` of a section of the config these overrides compose (None without one, or when they do
    not compose either)."""
    from omegaconf import OmegaConf

    try:
        cfg = compose(overrides)
    except UserError:
        return None
    target = OmegaConf.select(cfg, f"{section}._target_", default=None) if section else None
    return str(target) if target else None


def compose(overrides: list[str], output_dir: str | None = None, hydra_node: bool = False):
    """The composed config (as `python train.py OVERRIDES` would build it), or a one-line UserError.
    With `hydra_node`, it keeps Hydra's own node (hydra.runtime.choices: the option chosen per group)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    extra = [f"paths.output_dir={output_dir}"] if output_dir else []
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            return hydra_compose(
                config_name="train", overrides=[*overrides, *extra], return_hydra_config=hydra_node
            )
    except (HydraException, OmegaConfBaseException) as err:
        raise _explain_hydra_error(err, overrides) from err


def compose_with_choices(overrides: list[str]):
    """(config without Hydra's node, {group: chosen option}) for `python train.py OVERRIDES`."""
    from omegaconf import OmegaConf, open_dict

    cfg = compose(overrides, hydra_node=True)
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, choices


def _rule_on_added_key(key: str, overrides: list[str]) -> UserError | None:
    """`task=dpo dataset.packing=true`: the chosen options have no dataset.packing, and Hydra's error pointed at the
    SFT datasets that set it. Composed with the key added, a rule on it says what is wrong instead."""
    from hydratune.config import to_plain
    from hydratune.tasks.registry import task_class

    added = [f"+{o}" if o.split("=", 1)[0] == key else o for o in overrides]
    if added == overrides:
        return None
    try:
        cfg = to_plain(
            compose(added, output_dir=".")
        )  # a folder only for ${paths.output_dir}; nothing is written
        found = rules.violations(cfg, task_class(cfg.get("task") or {}).rules)
    except Exception:  # no better message than Hydra's then
        return None
    # a rule about this key with the chosen task (preference_packing): the others would speak of other options
    found = [m for m in found if {key, "task"} <= set(m.split(":", 1)[0].split(", "))]
    return UserError(found[0]) if found else None


def check_config(cfg: dict) -> None:
    """Schema, cross-group rules (and the task's own), the run name, the checkpoint to resume and the
    model's files, on the plain-dict config."""
    from hydratune.data.formats import check_chat_template
    from hydratune.tasks.registry import get_task, task_class

    schema.validate(cfg, conf_dir())
    check_chat_template((cfg.get("dataset") or {}).get("chat_template"))
    rules.check(cfg, task_class(cfg.get("task") or {}).rules)
    with _project_on_path():  # a user's module beside train.py imports as it will in `python train.py`
        get_task(cfg.get("task")).check(cfg)
    name = str(cfg.get("name", ""))
    if not SAFE_NAME.match(name) or ".." in name:
        raise UserError(f"name={name!r}: a run name must be letters, digits and _.-=,+ with no '..' or '/'")
    check_optimizer_package(cfg)
    check_demo_validation(cfg)
    check_metric_name(cfg)
    if cfg.get("ckpt_path"):
        check_resume_file(cfg["ckpt_path"], "ckpt_path")
    # before the login checks: without the package, there is no login to ask for yet (review L1)
    for key, node in (cfg.get("logger") or {}).items():
        missing = missing_logger_extra(key, node) if isinstance(node, dict) else None
        if missing is not None:
            raise missing
    check_logger_credentials(cfg.get("logger") or {})
    if (cfg.get("logger") or {}).get("wandb"):
        check_wandb_login(cfg["logger"]["wandb"])
    for key, node in (cfg.get("logger") or {}).items():
        if isinstance(node, dict) and str(node.get("_target_", "")).endswith("MLFlowLogger"):
            check_mlflow_server(key, node)
    check_model(cfg)


# Where each logger reads its credentials (hydratune never passes them itself).
LOGGER_CREDENTIALS = {
    "WandbLogger": "WANDB_API_KEY",
    "MLFlowLogger": "MLFLOW_TRACKING_TOKEN (or _USERNAME/_PASSWORD)",
}


def check_logger_credentials(loggers: dict) -> None:
    """A credential key in a logger's node (`+logger.wandb.api_key=${oc.env:WANDB_API_KEY}`) ended in the logger's
    TypeError traceback after the model loaded (review Z9): the loggers read their credentials from the environment."""
    from hydratune.config import is_secret_key

    for name, node in loggers.items():
        if not isinstance(node, dict):
            continue
        kind = str(node.get("_target_", "")).rsplit(".", 1)[-1]
        secret = next((k for k in node if is_secret_key(k)), None)
        if secret is not None:
            env = LOGGER_CREDENTIALS.get(kind, "its own environment variable")
            raise UserError(
                f"logger.{name}.{secret}: the logger reads its credentials from the environment: remove the key and "
                f"export {env}"
            )


def check_metric_name(cfg: dict) -> None:
    """The HF Trainer's metric names (`eval_loss`, `loss`, `eval_accuracy`) as metric_for_best_model: hydratune
    logs `val/<name>`. Said before the run, not at its first evaluation."""
    from hydratune.tasks.registry import task_class

    metric = ((cfg.get("callbacks") or {}).get("model_checkpoint") or {}).get("metric_for_best_model")
    if not isinstance(metric, str) or not metric:
        return
    try:
        task = task_class(cfg.get("task") or {})
    except UserError:
        task = None
    aliases = getattr(task, "metric_aliases", {})
    key = f"callbacks.model_checkpoint.metric_for_best_model={metric}"
    if "/" not in metric:
        name = f"val/{metric.removeprefix('eval_')}"
        raise UserError(
            f"{key}: hydratune's evaluation metrics are named val/<name> (the HF Trainer's eval_<name>): set it to "
            f"{aliases.get(name, name)}"
        )
    if metric in aliases:  # classification logs val/acc, DPO and the reward model val/accuracy
        raise UserError(f"{key}: task={task.name} logs it as {aliases[metric]}: set it to {aliases[metric]}")


def check_demo_validation(cfg: dict) -> None:
    """Your training file with the shipped sample's validation file still beside it (what replacing only
    `dataset.sources.0.data_files.train` leaves): the val loss, best checkpoint and early stopping would
    follow hydratune's demo rows. One line with the two fixes."""
    data_dir = (cfg.get("paths") or {}).get("data_dir")
    if not data_dir:
        return
    sample = Path(data_dir) / "sample"
    for i, source in enumerate((cfg.get("dataset") or {}).get("sources") or []):
        files = source.get("data_files") if isinstance(source, dict) else None
        if not isinstance(files, dict) or not files.get("validation") or not files.get("train"):
            continue
        same = lambda path, name: _same_file(path, sample / name)  # noqa: E731
        if same(files["validation"], "eval.jsonl") and not same(files["train"], "train.jsonl"):
            raise UserError(
                f"dataset.sources.{i}.data_files.validation is still the shipped sample's {files['validation']} "
                f"beside your training file: set dataset.sources.{i}.data_files.validation=YOUR_FILE, or remove it "
                f"('~dataset.sources.{i}.data_files.validation') and hold rows out ('dataset.ops=[{{split:{{eval:0.1}}}}]')"
            )


def _same_file(path, other: Path) -> bool:
    try:
        return Path(str(path)).expanduser().resolve() == other.resolve()
    except (OSError, RuntimeError):
        return False


def check_optimizer_package(cfg: dict) -> None:
    """The optimizer's package is installed (an extra such as `optim`), or one line with the install command;
    it was an ImportError after the model loaded."""
    import importlib.util

    from hydratune.errors import EXTRAS

    target = str((cfg.get("optimizer") or {}).get("_target_") or "")
    package = target.split(".")[0]
    if not package:
        return
    try:
        found = importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        extra = EXTRAS.get(package)
        hint = install_hint(extra) if extra else f"pip install {package}"
        raise UserError(f"optimizer._target_={target} needs the {package} package: {hint}")


@contextlib.contextmanager
def _project_on_path():
    """The project folder (where train.py is) on sys.path for a while: `python train.py` has its own
    folder there, `hydratune preflight` does not."""
    root = str(project_root().resolve())
    added = root not in sys.path
    if added:
        sys.path.append(root)
    try:
        yield
    finally:
        if added and root in sys.path:
            sys.path.remove(root)


def check_wandb_login(wandb_cfg: dict) -> None:
    """logger.wandb uploads as it goes: without an account here the run would die at its first log, after
    the model loaded. Read as wandb reads it (without importing it): WANDB_MODE, WANDB_API_KEY, the netrc
    entry that `wandb login` writes for the W&B host."""
    import netrc
    from urllib.parse import urlparse

    if wandb_cfg.get("offline") or os.environ.get("WANDB_MODE") in ("offline", "disabled", "dryrun"):
        return
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_DISABLED", "").lower() in ("true", "1"):
        return
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    try:
        if path.is_file() and netrc.netrc(path).authenticators(host):
            return
    except (netrc.NetrcParseError, OSError):
        pass
    raise UserError(
        f"logger.wandb: no W&B login here (WANDB_API_KEY, or `wandb login` for {host}); to log without an "
        "account run with WANDB_MODE=offline (wandb sync uploads it later), or choose logger=tensorboard"
    )


def check_mlflow_server(key: str, node: dict, timeout: float = 5.0) -> None:
    """A tracking server that cannot be reached cost MLflow's own retries (minutes, after the model loaded) before
    its error: one connection attempt here says so at once. Only reachability: MLflow retries a server that
    drops later, in the run."""
    import socket
    from urllib.parse import urlparse

    from hydratune.config import mask_url

    uri = str(node.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI") or "")
    url = urlparse(uri)
    if url.scheme not in ("http", "https") or not url.hostname:
        return  # a file store, a database, databricks: nothing to reach here
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise UserError(
            f"logger.{key}.tracking_uri: the MLflow server at {mask_url(uri)} cannot be reached ({reason}); start "
            "it, fix the URI, or choose logger=tensorboard; nothing was written"
        ) from None


CRC_CHECK_BYTES = 2 * 2**30


def check_resume_file(path: str | Path, key: str) -> None:
    """A checkpoint to resume: a whole `torch.save` archive (Lightning's .ckpt), or the folder of FSDP's
    shards (with meta.pt). An empty file, one cut short (a full disk, a kill mid-copy) or another kind of
    file is named here, before any model loads, instead of failing deep inside torch.load."""
    import zipfile

    path = Path(path)
    if path.is_dir() and (path / "meta.pt").is_file():
        return
    if not path.is_file():
        raise UserError(f"{key}={path}: no such file; give a .ckpt file or use resume=auto")
    if not zipfile.is_zipfile(path):
        raise UserError(
            f"{key}={path}: not a readable checkpoint ({path.stat().st_size:,} bytes, not a whole torch.save "
            "archive); give another one (an earlier checkpoints/step=*.ckpt) or start fresh"
        )
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        if not any(name.endswith("/data.pkl") for name in names):
            raise UserError(
                f"{key}={path}: a zip archive, but not a torch.save checkpoint (no data.pkl in it)"
            )
        # The archive's CRCs (torch.load does not check them): a flipped byte in a tensor would load silently.
        # Read whole up to this size only; a multi-GB full fine-tuning checkpoint is not read twice.
        if path.stat().st_size <= CRC_CHECK_BYTES:
            damaged = archive.testzip()
            if damaged is not None:
                raise UserError(
                    f"{key}={path}: damaged ({damaged} fails its checksum); give another one (an earlier "
                    "checkpoints/step=*.ckpt)"
                )


MODEL_KEY = "model.pretrained_model_name_or_path"


def model_folder(model_cfg: dict) -> Path | None:
    """The folder of the model's files on this disk: the path given, or its hub cache snapshot; None when
    the hub will be asked. A path that is not on disk, or a hub id not cached while the hub is offline,
    is a UserError naming the key."""
    return hub_folder(
        str(model_cfg.get("pretrained_model_name_or_path") or ""),
        MODEL_KEY,
        cache_dir=model_cfg.get("cache_dir"),
        revision=model_cfg.get("revision"),
        tiny_hint=True,
    )


def check_model(cfg: dict) -> None:
    """The model exists, its module names fit peft.config.target_modules, and 4-bit quantization can block
    its linear layers. Module names and shapes come from the safetensors headers: no weight is read."""
    folder = model_folder(cfg.get("model") or {})
    shapes = _safetensors_shapes(folder) if folder is not None else {}
    if folder is not None:
        check_positions(cfg, folder, shapes)
        check_trainable_layers(cfg, folder)
    if not shapes:
        return  # weights on the hub, or not safetensors: loading the model is the check
    linear = {
        name.removesuffix(".weight"): shape for name, (shape, _) in shapes.items() if _is_matrix(name, shape)
    }
    peft = cfg.get("peft") or {}
    if peft.get("method") == "lora":
        check_target_modules((peft.get("config") or {}).get("target_modules"), linear)
    quantization = cfg.get("quantization") or {}
    if quantization.get("method", "none") != "none" and (quantization.get("config") or {}).get(
        "load_in_4bit"
    ):
        check_4bit_blocks(quantization["config"], linear)


def check_trainable_layers(cfg: dict, folder: Path) -> None:
    """peft=freeze's trainable_layers past the model's layers trained all of them without a word (review X2)."""
    peft = cfg.get("peft") or {}
    wanted = peft.get("trainable_layers")
    if peft.get("method") != "freeze" or not isinstance(wanted, int):
        return
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return
    layers = (config.get("text_config") or config).get("num_hidden_layers")
    if isinstance(layers, int) and wanted > layers:
        raise UserError(
            f"peft.trainable_layers={wanted}: the model has {layers} decoder layers ({folder / 'config.json'}): set "
            f"peft.trainable_layers={layers} or fewer (peft=none trains every weight)"
        )


def check_positions(cfg: dict, folder: Path, shapes: dict) -> None:
    """`dataset.max_seq_length` fits the positions the model was trained on (config.json's
    max_position_embeddings, unless a rope_scaling stretches them). Past them, a model with a table of learned
    positions (GPT-2's `wpe`, OPT's `embed_positions`) fails at the first long row, hours in: refused. A rotary
    one trains on positions it never saw: a warning, since a short data set never reaches them."""
    length = (cfg.get("dataset") or {}).get("max_seq_length")
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return
    config = config.get("text_config") or config  # a multimodal config keeps the language model's apart
    limit = config.get("max_position_embeddings") or config.get("n_positions")
    scaling = config.get("rope_scaling") or config.get("rope_parameters")  # transformers 5 writes the latter
    stretched = isinstance(scaling, dict) and scaling.get("rope_type", scaling.get("type")) not in (
        None,
        "default",
    )
    if not isinstance(length, int) or not isinstance(limit, int) or length <= limit or stretched:
        return
    table = [
        name
        for name in shapes
        if re.search(r"(^|\.)(wpe|embed_positions|position_embeddings)\.weight$", name)
    ]
    where = f"max_position_embeddings in {folder / 'config.json'}"
    if table:
        raise UserError(
            f"dataset.max_seq_length={length} is longer than the {limit} positions the model has ({where}; its "
            f"{table[0]} holds one row per position): lower it (dataset.max_seq_length={limit})"
        )
    log.warning(
        "dataset.max_seq_length=%d is longer than the %d positions the model was trained on (%s): rows past them "
        "train on positions it never saw; lower it (dataset.max_seq_length=%d), or give the model a rope_scaling "
        "in its config.json", length, limit, where, limit,
    )  # fmt: skip


def _is_matrix(name: str, shape: list[int]) -> bool:
    return name.endswith(".weight") and len(shape) == 2


def check_target_modules(targets, linear: dict[str, list[int]]) -> None:
    """Every name in a list of target modules names some layer of the model (peft matches a name by the
    last parts of a module's dotted name). `all` is peft's `all-linear`; a string is a regex (peft's)."""
    from hydratune.model import lora_targets

    targets = lora_targets(targets)
    if targets is None or isinstance(targets, str):
        return
    available = sorted({module.rpartition(".")[2] for module in linear})
    unknown = [t for t in targets if not any(m == t or m.endswith(f".{t}") for m in linear)]
    if unknown:
        raise UserError(
            f"peft.config.target_modules: the model has no module named {', '.join(map(str, unknown))}; "
            f"available: {', '.join(available)} (or all-linear)"
        )


# bitsandbytes quantizes 4-bit weights in blocks of 64 values. On CPUs with AVX512-BF16, a forward pass
# without gradients (validation, generation) repacks them for its kernel, which needs in_features to be a
# multiple of that block and out_features of 32 (bitsandbytes 0.50: functional._convert_weight_packed_for_cpu).
BNB_4BIT_BLOCK = 64
BNB_CPU_BLOCK_N = 32


def check_4bit_blocks(quantization_config: dict, linear: dict[str, list[int]]) -> None:
    """Refuse (one line, with the fix) a 4-bit quantization of a linear layer whose sizes bitsandbytes cannot
    block. Refused on every machine, not only on the CPUs where it would crash: the same config must run on
    a laptop and on a cluster, and preflight cannot know where a SLURM job will land."""
    # transformers keeps the output layer unquantized, unless a skip list is given: then only what it names.
    skip = quantization_config.get("llm_int8_skip_modules")
    bad = [
        (module, shape)
        for module, shape in linear.items()
        if "embed" not in module
        and not (module.endswith("lm_head") if skip is None else _skipped(module, skip))
        and (shape[1] % BNB_4BIT_BLOCK or shape[0] % BNB_CPU_BLOCK_N)
    ]
    if bad:
        module, (rows, columns) = bad[0]
        output_layer = [m.rpartition(".")[2] for m in linear if m.endswith("lm_head")]
        names = sorted({m.rpartition(".")[2] for m, _ in bad} | set(output_layer))
        kind = quantization_config.get("bnb_4bit_quant_type", "4-bit")
        raise UserError(
            f"quantization ({kind}): {module} maps {columns} inputs to {rows} outputs"
            + (f" (and {len(bad) - 1} more layers)" if len(bad) > 1 else "")
            + f"; bitsandbytes' 4-bit CPU kernel needs inputs a multiple of {BNB_4BIT_BLOCK} and outputs of "
            f"{BNB_CPU_BLOCK_N}: use quantization=int8 or none, or keep them unquantized: "
            f"+quantization.config.llm_int8_skip_modules=[{','.join(names)}]"
        )


def _skipped(module: str, patterns: list[str]) -> bool:
    """transformers' rule for llm_int8_skip_modules: a prefix or regex up to a dot, or a suffix."""
    return any(re.match(rf"(?:{p})(?:(?<=\.)|(?=\.|$))", module) or module.endswith(p) for p in patterns)


def check_output_dir(path: str | Path, needed_bytes: int = 0, key: str = "paths.output_dir") -> int:
    """The run directory can be created and written, with room for the checkpoints; returns the free bytes."""
    path = Path(path)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(
            f"{key}: {probe} is a file, so {path} cannot be a folder; choose another hydra.run.dir"
        )
    if not os.access(probe, os.W_OK):
        raise UserError(f"{key}: {probe} is not writable; choose another hydra.run.dir")
    free = shutil.disk_usage(probe).free
    if needed_bytes and free < needed_bytes:
        raise UserError(
            f"paths.output_dir: {human_bytes(free)} free at {probe}, checkpoints need ~{human_bytes(needed_bytes)}; "
            "lower callbacks.model_checkpoint.save_total_limit or free disk"
        )
    return free


def check_disk_room(cfg: dict) -> None:
    """Refuse, before any weight loads, a run whose output folder lacks room for its checkpoints and export
    (the estimate `hydratune preflight` prints: checkpoint_bytes)."""
    needed = checkpoint_bytes(cfg)
    check_output_dir(cfg["paths"]["output_dir"], needed[0] if needed else 0)


def human_bytes(n: float) -> str:
    """1,234 bytes, 12.3 KB, 4.5 MB, 6.7 GB (powers of 1000, as disk sizes are sold)."""
    for unit in ("bytes", "KB", "MB"):
        if n < 1000:
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} GB"


MULTIRUN_FLAGS = {"-m", "--multirun"}
MAX_CHECKED_JOBS = 16  # a larger grid is checked one swept value at a time


def check_command_line(argv: list[str]) -> None:
    """Before Hydra starts a run from `argv`: compose and check, so mistakes cost seconds, not a run dir.

    For a sweep (`-m`), every job of the grid is checked before the first one starts (or is submitted
    to SLURM); values that a sweeper samples (Optuna's `interval(...)`) are checked when their job runs.
    """
    if any(arg.startswith(("hparams_search=", "hydra/sweeper")) for arg in argv):
        check_sweeper_plugins()
    flags = {arg.split("=")[0] for arg in argv if arg.startswith("-")}
    if flags & {"--cfg", "-c"} and not flags & MULTIRUN_FLAGS:
        # Printing the config: a mistake in it is one line too (review K13). job/hydra/all are --cfg's values.
        shown = [a for a in argv if not a.startswith("-") and a not in ("job", "hydra", "all")]
        compose([o for o in shown if not o.startswith(("hydra.", "hydra/"))], output_dir="/tmp")
        return
    if flags & (SKIP_FLAGS - MULTIRUN_FLAGS):
        return
    overrides = [arg for arg in argv if not arg.startswith("-")]
    check_no_secrets(overrides)
    keys = [o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o and not o.startswith("hydra")]
    twice = next((k for k in keys if keys.count(k) > 1), None)
    if twice and flags & MULTIRUN_FLAGS:  # `-m optimizer.lr=1e-3 optimizer.lr=2e-3`: a comma forgotten (K14)
        given = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") == twice]
        print(
            f"hydratune: warning: {twice} is given twice ({', '.join(given)}): the last value is used; a sweep "
            "lists its values with commas (key=a,b)",
            file=sys.stderr,
        )
    launcher = next((a for a in overrides if a.lstrip("+~").startswith("hydra/launcher=")), None)
    if launcher and not flags & MULTIRUN_FLAGS:  # Hydra runs a single job in this process, launcher or not
        raise UserError(
            f"{launcher}: a launcher starts the jobs of a sweep (-m); without it this process would train here "
            "(on a cluster, the login node): add -m; nothing was launched"
        )
    if launcher:
        check_launcher(launcher, overrides)
    if flags & MULTIRUN_FLAGS:
        plain = [o for o in overrides if not o.startswith(("hydra.", "hydra/"))]
        # (an experiment may choose a sweeper itself: left to Hydra)
        searched = any(
            a.startswith(("hparams_search=", "hydra/sweeper=", "experiment=", "+experiment=")) for a in argv
        )
        check_sweeper_keys(overrides, searched)
        sampled = sampled_intervals(plain)
        if sampled and not searched:  # Hydra's grid sweeper raised a traceback for it
            raise UserError(
                f"{sampled[0][1]}: an interval is sampled by a search: add hparams_search=lr_rank (or "
                "hydra/sweeper=optuna); a grid takes a list (a,b,c) or range(start,stop,step); nothing was launched"
            )
        jobs = sweep_jobs(plain)
        bad: list[tuple[int, UserError]] = []
        configs: dict[int, dict] = {}
        for n, job in enumerate(jobs):  # every job, so one message names all that need a fix
            try:
                composed = compose(job, output_dir="/tmp")
                check_written_secrets(composed)
                configs[n] = _plain(composed)
                check_config(configs[n])
            except UserError as err:
                bad.append((n, err))
        if not bad and not any(o.startswith(("resume=", "ckpt_path=")) for o in plain):
            # a bad line failed its job only when it started: on SLURM, after queueing (review S10)
            bad = sweep_data_errors(configs)
        if bad:
            n, err = bad[0]
            more = ""
            if len(bad) > 1:
                varied = [
                    o for o in dict.fromkeys(o for job in jobs for o in job) if not all(o in j for j in jobs)
                ]
                named = [f"{m} ({' '.join(o for o in jobs[m] if o in varied)})" for m, _ in bad[1:4]]
                rest = f" and {len(bad) - 4} more" if len(bad) > 4 else ""
                more = f"; also bad: job{'s' if len(bad) > 2 else ''} {', '.join(named)}{rest}"
            raise UserError(
                f"sweep job {n} ({' '.join(jobs[n]) or 'defaults'}): {err}{more}; nothing was launched"
            ) from err
        for key, text, values in sampled:  # a sampled value is checked as its trial runs,
            errors = []  # but an interval with no valid value at either end or between is refused now
            for value in values:
                try:
                    check_config(_plain(compose([*jobs[0], f"{key}={value}"], output_dir="/tmp")))
                except UserError as err:
                    errors.append(err)
            if len(errors) == len(values):
                raise UserError(f"{text}: no value in it is valid ({errors[0]}); nothing was launched")
        return
    run_dir = next((a.split("=", 1)[1] for a in reversed(overrides) if a.startswith("hydra.run.dir=")), None)
    if run_dir:  # Hydra makes the folder before the run checks anything: a traceback when it cannot
        check_output_dir(run_dir, key=f"hydra.run.dir={run_dir}")
    resuming = any(a.startswith(("resume=", "ckpt_path=")) for a in overrides)
    first_rank = all(os.environ.get(v, "0") == "0" for v in ("RANK", "LOCAL_RANK", "SLURM_PROCID"))
    if run_dir and first_rank:  # Lightning starts DDP ranks 1.. with the run's own hydra.run.dir
        requeued = int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0  # resumes as resume=auto (train.py)
        check_run_dir(Path(run_dir), resuming or requeued)
    cfg = compose([o for o in overrides if not o.startswith(("hydra.", "hydra/"))], output_dir="/tmp")
    check_written_secrets(cfg)
    check_config(_plain(cfg))
    if not resuming:
        quick_data_errors(_plain(cfg))
    elif "resume=auto" in overrides and not run_dir and first_rank:
        check_resume_target(_plain(cfg))


def check_resume_target(cfg: dict) -> None:
    """resume=auto while a run of this name that it would continue trains: refused before Hydra makes a new
    run folder (the lock refused it later and left that folder behind: review K11)."""
    from hydratune.locks import live_holder

    runs = Path(str((cfg.get("paths") or {}).get("log_dir") or "outputs")) / str(cfg.get("name"))
    for folder in sorted(runs.glob("*")) if runs.is_dir() else []:
        holder = live_holder(folder)
        if holder and (folder / "checkpoints" / "last.ckpt").exists():
            raise UserError(
                f"resume=auto would continue {folder}, which process {holder['pid']} is training: wait for it to "
                "end, or stop it (its checkpoint stays), then resume=auto; nothing was written"
            )


# The sbatch options that hydra-submitit-launcher names otherwise, for a did-you-mean.
LAUNCHER_ALIASES = {"gpus": "gpus_per_node", "cpus": "cpus_per_task", "mem": "mem_gb", "time": "timeout_min",
                    "ntasks_per_node": "tasks_per_node", "job_name": "name"}  # fmt: skip


def check_launcher(launcher: str, overrides: list[str]) -> None:
    """`hydra/launcher=submitit_*`: the plugin is installed, SLURM's commands are here for submitit_slurm, and each
    `hydra.launcher.KEY=` is a key of the plugin's settings (Hydra advised `+hydra.launcher.KEY`, which then
    failed inside submitit); before the sweep folder is made."""
    import dataclasses

    choice = launcher.split("=", 1)[1]
    if choice not in ("submitit_slurm", "submitit_local"):
        return
    try:
        from hydra_plugins.hydra_submitit_launcher import config as plugin
    except ImportError:
        raise UserError(f"{launcher} needs hydra-submitit-launcher: {install_hint('sweep')}") from None
    if choice == "submitit_slurm":
        missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
        if missing:
            raise UserError(
                f"{launcher}: {missing[0]} is not on PATH, so there is no SLURM here: run the sweep on the cluster's "
                "login node, or hydra/launcher=submitit_local to run its jobs on this machine; nothing was launched"
            )
    schema = plugin.SlurmQueueConf if choice == "submitit_slurm" else plugin.LocalQueueConf
    known = sorted(f.name for f in dataclasses.fields(schema) if not f.name.startswith("_"))
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if not key.startswith("hydra.launcher.") or key.count(".") != 2:
            continue
        name = key.rsplit(".", 1)[1]
        if name in known:
            continue
        alias = LAUNCHER_ALIASES.get(name)
        hint = (
            f"did you mean hydra.launcher.{alias}? "
            if alias in known
            else did_you_mean(name, known, "hydra.launcher.")
        )
        extra = (
            f"another sbatch option goes in hydra.launcher.additional_parameters={{{name}: ...}}"
            if choice == "submitit_slurm"
            else f"its keys: {', '.join(known)}"
        )
        raise UserError(f"{key}: {choice} has no such setting; {hint}{extra}; nothing was launched")


def sweep_data_errors(configs: dict[int, dict]) -> list[tuple[int, UserError]]:
    """`quick_data_errors` once for each distinct data setup of a sweep's jobs (the data, the task that reads it,
    the tokenizer): the first job of each that has a definite error in its data, as (job, error)."""
    bad, seen = [], set()
    for n, cfg in configs.items():
        setup = json.dumps(
            [cfg.get(k) for k in ("dataset", "task", "paths", "model")], sort_keys=True, default=str
        )
        if setup in seen:
            continue
        seen.add(setup)
        try:
            quick_data_errors(cfg)
        except UserError as err:
            bad.append((n, err))
    return bad


def check_run_dir(run_dir: Path, resuming: bool) -> None:
    """`hydra.run.dir=` an existing run: Hydra rewrites its `.hydra/` configs before the run starts, so a launch
    refused later (the run lock) had already changed the saved config of the run it protects (review K1). Refused
    here: a folder a live process trains in, a finished run, and a stopped one without resume (it trained from
    step 0 over its checkpoints, K4)."""
    from hydratune.locks import live_holder

    key = f"hydra.run.dir={run_dir}"
    holder = live_holder(run_dir)
    if holder:
        raise UserError(
            f"{key} is being trained by process {holder['pid']} (since {holder.get('started')}): wait for it to end, "
            "or stop it (its checkpoint stays), then resume=auto; nothing was written"
        )
    finished = (run_dir / "metrics.json").exists()
    if resuming:
        checkpoints = [*(run_dir / "checkpoints").glob("*.ckpt"), *run_dir.glob("hpc_ckpt_*.ckpt")]
        if (
            finished and not checkpoints
        ):  # resume=auto found nothing and trained over it from step 0 (review L15)
            raise UserError(
                f"{key} holds a finished run with no checkpoint to continue from (trained with callbacks=none, "
                "or its checkpoints were removed); choose a new directory; nothing was written"
            )
        return
    if finished:
        raise UserError(
            f"{key} holds a finished run; choose a new directory (or resume with ckpt_path=...); nothing was written"
        )
    if (run_dir / "checkpoints" / "last.ckpt").exists():
        raise UserError(
            f"{key} holds a stopped run (checkpoints/last.ckpt): add resume=auto to continue it, or choose a new "
            "directory; nothing was written"
        )


def check_no_secrets(overrides: list[str]) -> None:
    """A token on the command line lands in .hydra/overrides.yaml, multirun.yaml and a sweep's summaries in
    clear text (only the environment's is kept out of them): refused, with where to put it instead. A key is a
    secret's by its last word in any case (`+hydra.job.env_set.HF_TOKEN=`: review Z6); an interpolation passes
    only as a bare `${oc.env:NAME}` (a literal default after its comma was saved: Z2)."""
    from hydratune.config import URL_USERINFO, is_secret_key

    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if URL_USERINFO.search(value):  # a tracking or data URL's password, saved with the overrides (Z5)
            raise UserError(
                f"{key}: a URL with user:password@ is saved in clear text with the run's overrides: give the URL "
                "without them and the credentials in the environment (MLflow: MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD); nothing was launched"
            )
        if not is_secret_key(key.rsplit(".", 1)[-1]) or not value or value in ("null", "None"):
            continue
        if re.fullmatch(r"""['"]?\$\{oc\.env:\w+(,\s*(null|None)?)?\}['"]?""", value.strip()):
            continue
        env = _secret_env(key)
        raise UserError(
            f"{key}: a secret on the command line is saved in clear text with the run's overrides: export "
            f"{env}=... in the environment instead (it is read from there and never saved); nothing was launched"
        )


def quick_data_errors(cfg: dict) -> None:
    """The quick look's definite errors in the data (a line that does not parse, a column the format needs, an
    empty file), in a fraction of a second and before Hydra makes a run folder or torch is imported. What it
    cannot judge (a hub dataset, a chat template, a column of mixed types, ...) is left to training's own path."""
    quick_look(cfg, 200)


def quick_look(cfg: dict, rows: int) -> dict | str:
    """hydratune.data.peek's report on the first `rows` rows of each file, or why it cannot match training (a
    Fallback, or a case it gets wrong): then the full path decides. Its UserErrors are definite."""
    from hydratune.data.peek import Fallback, peek
    from hydratune.tasks.registry import get_task

    try:
        return peek(cfg, get_task(cfg.get("task")), rows)
    except UserError:
        raise
    except Exception as err:
        if not isinstance(err, Fallback) and os.environ.get("HYDRATUNE_DEBUG") == "1":
            raise
        return str(err) if isinstance(err, Fallback) else f"{type(err).__name__}: {err}"


def check_sweeper_plugins() -> None:
    """Hydra's own Optuna sweeper plugin, if still installed, claims the names of hydratune's sweeper
    configs (hydra/sweeper/optuna, sampler/tpe, ...) and composition fails with a schema error."""
    import importlib.util

    if importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is not None:
        raise UserError(
            "hydra-optuna-sweeper is installed and clashes with hydratune's Optuna sweeper: "
            f"pip uninstall hydra-optuna-sweeper, then {install_hint('sweep')}"
        )


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The override lists of a `-m` grid: every combination, or (past MAX_CHECKED_JOBS) each swept value
    once with the others at their first value. Sampled values (`interval(...)`) are left to the sweeper."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        raise _explain_hydra_error(err, overrides) from err
    axes: list[list[str]] = []
    for override in parsed:
        if not override.is_sweep_override():
            axes.append([override.input_line])
        elif override.is_discrete_sweep():
            key = override.get_key_element()
            axes.append([f"{key}={value}" for value in override.sweep_string_iterator()])
    if math.prod(len(axis) for axis in axes) <= MAX_CHECKED_JOBS:
        return [list(job) for job in itertools.product(*axes)]
    first = [axis[0] for axis in axes]
    jobs = [first]
    for i, axis in enumerate(axes):
        jobs += [first[:i] + [value] + first[i + 1 :] for value in axis[1:]]
    return jobs


# The settings of Hydra's grid sweeper (hydratune's Optuna sweeper's are its config file's).
GRID_KEYS = ("max_batch_size", "params")


def optuna_keys() -> tuple[str, ...]:
    """The settings of conf/hydra/sweeper/optuna.yaml, and the sampler and pruner its defaults choose."""
    import yaml

    node = yaml.safe_load((conf_dir() / "hydra" / "sweeper" / "optuna.yaml").read_text())
    return (*(k for k in node if not k.startswith("_") and k != "defaults"), "sampler", "pruner")


def check_sweeper_keys(overrides: list[str], search: bool) -> None:
    """`hydra.sweeper.KEY=...`: a key the sweeper has (Hydra's own error is a struct dump, exit 1). `search`: the
    command line chose the Optuna sweeper (or an experiment that may)."""
    optuna = optuna_keys()
    known = optuna if search else GRID_KEYS
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if not key.startswith("hydra.sweeper.") or key.count(".") < 2:
            continue
        name = key.split(".")[2]
        value = override.split("=", 1)[1] if "=" in override else ""
        sweep = not value.startswith(("'", '"')) and re.search(r"\b(choice|range|interval|tag)\(|,", value)
        if name == "params" and key.count(".") > 2 and sweep:
            # Hydra reads a sweep value under hydra.* as a sweep over its own config, and refuses it
            raise UserError(
                f"{override}: give the search space as the key itself after -m: {key[len('hydra.sweeper.params.') :]}"
                f"='{value}' (hydra.sweeper.params is for a config file)"
            )
        if name in known or name.startswith("_"):
            continue
        if not search and name in optuna:
            raise UserError(
                f"{key} is a setting of the Optuna search: add hparams_search=lr_rank (or hydra/sweeper=optuna)"
            )
        hint = did_you_mean(name, known, prefix="hydra.sweeper.")
        raise UserError(f"{key}: the sweeper has no such setting; {hint}it has: {', '.join(known)}")


def sampled_intervals(overrides: list[str]) -> list[tuple[str, str, list[str]]]:
    """(key, the override, its two ends and middle) of each `interval(...)` a sweeper samples."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException:
        return []
    out = []
    for override in parsed:
        value = (
            override.value() if override.is_sweep_override() and not override.is_discrete_sweep() else None
        )
        if value is not None and hasattr(value, "start") and hasattr(value, "end"):
            low, high = value.start, value.end
            out.append(
                (
                    override.get_key_element(),
                    override.input_line,
                    [repr(v) for v in (low, (low + high) / 2, high)],
                )
            )
    return out


def _secret_env(key: str) -> str:
    """The environment variable a secret of this key is read from instead."""
    key = key.lower()
    return "WANDB_API_KEY" if "wandb" in key or key.endswith("api_key") else "HF_TOKEN"


def check_written_secrets(cfg) -> None:
    """A secret written into a config file (an experiment's `model.token: hf_...`) is saved, as written, in every
    run's .hydra/config.yaml (review Z3): refused, with the environment variable to read it from instead."""
    from omegaconf import OmegaConf

    from hydratune.config import is_secret_key

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                where = f"{path}.{key}" if path else str(key)
                if is_secret_key(key) and isinstance(value, str) and value and not value.startswith("${"):
                    env = _secret_env(where)
                    raise UserError(
                        f"{where}: a secret written in a config file is saved in every run's .hydra/config.yaml: "
                        f"write {key}: ${{oc.env:{env},null}} and export {env}=... instead"
                    )
                walk(value, where)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}.{i}")

    walk(OmegaConf.to_container(cfg, resolve=False), "")


def _plain(cfg) -> dict:
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception as err:  # an interpolation that cannot resolve
        raise UserError(f"config: {str(err).splitlines()[0]}") from err


def data_report(cfg: dict) -> dict:
    """Load the tokenizer (not the model) and prepare the data as training does; counts that say whether
    it will train. Every row, so it takes as long as the data preparation of a run (datasets, transformers)."""
    from hydratune.data.peek import tokenizer_report
    from hydratune.model import attention, load_tokenizer
    from hydratune.tasks.registry import get_task

    model_cfg = dict(cfg["model"])
    token = model_cfg.pop("token", None)
    tokenizer = load_tokenizer(model_cfg, token)
    attention(
        cfg["model"]
    )  # sdpa that the model's class lacks: said, as training will (transformers is loaded)
    report: dict = {"data_check": "full: every row, prepared as training does", **tokenizer_report(tokenizer)}
    return report | get_task(cfg.get("task")).full_data_report(cfg, tokenizer)


def data_check(cfg: dict, rows: int = 200, full: bool = False) -> dict:
    """The quick look at the first `rows` rows of each file (hydratune.data.peek: no datasets,
    transformers or torch), or the full preparation where the quick look cannot match training."""
    report = data_report(cfg) if full else quick_look(cfg, rows)
    if isinstance(report, str):  # the quick look cannot match training: training's own path decides
        reason, report = report, data_report(cfg)
        report["data_check"] += f" (the quick look cannot: {reason})"
    from hydratune.data.tokenize import cut_warning

    data_cfg = cfg.get("dataset") or {}
    warnings = []
    for split, stats in report.items():
        if (
            isinstance(stats, dict) and "dropped_untrained" in stats
        ):  # the share dropped with no trained token
            stats["untrained_rate"] = stats["dropped_untrained"] / max(stats["rows"], 1)
            if "truncated" in stats and "pairs" not in stats:  # pair tasks warn as they prepare
                warning = cut_warning(
                    split, stats, data_cfg.get("max_seq_length", 0), data_cfg.get("truncation", "truncate")
                )
                warnings += [warning] if warning else []
    if warnings:
        report["notes"] = [*report.get("notes", []), *(f"warning: {w}" for w in warnings)]
    return report


# Bytes per trained parameter in a checkpoint: the fp32 weight and two fp32 Adam moments.
CHECKPOINT_BYTES_PER_PARAM = 12
SAFETENSORS_HEADER_LIMIT = 100 * 2**20  # a larger header is a broken file


def _safetensors_shapes(folder: Path) -> dict[str, tuple[list[int], int]]:
    """{tensor name: (shape, bytes)} from the headers of a local model's safetensors files (no weights read)."""
    import struct

    shapes = {}
    for file in sorted(folder.glob("*.safetensors")):
        try:
            with open(file, "rb") as f:
                (size,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(size)) if size <= SAFETENSORS_HEADER_LIMIT else {}
            for name, info in header.items():
                if name != "__metadata__":
                    start, end = info["data_offsets"]
                    shapes[name] = (info["shape"], end - start)
        except (OSError, struct.error, ValueError, KeyError, TypeError):
            return {}  # not a safetensors file we can read: no estimate (loading the model will say why)
    return shapes


def checkpoint_bytes(cfg: dict) -> tuple[int, str] | None:
    """About how much disk the run's checkpoints and export take, and how that was reckoned; None when the
    model is not a local folder of safetensors files. Shapes come from the file headers: no weights load."""
    shapes = _safetensors_shapes(Path(str(cfg["model"]["pretrained_model_name_or_path"])))
    if not shapes:
        return None
    model_bytes = sum(size for _, size in shapes.values())
    peft = cfg.get("peft") or {}
    if peft.get("method") == "lora":
        lora = peft.get("config") or {}
        targets = lora.get("target_modules")
        saved = lora.get("modules_to_save") or []
        trained = 0
        for name, (shape, _) in shapes.items():
            module = name.removesuffix(".weight")
            if any(module.endswith(m) for m in saved):
                trained += math.prod(shape)
            elif len(shape) == 2 and name.endswith(".weight") and _lora_target(module, targets):
                trained += lora.get("r", 8) * sum(shape) + (shape[0] if lora.get("use_dora") else 0)
        export = trained * 4
    else:  # full fine-tuning; peft=freeze trains fewer, so this is an upper bound
        trained = sum(math.prod(shape) for shape, _ in shapes.values())
        export = model_bytes
    if (cfg.get("export") or {}).get("merge"):
        export += model_bytes
    checkpoint = (cfg.get("callbacks") or {}).get("model_checkpoint")
    if checkpoint is None:
        count, kept = 0, "no checkpoints (callbacks=none)"
    else:
        limit = checkpoint.get("save_total_limit")
        count = (limit or 1) + 1 + bool(checkpoint.get("metric_for_best_model"))  # + last.ckpt (+ best.ckpt)
        kept = (
            f"{count} checkpoints"
            if limit
            else f"at least {count} checkpoints (save_total_limit=null keeps all)"
        )
    total = count * trained * CHECKPOINT_BYTES_PER_PARAM + export
    how = f"{kept} of {trained:,} trained parameters + the export"
    if (
        rules.uses_fsdp(cfg) and peft.get("method") == "lora"
    ):  # FSDP's sharded checkpoints hold the frozen base too
        total += count * model_bytes
        how = how.replace(" + the export", ", each with the frozen weights (FSDP) + the export")
    return total, how


def _lora_target(module: str, targets) -> bool:
    """Whether peft's LoRA wraps this linear layer (`all-linear` and null: every one but the output layer)."""
    if targets in (None, "all-linear"):
        return "embed" not in module and not module.endswith("lm_head")
    if isinstance(targets, str):  # a regular expression on the full name
        return re.fullmatch(targets, module) is not None
    return any(module == t or module.endswith(f".{t}") for t in targets)


def run_preflight(
    overrides: list[str], with_data: bool = True, rows: int = 200, full_data: bool = False
) -> dict:
    """Everything `hydratune preflight` checks; raises UserError at the first problem.

    Data: the first `rows` rows of each file (or every row with `full_data`), see `data_check`.
    """
    import time

    started = time.time()
    check_no_secrets(overrides)  # as train.py refuses them (preflight said ok: review Z7)
    cfg = compose(overrides, output_dir=str(project_root() / "outputs" / "preflight"))
    check_written_secrets(cfg)
    plain = _plain(cfg)
    check_config(plain)
    needed = checkpoint_bytes(plain)
    free = check_output_dir(plain["paths"]["log_dir"], needed[0] if needed else 0)
    report = {
        "config": "ok",
        "rules": f"{len(rules.RULES)} checked",
        "output_dir": f"{plain['paths']['log_dir']}: writable, {free / 1e9:.1f} GB free"
        + (f", about {needed[0] / 1e6:,.1f} MB needed ({needed[1]})" if needed else ""),
    }
    if with_data:
        report |= data_check(plain, rows, full_data)
    report["seconds"] = round(time.time() - started, 2)
    return report
