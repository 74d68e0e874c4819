"""`hydratune import` never lets one of hydratune's defaults train what the source file does not: the cases a
review of real LLaMA-Factory, Axolotl, torchtune and TRL example configs found (a crash, an adapter method
swapped for LoRA, a reward model read as SFT, the demo data or model standing in for ones that did not map,
LLaMA-Factory's own defaults, early stopping nobody asked for, GRPO's demo stop string and reward)."""

from __future__ import annotations

import json

import pytest
from test_import import DATASET_INFO, LF, composed, reasons, run_import, with_task


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


AXOLOTL_LORA = (
    "base_model: Qwen/Qwen2.5-0.5B\nadapter: lora\nlora_r: 16\nlora_alpha: 32\nlora_target_linear: true\n"
    "datasets:\n  - path: mhenrichsen/alpaca_2k_test\n    type: alpaca\nsequence_len: 512\n"
    "micro_batch_size: 2\nnum_epochs: 1\nlearning_rate: 0.0002\n"
)


def test_axolotl_evals_per_epoch_zero_is_no_schedule_not_a_crash(project, capsys, tmp_path):
    """Nine upstream Axolotl examples set evals_per_epoch: 0 (ZeroDivisionError before)."""
    path = write(tmp_path, "ax.yml", AXOLOTL_LORA + "evals_per_epoch: 0\nsaves_per_epoch: 1\n")
    code, _, err = run_import(capsys, path, "ax_zero")
    assert code == 0, err
    assert "no evaluation schedule" in reasons(err)["evals_per_epoch"]
    assert composed(project, "ax_zero")["trainer"]["val_check_interval"] == 40  # the default, untouched


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ((LF / "lora_sft.yaml").read_text().replace("finetuning_type: lora", "finetuning_type: oft"),
         "finetuning_type: oft"),
        (AXOLOTL_LORA.replace("adapter: lora", "adapter: ia3"), "adapter: ia3"),
    ],
)  # fmt: skip
def test_an_adapter_method_hydratune_has_not_stops_the_import(project, capsys, tmp_path, text, key):
    """The group's default (peft=lora) would otherwise train LoRA under the name of another method."""
    code, _, err = run_import(
        capsys, write(tmp_path, "m.yaml", text), "method", "--dataset-info", str(DATASET_INFO)
    )
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert key in err and "nothing was written" in err
    assert not (project / "conf" / "experiment" / "method.yaml").exists()


def test_axolotl_reward_model_is_the_reward_task(project, capsys, tmp_path):
    with_task(project, "reward")
    text = (
        "base_model: Qwen/Qwen2.5-0.5B\nreward_model: true\nnum_labels: 1\n"
        "datasets:\n  - path: argilla/distilabel-intel-orca-dpo-pairs\n    type: bradley_terry.chat_template\n"
        "val_set_size: 0.1\nmicro_batch_size: 2\nlearning_rate: 0.00001\nbf16: true\n"
    )
    code, _, err = run_import(capsys, write(tmp_path, "rm.yaml", text), "ax_rm")
    assert code == 0, err
    cfg = composed(project, "ax_rm")
    assert cfg["task"]["name"] == "reward" and cfg["peft"]["name"] == "none"
    assert "reward_model" not in reasons(err)  # read, not reported with LLaMA-Factory's meaning
    code, _, err = run_import(capsys, write(tmp_path, "prm.yaml", text.replace("reward_model", "process_reward_model")), "ax_prm")  # fmt: skip
    assert code == 2 and "process_reward_model" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_import(
        capsys, write(tmp_path, "vl.yaml", AXOLOTL_LORA + "processor_type: AutoProcessor\n"), "vl"
    )
    assert code == 2 and "multimodal" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("fmt", "text", "needle"),
    [
        ("llama-factory", "do_predict: true\nmodel_name_or_path: x/y\nfinetuning_type: lora\nstage: sft\n"
         "adapter_name_or_path: saves/lora\n", "do_predict: true without do_train"),
        ("llama-factory", "model: Qwen/Qwen3-4B\ntrain_dataset: data/train.yaml\ncutoff_len: 1024\n"
         "peft_config: {name: lora}\n", "v1 layout"),
        ("llama-factory", "stage: sft\ndo_train: true\nfinetuning_type: lora\ncutoff_len: 512\n", "no base model"),
        ("llama-factory", "model_name_or_path: Qwen/Qwen3-VL-4B-Instruct\nstage: sft\ndo_train: true\n"
         "finetuning_type: lora\nimage_max_pixels: 262144\n", "multimodal"),
        ("torchtune", "model:\n  _component_: torchtune.models.llama3_2.llama3_2_1b\ncheckpointer:\n"
         "  _component_: torchtune.training.FullModelHFCheckpointer\n  checkpoint_dir: /tmp/Llama-3.2-1B\n"
         "prompt: {system: null, user: Tell me a joke.}\nmax_new_tokens: 300\n", "generation, evaluation"),
    ],
)  # fmt: skip
def test_files_that_do_not_train_are_refused(project, capsys, tmp_path, fmt, text, needle):
    code, _, err = run_import(capsys, write(tmp_path, "f.yaml", text), "chore")
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_datasets_that_do_not_map_leave_no_sources_rather_than_the_demo_data(project, capsys, tmp_path):
    """Axolotl's `alpaca:phi` type has no counterpart: the run must stop, not train on data/sample."""
    text = AXOLOTL_LORA.replace("type: alpaca", "type: alpaca:phi")
    code, _, err = run_import(capsys, write(tmp_path, "phi.yml", text), "ax_phi")
    assert code == 0 and "datasets.0.type" in reasons(err)
    assert "dataset.sources: []" in err
    assert composed(project, "ax_phi")["dataset"]["sources"] == []
    # The same for LLaMA-Factory names without --dataset-info.
    code, _, err = run_import(capsys, LF / "lora_sft.yaml", "lf_noinfo")
    assert code == 0 and composed(project, "lf_noinfo")["dataset"]["sources"] == []


