"""`hydratune import` of TRL configs (`trl sft|dpo|kto|reward|grpo --config FILE`) and alignment-handbook
recipes: the trainer is inferred or named with --stage, TRL's defaults train where the file is silent."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import ROOT
from test_import import AX, LF, composed, reasons, run_import

from hydratune.config_import import detect
from hydratune.importer import load

TRL = ROOT / "tests" / "data" / "trl"


def notes(err: str) -> list[str]:
    return [line[len("note: ") :] for line in err.splitlines() if line.startswith("note: ")]


def write(tmp_path, name: str, data: dict):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


MINIMAL = {"model_name_or_path": "Qwen/Qwen2.5-0.5B", "dataset_name": "someone/words"}


# -- detection ----------------------------------------------------------------------------------------


def test_a_trl_file_is_no_longer_taken_for_simplefoundation(project, capsys, tmp_path):
    """Regression: a flat TRL file (model_name_or_path) was read as SimpleFoundation, losing use_peft and
    the dataset; it trained hydratune's LoRA on the shipped sample."""
    path = write(tmp_path, "t", {**MINIMAL, "use_peft": False, "learning_rate": 1e-5})
    code, out, err = run_import(capsys, path, "t")
    assert code == 0 and "as trl" in out
    cfg = composed(project, "t")
    assert cfg["peft"]["name"] == "none"  # use_peft: false is full fine-tuning
    assert cfg["dataset"]["sources"] == [{"path": "someone/words", "split": "train"}]
    assert not reasons(err)


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (load(ROOT / "tests" / "data" / "simplefoundation_default.json"), "simplefoundation"),
        (load(LF / "lora_sft.yaml"), "llama-factory"),
        (load(AX / "lora.yaml"), "axolotl"),
        (load(AX / "dpo.yaml"), "axolotl"),  # `datasets` and base_model: Axolotl's, not TRL's mixture
        (load(TRL / "grpo.yaml"), "trl"),
        (MINIMAL, "trl"),
        ({"model_name_or_path": "a/b", "datasets": [{"path": "c/d"}]}, "trl"),  # TRL's CLI docs
        ({"model_name_or_path": "a/b", "max_length": 512, "packing": True}, "trl"),
    ],
)
def test_detection_keeps_every_format_its_own(data, fmt):
    assert detect(data) == fmt


# -- the fixtures -------------------------------------------------------------------------------------


def test_sft_lora(project, capsys):
    code, out, err = run_import(capsys, TRL / "sft_lora.yaml", "sft_lora")
    assert code == 0 and "as trl" in out
    assert notes(err) == ["stage: sft (from assistant_only_loss, packing, packing_strategy)"]
    cfg = composed(project, "sft_lora")
    assert (
        cfg["task"]["name"] == "sft" and cfg["model"]["pretrained_model_name_or_path"] == "Qwen/Qwen2.5-0.5B"
    )
    assert (cfg["model"]["dtype"], cfg["model"]["revision"]) == ("bfloat16", "main")
    lora = cfg["peft"]["config"]
    assert cfg["peft"]["name"] == "lora" and (lora["r"], lora["lora_alpha"], lora["lora_dropout"]) == (
        32,
        64,
        0.1,
    )
    assert lora["target_modules"] == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    assert lora["modules_to_save"] == ["lm_head"] and lora["use_rslora"] is True
    data = cfg["dataset"]
    assert data["sources"] == [
        {"path": "someone/words-chat", "name": "v2", "split": {"train": "train", "validation": "validation"}}
    ]
    assert (data["format"], data["messages_column"], data["train_on"]) == (
        "messages",
        "messages",
        "assistant",
    )
    assert data["ops"] == [] and data["chat_template"] is None  # chat.yaml's own split op is not kept
    assert (data["max_seq_length"], data["packing"], data["batch_size"], data["eval_batch_size"]) == (
        768,
        True,
        4,
        8,
    )
    trainer = cfg["trainer"]
    assert (trainer["accumulate_grad_batches"], trainer["val_check_interval"]) == (4, 50 * 4)
    assert (trainer["max_epochs"], trainer["max_steps"], trainer["precision"]) == (2, -1, "bf16-mixed")
    assert trainer["gradient_clip_val"] == 0.5 and trainer["log_every_n_steps"] == 5
    assert trainer["strategy"] == "deepspeed_stage_2"  # accelerate_config: zero2
    optimizer = cfg["optimizer"]
    assert (optimizer["lr"], optimizer["weight_decay"], optimizer["betas"]) == (2e-4, 0.01, [0.9, 0.98])
    assert (cfg["scheduler"]["name"], cfg["scheduler"]["warmup_ratio"]) == ("cosine", 0.05)
    assert cfg["seed"] == 7 and cfg["logger"]["wandb"]["_target_"].endswith("WandbLogger")
    assert set(reasons(err)) == {"padding_free", "eos_token", "run_name", "output_dir", "push_to_hub",
                                 "hub_model_id"}  # fmt: skip


