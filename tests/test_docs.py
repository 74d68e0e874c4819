"""docs/options.md cannot rot: every cell composes and passes the schema, every reference option is on it.

The page maps each option of the reference documents to a command-line fragment. Each fragment is
applied the way `python train.py FRAGMENT` applies it (Hydra's own override parser and merge), then
checked by the config schema and the cross-group rules, so a renamed key, a removed option or a value
out of range fails here. The option names come from the reference docs' code blocks, frozen in
tests/data/reference_options.txt (and compared with the docs themselves where they are present).
"""

from __future__ import annotations

import copy
import re
import shlex
from functools import cache
from pathlib import Path

import pytest
from conftest import CONF_DIR, ROOT

from hydratune import rules, schema
from hydratune.data.ops import COMBINE, OPS
from hydratune.data.sources import SOURCE_KEYS
from hydratune.tasks.registry import task_class

DOC = ROOT / "docs" / "options.md"
FROZEN = ROOT / "tests" / "data" / "reference_options.txt"
REFERENCE = ROOT.parent / "shared" / "reference"  # the reference docs, beside the checkout when present
SOURCES = {
    "model-compose": "model-compose-training.md",
    "simplefoundation": "simplefoundation-training.md",
    "llamafarm": "llamafarm-training.md",
}
# Trainers whose configs `hydratune import` reads: the keys to cover are those of the test fixtures written
# after each project's published example configs (tests/data/<folder>/), nested dataset/FSDP keys included.
IMPORT_SOURCES = {
    "llama-factory": "llamafactory",
    "axolotl": "axolotl",
    "torchtune": "torchtune",
    "litgpt": "litgpt",
    "trl": "trl",
}
ALL_SOURCES = (*SOURCES, *IMPORT_SOURCES)
MAPPING_HEADER = ["option", "hydratune", "notes"]
UNSUPPORTED_HEADER = ["option", "source", "why not"]
# Rules about the machine, not the config: CUDA-only options and optional packages not installed here.
HARDWARE_RULES = {
    "cuda_only_optimizer",
    "flash_attention_needs_cuda",
    "deepspeed_installed",
    "sharded_strategy_needs_cuda",
}


def reference_options(text: str) -> set[str]:
    """Option names in a reference doc's code blocks: YAML and JSON keys, Python keywords, CLI flags."""
    names: set[str] = set()
    for lang, body in re.findall(r"```(\w*)\n(.*?)```", text, re.S):
        for line in body.splitlines():
            if lang == "yaml":
                match = re.match(r"\s*(?:-\s+)?([A-Za-z_][A-Za-z0-9_]*):", line)
                names.update([match.group(1)] if match else [])
            elif lang == "json":
                names.update(re.findall(r'"([A-Za-z_][A-Za-z0-9_]*)"\s*:', line))
            elif lang == "python":
                names.update(re.findall(r"\b([a-z_][a-z0-9_]*)=(?!=)", line))
            elif lang == "bash":
                names.update(re.findall(r"(--[a-z][a-z0-9_-]*)", line))
    return names