def test_early_stopping_only_when_the_file_asks(project, capsys, tmp_path):
    assert run_import(capsys, write(tmp_path, "a.yml", AXOLOTL_LORA), "ax_es")[0] == 0
    assert composed(project, "ax_es")["callbacks"]["early_stopping"] is None
    text = AXOLOTL_LORA + "early_stopping_patience: 3\n"
    assert run_import(capsys, write(tmp_path, "b.yml", text), "ax_es3")[0] == 0
    assert composed(project, "ax_es3")["callbacks"]["early_stopping"]["patience"] == 3


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("ax.yml", AXOLOTL_LORA + "save_strategy: 'no'\n"),
        (
            "trl.yaml",
            "model_name_or_path: Qwen/Qwen2.5-0.5B\ndataset_name: someone/words\nsave_strategy: 'no'\n",
        ),
    ],
)
def test_save_strategy_no_writes_no_step_checkpoints(project, capsys, tmp_path, name, text):
    """The HF Trainer's save_strategy "no" (TRL, Axolotl, LLaMA-Factory): no step checkpoints; last.ckpt is
    kept for resume. Before, the import reported it and step checkpoints were written at evaluations."""
    code, _, err = run_import(capsys, write(tmp_path, name, text), "no_saves")
    assert code == 0 and "save_strategy" not in reasons(err)
    assert composed(project, "no_saves")["callbacks"]["model_checkpoint"]["save_total_limit"] == 0


def test_the_base_models_cache_dir_is_imported(project, capsys, tmp_path):
    """LlamaFarm's and LLaMA-Factory's cache_dir is where the base model's hub files are: model.cache_dir
    (reported as having no counterpart before, O13)."""
    text = (LF / "lora_sft.yaml").read_text() + "\ncache_dir: /models/cache\n"
    code, _, err = run_import(
        capsys, write(tmp_path, "lf.yaml", text), "lf_cache", "--dataset-info", str(DATASET_INFO)
    )
    assert code == 0 and "cache_dir" not in reasons(err)
    assert composed(project, "lf_cache")["model"]["cache_dir"] == "/models/cache"


def test_llamafactory_lora_defaults_and_bf16_weights(project, capsys, tmp_path):
    """LLaMA-Factory's examples set lora_rank 8 and no alpha: its alpha is twice the rank (scale 2), not the
    peft=lora preset's 32; the frozen base loads in bf16 as LLaMA-Factory loads it."""
    text = "\n".join(
        line for line in (LF / "lora_sft.yaml").read_text().splitlines()
        if not line.startswith(("lora_alpha", "lora_dropout", "lora_target", "lora_rank"))
    )  # fmt: skip
    code, _, err = run_import(
        capsys, write(tmp_path, "lf.yaml", text), "lf_defaults", "--dataset-info", str(DATASET_INFO)
    )
    assert code == 0, err
    cfg = composed(project, "lf_defaults")
    lora = cfg["peft"]["config"]
    assert (lora["r"], lora["lora_alpha"], lora["lora_dropout"], lora["target_modules"]) == (
        8,
        16,
        0.0,
        "all-linear",
    )
    assert cfg["model"]["dtype"] == "bfloat16" and cfg["trainer"]["precision"] == "bf16-mixed"
    full = text.replace("finetuning_type: lora", "finetuning_type: full")
    assert (
        run_import(
            capsys, write(tmp_path, "full.yaml", full), "lf_full", "--dataset-info", str(DATASET_INFO)
        )[0]
        == 0
    )
    assert (
        composed(project, "lf_full")["model"]["dtype"] == "float32"
    )  # full fine-tuning: fp32 master weights


def test_llamafactory_pretraining_is_packed_raw_text(project, capsys, tmp_path):
    rows = tmp_path / "c4.jsonl"
    rows.write_text("".join(json.dumps({"text": f"document {i} " * 20}) + "\n" for i in range(4)))
    info = write(
        tmp_path,
        "dataset_info.json",
        json.dumps({"c4_demo": {"file_name": str(rows), "columns": {"prompt": "text"}}}),
    )
    text = (
        (LF / "lora_sft.yaml")
        .read_text()
        .replace("stage: sft", "stage: pt")
        .replace("dataset: words_chat", "dataset: c4_demo")
    )
    text = text.replace("packing: false\n", "")
    code, _, err = run_import(capsys, write(tmp_path, "pt.yaml", text), "lf_pt", "--dataset-info", str(info))
    assert code == 0, err
    data = composed(project, "lf_pt")["dataset"]
    assert (data["format"], data["text_column"], data["packing"], data["train_on"], data["truncation"]) == (
        "text",
        "text",
        True,
        "all",
        "split",
    )
    assert "pre-training rows are plain text" in reasons(err)["template"]


def test_llamafactory_galore_loraplus_and_max_samples_per_dataset(project, capsys, tmp_path):
    text = (
        (LF / "lora_sft.yaml")
        .read_text()
        .replace("dataset: words_chat", "dataset: words_alpaca,words_alpaca")
    )
    code, _, err = run_import(capsys, write(tmp_path, "lp.yaml", text + "loraplus_lr_ratio: 16.0\n"), "lf_lp", "--dataset-info", str(DATASET_INFO))  # fmt: skip
    assert code == 0, err
    cfg = composed(project, "lf_lp")
    assert cfg["optimizer"]["loraplus_lr_ratio"] == 16.0 and "loraplus_lr_ratio" not in reasons(err)
    # LLaMA-Factory cuts each dataset to max_samples, then mixes them.
    assert [s["ops"] for s in cfg["dataset"]["sources"]] == [[{"select_rows": {"first": 200}}]] * 2
    assert {"select_rows": {"first": 200}} not in cfg["dataset"]["ops"]
    galore = text.replace("finetuning_type: lora", "finetuning_type: full") + (
        "use_galore: true\ngalore_rank: 128\ngalore_scale: 2.0\ngalore_target: all\ngalore_layerwise: true\n"
    )
    code, _, err = run_import(capsys, write(tmp_path, "g.yaml", galore), "lf_galore", "--dataset-info", str(DATASET_INFO))  # fmt: skip
    assert code == 0, err
    optimizer = composed(project, "lf_galore")["optimizer"]
    assert optimizer["_target_"] == "galore_torch.GaLoreAdamW"
    assert (optimizer["galore"]["rank"], optimizer["galore"]["scale"]) == (128, 2.0)
    assert set(reasons(err)) & {"use_galore", "galore_rank", "galore_target"} == set()
    assert "galore_layerwise" in reasons(err)