def test_handbook_sft_full(project, capsys):
    code, _, err = run_import(capsys, TRL / "sft_full_handbook.yaml", "hb_sft")
    assert code == 0 and notes(err) == ["stage: sft (from max_seq_length, columns: [messages])"]
    cfg = composed(project, "hb_sft")
    assert cfg["peft"]["name"] == "none"  # no use_peft: every weight trains, as TRL does
    data = cfg["dataset"]
    assert data["sources"] == [
        {"path": "someone/words-chat", "split": "train_sft", "ops": [{"select_columns": ["messages"]}]},
        {"path": "someone/small-talk", "split": "train_sft", "fraction": 0.25, "shuffle": True, "seed": 11,
         "ops": [{"select_columns": ["messages"]}]},
    ]  # fmt: skip
    assert data["ops"] == [{"split": {"eval": 0.02, "seed": 11}}]
    assert (data["format"], data["train_on"], data["max_seq_length"]) == ("messages", "all", 1536)
    assert data["chat_template"] == "chatml"  # the recipe's Jinja text is the built-in chatml, spacing aside
    assert (cfg["scheduler"]["name"], cfg["scheduler"]["kwargs"]["min_lr_rate"]) == (
        "cosine_with_min_lr",
        0.05,
    )
    trainer = cfg["trainer"]
    assert (trainer["val_check_interval"], trainer["check_val_every_n_epoch"]) == (
        1.0,
        1,
    )  # eval_strategy: epoch
    assert (trainer["max_epochs"], trainer["max_steps"], trainer["accumulate_grad_batches"]) == (2, -1, 2)
    assert cfg["optimizer"]["lr"] == 3e-5 and cfg["model"]["attn_implementation"] == "flash_attention_2"
    assert "one logger per run" in reasons(err)["report_to"]  # [tensorboard, wandb]: wandb is taken
    assert "Liger" in reasons(err)["use_liger_kernel"] and "every_save" in reasons(err)["hub_strategy"]


def test_handbook_dpo_qlora(project, capsys):
    code, _, err = run_import(capsys, TRL / "dpo_qlora.yaml", "hb_dpo")
    assert code == 0 and notes(err)[0].startswith("stage: dpo (from beta, rpo_alpha, max_prompt_length")
    cfg = composed(project, "hb_dpo")
    task = cfg["task"]
    assert (task["name"], task["loss"], task["beta"], task["sft_weight"]) == ("dpo", "sigmoid", 0.05, 0.5)
    assert cfg["peft"]["name"] == "qlora" and cfg["quantization"]["config"]["bnb_4bit_quant_type"] == "nf4"
    quant = cfg["quantization"]["config"]
    assert (quant["bnb_4bit_use_double_quant"], quant["bnb_4bit_compute_dtype"]) == (True, "bfloat16")
    lora = cfg["peft"]["config"]  # the recipe's values, not the qlora preset's r=64/alpha=16/dropout=0.1
    assert (lora["r"], lora["lora_alpha"], lora["target_modules"]) == (
        64,
        32,
        ["q_proj", "k_proj", "v_proj", "o_proj"],
    )
    assert lora["lora_dropout"] == 0.0 and "disable_dropout" in reasons(err)["lora_dropout"]
    data = cfg["dataset"]
    assert (data["format"], data["chat_template"], data["max_seq_length"]) == ("chat_pairs", None, 1024)
    assert data["sources"][1] == {"path": "someone/more-prefs", "name": "clean", "split": "train", "fraction": 0.5,
                                  "shuffle": True, "seed": 3, "ops": [{"select_columns": ["chosen", "rejected"]}]}  # fmt: skip
    assert data["ops"] == [{"split": {"eval": 200, "seed": 3}}]
    assert (
        cfg["optimizer"]["_target_"] == "bitsandbytes.optim.PagedAdamW32bit"
        and cfg["optimizer"]["lr"] == 5e-6
    )
    assert (cfg["trainer"]["accumulate_grad_batches"], cfg["trainer"]["val_check_interval"]) == (8, 800)
    assert "prompts are kept whole" in reasons(err)["max_prompt_length"]


