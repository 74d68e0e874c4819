"""`hydratune import`: the reference docs' own configs become experiments that compose and check."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT

from hydratune import schema
from hydratune.cli import main
from hydratune.config import to_plain

DATA = ROOT / "tests" / "data"


def imported(project, capsys, filename: str, name: str) -> tuple[dict, list[str]]:
    from hydratune.preflight import compose

    assert main(["import", str(DATA / filename), "--name", name]) == 0
    err = capsys.readouterr().err
    assert (project / "conf" / "experiment" / f"{name}.yaml").is_file()
    cfg = to_plain(compose([f"experiment={name}"], output_dir=str(project / "out")))
    return cfg, [line for line in err.splitlines() if line.startswith("not mapped: ")]


def test_model_compose_alpaca(project, capsys):
    cfg, unmapped = imported(project, capsys, "model_compose_alpaca.yaml", "mc")
    assert cfg["peft"]["config"]["r"] == 16 and cfg["peft"]["config"]["target_modules"] == [
        "q_proj",
        "v_proj",
    ]
    assert cfg["dataset"]["sources"] == [{"path": "tatsu-lab/alpaca", "split": "train"}]
    assert (cfg["dataset"]["prompt_column"], cfg["dataset"]["response_column"]) == ("instruction", "output")
    assert cfg["optimizer"]["lr"] == pytest.approx(1e-4)  # YAML's "1e-4" string became a number
    assert cfg["trainer"]["max_epochs"] == 3 and cfg["trainer"]["max_steps"] == -1
    assert cfg["trainer"]["accumulate_grad_batches"] == 4 and cfg["trainer"]["precision"] == "16-mixed"
    assert cfg["name"] == "mc"
    assert {line.split(":")[1].strip() for line in unmapped} == {"dataset", "output_dir", "workflows"}


def test_simplefoundation_json(project, capsys):
    cfg, unmapped = imported(project, capsys, "simplefoundation_default.json", "sf")
    assert cfg["model"]["pretrained_model_name_or_path"] == "mistralai/Mistral-7B-v0.1"
    assert cfg["quantization"]["config"]["bnb_4bit_quant_type"] == "nf4"  # load_in_4bit
    assert cfg["scheduler"]["warmup_ratio"] == 0.03 and cfg["optimizer"]["weight_decay"] == 0.01
    assert cfg["dataset"]["batch_size"] == 1 and cfg["model"]["gradient_checkpointing"] is True
    assert [line.split(":")[1].strip() for line in unmapped] == ["output_dir", "dataset"]
    assert cfg["dataset"]["sources"] == []  # its data comes on the command line: never the demo rows instead


def test_llamafarm_yaml(project, capsys):
    cfg, unmapped = imported(project, capsys, "llamafarm_minimal_memory.yaml", "lf")
    assert cfg["peft"]["name"] == "qlora" and cfg["peft"]["config"]["r"] == 8
    assert cfg["peft"]["config"]["lora_alpha"] == 16
    assert cfg["optimizer"]["_target_"] == "bitsandbytes.optim.PagedAdamW8bit"
    assert cfg["trainer"]["accelerator"] == "gpu"  # optimization.cuda -> trainer=cuda
    assert cfg["trainer"]["accumulate_grad_batches"] == 16
    assert cfg["model"]["attn_implementation"] == "flash_attention_2"
    assert sorted(line.split(":")[1].strip() for line in unmapped) == [
        "dataset",
        "push_to_hub",
        "use_cpu_offload",
    ]
    assert cfg["dataset"]["sources"] == []


def test_refuses_to_overwrite_and_unknown_formats(project, capsys, tmp_path):
    assert main(["import", str(DATA / "simplefoundation_default.json"), "--name", "sf"]) == 0
    assert main(["import", str(DATA / "simplefoundation_default.json"), "--name", "sf"]) == 2
    assert "exists" in capsys.readouterr().err
    other = tmp_path / "other.yaml"
    other.write_text("foo: 1\n")
    assert main(["import", str(other)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "cannot tell the format" in err


def test_a_forced_import_that_does_not_check_leaves_the_experiment_it_would_replace(
    project, capsys, tmp_path
):
    """`--force` with a config that fails its check deleted the experiment of that name, a shipped one too, while
    saying "nothing was written" (review K2); and a value used twice is written twice, not as a YAML anchor (K14)."""
    shipped = project / "conf" / "experiment" / "alpaca_lora.yaml"
    before = shipped.read_bytes()
    bad = json.loads((DATA / "simplefoundation_default.json").read_text())
    bad["learning_rate"] = -1.0
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    assert main(["import", str(path), "--name", "alpaca_lora", "--force"]) == 2
    assert "nothing was written" in capsys.readouterr().err
    assert shipped.read_bytes() == before
    assert main(["import", str(path), "--name", "fresh"]) == 2
    assert not (project / "conf" / "experiment" / "fresh.yaml").exists()

    from hydratune.config_import import render

    shared = {"select_rows": {"first": 10}}
    text = render({"dataset": {"ops": [shared, shared]}}, "x.yaml", "test")
    assert "&id" not in text and "*id" not in text and text.count("first: 10") == 2


def test_fp16_and_bf16_both_true_is_refused(project, capsys, tmp_path):
    import json

    both = json.loads((DATA / "simplefoundation_default.json").read_text())
    both["fp16"] = both["bf16"] = True
    path = tmp_path / "both.json"
    path.write_text(json.dumps(both))
    assert main(["import", str(path), "--name", "both"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fp16/bf16 both set" in err
    assert not (project / "conf" / "experiment" / "both.yaml").exists()


# -- LLaMA-Factory and Axolotl ---------------------------------------------------------------------------

LF = DATA / "llamafactory"
AX = DATA / "axolotl"
DATASET_INFO = LF / "dataset_info.json"
# Stand-ins for the preference and RL tasks (their keys as the task registry names them), written into the
# temporary conf/ when a test needs a task to exist, so these tests hold before and after the tasks land.
TASKS = {
    "dpo": {"name": "dpo", "loss": "sigmoid", "beta": 0.1, "label_smoothing": 0.0, "sft_weight": 0.0,
            "simpo_gamma": 0.5},
    "kto": {"name": "kto", "beta": 0.1, "desirable_weight": 1.0, "undesirable_weight": 1.0},
    "reward": {"name": "reward"},
    "grpo": {"name": "grpo", "num_generations": 4, "beta": 0.0, "epsilon": 0.2, "max_new_tokens": 32,
             "temperature": 1.0},
}  # fmt: skip


def with_task(project, name: str) -> None:
    import yaml

    path = project / "conf" / "task" / f"{name}.yaml"
    if not path.exists():  # the real task, once it exists, is used as it is
        path.write_text(yaml.safe_dump(TASKS[name]))
    pairs = project / "conf" / "dataset" / "pairs_keys.yaml"  # makes the preference column keys known
    pairs.write_text(
        "defaults: [sample, _self_]\nprompt_column: prompt\nchosen_column: chosen\nrejected_column: rejected\n"
    )
    schema.known_keys.cache_clear()  # the keys are read once per conf dir and process


def without_task(project, name: str) -> None:
    (project / "conf" / "task" / f"{name}.yaml").unlink(missing_ok=True)


def run_import(capsys, path, name, *extra) -> tuple[int, str, str]:
    code = main(["import", str(path), "--name", name, *extra])
    out, err = capsys.readouterr()
    return code, out, err


def reasons(err: str) -> dict[str, str]:
    """`not mapped: key: value (reason)` lines as {key: the rest}."""
    lines = [line[len("not mapped: ") :] for line in err.splitlines() if line.startswith("not mapped: ")]
    return {line.split(":")[0]: line for line in lines}


def composed(project, name: str, *overrides: str) -> dict:
    from hydratune.preflight import compose

    return to_plain(compose([f"experiment={name}", *overrides], output_dir=str(project / "out")))


def test_llamafactory_sft_with_dataset_info(project, capsys):
    code, out, err = run_import(capsys, LF / "lora_sft.yaml", "lf_sft", "--dataset-info", str(DATASET_INFO))
    assert code == 0 and "as llama-factory" in out
    cfg = composed(project, "lf_sft")
    assert (
        cfg["task"]["name"] == "sft" and cfg["model"]["pretrained_model_name_or_path"] == "Qwen/Qwen2.5-0.5B"
    )
    lora = cfg["peft"]["config"]
    assert (lora["r"], lora["lora_alpha"], lora["modules_to_save"]) == (8, 16, ["lm_head"])
    assert lora["target_modules"] == "all-linear"  # regression: `all` was kept as a module name
    data = cfg["dataset"]
    assert data["format"] == "sharegpt" and data["roles"]["gpt"] == "assistant"
    assert data["sources"] == [
        {"loader": "json", "data_files": {"train": str(ROOT / "data/examples/sharegpt.jsonl")}}
    ]
    # LLaMA-Factory holds val_size out with the Trainer's seed (the run's seed here, 42 when the file is silent)
    assert data["ops"] == [{"select_rows": {"first": 200}}, {"split": {"eval": 0.1, "seed": 42}}]
    assert (data["max_seq_length"], data["batch_size"], data["eval_batch_size"]) == (512, 2, 4)
    assert data["chat_template"] is None  # `template: qwen`: the model's own, from its tokenizer
    trainer = cfg["trainer"]
    assert (trainer["max_epochs"], trainer["max_steps"], trainer["precision"]) == (2, -1, "bf16-mixed")
    assert trainer["val_check_interval"] == 25 * 4 and trainer["log_every_n_steps"] == 5
    assert trainer["strategy"] == "deepspeed_stage_2"  # deepspeed: ...ds_z2_config.json
    assert cfg["callbacks"]["model_checkpoint"]["save_steps"] == 50
    assert set(reasons(err)) == {"output_dir", "ddp_timeout"}
    assert data["num_proc"] == 4  # preprocessing_num_workers


def test_llamafactory_dataset_names_need_dataset_info(project, capsys):
    code, _, err = run_import(capsys, LF / "lora_sft.yaml", "lf_nodata")
    assert code == 0 and "--dataset-info PATH" in reasons(err)["dataset"]
    assert "no dataset was imported" in reasons(err)["template"]
    assert composed(project, "lf_nodata")["dataset"]["format"] == "alpaca"  # the default data, untouched
    # An alpaca entry: a user and an assistant turn with the model's chat template, as LLaMA-Factory
    # renders it; columns are renamed only where they differ from instruction, input, output.
    alpaca = project / "alpaca.yaml"
    alpaca.write_text(
        (LF / "lora_sft.yaml").read_text().replace("dataset: words_chat", "dataset: words_alpaca")
    )
    info = json.loads(DATASET_INFO.read_text())
    info["words_alpaca"]["columns"]["prompt"] = "question"
    (project / "dataset_info.json").write_text(json.dumps(info).replace("../../../", f"{ROOT}/"))
    code, _, err = run_import(
        capsys, alpaca, "lf_alpaca", "--dataset-info", str(project / "dataset_info.json")
    )
    data = composed(project, "lf_alpaca")["dataset"]
    assert code == 0 and data["format"] == "alpaca_chat" and data["chat_template"] is None
    assert data["ops"][:2] == [
        {"select_rows": {"first": 200}},
        {"rename_columns": {"question": "instruction"}},
    ]
    assert data["sources"][0]["data_files"]["train"] == str(ROOT / "data" / "sample" / "train.jsonl")
    assert "template" not in reasons(err)


def test_lora_target_all_is_all_linear_in_llamafarm_too(project, capsys, tmp_path):
    path = tmp_path / "lf.yaml"
    path.write_text("fine_tuner:\n  type: llamafactory\n  config:\n    lora_target: all\n    stage: sft\n")
    assert run_import(capsys, path, "lfarm")[0] == 0
    assert composed(project, "lfarm")["peft"]["config"]["target_modules"] == "all-linear"


@pytest.mark.parametrize(
    ("fixture", "stage", "task"),
    [(LF / "lora_dpo.yaml", "stage: dpo", "dpo"), (AX / "dpo.yaml", "rl: dpo", "dpo")],
)
def test_a_stage_without_its_task_is_refused(project, capsys, fixture, stage, task):
    without_task(project, task)
    code, out, err = run_import(capsys, fixture, "pref")
    assert code == 2 and not out
    assert len(err.strip().splitlines()) == 1 and f"{stage}: hydratune has no {task} task yet" in err
    assert not (project / "conf" / "experiment" / "pref.yaml").exists()  # never a silent SFT run


@pytest.mark.parametrize(("text", "key"), [("stage: dpo\n", "stage: bco"), ("rl: dpo\n", "rl: bco")])
def test_an_unknown_stage_is_refused(project, capsys, tmp_path, text, key):
    path = tmp_path / "x.yaml"
    path.write_text(
        (LF / "lora_dpo.yaml" if "stage" in text else AX / "dpo.yaml")
        .read_text()
        .replace(text, key.replace(":", ": ").replace("  ", " ") + "\n")
    )  # noqa: E501
    code, _, err = run_import(capsys, path, "bco")
    assert code == 2 and len(err.strip().splitlines()) == 1 and f"{key}: hydratune has no such task" in err


def test_llamafactory_dpo_maps_to_the_dpo_task(project, capsys):
    with_task(project, "dpo")
    code, _, err = run_import(capsys, LF / "lora_dpo.yaml", "lf_dpo", "--dataset-info", str(DATASET_INFO))
    assert code == 0
    cfg = composed(project, "lf_dpo")
    task = cfg["task"]
    assert (task["name"], task["loss"], task["beta"]) == ("dpo", "simpo", 0.2)
    assert (task["sft_weight"], task["simpo_gamma"], task["label_smoothing"]) == (0.5, 0.8, 0.0)
    data = cfg["dataset"]
    assert (data["prompt_column"], data["chosen_column"], data["rejected_column"]) == (
        "instruction",
        "chosen",
        "rejected",
    )
    assert data["sources"][0]["data_files"]["train"] == str(LF / "pairs.jsonl")
    assert cfg["quantization"]["config"]["bnb_4bit_quant_type"] == "nf4"  # quantization_bit: 4
    assert cfg["peft"]["config"]["target_modules"] == ["q_proj", "v_proj"]
    assert "not used by task=dpo" in reasons(err)["kto_chosen_weight"]


@pytest.mark.parametrize(
    ("stage", "task", "extra", "expect", "unmapped"),
    [
        ("kto", "kto", "kto_chosen_weight: 1.5\nkto_rejected_weight: 0.5\n",
         {"beta": 0.2, "desirable_weight": 1.5, "undesirable_weight": 0.5}, {"pref_loss", "pref_ftx"}),
        ("rm", "reward", "", {}, {"pref_beta", "pref_loss", "pref_ftx"}),
        ("ppo", "grpo", "max_new_tokens: 64\ntemperature: 0.7\nreward_model: saves/rm\nppo_epochs: 2\n",
         {"beta": 0.2, "max_new_tokens": 64, "temperature": 0.7, "top_p": 0.7, "num_iterations": 2},
         {"stage", "reward_model", "pref_beta"}),
    ],
)  # fmt: skip
def test_llamafactory_stages_map_to_tasks(project, capsys, tmp_path, stage, task, extra, expect, unmapped):
    with_task(project, task)
    text = (LF / "lora_dpo.yaml").read_text().replace("stage: dpo", f"stage: {stage}")
    text = "\n".join(
        line for line in text.splitlines() if not line.startswith(("simpo_gamma", "dpo_label", "kto_"))
    )
    path = tmp_path / f"{stage}.yaml"
    path.write_text(text + "\n" + extra)
    code, _, err = run_import(capsys, path, stage)
    assert code == 0
    cfg = composed(project, stage)
    assert cfg["task"]["name"] == task and {k: cfg["task"][k] for k in expect} == expect
    assert unmapped <= set(reasons(err))
    if stage == "ppo":
        assert "value model is not used" in reasons(err)["stage"] and "ppo_epochs" not in reasons(err)


def test_axolotl_lora_chat(project, capsys):
    code, out, err = run_import(capsys, AX / "lora.yaml", "ax_lora")
    assert code == 0 and "as axolotl" in out
    cfg = composed(project, "ax_lora")
    lora = cfg["peft"]["config"]
    assert (cfg["peft"]["name"], lora["r"], lora["target_modules"]) == ("lora", 32, "all-linear")
    assert lora["modules_to_save"] == ["embed_tokens", "lm_head"]
    data = cfg["dataset"]
    assert data["format"] == "sharegpt" and data["sources"] == [
        {"path": "someone/words-chat", "split": "train"}
    ]
    assert (data["conversations_column"], data["role_key"], data["content_key"]) == (
        "conversations",
        "from",
        "value",
    )
    # the file's speakers (the preset's own user/assistant/tool names stay beside them)
    assert {"human": "user", "gpt": "assistant", "system": "system"}.items() <= data["roles"].items()
    assert (data["max_seq_length"], data["packing"], data["batch_size"], data["train_on"]) == (
        1024,
        True,
        2,
        "response",
    )
    assert data["ops"] == [{"split": {"eval": 0.05, "seed": 42}}] and data["chat_template"] is None
    trainer = cfg["trainer"]
    assert trainer["precision"] == "bf16-mixed"  # bf16: auto
    assert (trainer["val_check_interval"], trainer["check_val_every_n_epoch"]) == (
        0.25,
        1,
    )  # evals_per_epoch: 4
    assert cfg["optimizer"]["_target_"] == "bitsandbytes.optim.AdamW8bit" and cfg["optimizer"]["lr"] == 2e-4
    assert (
        cfg["model"]["attn_implementation"] == "flash_attention_2" and cfg["quantization"]["method"] == "none"
    )
    assert cfg["eval_generations"]["max_new_tokens"] == 128
    assert set(reasons(err)) == {"dataset_prepared_path", "output_dir", "eval_sample_packing",
                                 "pad_to_sequence_len", "saves_per_epoch", "special_tokens"}  # fmt: skip


def test_axolotl_full_finetune_and_dataset_types(project, capsys, tmp_path):
    path = tmp_path / "full.yaml"
    path.write_text(
        "base_model: Qwen/Qwen2.5-0.5B\nsequence_len: 256\nmicro_batch_size: 1\nwarmup_steps: 0.1\n"
        "dataset_exact_deduplication: true\nval_set_size: 0.1\nattn_implementation: eager\n"
        "fsdp_config:\n  fsdp_sharding_strategy: SHARD_GRAD_OP\n  fsdp_sync_module_states: true\n"
        "datasets:\n  - path: data/train.jsonl\n    type: completion\n    field: body\n"
    )
    code, _, err = run_import(capsys, path, "ax_full")
    assert code == 0 and "FSDPStrategy chooses it" in reasons(err)["fsdp_config.fsdp_sync_module_states"]
    cfg = composed(project, "ax_full")
    assert cfg["peft"]["name"] == "none"  # no adapter: Axolotl trains every weight
    assert cfg["scheduler"]["warmup_ratio"] == 0.1  # a float warmup_steps below 1 is a ratio
    assert cfg["dataset"]["ops"] == [{"dedup": True}, {"split": {"eval": 0.1, "seed": 42}}]
    assert cfg["model"]["attn_implementation"] == "eager"
    assert cfg["trainer"]["strategy"]["sharding_strategy"] == "SHARD_GRAD_OP"
    assert cfg["dataset"]["format"] == "text" and cfg["dataset"]["text_column"] == "body"
    assert cfg["dataset"]["sources"] == [{"loader": "json", "data_files": {"train": "data/train.jsonl"}}]
    path.write_text(
        "base_model: x/y\nadapter: lora\ndatasets:\n  - path: tatsu-lab/alpaca\n    type: alpaca\n"
    )
    assert run_import(capsys, path, "ax_alpaca")[0] == 0
    assert composed(project, "ax_alpaca")["dataset"]["format"] == "alpaca"
    path.write_text("base_model: x/y\nadapter: lora\ndatasets:\n  - path: a/b\n    type: chat_template\n")
    assert run_import(capsys, path, "ax_chat")[0] == 0
    data = composed(project, "ax_chat")["dataset"]
    assert (data["format"], data["messages_column"]) == (
        "messages",
        "messages",
    )  # role/content: plain messages
    path.write_text("base_model: x/y\nadapter: lora\ndatasets:\n  - path: a/b\n    type: input_output\n")
    assert run_import(capsys, path, "ax_io")[0] == 0
    assert composed(project, "ax_io")["dataset"]["format"] == "segments"
    path.write_text("base_model: x/y\nadapter: lora\ndatasets:\n  - path: a/b\n    type: oasst\n")
    code, _, err = run_import(capsys, path, "ax_other")
    assert code == 0 and "types with a counterpart" in reasons(err)["datasets.0.type"]


def test_axolotl_dpo_and_grpo_map_to_their_tasks(project, capsys, tmp_path):
    with_task(project, "dpo")
    code, _, err = run_import(capsys, AX / "dpo.yaml", "ax_dpo")
    assert code == 0
    cfg = composed(project, "ax_dpo")
    assert (cfg["task"]["name"], cfg["task"]["loss"], cfg["task"]["beta"]) == ("dpo", "sigmoid", 0.1)
    assert (
        cfg["peft"]["name"] == "qlora"
        and cfg["optimizer"]["_target_"] == "bitsandbytes.optim.PagedAdamW32bit"
    )
    strategy = cfg["trainer"]["strategy"]
    assert "FSDPStrategy" in strategy["_target_"] and strategy["state_dict_type"] == "full"
    assert "task=dpo" in reasons(err)["datasets.0.type"]  # the pair columns are written by hand
    with_task(project, "grpo")
    path = tmp_path / "grpo.yaml"
    text = (
        "base_model: x/y\nadapter: lora\nrl: grpo\ntrl:\n  beta: 0.04\n  num_generations: 8\n"
        "  max_completion_length: 48\n  use_vllm: true\n  reward_funcs: [rewards.exact, accuracy_reward]\n"
        "  loss_type: bnpo\n  scale_rewards: none\n  epsilon_high: 0.28\n"
        "  reward_weights: [2.0, 1.0]\nmicro_batch_size: 16\ngradient_accumulation_steps: 4\n"
    )
    path.write_text(text)
    code, _, err = run_import(capsys, path, "ax_grpo")
    cfg = composed(project, "ax_grpo")
    task = cfg["task"]
    assert code == 0 and (task["name"], task["beta"], task["num_generations"], task["max_new_tokens"]) == (
        "grpo",
        0.04,
        8,
        48,
    )
    # The dotted reward with its weight; TRL's built-in name is reported, never the demo exact_match kept.
    assert task["rewards"] == [{"_target_": "rewards.exact", "weight": 2.0}] and task["stop"] == []
    # TRL's spellings of the GRPO loss (Axolotl hands its trl block to TRL's GRPOTrainer)
    assert (task["aggregation"], task["scale_rewards"], task["epsilon_high"]) == ("bnpo", False, 0.28)
    # dapo with accumulation 4 is bnpo, said (dapo needs one micro-batch per step: rule grpo_dapo_window)
    path.write_text(text.replace("loss_type: bnpo", "loss_type: dapo"))
    code, _, err = run_import(capsys, path, "ax_grpo_dapo")
    assert code == 0 and composed(project, "ax_grpo_dapo")["task"]["aggregation"] == "bnpo"
    assert "note: task.aggregation: bnpo, not dapo" in err
    assert {"trl.use_vllm", "reward_funcs"} <= set(reasons(err))
    # Axolotl hands micro_batch_size to TRL, which counts completions: 16 = 2 prompts x 8 generations.
    assert (cfg["dataset"]["batch_size"], cfg["trainer"]["accumulate_grad_batches"]) == (2, 4)
    path.write_text(
        text.replace("micro_batch_size: 16\ngradient_accumulation_steps: 4\n", "micro_batch_size: 3\n")
    )
    code, _, err = run_import(capsys, path, "ax_grpo3")
    assert code == 2 and "micro_batch_size: 3" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fixture", "extra"),
    [
        (
            LF / "lora_sft.yaml",
            ["--dataset-info", str(DATASET_INFO)],
        ),  # the data: shipped files via dataset_info
        (AX / "lora.yaml", []),  # the data: a hub name, pointed at the shipped sample below
    ],
)
def test_imported_config_passes_preflight_and_trains_two_steps(project, capsys, fixture, extra):
    import json

    from hydratune.preflight import check_config, compose
    from hydratune.train import run

    for folder in ("data", "assets"):
        (project / folder).symlink_to(ROOT / folder)
    assert run_import(capsys, fixture, "imported", *extra)[0] == 0
    offline = ["model=tiny_llama", "trainer=cpu", "trainer.precision=32-true", "optimizer=adamw_torch",
               "model.attn_implementation=sdpa", "trainer.max_steps=2", "trainer.max_epochs=-1",
               "dataset.batch_size=2", "dataset.max_seq_length=128", "dataset.truncation=truncate",
               "eval_before_training=false",
               "callbacks=none", "logger=none"]  # fmt: skip
    if not extra:  # model=tiny_llama dataset=sample, as a user without the hub data would try it
        offline += [
            "dataset=sample",
            f"dataset.sources=[{{loader:json,data_files:{{train:{ROOT}/data/examples/sharegpt.jsonl}}}}]",
        ]
    out = project / "run"
    check_config(to_plain(compose(["experiment=imported", *offline], output_dir=str(out))))
    run(compose(["experiment=imported", *offline], output_dir=str(out)))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["train_loss"] > 0 and metrics["artifact"] == "adapter"


@pytest.mark.parametrize(
    "text",
    [
        "stage: sft\nfinetuning_type: lora\nmodel_name_or_path: a/b\nhf_hub_token: hf_SECRET1\nhub_token: hf_SECRET2\n",
        "base_model: a/b\ndatasets: []\nwandb_api_key: SECRET3\nhf_use_auth_token: true\neos_token: <eos>\n",
    ],
    ids=["llama-factory", "axolotl"],
)
def test_unmapped_credentials_are_never_echoed(project, capsys, tmp_path, text):
    """A token in another tool's config is reported by name, its value redacted, and written nowhere."""
    path = tmp_path / "with_token.yaml"
    path.write_text(text)
    code, out, err = run_import(capsys, path, "tok")
    written = (project / "conf" / "experiment" / "tok.yaml").read_text()
    assert code == 0 and "SECRET" not in err + out + written
    shown = reasons(err)
    assert all("<redacted>" in line for key, line in shown.items() if key.endswith(("token", "api_key")) and
               key not in ("hf_use_auth_token", "eos_token"))  # fmt: skip
    assert any(key.endswith(("hub_token", "api_key")) for key in shown)