def test_llamafactory_kto_columns_and_missing_validation(project, capsys, tmp_path):
    with_task(project, "kto")
    rows = tmp_path / "kto.jsonl"
    rows.write_text(json.dumps({"instruction": "a", "output": "b", "tag": True}) + "\n")
    info = write(tmp_path, "dataset_info.json", json.dumps(
        {"kto": {"file_name": str(rows), "columns": {"prompt": "instruction", "response": "output", "kto_tag": "tag"}}}
    ))  # fmt: skip
    text = (
        (LF / "lora_dpo.yaml")
        .read_text()
        .replace("stage: dpo", "stage: kto")
        .replace("dataset: words_pairs", "dataset: kto")
    )
    text = "\n".join(
        line for line in text.splitlines() if not line.startswith(("val_size", "simpo", "dpo_", "pref_loss"))
    )
    code, _, err = run_import(
        capsys, write(tmp_path, "kto.yaml", text), "lf_kto", "--dataset-info", str(info)
    )
    assert code == 0, err
    data = composed(project, "lf_kto")["dataset"]
    assert (data["prompt_column"], data["completion_column"], data["label_column"]) == (
        "instruction",
        "output",
        "tag",
    )
    assert "chosen_column" not in open(project / "conf" / "experiment" / "lf_kto.yaml").read()
    assert "validation" not in reasons(err)  # trains unevaluated, as LLaMA-Factory does without val_size
    # per_device_train_batch_size 1 x accumulation 8: a batch of one is KTO against itself (TRL refuses it)
    cfg = composed(project, "lf_kto")
    assert (cfg["dataset"]["batch_size"], cfg["trainer"]["accumulate_grad_batches"]) == (2, 4)
    assert "note: dataset.batch_size: 2, not 1: KTO takes each row's KL reference point" in err


def test_grpo_imports_stop_at_eos_and_keep_only_the_files_rewards(project, capsys, tmp_path):
    with_task(project, "grpo")
    text = (
        "base_model: x/y\nadapter: lora\nrl: grpo\nmicro_batch_size: 8\n"
        "trl:\n  num_generations: 8\n  max_completion_length: 256\n"
        "datasets:\n  - path: openai/gsm8k\n    name: main\n    type: gsm8k.axolotl_transform\n"
    )
    code, _, err = run_import(capsys, write(tmp_path, "g.yaml", text), "ax_grpo_eos")
    assert code == 0, err
    task = composed(project, "ax_grpo_eos")["task"]
    assert task["stop"] == [] and task["rewards"] == []  # never the demo "\n" and exact_match


def test_torchtune_grpo_num_steps_is_the_step_limit(project, capsys, tmp_path):
    import yaml
    from test_import_torchtune import TT

    config = yaml.safe_load((TT / "lora_single_device.yaml").read_text())
    config["loss"] = {"_component_": "torchtune.dev.rl.loss.GRPOSimpleLoss", "kl_coeff": 0.01}
    config["num_steps"] = 200
    with_task(project, "grpo")
    code, _, err = run_import(capsys, write(tmp_path, "grpo.yaml", yaml.safe_dump(config)), "tt_grpo")
    assert code == 0, err
    assert composed(project, "tt_grpo")["trainer"]["max_steps"] == 200 and "num_steps" not in reasons(err)


def test_axolotl_bf16_loads_the_base_in_bf16(project, capsys, tmp_path):
    assert run_import(capsys, write(tmp_path, "bf.yml", AXOLOTL_LORA + "bf16: true\n"), "ax_bf16")[0] == 0
    assert composed(project, "ax_bf16")["model"]["dtype"] == "bfloat16"
    text = AXOLOTL_LORA + "bf16: true\ntorch_dtype: float32\n"
    assert run_import(capsys, write(tmp_path, "fp.yml", text), "ax_fp32")[0] == 0
    assert composed(project, "ax_fp32")["model"]["dtype"] == "float32"  # the file's own dtype wins


def test_trl_sft_file_with_a_chat_template_reads_conversations(project, capsys, tmp_path):
    """The handbook's smollm2 SFT recipe names smoltalk (a `messages` dataset) and a chat_template."""
    text = (
        "model_name_or_path: HuggingFaceTB/SmolLM2-1.7B\ndataset_name: HuggingFaceTB/smoltalk\n"
        "chat_template: \"{% for message in messages %}{{ message['content'] }}{% endfor %}\"\n"
        "learning_rate: 3.0e-04\nper_device_train_batch_size: 4\n"
    )
    code, _, err = run_import(capsys, write(tmp_path, "sft.yaml", text), "trl_chat", "--stage", "sft")
    assert code == 0, err
    assert composed(project, "trl_chat")["dataset"]["format"] == "messages"
    assert (
        "chat_template" not in reasons(err) or "conversational rows only" not in reasons(err)["chat_template"]
    )