def test_grpo(project, capsys):
    code, _, err = run_import(capsys, TRL / "grpo.yaml", "trl_grpo")
    assert code == 0
    cfg = composed(project, "trl_grpo")
    task = cfg["task"]
    assert task["rewards"] == [{"_target_": "myproject.rewards.format_bonus", "weight": 0.5}]
    assert (task["num_generations"], task["max_new_tokens"], task["temperature"], task["top_p"]) == (
        4,
        96,
        0.8,
        0.95,
    )
    assert (task["beta"], task["epsilon"], task["epsilon_high"], task["num_iterations"]) == (
        0.02,
        0.2,
        0.28,
        2,
    )
    assert (task["scale_rewards"], task["aggregation"]) == (False, "dr_grpo")
    assert cfg["dataset"]["sources"] == [
        {"path": "someone/word-puzzles", "name": "easy", "split": "train",
         "ops": [{"select_columns": ["prompt", "answer"]}]},
        {"loader": "json", "data_files": "data/more_puzzles.jsonl"},
    ]  # fmt: skip
    assert cfg["dataset"]["ops"] == [{"split": {"eval": 64, "seed": 0}}]
    trainer = cfg["trainer"]
    assert (trainer["max_steps"], trainer["max_epochs"], trainer["devices"]) == (500, -1, 2)
    # TRL's batch of 8 completions is 2 prompts x 4 generations; hydratune's batch counts prompts.
    assert (cfg["dataset"]["batch_size"], trainer["accumulate_grad_batches"]) == (2, 2)
    assert any(n.startswith("per_device_train_batch_size: 8 completions are 2 prompt(s)") for n in notes(err))
    assert (
        cfg["peft"]["config"]["target_modules"] == "all-linear"
        and cfg["peft"]["config"]["lora_dropout"] == 0.05
    )
    assert "a reward named in its trainer's or recipe's registry" in reasons(err)["reward_funcs"]
    assert {"use_vllm", "vllm_mode", "mask_truncated_completions"} <= set(reasons(err))


def test_trl_names_on_the_command_line_point_at_the_keys_they_are_here():
    """`task.loss_type=dr_grpo` got 'did you mean task.loss?' (a DPO key), max_completion_length 'did you mean
    task.log_completions?' (review G8): TRL's names point at what they are here, or say there is none."""
    from hydratune.schema import unknown_key_error

    said = {key: str(unknown_key_error(f"task.{key}", frozenset({"task.loss", "task.log_completions"})))
            for key in ("loss_type", "max_completion_length", "mask_truncated_completions")}  # fmt: skip
    assert "TRL's loss_type is task.aggregation with task=grpo" in said["loss_type"]
    assert said["max_completion_length"].endswith("TRL's max_completion_length is task.max_new_tokens here")
    assert "TRL's mask_truncated_completions has no counterpart here" in said["mask_truncated_completions"]
    from hydratune.importer import Overlay, _rewards

    overlay = Overlay(ROOT / "conf")
    _rewards(
        overlay, ["accuracy_reward", "pkg.mod.fn"], [0.5, 2.0]
    )  # a built-in's weight is said, not lost (G9)
    assert overlay.values["task.rewards"] == [{"_target_": "pkg.mod.fn", "weight": 2.0}]
    assert any("accuracy_reward (weight 0.5)" in str(line) for line in overlay.unmapped)


# -- where the file is silent -------------------------------------------------------------------------


