"""`hydratune import FILE`: which format a config file is, and the importer that reads it.

The formats: model-compose, LlamaFarm, SimpleFoundation, LLaMA-Factory and Axolotl (hydratune.importer,
which also holds the machinery every importer shares: `Overlay`, the key tables, the task helpers),
torchtune (hydratune.importer_torchtune), litgpt (hydratune.importer_litgpt) and TRL
(hydratune.importer_trl). This module sits above all of them, so none imports it back.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from hydratune.errors import UserError
from hydratune.importer import (
    AXOLOTL_KEYS,
    LLAMAFACTORY_KEYS,
    STAGE_TASKS,
    ImportContext,
    Overlay,
    _samples_completions,
    import_axolotl,
    import_llamafactory,
    import_llamafarm,
    import_model_compose,
    import_simplefoundation,
    load,
)
from hydratune.importer_litgpt import import_litgpt, is_litgpt
from hydratune.importer_torchtune import import_torchtune, missing_checkpoint_note
from hydratune.importer_trl import TRL_SHARED_KEYS, import_trl, looks_like_trl


def detect(data: dict) -> str:
    """model-compose (a list of components), LlamaFarm (a fine_tuner block), LLaMA-Factory or Axolotl (by
    keys only they use), TRL (flat, by keys only TRL's CLI dataclasses define), or SimpleFoundation (flat,
    with model_name_or_path)."""
    components = data.get("components")
    if isinstance(components, list):
        return "model-compose"
    if "fine_tuner" in data or (isinstance(components, dict) and "fine_tuner" in components):
        return "llamafarm"
    if any(isinstance(v, dict) and "_component_" in v for v in data.values()):
        return "torchtune"  # components: `model: {_component_: torchtune.models...}`
    if is_litgpt(data):  # checkpoint_dir with train:/eval: blocks, or a jsonargparse class_path
        return "litgpt"
    axolotl, llamafactory = len(AXOLOTL_KEYS & set(data)), len(LLAMAFACTORY_KEYS & set(data))
    trl = looks_like_trl(data)
    # TRL's own `datasets:` mixture and `do_train` share a name with Axolotl / LLaMA-Factory keys.
    if (axolotl or llamafactory) and not (
        trl and (AXOLOTL_KEYS | LLAMAFACTORY_KEYS) & set(data) <= TRL_SHARED_KEYS
    ):
        return "axolotl" if axolotl > llamafactory else "llama-factory"
    if trl:
        return "trl"
    if "model_name_or_path" in data or "use_lora" in data:
        return "simplefoundation"
    raise UserError(
        "cannot tell the format: expected model-compose `components:` (a list), a LlamaFarm "
        "`fine_tuner:` block, a torchtune config (`_component_:` entries), a LLaMA-Factory YAML (stage, "
        "finetuning_type, cutoff_len, ...), an Axolotl YAML (base_model, datasets, adapter, sequence_len, ...), "
        "a litgpt YAML (checkpoint_dir with train:/eval:), a TRL YAML (use_peft, dataset_name, ...) or a "
        "SimpleFoundation JSON with model_name_or_path"
    )


IMPORTERS = {
    "model-compose": import_model_compose,
    "llamafarm": import_llamafarm,
    "torchtune": import_torchtune,
    "simplefoundation": import_simplefoundation,
    "llama-factory": import_llamafactory,
    "axolotl": import_axolotl,
    "litgpt": import_litgpt,
    "trl": import_trl,
}
# Formats whose file does not name its trainer: `--stage` chooses it. Elsewhere --stage must agree with the file.
STAGE_FROM_FLAG = {"trl"}


def convert(
    path: str | Path,
    name: str,
    conf_dir: str | Path,
    dataset_info: str | Path | None = None,
    context: ImportContext | None = None,
) -> tuple[dict, str, list[str]]:
    """(the experiment config, the detected format, the unmapped keys) for the file at `path`.

    `dataset_info`: LLaMA-Factory's dataset_info.json, to resolve its dataset names into sources.
    `context`: instead of `dataset_info`, what the command line gave (`--stage`); its `notes` collect the
    defaults the import took.
    """
    path, conf_dir = Path(path), Path(conf_dir)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    context = context or ImportContext(dataset_info)
    data = load(path)
    fmt = detect(data)
    overlay = Overlay(conf_dir)
    if fmt in ("llama-factory", "axolotl", "trl"):
        IMPORTERS[fmt](data, overlay, context)
    else:
        IMPORTERS[fmt](data, overlay)
    if context.stage and fmt not in STAGE_FROM_FLAG:
        _check_stage_flag(overlay, context.stage, path.name, fmt)
    if fmt in DATASET_KEYS:
        _what_the_trainer_does_not(data, overlay, fmt, context)
    _kto_batch_of_two(overlay, context)
    _dapo_where_exact(overlay, context)
    folder = overlay.values.get("model.pretrained_model_name_or_path")
    if fmt == "torchtune" and (note := missing_checkpoint_note(path.read_text(), folder)):
        context.notes.append(note)
    return overlay.finish(name), fmt, overlay.unmapped


def _dapo_where_exact(overlay: Overlay, context: ImportContext) -> None:
    """GRPO's dapo (TRL's default loss) divides by the tokens of a whole accumulated batch, which hydratune
    has only with one micro-batch per step on one device: elsewhere an import writes bnpo, the nearest, and
    says so (rule grpo_dapo_window would refuse the experiment)."""
    accumulation = int(overlay.values.get("trainer.accumulate_grad_batches", 1) or 1)
    devices = overlay.values.get("trainer.devices", 1)
    if overlay.values.get("task.aggregation") != "dapo" or (accumulation == 1 and devices in (1, "1")):
        return
    overlay.set("task.aggregation", "bnpo")
    context.notes.append(
        f"task.aggregation: bnpo, not dapo: dapo divides by the completion tokens of the whole accumulated batch "
        f"(accumulation {accumulation}, devices {devices}), which hydratune samples one micro-batch at a time; "
        "bnpo is a token mean per micro-batch"
    )


def _kto_batch_of_two(overlay: Overlay, context: ImportContext) -> None:
    """KTO takes each row's KL reference point from the other rows of its batch: a per-device batch of one
    (LLaMA-Factory's own KTO example) becomes two, with half the accumulation, so the effective batch stays."""
    from hydratune.tasks.kto import KTOTask
    from hydratune.tasks.registry import TASKS

    task = TASKS.get(overlay.choices.get("task", ""))
    if not (task and issubclass(task, KTOTask)) or overlay.values.get("dataset.batch_size") != 1:
        return
    accumulation = int(overlay.values.get("trainer.accumulate_grad_batches", 1))
    overlay.set("dataset.batch_size", 2)
    if accumulation % 2 == 0:
        overlay.set("trainer.accumulate_grad_batches", accumulation // 2)
        kept = f"; trainer.accumulate_grad_batches {accumulation} -> {accumulation // 2} keeps the effective batch"
    else:
        kept = "; the effective batch doubles"
    context.notes.append(
        "dataset.batch_size: 2, not 1: KTO takes each row's KL reference point from the other rows of its batch "
        f"(in a batch of one, the row itself; TRL refuses it){kept}"
    )


# The trainers whose files name a base model and their data, and the keys that name the data.
DATASET_KEYS = {
    "llama-factory": ("dataset",),
    "axolotl": ("datasets", "pretraining_dataset"),
    "trl": ("dataset_name", "datasets", "dataset_mixture", "dataset_mixer"),
    "torchtune": ("dataset",),
}


def _what_the_trainer_does_not(data: dict, overlay: Overlay, fmt: str, context: ImportContext) -> None:
    """Where hydratune's defaults would train something the source file does not: no base model (the tiny
    model would train), datasets that did not map (the demo data would), early stopping (the Hugging Face
    Trainer and torchtune stop only when asked), GRPO's demo stop string and reward. Preference data without validation rows trains unevaluated, as
    the source tool would."""
    if "model" not in overlay.choices and "model.pretrained_model_name_or_path" not in overlay.values:
        raise UserError(f"no base model: the {fmt} file names none that hydratune reads; nothing was written")
    if any(data.get(key) for key in DATASET_KEYS[fmt]) and "dataset.sources" not in overlay.values:
        overlay.set("dataset.sources", [])  # the run stops at once: "dataset.sources is empty"
        context.notes.append(
            "dataset.sources: [] (none of the file's datasets maps, see the lines above): write the sources "
            "before training; the run stops until then"
        )
    if not any(key.startswith("callbacks.early_stopping") for key in overlay.values):
        overlay.set("callbacks.early_stopping", None)  # early_stopping_patience turns it on
    if _samples_completions(overlay.choices.get("task", "sft")):
        overlay.values.setdefault("task.stop", [])  # completions end at EOS, not at hydratune's demo "\n"
        overlay.values.setdefault("task.rewards", [])  # the file's rewards, never the demo exact_match


def _check_stage_flag(overlay: Overlay, stage: str, filename: str, fmt: str) -> None:
    """A file that names its own stage (or is SFT-only) keeps it: `--stage` may only agree, never switch it."""
    task, loss = STAGE_TASKS.get(stage, (stage, None))
    chosen = overlay.choices.get("task", "sft")
    if chosen != task or (loss and overlay.values.get("task.loss") != loss):
        raise UserError(
            f"--stage {stage}: {filename} ({fmt}) names its own stage (task={chosen}); drop --stage or edit the "
            "file; nothing was written"
        )


def render(experiment: dict, source: str, fmt: str) -> str:
    header = (
        "# @package _global_\n"
        f"# Imported by `hydratune import` from {source} ({fmt}); see docs/options.md for the mapping.\n"
    )
    return header + yaml.dump(experiment, Dumper=_PlainDumper, sort_keys=False, default_flow_style=False)


class _PlainDumper(yaml.SafeDumper):
    """Writes a value used twice in full both times: no `&id001`/`*id001` anchors in a file people edit (K14)."""

    def ignore_aliases(self, data) -> bool:
        return True


def write_experiment(
    path: str | Path,
    name: str,
    conf_dir: str | Path,
    force: bool = False,
    dataset_info: str | Path | None = None,
    context: ImportContext | None = None,
) -> tuple[Path, str, list[str]]:
    """Write conf_dir/experiment/NAME.yaml; returns its path, the format taken and the unmapped keys."""
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_-]*$", name):
        raise UserError(f"--name {name!r}: use letters, digits, _ and - (it becomes experiment={name})")
    experiment, fmt, unmapped = convert(path, name, conf_dir, dataset_info, context)
    out = Path(conf_dir) / "experiment" / f"{name}.yaml"
    if out.exists() and not force:
        raise UserError(f"{out} exists; choose another --name or pass --force")
    out.write_text(render(experiment, Path(path).name, fmt))
    return out, fmt, unmapped