def test_axolotl_pretraining_dataset_is_a_packed_text_stream(project, capsys, tmp_path):
    text = (
        "base_model: TinyLlama/TinyLlama_v1.1\npretraining_dataset:\n  - path: allenai/c4\n    name: en\n"
        "    type: pretrain\nsequence_len: 2048\nmax_steps: 200\nmicro_batch_size: 2\n"
    )
    code, _, err = run_import(capsys, write(tmp_path, "pre.yml", text), "ax_pre")
    assert code == 0, err
    data = composed(project, "ax_pre")["dataset"]
    assert data["sources"] == [{"path": "allenai/c4", "split": "train", "streaming": True, "name": "en"}]
    assert (data["format"], data["text_column"], data["train_on"], data["packing"], data["truncation"]) == (
        "text",
        "text",
        "all",
        True,
        "split",
    )
    assert "pretraining_dataset" not in reasons(err) and "max_rows" in err


def test_llamafactory_freeze_trains_the_last_layers_only_and_max_steps_wins(project, capsys, tmp_path):
    text = (LF / "lora_sft.yaml").read_text().replace("finetuning_type: lora", "finetuning_type: freeze")
    text += "freeze_trainable_layers: 4\nfreeze_trainable_modules: all\nmax_steps: 30\n"
    code, _, err = run_import(
        capsys, write(tmp_path, "fz.yaml", text), "lf_fz", "--dataset-info", str(DATASET_INFO)
    )
    assert code == 0, err
    cfg = composed(project, "lf_fz")
    assert (cfg["peft"]["trainable_layers"], cfg["peft"]["trainable_modules"]) == (
        4,
        [],
    )  # lm_head stays frozen
    # The Trainer's max_steps overrides num_train_epochs (2.0 in the file, read before it).
    assert (cfg["trainer"]["max_steps"], cfg["trainer"]["max_epochs"]) == (30, -1)
    code, _, err = run_import(
        capsys, write(tmp_path, "fx.yaml", text + "freeze_extra_modules: lm_head\n"), "lf_fx",
        "--dataset-info", str(DATASET_INFO),
    )  # fmt: skip
    assert code == 0 and composed(project, "lf_fx")["peft"]["trainable_modules"] == ["lm_head"]


def test_axolotl_lora_target_linear_wins_over_a_module_list_in_either_order(project, capsys, tmp_path):
    for i, text in enumerate(
        [
            AXOLOTL_LORA + "lora_target_modules: [q_proj, v_proj]\n",
            AXOLOTL_LORA.replace("lora_target_linear: true\n", "lora_target_modules: [q_proj]\n")
            + "lora_target_linear: true\n",
        ]
    ):
        assert run_import(capsys, write(tmp_path, f"t{i}.yml", text), f"ax_t{i}")[0] == 0
        assert composed(project, f"ax_t{i}")["peft"]["config"]["target_modules"] == "all-linear"


def test_trl_orpo_chat_template_is_reported_once(project, capsys, tmp_path):
    with_task(project, "dpo")
    text = (
        "model_name_or_path: mistral-community/Mixtral-8x22B-v0.1\ndataset_name: argilla/distilabel-capybara-dpo-7k\n"
        "chat_template: \"{% for message in messages %}{{ message['content'] }}{% endfor %}\"\nbeta: 0.05\n"
    )
    code, _, err = run_import(capsys, write(tmp_path, "orpo.yaml", text), "trl_orpo", "--stage", "orpo")
    assert code == 0, err
    assert sum(line.startswith("not mapped: chat_template") for line in err.splitlines()) <= 1
    assert "an SFT key" not in err


# -- a second review of real configs (I1-I15) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "epochs"),
    [
        ("ax", AXOLOTL_LORA.replace("num_epochs: 1", "num_epochs: 1.5"), 1.5),
        (
            "lf",
            (LF / "lora_sft.yaml").read_text().replace("num_train_epochs: 2.0", "num_train_epochs: 0.5"),
            0.5,
        ),
        (
            "trl",
            "model_name_or_path: Qwen/Qwen2.5-0.5B\ndataset_name: someone/words\nnum_train_epochs: 2.5\n",
            2.5,
        ),
        ("lf2", (LF / "lora_sft.yaml").read_text(), 2),  # 2.0: a whole number of epochs
    ],
)
def test_fractional_epochs_are_kept(project, capsys, tmp_path, name, text, epochs):
    """1.5 epochs became 1 (LLaMA-Factory, Axolotl), 0.5 was refused as 'max_epochs=0', and TRL's 2.5 was
    reported and then trained TRL's default 3; hydratune now runs a fraction of an epoch (callbacks.Epochs)."""
    path = write(tmp_path, f"{name}.yaml", text)
    code, _, err = run_import(capsys, path, name, "--dataset-info", str(DATASET_INFO))
    assert code == 0, err
    trainer = composed(project, name)["trainer"]
    assert (trainer["max_epochs"], trainer["max_steps"]) == (epochs, -1)
    assert type(trainer["max_epochs"]) is type(epochs)
    assert "num_train_epochs" not in reasons(err) and "num_epochs" not in reasons(err)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (AXOLOTL_LORA.replace("adapter: lora\n", "") + "unfrozen_parameters:\n  - ^lm_head.weight$\n",
         "unfrozen_parameters: "),
        ((LF / "lora_sft.yaml").read_text().replace("finetuning_type: lora", "finetuning_type: freeze")
         + "use_llama_pro: true\n", "use_llama_pro: true: LLaMA Pro"),
    ],
)  # fmt: skip
def test_a_choice_of_what_trains_without_counterpart_stops_the_import(
    project, capsys, tmp_path, text, needle
):
    """Axolotl's unfrozen_parameters became a full fine-tune (every weight of a 141B MoE in the upstream
    example), LLaMA-Factory's use_llama_pro trained the last layers instead of the added ones."""
    code, _, err = run_import(
        capsys, write(tmp_path, "m.yaml", text), "what", "--dataset-info", str(DATASET_INFO)
    )
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert needle in err and "nothing was written" in err
    assert not (project / "conf" / "experiment" / "what.yaml").exists()