def test_reward_models_by_id_are_reward_model_entries(project, capsys, tmp_path):
    """TRL loads a reward_funcs model id, and reward_model_name_or_path, as a sequence classifier with one
    label; hydratune scores with the same model (task.reward_model, RewardModelScorer entries)."""
    path = write(tmp_path, "grpo_rm.yaml", {
        "model_name_or_path": "Qwen/Qwen2.5-0.5B-Instruct", "dataset_name": "someone/prompts",
        "num_generations": 4, "reward_funcs": ["acme/rm-small", "pkg.mod.fn"], "reward_weights": [0.5, 1.0],
        "reward_model_name_or_path": "/models/rm",
    })  # fmt: skip
    code, _, err = run_import(capsys, path, "trl_rm")
    assert code == 0, err
    task = composed(project, "trl_rm")["task"]
    assert task["reward_model"] == "/models/rm"
    assert task["rewards"] == [
        {"_target_": "hydratune.rewards.RewardModelScorer", "run_dir": "acme/rm-small", "weight": 0.5},
        {"_target_": "pkg.mod.fn", "weight": 1.0},
    ]
    assert not {"reward_funcs", "reward_model_name_or_path"} & set(reasons(err))


GRPO = {**MINIMAL, "num_generations": 8, "reward_funcs": ["pkg.mod.fn"]}


@pytest.mark.parametrize(
    ("keys", "aggregation", "accumulation", "said"),
    [
        ({"loss_type": "bnpo", "gradient_accumulation_steps": 4}, "bnpo", 4, None),
        ({"loss_type": "dapo"}, "dapo", 1, None),
        ({}, "dapo", 1, "loss_type: TRL's default dapo is task.aggregation=dapo"),
        ({"gradient_accumulation_steps": 1, "num_processes": 1}, "dapo", 1, "TRL's default dapo"),
        # 2 completions x 4 accumulation steps are one group of 8: one hydratune batch, so dapo is exact.
        (
            {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 4},
            "dapo",
            1,
            "TRL's default dapo",
        ),
        (
            {"loss_type": "dapo", "gradient_accumulation_steps": 4},
            "bnpo",
            4,
            "loss_type: dapo divides by the completion tokens of the whole accumulated batch "
            "(gradient_accumulation_steps 4), which hydratune samples one micro-batch at a time: "
            "task.aggregation=bnpo (a token mean per micro-batch) is the nearest",
        ),
        (
            {"num_processes": 2},
            "bnpo",
            1,
            "loss_type: dapo (TRL default) divides by the completion tokens of",
        ),
        ({"accelerate_config": "multi_gpu"}, "bnpo", 1, "(several processes)"),
    ],
)
def test_grpo_loss_types_bnpo_and_dapo(project, capsys, tmp_path, keys, aggregation, accumulation, said):
    """TRL's default dapo divides by the tokens of the whole accumulated batch: hydratune's dapo where one
    micro-batch is that batch (its rule refuses it elsewhere), else bnpo, the nearest, and a note says why."""
    from hydratune.rules import violations
    from hydratune.tasks.grpo import GRPOTask

    code, _, err = run_import(capsys, write(tmp_path, "g", {**GRPO, **keys}), "g", "--stage", "grpo")
    assert code == 0, err
    cfg = composed(project, "g")
    assert (cfg["task"]["aggregation"], cfg["trainer"]["accumulate_grad_batches"]) == (
        aggregation,
        accumulation,
    )
    assert not any("dapo" in v for v in violations(cfg, GRPOTask.rules))
    loss_notes = [n for n in notes(err) if n.startswith("loss_type:")]
    assert not loss_notes if said is None else len(loss_notes) == 1 and said in loss_notes[0], loss_notes
    assert "loss_type" not in reasons(err)


def test_grpo_loss_types_without_a_counterpart_are_reported(project, capsys, tmp_path):
    code, _, err = run_import(capsys, write(tmp_path, "g", {**GRPO, "loss_type": "cispo"}), "g")
    assert code == 0
    assert (
        "task.aggregation is grpo (mean per completion), dr_grpo, bnpo or dapo" in reasons(err)["loss_type"]
    )
    assert composed(project, "g")["task"]["aggregation"] == "grpo"  # hydratune's default, said above


@pytest.mark.parametrize(
    ("value", "scale"), [("batch", "batch"), ("none", False), (False, False), ("group", True), (True, True)]
)
def test_grpo_scale_rewards(project, capsys, tmp_path, value, scale):
    code, _, err = run_import(capsys, write(tmp_path, "g", {**GRPO, "scale_rewards": value}), "g")
    assert code == 0 and "scale_rewards" not in reasons(err)
    assert composed(project, "g")["task"]["scale_rewards"] == scale