def frozen_options() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {source: set() for source in SOURCES}
    for line in FROZEN.read_text().splitlines():
        if line and not line.startswith("#"):
            source, name = line.split()
            out[source].add(name)
    return out


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def tables(text: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """(the `## ` section it is in, header cells, body rows) for every Markdown table."""
    found, section, lines = [], "", text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section = line[3:]
        if line.startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header, rows, i = _cells(line), [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            found.append((section, header, rows))
            continue
        i += 1
    return found


def backticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def option_names(cell: str) -> set[str]:
    """`lora_r: 8` -> lora_r; `stage: rm` -> stage; `--epochs 3` -> --epochs."""
    return {re.split(r"[:\s]", item.strip())[0] for item in backticked(cell)}


def source_of(section: str) -> str | None:
    lowered = section.lower()
    return next((source for source in ALL_SOURCES if source in lowered), None)


def fixture_options(source: str) -> set[str]:
    """Keys of the import fixtures of a source: top level, dataset entries, fsdp_config."""
    import yaml

    names: set[str] = set()
    for path in sorted((ROOT / "tests" / "data" / IMPORT_SOURCES[source]).glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if source == "litgpt":
            names |= litgpt_options(data)
            continue
        names |= set(data)
        if source == "torchtune":  # components nest their arguments: `model.lora_rank`, `dataset.packed`
            names |= {f"{key}.{arg}" for key, value in data.items() if isinstance(value, dict)
                      for arg in value if arg != "_component_"}  # fmt: skip
            continue
        if source == "trl":  # nested keys as dotted names: datasets.path, dataset_mixture.datasets.id, ...
            mixture = data.get("dataset_mixture") or {}
            names |= {f"dataset_mixture.{key}" for key in mixture}
            names |= {
                f"dataset_mixture.datasets.{key}" for entry in mixture.get("datasets") or [] for key in entry
            }
            names |= {f"datasets.{key}" for entry in data.get("datasets") or [] for key in entry}
            continue
        for entry in data.get("datasets") or []:
            names |= set(entry)
        names |= set(data.get("fsdp_config") or {})
    return names


def litgpt_options(data: dict) -> set[str]:
    """litgpt's keys as the page writes them: flat keys, and `train.epochs`, `data.init_args.mask_prompt`, ...
    for the keys inside its blocks (`optimizer: AdamW`, a name, stays `optimizer`)."""
    names: set[str] = set()
    for key, value in data.items():
        if not isinstance(value, dict):
            names.add(key)
            continue
        for inner, inner_value in value.items():
            if inner == "init_args" and isinstance(inner_value, dict):
                names |= {f"{key}.init_args.{arg}" for arg in inner_value}
            else:
                names.add(f"{key}.{inner}")
    return names


PAGE = DOC.read_text()
TABLES = tables(PAGE)
MAPPINGS = [(section, row) for section, header, rows in TABLES if header == MAPPING_HEADER for row in rows]
UNSUPPORTED = [row for _, header, rows in TABLES if header == UNSUPPORTED_HEADER for row in rows]


def test_page_has_its_tables():
    assert len(MAPPINGS) > 150 and len(UNSUPPORTED) > 10
    headers = {tuple(header) for _, header, _ in TABLES}
    assert headers == {tuple(MAPPING_HEADER), tuple(UNSUPPORTED_HEADER)}, "a table with another header"


def test_frozen_list_matches_the_reference_docs():
    if not REFERENCE.is_dir():
        pytest.skip(f"the reference docs are not beside this checkout ({REFERENCE})")
    frozen = frozen_options()
    for source, filename in SOURCES.items():
        assert reference_options((REFERENCE / filename).read_text()) == frozen[source], (
            f"{filename} changed: regenerate {FROZEN.name} with reference_options()"
        )


def covered_on_page(source: str) -> set[str]:
    covered: set[str] = set()
    for section, row in MAPPINGS:
        if source_of(section) == source:
            covered |= option_names(row[0])
    for row in UNSUPPORTED:
        if row[1] == source:
            covered |= option_names(row[0])
    return covered


@pytest.mark.parametrize("source", sorted(IMPORT_SOURCES))
def test_every_import_fixture_key_is_on_the_page(source):
    missing = sorted(fixture_options(source) - covered_on_page(source))
    assert not missing, f"docs/options.md does not map or list these {source} keys: {missing}"


def test_every_key_the_importer_names_is_on_the_page():
    from hydratune.importer import AXOLOTL_TRL, LF_AX_UNSUPPORTED, TASK_VALUES

    page = covered_on_page("llama-factory") | covered_on_page("axolotl")
    trl = {name for _, row in MAPPINGS for name in re.findall(r"`trl: \{(\w+):", row[0])}
    missing = sorted((set(LF_AX_UNSUPPORTED) | (set(TASK_VALUES) - {"top_p"})) - page)
    assert not missing, f"the importer maps or refuses these keys, docs/options.md does not say: {missing}"
    assert set(AXOLOTL_TRL) - {"top_p", "num_iterations"} <= trl


def test_every_torchtune_name_the_importer_knows_is_on_the_page():
    """Keys it reports as unsupported, and the components (losses, builders, optimizers, loggers) it maps."""
    from hydratune import importer_torchtune as tt

    page = covered_on_page("torchtune")
    missing = sorted(
        k for k in tt.TT_UNSUPPORTED if k not in page and not any(n.endswith(f".{k}") for n in page)
    )
    assert not missing, f"the torchtune importer refuses these keys, docs/options.md does not say: {missing}"
    section = PAGE.split("## torchtune (hydratune import)")[1].split("\n## ")[0]
    names = [*tt.LOSSES, *tt.DATASETS, *tt.OPTIMIZERS, *tt.LOGGERS]
    unnamed = sorted(name for name in names if name not in section)
    assert not unnamed, f"docs/options.md's torchtune section does not name these components: {unnamed}"


def test_every_key_the_litgpt_importer_names_is_on_the_page():
    from hydratune.importer_litgpt import DATA_MODULES, OPTIMIZERS, QUANTIZE, TOP_LEVEL_SKIPS, TRAIN_REFUSED

    page = covered_on_page("litgpt")
    missing = sorted(({f"train.{key}" for key in TRAIN_REFUSED} | set(TOP_LEVEL_SKIPS)) - page)
    assert not missing, f"the litgpt importer refuses these keys, docs/options.md does not say: {missing}"
    section = PAGE.split("## litgpt (hydratune import)")[1].split("\n## ")[0]
    named = [*DATA_MODULES, *(path.rsplit(".", 1)[1] for path in OPTIMIZERS), *QUANTIZE]
    missing = [name for name in named if name not in section]
    assert not missing, (
        f"the litgpt importer maps these, its section of docs/options.md does not name them: {missing}"
    )


def test_every_key_the_trl_importer_names_is_on_the_page():
    from hydratune.importer_trl import STAGE_KEYS, TASK_KEYS, TRL_UNSUPPORTED

    page = covered_on_page("trl")
    missing = sorted((set(TRL_UNSUPPORTED) | set(STAGE_KEYS) | set(TASK_KEYS)) - page)
    assert not missing, (
        f"the TRL importer maps or refuses these keys, docs/options.md does not say: {missing}"
    )


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_every_reference_option_is_on_the_page(source):
    covered: set[str] = set()
    for section, row in MAPPINGS:
        if source_of(section) == source:
            covered |= option_names(row[0])
    for row in UNSUPPORTED:
        if row[1] == source:
            covered |= option_names(row[0])
    # A flag `--learning_rate` is covered by the option `learning_rate` (SimpleFoundation's CLI mirrors its JSON).
    missing = sorted(n for n in frozen_options()[source] if n not in covered and n.lstrip("-") not in covered)
    assert not missing, f"docs/options.md does not map or list these {source} options: {missing}"


def test_unsupported_rows_give_a_reason():
    for row in UNSUPPORTED:
        assert row[1] in ALL_SOURCES, f"{row[0]}: source must be one of {sorted(ALL_SOURCES)}"
        assert len(row[2]) > 20, f"{row[0]}: say why it is not supported"


# -- the hydratune column: every cell is a runnable fragment --------------------------------------


def _is_group_choice(override: str) -> bool:
    key, _, _ = override.partition("=")
    return key.startswith("hydra") or ("." not in key and (CONF_DIR / key).is_dir())


@cache
def _composed(choices: tuple[str, ...]):
    """Composing costs ~1 s: once per distinct set of group choices, values applied to a copy."""
    from hydratune.preflight import compose

    return compose(list(choices), output_dir="/tmp/hydratune-docs")


def apply(overrides: list[str]) -> dict:
    """The plain config that `python train.py OVERRIDES` would run, built as Hydra builds it."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    choices = tuple(sorted(o for o in overrides if _is_group_choice(o)))
    values = [o for o in overrides if not _is_group_choice(o)]
    cfg = copy.deepcopy(_composed(choices))
    ConfigLoaderImpl._apply_overrides_to_config(OverridesParser.create().parse_overrides(values), cfg)
    return OmegaConf.to_container(cfg, resolve=True)


def check_command(item: str) -> None:
    from hydratune.cli import build_parser

    argv = shlex.split(item)
    assert argv[0] == "hydratune", item
    args = build_parser().parse_args(argv[1:])  # exits (a test failure) on an unknown command or flag
    assert args.command == argv[1]


def check_config(cfg: dict) -> None:
    schema.validate(cfg, CONF_DIR)
    broken = [
        rule.name
        for rule in (*rules.RULES, *task_class(cfg["task"]).rules)
        if rule.name not in HARDWARE_RULES and rule.applies(cfg)
    ]
    assert not broken, f"breaks the rules {broken}"
    for i, source in enumerate(cfg["dataset"].get("sources") or []):
        unknown = set(source) - SOURCE_KEYS
        assert not unknown, f"dataset.sources.{i}: unknown keys {unknown}"
    for op in cfg["dataset"].get("ops") or []:
        assert set(op) - {"splits"} <= set(OPS) | set(COMBINE), f"unknown dataset op {op}"


ROW_IDS = [f"{source_of(s) or s.split()[0].lower()}:{row[0][:60]}" for s, row in MAPPINGS]


@pytest.mark.parametrize(("section", "row"), MAPPINGS, ids=ROW_IDS)
def test_row_is_a_valid_command_line(section, row):
    items = backticked(row[1])
    assert items, f"{row[0]}: the hydratune column names no override (list it under Not supported instead)"
    pending = [
        i.split("=")[1]
        for i in items
        if i.startswith("task=") and not (CONF_DIR / "task" / f"{i[5:]}.yaml").is_file()
    ]
    if pending:  # a preference or RL task being built: the row is checked once conf/task/<name>.yaml exists
        pytest.skip(f"no conf/task/{pending[0]}.yaml yet")
    overrides = []
    for item in items:
        if item.startswith("hydratune "):
            check_command(item)
        elif item.startswith("$"):
            # An environment variable the code reads (a secret: never a config value).
            name = item[1:]
            assert any(name in p.read_text() for p in (ROOT / "src").rglob("*.py")), f"{name} is not read"
        else:
            assert re.match(r"^(~|\+{1,2})?[A-Za-z_/][\w./]*(=.*)?$", item), f"{item!r} is not an override"
            overrides.append(item)
    if len(overrides) == 1 and _is_group_choice(overrides[0]) and not overrides[0].startswith("hydra"):
        # One option alone: test_config.py composes every option and binds its targets; composing
        # again here would cost a second per row for nothing.
        group, option = overrides[0].split("=")
        assert (CONF_DIR / group / f"{option}.yaml").is_file(), f"{overrides[0]}: no such option"
    elif overrides:
        check_config(apply(overrides))


def test_a_wrong_key_fails_the_check():
    """The checks above can fail: a misspelt key, an unknown option and a bad value are caught."""
    with pytest.raises(Exception, match="lora_rank|not in struct|Could not override"):
        check_config(apply(["peft.config.lora_rank=8"]))
    with pytest.raises(Exception, match="no such option|Could not find"):
        apply(["optimizer=adamw_9bit"])
    with pytest.raises(Exception, match="out of range"):
        check_config(apply(["optimizer.lr=-1"]))
    with pytest.raises(Exception, match="unknown"):
        check_config(apply(["++dataset.sources.0.tokn=x"]))


def test_worked_examples_exist():
    section_rows = [row for section, row in MAPPINGS if section == "Worked examples"]
    names = [item.split("=", 1)[1] for row in section_rows for item in backticked(row[1])]
    assert len(names) == 6
    for name in names:
        assert Path(CONF_DIR / "experiment" / f"{name}.yaml").is_file()