def test_an_optimizer_or_loss_without_counterpart_says_what_trains_instead(project, capsys, tmp_path):
    text = (LF / "lora_sft.yaml").read_text() + "use_muon: true\nuse_dft_loss: true\n"
    code, _, err = run_import(
        capsys, write(tmp_path, "m.yaml", text), "subst", "--dataset-info", str(DATASET_INFO)
    )
    assert code == 0, err
    said = reasons(err)
    assert "AdamW" in said["use_muon"] and "plain cross-entropy" in said["use_dft_loss"]


def test_where_the_source_does_not_evaluate_neither_does_the_import(project, capsys, tmp_path):
    """torchtune validates only with run_val_every_n_steps, Axolotl only with eval_steps, evals_per_epoch or an
    eval_strategy: hydratune's evaluation every 40 batches (and a checkpoint each time) stood in."""
    ax = AXOLOTL_LORA + "val_set_size: 0.05\n"
    code, _, err = run_import(capsys, write(tmp_path, "ax.yml", ax), "ax_noeval")
    assert code == 0, err
    cfg = composed(project, "ax_noeval")
    assert (cfg["trainer"]["limit_val_batches"], cfg["eval_before_training"]) == (0, False)
    assert cfg["dataset"]["ops"][-1]["split"]["eval"] == 0.05  # the held-out rows are kept
    assert "Axolotl does not evaluate" in err
    code, _, err = run_import(capsys, write(tmp_path, "ax2.yml", ax + "evals_per_epoch: 4\n"), "ax_eval")
    assert code == 0 and "limit_val_batches" not in composed(project, "ax_eval")["trainer"]
    tt = (
        "model:\n  _component_: torchtune.models.llama3_2.lora_llama3_2_1b\n  lora_attn_modules: [q_proj, v_proj]\n"
        "  lora_rank: 8\n  lora_alpha: 16\n"
        "checkpointer:\n  _component_: torchtune.training.FullModelHFCheckpointer\n  checkpoint_dir: /tmp/Llama-3.2-1B\n"
        "dataset:\n  _component_: torchtune.datasets.alpaca_cleaned_dataset\n  split: train[:95%]\n"
        "dataset_val:\n  _component_: torchtune.datasets.alpaca_cleaned_dataset\n  split: train[95%:]\n"
        "run_val_every_n_steps: null\nbatch_size: 4\nepochs: 1\n"
        "optimizer:\n  _component_: torch.optim.AdamW\n  lr: 3e-4\n"
    )
    code, _, err = run_import(capsys, write(tmp_path, "tt.yaml", tt), "tt_noeval")
    assert code == 0, err
    cfg = composed(project, "tt_noeval")
    assert (cfg["trainer"]["limit_val_batches"], cfg["eval_before_training"]) == (0, False)
    assert "torchtune never validates" in reasons(err)["run_val_every_n_steps"]


def test_open_r1_prompt_column_is_the_grpo_prompt_column(project, capsys, tmp_path):
    with_task(project, "grpo")
    text = (
        "model_name_or_path: Qwen/Qwen2.5-1.5B-Instruct\ndataset_name: open-r1/OpenR1-Math-220k\n"
        "dataset_prompt_column: problem\nsystem_prompt: 'You are a helpful AI Assistant'\nnum_generations: 16\n"
        "per_device_train_batch_size: 16\ngradient_accumulation_steps: 4\nreward_funcs: [accuracy, format]\n"
        "max_prompt_length: 512\n"
    )
    code, _, err = run_import(capsys, write(tmp_path, "grpo.yaml", text), "r1")
    assert code == 0, err
    assert composed(project, "r1")["dataset"]["prompt_column"] == "problem"
    said = reasons(err)
    assert "dataset_prompt_column" not in said and "system message" in said["system_prompt"]
    assert "GRPO prompts are kept whole" in said["max_prompt_length"]  # it spoke of preference pairs
    assert "open-r1" in said["reward_funcs"]  # accuracy, format: open-r1's names, not TRL's


def test_axolotl_keys_that_are_hydratunes_own_behaviour_map(project, capsys, tmp_path):
    text = AXOLOTL_LORA + "eval_table_size: 2\npretrain_multipack_attn: true\n"
    code, _, err = run_import(capsys, write(tmp_path, "ax.yml", text), "ax_own")
    assert code == 0, err
    assert composed(project, "ax_own")["eval_generations"]["num_prompts"] == 2
    assert not {"eval_table_size", "pretrain_multipack_attn"} & set(reasons(err))


def test_checkpoint_keeping_and_gradient_checkpointing_follow_the_source_defaults(project, capsys, tmp_path):
    """hydratune's save_total_limit 2 stood in (the HF Trainer, LLaMA-Factory, TRL and torchtune keep every
    checkpoint, Axolotl 4), and LLaMA-Factory's gradient checkpointing (on by default) was left off."""
    lf = (LF / "lora_sft.yaml").read_text()
    assert "save_total_limit" not in lf and "gradient_checkpointing" not in lf
    code, _, err = run_import(
        capsys, write(tmp_path, "lf.yaml", lf), "lf_keep", "--dataset-info", str(DATASET_INFO)
    )
    assert code == 0, err
    cfg = composed(project, "lf_keep")
    assert cfg["callbacks"]["model_checkpoint"]["save_total_limit"] is None
    assert cfg["model"]["gradient_checkpointing"] is True
    off = lf + "disable_gradient_checkpointing: true\nsave_total_limit: 3\n"
    code, _, err = run_import(
        capsys, write(tmp_path, "off.yaml", off), "lf_off", "--dataset-info", str(DATASET_INFO)
    )
    cfg = composed(project, "lf_off")
    assert (cfg["model"]["gradient_checkpointing"], cfg["callbacks"]["model_checkpoint"]["save_total_limit"]) == (
        False, 3)  # fmt: skip
    code, _, err = run_import(capsys, write(tmp_path, "ax.yml", AXOLOTL_LORA), "ax_keep")
    assert composed(project, "ax_keep")["callbacks"]["model_checkpoint"]["save_total_limit"] == 4
    trl = "model_name_or_path: Qwen/Qwen2.5-0.5B\ndataset_name: someone/words\n"
    code, _, err = run_import(capsys, write(tmp_path, "trl.yaml", trl), "trl_keep")
    assert composed(project, "trl_keep")["callbacks"]["model_checkpoint"]["save_total_limit"] is None