def test_trl_defaults_train_where_the_file_is_silent(project, capsys, tmp_path):
    code, _, err = run_import(capsys, write(tmp_path, "m", MINIMAL), "m")
    assert code == 0
    said = notes(err)
    assert said[0].startswith("stage: sft (no key names a trainer") and "--stage dpo" in said[0]
    assert said[1].startswith("dataset: rows taken as TRL's language-modeling layout")
    cfg = composed(project, "m")
    assert cfg["peft"]["name"] == "none" and cfg["optimizer"]["lr"] == 2e-5
    trainer = cfg["trainer"]
    assert (trainer["max_epochs"], trainer["max_steps"], trainer["precision"]) == (3, -1, "bf16-mixed")
    assert (trainer["accumulate_grad_batches"], trainer["log_every_n_steps"]) == (1, 10)
    assert (cfg["scheduler"]["name"], cfg["scheduler"]["warmup_ratio"], cfg["scheduler"]["warmup_steps"]) == (
        "linear", 0.0, 0)  # fmt: skip
    data = cfg["dataset"]
    assert (data["format"], data["text_column"], data["train_on"]) == ("text", "text", "all")
    assert (data["batch_size"], data["max_seq_length"], data["ops"]) == (8, 1024, [])
    assert cfg["model"]["dtype"] == "float32" and cfg["model"]["gradient_checkpointing"] is True


def test_peft_defaults_are_trls(project, capsys, tmp_path):
    """use_peft alone: ModelConfig's r=16, alpha=32, dropout=0.05 and peft's own target modules (None)."""
    assert run_import(capsys, write(tmp_path, "p", {**MINIMAL, "use_peft": True}), "p")[0] == 0
    lora = composed(project, "p")["peft"]["config"]
    assert (lora["r"], lora["lora_alpha"], lora["lora_dropout"], lora["target_modules"]) == (
        16,
        32,
        0.05,
        None,
    )


# -- the trainer --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stage", "task", "lr", "extra"),
    [
        ("dpo", {"name": "dpo", "loss": "sigmoid", "sft_weight": 0.0}, 1e-6, {"format": "pairs"}),
        ("kto", {"name": "kto"}, 1e-6, {"format": "kto"}),
        ("reward", {"name": "reward"}, 1e-4, {"format": "pairs"}),
        (
            "grpo",
            {"name": "grpo", "rewards": [], "max_new_tokens": 512},
            1e-6,
            {"prompt_column": "prompt", "batch_size": 1},
        ),
        ("orpo", {"name": "dpo", "loss": "orpo"}, 1e-6, {"format": "pairs"}),
    ],
)
def test_stage_flag_names_the_trainer(project, capsys, tmp_path, stage, task, lr, extra):
    code, _, err = run_import(capsys, write(tmp_path, stage, MINIMAL), stage, "--stage", stage)
    assert code == 0 and not any(n.startswith("stage:") for n in notes(err))
    cfg = composed(project, stage)
    assert {k: cfg["task"][k] for k in task} == task and cfg["optimizer"]["lr"] == lr
    assert {k: cfg["dataset"][k] for k in extra} == extra
    assert cfg["dataset"]["sources"] == [{"path": "someone/words", "split": "train"}]


@pytest.mark.parametrize(
    ("keys", "task"),
    [
        ({"desirable_weight": 1.5, "undesirable_weight": 0.5}, {"name": "kto", "desirable_weight": 1.5}),
        ({"center_rewards_coefficient": 0.01}, {"name": "reward"}),
        ({"num_generations": 4, "reward_funcs": ["pkg.mod.fn"]}, {"name": "grpo", "num_generations": 4}),
        ({"loss_type": "ipo", "beta": 0.3}, {"name": "dpo", "loss": "ipo", "beta": 0.3}),
        (
            {"label_smoothing": 0.2, "loss_type": "hinge"},
            {"name": "dpo", "loss": "hinge", "label_smoothing": 0.0},
        ),
        # TRL reads label_smoothing for robust, not for sigmoid (hydratune's sigmoid would smooth: cDPO)
        (
            {"label_smoothing": 0.2, "loss_type": "robust"},
            {"name": "dpo", "loss": "robust", "label_smoothing": 0.2},
        ),
        (
            {"label_smoothing": 0.2, "loss_type": "sigmoid"},
            {"name": "dpo", "loss": "sigmoid", "label_smoothing": 0.0},
        ),
        (
            {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, 0.3]},
            {"loss": "sigmoid", "sft_weight": 0.3},
        ),
    ],
)
def test_keys_decide_the_trainer(project, capsys, tmp_path, keys, task):
    code, _, err = run_import(capsys, write(tmp_path, "k", {**MINIMAL, **keys}), "k")
    assert code == 0
    cfg = composed(project, "k")
    assert {k: cfg["task"][k] for k in task} == task
    assert notes(err)[0].startswith(f"stage: {task.get('name', 'dpo')} (from ")