ZEPHYR = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\\n' + message['content'] + "
    "eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\\n'  + message['content'] + "
    "eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n"
    "{% endfor %}"
)


def test_a_recipes_own_jinja_chat_template_is_carried_and_used(project, capsys, tmp_path, tokenizer):
    """The alignment-handbook's zephyr recipes carry their template as Jinja text: it was reported as not
    mapped, and the base's template (Mistral-7B-v0.1 has none) would have stood in."""
    import copy

    import yaml
    from test_import import DATA

    from hydratune.data.formats import set_chat_template

    recipe = yaml.safe_load((DATA / "trl" / "dpo_qlora.yaml").read_text())  # conversational pairs
    text = yaml.safe_dump(recipe | {"chat_template": ZEPHYR})
    code, _, err = run_import(capsys, write(tmp_path, "zephyr.yaml", text), "zephyr")
    assert code == 0, err
    assert "chat_template" not in reasons(err)
    data = composed(project, "zephyr")["dataset"]
    assert data["chat_template"] == ZEPHYR
    tok = copy.deepcopy(tokenizer)
    set_chat_template(tok, data)
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "HI"}]
    rendered = tok.apply_chat_template(turns, tokenize=False)  # BOS first, as training puts it
    assert rendered.startswith("<s><|user|>\nhi</s>") and "<|assistant|>\nHI</s>" in rendered


def test_axolotl_preference_dataset_fields_are_reported_with_their_type(project, capsys, tmp_path):
    """`field_messages`, `field_chosen`, ... of a DPO entry whose type has no counterpart (chatml.intel; the
    chat_template types are chat_pairs) were dropped unreported."""
    text = (
        "base_model: Qwen/Qwen2.5-0.5B\nadapter: lora\nrl: dpo\ndatasets:\n  - path: someone/prefs\n"
        "    type: chatml.intel\n    field_messages: conversation\n    field_chosen: chosen\n"
        "    field_rejected: rejected\n    message_property_mappings:\n      role: role\n      content: content\n"
        "micro_batch_size: 2\nlearning_rate: 0.00001\n"
    )
    with_task(project, "dpo")
    code, _, err = run_import(capsys, write(tmp_path, "ax_dpo.yml", text), "ax_dpo")
    assert code == 0, err
    said = reasons(err)
    for key in ("field_messages", "field_chosen", "field_rejected", "message_property_mappings"):
        assert "unmapped for task=dpo" in said[f"datasets.0.{key}"], said