@pytest.mark.parametrize(
    ("name", "stage", "task"),
    [
        (
            {"hub_model_id": "zephyr-orpo-141b"},
            "orpo",
            {"name": "dpo", "loss": "orpo"},
        ),  # the handbook's ORPO
        ({"output_dir": "data/zephyr-7b-dpo-full"}, "dpo", {"name": "dpo", "loss": "sigmoid"}),
        (
            {"output_dir": "runs/orpo-or-dpo"},
            "dpo",
            {"name": "dpo", "loss": "sigmoid"},
        ),  # two: the keys decide
    ],
)
def test_the_run_name_picks_between_trainers_the_keys_leave_open(
    project, capsys, tmp_path, name, stage, task
):
    keys = {**MINIMAL, "beta": 0.05, "max_prompt_length": 512, **name}
    code, _, err = run_import(capsys, write(tmp_path, "n", keys), "n")
    assert code == 0
    assert {k: composed(project, "n")["task"][k] for k in task} == task
    assert notes(err)[0].startswith(f"stage: {stage} (from ") and "--stage" in notes(err)[0]


@pytest.mark.parametrize(
    ("keys", "flag", "message"),
    [
        ({"beta": 0.1, "max_prompt_length": 256}, "sft", "--stage sft: the file has beta"),
        ({"dataset_text_field": "body", "num_generations": 4}, None, "num_generations and dataset_text_field: keys of different"),
        ({"loss_type": "apo_zero"}, None, "loss_type: apo_zero: hydratune's DPO losses are sigmoid, robust, ipo, hinge"),
        ({"loss_type": "dapo"}, "dpo", "--stage dpo: the file has loss_type: dapo"),
        ({"use_peft": False, "load_in_4bit": True}, None, "load_in_4bit: true without use_peft: true"),
    ],
)  # fmt: skip
def test_what_would_change_the_training_is_refused(project, capsys, tmp_path, keys, flag, message):
    extra = ["--stage", flag] if flag else []
    code, out, err = run_import(capsys, write(tmp_path, "bad", {**MINIMAL, **keys}), "bad", *extra)
    assert code == 2 and not out
    assert len(err.strip().splitlines()) == 1 and message in err
    assert not (project / "conf" / "experiment" / "bad.yaml").exists()


def test_stage_flag_must_agree_with_a_file_that_names_its_stage(project, capsys):
    assert run_import(capsys, LF / "lora_sft.yaml", "lf", "--stage", "sft")[0] == 0
    for path in (LF / "lora_sft.yaml", AX / "lora.yaml"):
        code, _, err = run_import(capsys, path, "other", "--stage", "dpo")
        assert code == 2 and len(err.strip().splitlines()) == 1
        assert "--stage dpo:" in err and "names its own stage (task=sft)" in err


# -- the data -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "expect"),
    [
        ({"dataset_text_field": "body"}, {"format": "text", "text_column": "body", "train_on": "all"}),
        ({"completion_only_loss": True}, {"format": "prompt_response", "prompt_column": "prompt",
                                          "response_column": "completion", "train_on": "response"}),
        ({"assistant_only_loss": False, "datasets": [{"path": "a/b", "columns": ["messages"]}]},
         {"format": "messages", "train_on": "all"}),  # conversations: every token, TRL's default
    ],
)  # fmt: skip
def test_sft_rows_and_trained_tokens(project, capsys, tmp_path, keys, expect):
    assert run_import(capsys, write(tmp_path, "rows", {**MINIMAL, **keys}), "rows")[0] == 0
    data = composed(project, "rows")["dataset"]
    assert {k: data[k] for k in expect} == expect


@pytest.mark.parametrize(
    ("rows", "stage", "expect"),
    [
        ({"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}],
          "rejected": [{"role": "assistant", "content": "b"}]}, "dpo", {"format": "chat_pairs"}),
        ({"prompt": "q -> ", "chosen": "a", "rejected": "b"}, "dpo", {"format": "pairs"}),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}, "sft",
         {"format": "messages"}),
        ({"prompt": "q -> ", "completion": "a"}, "sft", {"format": "prompt_response", "response_column": "completion"}),
    ],
    ids=["conversational-pairs", "string-pairs", "messages", "prompt-completion"],
)  # fmt: skip
def test_a_dataset_on_this_disk_is_read_for_its_layout(project, capsys, tmp_path, rows, stage, expect):
    """`dataset_name` a folder here (TRL loads it as a hub-style dataset): its first row tells the layout, as
    TRL decides it from the rows (conversational pairs were imported as strings, with a note to fix it)."""
    folder = tmp_path / "mydata"
    folder.mkdir()
    (folder / "train.jsonl").write_text(json.dumps(rows) + "\n")
    file = write(tmp_path, "local", {**MINIMAL, "dataset_name": str(folder)})
    code, _, err = run_import(capsys, file, "local", "--stage", stage)
    assert code == 0, err
    data = composed(project, "local")["dataset"]
    assert {k: data[k] for k in expect} == expect
    assert not any("rows taken as" in note for note in notes(err))  # read, not guessed


def test_trl_mixture_and_evaluation(project, capsys, tmp_path):
    mixture = {
        "model_name_or_path": "a/b",
        "datasets": [
            {"path": "x/y", "fraction": 3},
            {"path": "csv", "data_files": "rows.csv", "fraction": 1},
        ],
        "streaming": False,
        "dataset_text_field": "text",
        "dataset_test_split": "test",
        "eval_steps": 20,
    }
    code, _, err = run_import(capsys, write(tmp_path, "mix", mixture), "mix")
    assert code == 0
    data = composed(project, "mix")["dataset"]
    assert data["sources"] == [{"path": "x/y", "split": "train"}, {"loader": "csv", "data_files": "rows.csv"}]
    assert data["ops"] == [{"interleave": {"probabilities": [0.75, 0.25], "seed": 0,
                                           "stopping_strategy": "first_exhausted"}}]  # fmt: skip
    assert "eval_strategy is no" in reasons(err)["eval_steps"]  # TRL evaluates only when told
    code, _, err = run_import(capsys, write(tmp_path, "ev", {**MINIMAL, "dataset_test_split": "dev"}), "ev")
    assert "eval_strategy: steps|epoch" in reasons(err)["dataset_test_split"]


def test_secrets_are_never_echoed(project, capsys, tmp_path):
    keys = {**MINIMAL, "hub_token": "hf_secret", "env": {"WANDB_API_KEY": "k-secret"}}
    code, _, err = run_import(capsys, write(tmp_path, "s", keys), "s")
    assert code == 0 and "secret" not in err and "WANDB_API_KEY" in reasons(err)["env"]
    assert "secret" not in (project / "conf" / "experiment" / "s.yaml").read_text()


@pytest.mark.slow
def test_imported_trl_config_passes_preflight_and_trains_two_steps(project, capsys):
    """The SFT LoRA fixture, pointed at the shipped tiny model and chat rows, checks and trains on a CPU."""
    from hydratune.config import to_plain
    from hydratune.preflight import check_config, compose
    from hydratune.train import run

    for folder in ("data", "assets"):
        (project / folder).symlink_to(ROOT / folder)
    assert run_import(capsys, TRL / "sft_lora.yaml", "imported")[0] == 0
    offline = ["model=tiny_llama", "model.dtype=float32", "model.revision=null", "trainer=cpu",
               "trainer.precision=32-true", "optimizer=adamw_torch", "trainer.max_steps=2", "trainer.max_epochs=-1",
               "dataset.batch_size=2", "dataset.max_seq_length=128", "eval_before_training=false", "callbacks=none",
               "logger=none", f"dataset.sources=[{{loader:json,data_files:{{train:{ROOT}/data/examples/chat.jsonl}}}}]",
               "dataset.ops=[{split:{eval:3,seed:0}}]"]  # fmt: skip
    out = project / "run"
    check_config(to_plain(compose(["experiment=imported", *offline], output_dir=str(out))))
    run(compose(["experiment=imported", *offline], output_dir=str(out)))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["train_loss"] > 0 and metrics["artifact"] == "adapter"