def test_llamafactory_sharegpt_preference_rows_are_chat_pairs(project, capsys, tmp_path, tokenizer):
    """LLaMA-Factory's own DPO/reward demo data (`dpo_en_demo`: sharegpt turns as {from, value}, chosen and
    rejected one turn each) was refused, and half-mapped columns were written all the same."""
    import copy

    from hydratune.data.formats import set_chat_template
    from hydratune.data.pairs import format_chat_pairs

    entry = {"formatting": "sharegpt", "ranking": True,
             "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}}  # fmt: skip
    info = {"prefs": {"file_name": "prefs.json", **entry}, "prefs_eval": {"file_name": "eval.json", **entry}}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    row = {"conversations": [{"from": "human", "value": "copy: ab"}],
           "chosen": {"from": "gpt", "value": "AB"}, "rejected": {"from": "gpt", "value": "ab"}}  # fmt: skip
    (tmp_path / "prefs.json").write_text(json.dumps([row]))
    text = (LF / "lora_dpo.yaml").read_text()
    text = (
        "\n".join(line for line in text.splitlines() if not line.startswith("dataset:"))
        + "\ndataset: prefs\neval_dataset: prefs_eval\n"  # eval_dataset: the training source's validation file
    )
    code, _, err = run_import(
        capsys,
        write(tmp_path, "dpo.yaml", text),
        "lf_prefs",
        "--dataset-info",
        str(tmp_path / "dataset_info.json"),
    )
    assert code == 0, err
    assert "dataset" not in reasons(err) and not [k for k in reasons(err) if k.startswith("columns.")]
    data = composed(project, "lf_prefs")["dataset"]
    assert data["sources"][0]["data_files"] == {
        "train": str(tmp_path / "prefs.json"), "validation": str(tmp_path / "eval.json")}  # fmt: skip
    assert (data["format"], data["prompt_column"], data["role_key"], data["content_key"]) == (
        "chat_pairs", "conversations", "from", "value")  # fmt: skip
    tok = copy.deepcopy(tokenizer)
    set_chat_template(tok, {**data, "chat_template": "tiny"})
    prompt, chosen, rejected = format_chat_pairs(row, data, tok)
    assert prompt == "<s><|user|>\ncopy: ab</s>\n<|assistant|>\n"
    assert (chosen, rejected) == ("AB</s>\n", "ab</s>\n")


def test_a_key_the_file_leaves_out_is_the_tools_default_not_hydratunes_demo(project, capsys, tmp_path):
    """LLaMA-Factory and Axolotl files that leave out the learning rate, length, schedule or batch sizes train
    with the tool's defaults (the HF Trainer's, LLaMA-Factory's cutoff_len, Axolotl's schema), never the demo
    run's lr 2e-3, 240 steps, 256 tokens and 5% warmup; nothing is held out unless asked (review I1, I5, I6)."""
    lf = write(tmp_path, "lf_min.yaml", "model_name_or_path: a/b\nstage: sft\ndo_train: true\n"
               "finetuning_type: lora\ndataset: words_alpaca\ntemplate: qwen\noutput_dir: saves/x\n")  # fmt: skip
    assert run_import(capsys, lf, "lf_min", "--dataset-info", str(DATASET_INFO))[0] == 0
    cfg = composed(project, "lf_min")
    assert (cfg["optimizer"]["lr"], cfg["trainer"]["max_epochs"], cfg["trainer"]["max_steps"]) == (
        5e-5,
        3,
        -1,
    )
    assert (cfg["scheduler"]["name"], cfg["scheduler"]["warmup_ratio"], cfg["scheduler"]["warmup_steps"]) == (
        "linear",
        0.0,
        0,
    )
    assert (
        cfg["dataset"]["max_seq_length"],
        cfg["dataset"]["batch_size"],
        cfg["dataset"]["eval_batch_size"],
    ) == (2048, 8, 8)
    assert cfg["dataset"]["ops"] == [] and cfg["dataset"]["truncation"] == "truncate"
    assert (cfg["eval_before_training"], cfg["eval_generations"]["num_prompts"], cfg["seed"]) == (
        False,
        0,
        42,
    )

    ax = write(tmp_path, "ax_min.yaml", "base_model: a/b\nadapter: lora\nlearning_rate: 0.0002\n"
               "datasets:\n  - path: data/examples/sharegpt.jsonl\n    ds_type: json\n    type: chat_template\n"
               "micro_batch_size: 2\n")  # fmt: skip
    code, _, err = run_import(capsys, ax, "ax_min")
    assert code == 0 and "note: warmup: Axolotl's default is 3% of the optimizer steps, at most 100" in err
    cfg = composed(project, "ax_min")
    assert (cfg["optimizer"]["lr"], cfg["trainer"]["max_epochs"], cfg["scheduler"]["name"]) == (
        2e-4,
        1,
        "cosine",
    )
    assert (cfg["dataset"]["max_seq_length"], cfg["scheduler"]["warmup_ratio"]) == (512, 0.03)
    # Axolotl drops rows longer than sequence_len (excess_length_strategy) and evaluates in micro-batches
    assert (
        cfg["dataset"]["truncation"],
        cfg["dataset"]["batch_size"],
        cfg["dataset"]["eval_batch_size"],
    ) == ("drop", 2, 2)
    assert cfg["dataset"]["ops"] == []  # the chat preset's 3 held-out rows are not Axolotl's
    ax.write_text(ax.read_text() + "excess_length_strategy: truncate\nval_set_size: 0.1\nseed: 7\n")
    assert run_import(capsys, ax, "ax_min2")[0] == 0
    cfg = composed(project, "ax_min2")
    # held out with the file's seed, as Axolotl's train_test_split does
    assert cfg["dataset"]["truncation"] == "truncate" and cfg["dataset"]["ops"] == [
        {"split": {"eval": 0.1, "seed": 7}}
    ]


def test_rows_held_out_are_evaluated_only_on_the_files_schedule(project, capsys, tmp_path):
    """The HF Trainer evaluates only with eval_strategy steps or epoch: val_size alone holds rows out and
    never evaluates, in LLaMA-Factory as in this run; with a schedule, every eval_steps optimizer steps, and
    no evaluation before training unless eval_on_start (review I4)."""
    base = ("model_name_or_path: a/b\nstage: sft\ndo_train: true\nfinetuning_type: lora\ndataset: words_alpaca\n"
            "val_size: 0.1\ngradient_accumulation_steps: 2\n")  # fmt: skip
    path = write(tmp_path, "lf_val.yaml", base)
    code, _, err = run_import(capsys, path, "lf_val", "--dataset-info", str(DATASET_INFO))
    assert code == 0 and "note: evaluation: rows are held out but eval_strategy is no" in err
    cfg = composed(project, "lf_val")
    assert cfg["trainer"]["limit_val_batches"] == 0 and cfg["eval_before_training"] is False
    path.write_text(base + "eval_strategy: steps\neval_steps: 50\n")
    assert run_import(capsys, path, "lf_steps", "--dataset-info", str(DATASET_INFO))[0] == 0
    cfg = composed(project, "lf_steps")
    assert cfg["trainer"]["val_check_interval"] == 100 and "limit_val_batches" not in cfg["trainer"]
    path.write_text(base + "eval_strategy: epoch\neval_on_start: true\n")
    assert run_import(capsys, path, "lf_epoch", "--dataset-info", str(DATASET_INFO))[0] == 0
    cfg = composed(project, "lf_epoch")
    assert (cfg["trainer"]["val_check_interval"], cfg["eval_before_training"]) == (1.0, True)
    # a preference stage: the task's demo interval (20 batches) never stands in for the file's schedule
    path.write_text(
        base.replace("stage: sft", "stage: rm").replace("words_alpaca", "words_pairs")
        + "eval_strategy: steps\neval_steps: 500\n"
    )
    assert run_import(capsys, path, "lf_rm", "--dataset-info", str(DATASET_INFO))[0] == 0
    assert composed(project, "lf_rm")["trainer"]["val_check_interval"] == 1000


def test_axolotl_grpo_takes_trls_defaults_where_the_trl_block_is_silent(project, capsys, tmp_path):
    """Axolotl hands its trl block to TRL's GRPOConfig: without max_completion_length a completion may run to
    512 tokens, not the demo's 12, and the loss is TRL's dapo, not hydratune's grpo; log_completions is
    said to differ, not to be missing (review I2, I10)."""
    path = write(tmp_path, "ax_grpo.yaml", "base_model: a/b\nrl: grpo\nadapter: lora\nlearning_rate: 1e-6\n"
                 "micro_batch_size: 8\ndatasets:\n  - path: data/examples/sharegpt.jsonl\n    ds_type: json\n"
                 "    type: chat_template\nval_set_size: 0.1\ntrl:\n  num_generations: 4\n  log_completions: true\n")  # fmt: skip
    code, _, err = run_import(capsys, path, "ax_grpo")
    assert code == 0 and "TRL's default dapo is task.aggregation=dapo" in err
    assert "TRL logs training completions; task.log_completions sets how many" in err
    cfg = composed(project, "ax_grpo")
    assert (cfg["task"]["max_new_tokens"], cfg["task"]["aggregation"], cfg["task"]["stop"]) == (
        512,
        "dapo",
        [],
    )
    assert (cfg["dataset"]["batch_size"], cfg["dataset"]["eval_batch_size"]) == (2, 2)  # prompts: 8 = 2 x 4


def test_eval_dataset_beside_several_training_datasets_is_the_validation_of_the_one_read_alike(
    project, capsys, tmp_path
):
    """LLaMA-Factory's own example trains on `identity,alpaca_en_demo` and evaluates on alpaca_en_demo's
    eval file: reported as not mapped while dataset_info.json resolved it (review I8). It is the validation
    split of the training source read alike; with eval_strategy no it is kept, not evaluated."""
    alpaca = {"columns": {"prompt": "instruction", "query": "input", "response": "output"}}
    info = {"identity": {"file_name": "identity.json"}, "alpaca": {"file_name": "alpaca.json", **alpaca},
            "alpaca_eval": {"file_name": "alpaca_eval.json", **alpaca}}  # fmt: skip
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    text = ("model_name_or_path: a/b\nstage: sft\ndo_train: true\nfinetuning_type: lora\ntemplate: qwen\n"
            "dataset: identity,alpaca\neval_dataset: alpaca_eval\neval_strategy: steps\neval_steps: 10\n")  # fmt: skip
    code, _, err = run_import(
        capsys,
        write(tmp_path, "lf.yaml", text),
        "lf_two",
        "--dataset-info",
        str(tmp_path / "dataset_info.json"),
    )
    assert code == 0 and "eval_dataset" not in reasons(err), err
    cfg = composed(project, "lf_two")
    files = [s.get("data_files") for s in cfg["dataset"]["sources"]]
    # identity has no columns: LLaMA-Factory reads it as instruction/input/output, as alpaca's are named
    assert [f.get("validation") for f in files] == [str(tmp_path / "alpaca_eval.json"), None]
    assert cfg["trainer"]["val_check_interval"] == 10
    # an eval file read alike with no training file is still reported
    info["other"] = {"file_name": "other.csv"}
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    code, _, err = run_import(
        capsys, write(tmp_path, "lf2.yaml", text.replace("eval_dataset: alpaca_eval", "eval_dataset: other")),
        "lf_two_b", "--dataset-info", str(tmp_path / "dataset_info.json"),
    )  # fmt: skip
    assert code == 0 and "read alike with no training file" in reasons(err)["eval_dataset.other"]


@pytest.mark.parametrize(
    ("kind", "row", "keys"),
    [
        (  # the prompt turns in field_messages, one answer turn each (a turn or its text)
            "chat_template.default\n    field_messages: conversation",
            {
                "conversation": [{"role": "user", "content": "copy: ab"}],
                "chosen": {"role": "assistant", "content": "AB"},
                "rejected": "ab",
            },
            {"prompt_column": "conversation"},
        ),
        (  # whole conversations in chosen and rejected; a prompt column beside them is not read
            "chat_template.argilla",
            {
                "prompt": "copy: ab",
                "chosen": [{"role": "user", "content": "copy: ab"}, {"role": "assistant", "content": "AB"}],
                "rejected": [{"role": "user", "content": "copy: ab"}, {"role": "assistant", "content": "ab"}],
            },
            {},
        ),
    ],
    ids=["default", "argilla"],
)
def test_axolotls_chat_template_preference_types_are_chat_pairs(
    project, capsys, tmp_path, tokenizer, kind, row, keys
):
    """Axolotl's chat_template.default and chat_template.argilla DPO/ORPO data (its qwen2 DPO and mistral ORPO
    examples) trained only after writing dataset.* by hand (review I9); they are chat_pairs rows."""
    import copy

    from hydratune.data.formats import set_chat_template
    from hydratune.data.ops import build_splits
    from hydratune.data.pairs import format_chat_pairs

    (tmp_path / "pairs.jsonl").write_text(json.dumps(row) + "\n")
    text = (f"base_model: a/b\nrl: dpo\nadapter: lora\nlearning_rate: 1e-6\nval_set_size: 0.1\ndatasets:\n"
            f"  - path: {tmp_path / 'pairs.jsonl'}\n    type: {kind}\n")  # fmt: skip
    code, _, err = run_import(capsys, write(tmp_path, "ax.yaml", text), "ax_pairs")
    assert code == 0 and not [k for k in reasons(err) if k.startswith("datasets")], err
    data = composed(project, "ax_pairs")["dataset"]
    assert data["format"] == "chat_pairs" and all(data[k] == v for k, v in keys.items())
    rows = build_splits({**data, "ops": []}, None)["train"]
    tok = copy.deepcopy(tokenizer)
    set_chat_template(tok, {**data, "chat_template": "tiny"})
    prompt, chosen, rejected = format_chat_pairs(rows[0], data, tok)
    assert prompt == "<s><|user|>\ncopy: ab</s>\n<|assistant|>\n"
    assert (chosen, rejected) == ("AB</s>\n", "ab</s>\n")
