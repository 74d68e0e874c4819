"""`hydratune import` of torchtune configs: the fixtures in tests/data/torchtune/ (written after the shape of
torchtune's published recipes/configs) become experiments that compose, check and train as they did."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import ROOT
from test_import import composed, reasons, run_import

from hydratune import config_import, importer
from hydratune.config import to_plain

DATA = ROOT / "tests" / "data"
TT = DATA / "torchtune"
LLAMA_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "down_proj", "up_proj"]


def edited(tmp_path, fixture: str, **changes) -> str:
    """A copy of a fixture with top-level keys replaced (None removes one)."""
    data = yaml.safe_load((TT / fixture).read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path = tmp_path / f"edited_{fixture}"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_lora_single_device(project, capsys):
    code, out, err = run_import(capsys, TT / "lora_single_device.yaml", "tt_lora")
    assert code == 0 and "as torchtune" in out
    cfg = composed(project, "tt_lora")
    assert cfg["task"]["name"] == "sft"
    assert cfg["model"]["pretrained_model_name_or_path"] == "/models/Llama-3.2-1B-Instruct"
    assert cfg["model"]["gradient_checkpointing"] is True
    peft = cfg["peft"]
    assert (peft["name"], cfg["quantization"]["method"]) == ("lora", "none")
    lora = peft["config"]
    assert (lora["r"], lora["lora_alpha"], lora["lora_dropout"]) == (32, 48, 0.05)
    assert lora["target_modules"] == LLAMA_MODULES  # output_proj -> o_proj, w1/w2/w3 -> gate/down/up
    data = cfg["dataset"]
    # The validation rows are the same hub dataset's tail, as torchtune's dataset_val split takes them.
    assert data["sources"] == [
        {"path": "yahma/alpaca-cleaned", "split": {"train": "train[:97%]", "validation": "train[97%:]"}}
    ]
    assert (data["format"], data["template"], data["ops"]) == ("alpaca", "alpaca", [])
    assert data["train_on"] == "all"  # alpaca_dataset trains on the prompt by default (train_on_input)
    assert (data["max_seq_length"], data["batch_size"], data["eval_batch_size"]) == (768, 3, 6)
    assert data["packing"] is False
    optimizer, scheduler = cfg["optimizer"], cfg["scheduler"]
    assert optimizer["_target_"] == "torch.optim.AdamW" and optimizer["lr"] == pytest.approx(2.5e-4)
    assert optimizer["weight_decay"] == 0.01  # torch's AdamW default, not hydratune's 0.0
    assert (scheduler["name"], scheduler["warmup_steps"], scheduler["warmup_ratio"]) == ("cosine", 40, 0.0)
    trainer = cfg["trainer"]
    assert (trainer["max_epochs"], trainer["max_steps"]) == (2, -1)
    assert trainer["limit_train_batches"] == 300 * 6  # max_steps_per_epoch counts optimizer steps
    assert (trainer["accumulate_grad_batches"], trainer["gradient_clip_val"]) == (6, 0.8)
    assert trainer["precision"] == "bf16-true"  # bf16 weights and compute, as torchtune's dtype: bf16
    assert (trainer["accelerator"], trainer["val_check_interval"]) == ("gpu", 50 * 6)
    assert (trainer["log_every_n_steps"], cfg["seed"]) == (5, 1234)
    assert "csv" in cfg["logger"] and cfg["export"]["merge"] is True  # adapter and merged model, as torchtune
    assert set(reasons(err)) == {"output_dir", "log_level", "recipe"}
    assert "single-device recipe" in reasons(err)["recipe"] and "trainer=fsdp" in reasons(err)["recipe"]


def test_qlora_on_local_chat_files(project, capsys):
    code, _, err = run_import(capsys, TT / "qlora_chat.yaml", "tt_qlora")
    assert code == 0
    cfg = composed(project, "tt_qlora")
    assert cfg["peft"]["name"] == "qlora" and cfg["quantization"]["config"]["bnb_4bit_quant_type"] == "nf4"
    lora = cfg["peft"]["config"]
    # The builder's defaults, not hydratune's qlora preset (r=64, alpha=16, dropout 0.1).
    assert (lora["r"], lora["lora_alpha"], lora["lora_dropout"]) == (16, 16, 0.0)
    assert lora["target_modules"] == ["q_proj", "v_proj"]
    data = cfg["dataset"]
    assert data["sources"] == [{"loader": "json", "data_files": "data/examples/sharegpt.jsonl"}]
    assert (data["format"], data["conversations_column"], data["role_key"], data["content_key"]) == (
        "sharegpt",
        "conversations",
        "from",
        "value",
    )
    assert (data["train_on"], data["packing"], data["max_seq_length"]) == ("assistant", True, 1536)
    optimizer = cfg["optimizer"]
    assert optimizer["_target_"] == "bitsandbytes.optim.PagedAdamW8bit"
    assert (optimizer["weight_decay"], optimizer["betas"]) == (0.02, [0.9, 0.95])
    assert cfg["scheduler"]["name"] == "constant"  # no lr_scheduler: the lr throughout
    assert cfg["trainer"]["gradient_clip_val"] is None  # no clip_grad_norm: torchtune does not clip
    assert "limit_train_batches" not in cfg["trainer"]  # max_steps_per_epoch: null
    checkpoints = cfg["callbacks"]["model_checkpoint"]
    assert (checkpoints["save_total_limit"], checkpoints["save_steps"]) == (3, 200)
    assert cfg["export"]["merge"] is False  # save_adapter_weights_only: true
    assert (cfg["logger"]["wandb"]["project"], cfg["logger"]["wandb"]["name"]) == (
        "chat-qlora",
        "qwen-3b-try",
    )
    assert set(reasons(err)) == {"output_dir", "compile", "enable_activation_offloading", "recipe"}
    assert "torch.compile" in reasons(err)["compile"]


def test_full_distributed_instruct_rows(project, capsys):
    code, _, err = run_import(capsys, TT / "full_distributed.yaml", "tt_full")
    assert code == 0
    cfg = composed(project, "tt_full")
    assert cfg["peft"]["name"] == "none"  # a plain builder: full fine-tuning
    assert cfg["model"]["pretrained_model_name_or_path"] == "/models/Mistral-7B-v0.3"
    strategy = cfg["trainer"]["strategy"]
    assert "FSDPStrategy" in strategy["_target_"] and strategy["cpu_offload"] is True  # fsdp_cpu_offload
    data = cfg["dataset"]
    assert data["sources"] == [{"path": "someone/support-tickets", "split": "train"}]
    # input -> the user turn, output -> the assistant turn, rendered with the model's chat template.
    assert data["format"] == "alpaca_chat" and data["chat_template"] is None
    assert data["ops"] == [{"rename_columns": {"ticket": "instruction", "reply": "output"}}]
    assert data["train_on"] == "all"  # train_on_input: true
    trainer = cfg["trainer"]
    assert (trainer["precision"], trainer["gradient_clip_val"], trainer["max_epochs"]) == ("32-true", None, 3)
    assert "tensorboard" in cfg["logger"] and cfg["optimizer"]["weight_decay"] == 0.01
    assert set(reasons(err)) == {
        "output_dir", "shuffle", "dataset.new_system_prompt", "custom_sharded_layers", "low_cpu_ram"
    }  # fmt: skip
    assert "always shuffled" in reasons(err)["shuffle"]


def test_lora_dpo_maps_to_the_dpo_task(project, capsys):
    code, _, err = run_import(capsys, TT / "lora_dpo.yaml", "tt_dpo")
    assert code == 0
    cfg = composed(project, "tt_dpo")
    task = cfg["task"]
    assert (task["name"], task["loss"], task["beta"], task["label_smoothing"]) == (
        "dpo",
        "sigmoid",
        0.25,
        0.05,
    )
    assert task["sft_weight"] == 0.0  # DPOLoss has no NLL term
    assert cfg["peft"]["config"]["target_modules"] == [
        "q_proj", "v_proj", "o_proj", "gate_proj", "down_proj", "up_proj", "lm_head"
    ]  # fmt: skip
    data = cfg["dataset"]
    # the builder's folder of the hub repository, and each pair rendered with the chat template as torchtune
    # does (J8: raw text before)
    assert data["sources"] == [
        {"path": "lvwerra/stack-exchange-paired", "split": "train", "data_dir": "data/rl"}
    ]
    assert (data["format"], data["prompt_column"], data["chosen_column"], data["rejected_column"]) == (
        "chat_pairs",
        "question",
        "response_j",
        "response_k",
    )
    assert cfg["trainer"]["limit_train_batches"] == 800 * 16 and cfg["trainer"]["max_epochs"] == 1
    assert "random seed" in reasons(err)["seed"]
    assert "dataset_val" not in reasons(err)  # trains unevaluated, as torchtune's DPO recipe does


@pytest.mark.parametrize(
    ("loss", "expect"),
    [
        ({"_component_": "torchtune.rlhf.loss.RSOLoss", "gamma": 0.3}, {"loss": "hinge", "beta": 0.3}),
        (
            {"_component_": "torchtune.rlhf.loss.SimPOLoss", "beta": 2.0, "gamma": 0.6},
            {"loss": "simpo", "beta": 2.0, "simpo_gamma": 0.6},
        ),
    ],
)
def test_other_preference_losses(project, capsys, tmp_path, loss, expect):
    assert run_import(capsys, edited(tmp_path, "lora_dpo.yaml", loss=loss), "pref")[0] == 0
    task = composed(project, "pref")["task"]
    assert {key: task[key] for key in expect} == expect


def test_ppo_maps_to_grpo_and_says_so(project, capsys, tmp_path):
    path = tmp_path / "ppo.yaml"
    path.write_text(
        "output_dir: /scratch/ppo\n"
        "tokenizer: {_component_: torchtune.models.mistral.mistral_tokenizer, path: /m/tok.model, max_seq_len: 256}\n"
        "dataset: {_component_: torchtune.datasets.text_completion_dataset, source: someone/prompts, "
        "column: query, add_eos: false}\n"
        "policy_model: {_component_: torchtune.models.mistral.mistral_7b}\n"
        "checkpointer: {_component_: torchtune.training.FullModelHFCheckpointer, checkpoint_dir: /m}\n"
        "reward_checkpointer: {_component_: torchtune.training.FullModelHFCheckpointer, checkpoint_dir: /rm}\n"
        "loss: {_component_: torchtune.rlhf.loss.PPOLoss, epsilon: 0.15, value_coeff: 0.2}\n"
        "batch_size: 16\nppo_epochs: 2\ntemperature: 0.8\nmax_generated_tokens: 40\nkl_coeff: 0.03\n"
        "whiten_rewards: false\nnum_steps: 4000\ndtype: bf16\n"
    )
    code, _, err = run_import(capsys, path, "ppo")
    assert code == 0
    cfg = composed(project, "ppo")
    task = cfg["task"]
    assert (task["name"], task["epsilon"], task["num_iterations"]) == ("grpo", 0.15, 2)
    assert (task["temperature"], task["max_new_tokens"], task["beta"]) == (0.8, 40, 0.03)
    assert task["rewards"] == []  # never the task's example reward function
    assert task["reward_model"] == "/rm"  # the trained reward model: an HF sequence-classifier folder
    assert cfg["peft"]["name"] == "none" and cfg["dataset"]["prompt_column"] == "query"
    assert "value model is not used" in reasons(err)["loss"]
    assert {"loss.value_coeff", "whiten_rewards", "num_steps", "batch_size"} <= set(reasons(err))
    # 16 completions per step stay 16 (2 prompts x 8), 4000 completions are 250 sampling steps of 2 passes
    assert (task["num_generations"], cfg["dataset"]["batch_size"]) == (8, 2)
    assert (cfg["trainer"]["max_steps"], cfg["trainer"]["max_epochs"]) == (500, -1)
    assert "trainer.max_steps=500" in reasons(err)["num_steps"]
    assert "reward_checkpointer" not in reasons(err)
    assert "dataset.add_eos" not in reasons(err)  # prompts are continued: no EOS is right


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"kd_loss": {"_component_": "torchtune.modules.loss.ForwardKLWithChunkedOutputLoss"},
             "teacher_model": {"_component_": "torchtune.models.llama3_1.llama3_1_8b"}},
            "kd_loss: ForwardKLWithChunkedOutputLoss: knowledge distillation",
        ),
        ({"loss": {"_component_": "torchtune.rlhf.loss.KTOLoss"}}, "loss: KTOLoss: hydratune has no such task"),
        (
            {"model": {"_component_": "torchtune.models.llama3_2_vision.lora_llama3_2_vision_11b"}},
            "model: torchtune.models.llama3_2_vision.lora_llama3_2_vision_11b: vision-language models",
        ),
        ({"checkpointer": None}, "checkpointer.checkpoint_dir: missing"),
        ({"seed": "${nowhere}"}, "cannot resolve an interpolation"),
    ],
)  # fmt: skip
def test_what_has_no_counterpart_is_refused_in_one_line(project, capsys, tmp_path, changes, message):
    code, out, err = run_import(capsys, edited(tmp_path, "lora_single_device.yaml", **changes), "refused")
    assert code == 2 and not out
    assert len(err.strip().splitlines()) == 1 and message in err
    assert not (project / "conf" / "experiment" / "refused.yaml").exists()  # never a silent SFT run


def test_meta_checkpoints_and_phi_module_names(project, capsys, tmp_path):
    checkpointer = {"_component_": "torchtune.training.FullModelMetaCheckpointer", "checkpoint_dir": "/m/phi"}
    model = {
        "_component_": "torchtune.models.phi3.lora_phi3_mini",
        "lora_attn_modules": ["q_proj", "v_proj", "output_proj"],
        "apply_lora_to_mlp": True,
    }
    path = edited(tmp_path, "lora_single_device.yaml", checkpointer=checkpointer, model=model)
    code, _, err = run_import(capsys, path, "phi")
    assert code == 0 and "transformers cannot load" in reasons(err)["checkpointer._component_"]
    cfg = composed(project, "phi")
    # Never the default model: the folder is kept, so loading fails on it rather than training another model.
    assert cfg["model"]["pretrained_model_name_or_path"] == "/m/phi"
    assert cfg["peft"]["config"]["target_modules"] == ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    assert "covers all three" in reasons(err)["model.lora_attn_modules"]


def test_a_checkpoint_folder_not_here_names_the_hub_id_of_its_download_line(project, capsys, tmp_path):
    """torchtune's configs fill their checkpoint folder with `tune download ORG/NAME --output-dir FOLDER`
    (a comment at the top): when the folder is not on this machine, the import says which model to fetch."""
    absent, here = tmp_path / "Qwen2.5-0.5B-Instruct", tmp_path / "local-model"
    here.mkdir()
    text = (TT / "lora_single_device.yaml").read_text()
    for folder, name in ((absent, "absent"), (here, "here")):
        path = tmp_path / f"{name}.yaml"
        path.write_text(
            f"# Download first:\n#   tune download Qwen/Qwen2.5-0.5B-Instruct --output-dir {folder} "
            "--ignore-patterns None\n" + text.replace("/models/Llama-3.2-1B-Instruct", f"{folder}/")
        )
        code, _, err = run_import(capsys, path, name)
        assert code == 0 and composed(project, name)["model"]["pretrained_model_name_or_path"] == f"{folder}/"
        notes = [line for line in err.splitlines() if line.startswith("note: checkpointer.checkpoint_dir")]
        if name == "absent":  # the folder is kept (it may be there on the machine that trains), and named
            assert (
                len(notes) == 1
                and "model.pretrained_model_name_or_path=Qwen/Qwen2.5-0.5B-Instruct" in notes[0]
            )
        else:
            assert notes == []


def test_a_variable_of_the_file_is_read_where_it_is_used_and_not_reported(project, capsys, tmp_path):
    checkpointer = {**yaml.safe_load((TT / "lora_single_device.yaml").read_text())["checkpointer"]}
    checkpointer["checkpoint_dir"] = "${base_model_path}"
    path = edited(
        tmp_path, "lora_single_device.yaml", base_model_path="/m/sft-epoch0", checkpointer=checkpointer
    )
    code, _, err = run_import(capsys, path, "var")
    assert code == 0 and composed(project, "var")["model"]["pretrained_model_name_or_path"] == "/m/sft-epoch0"
    assert "base_model_path" not in reasons(err)


def test_dora_and_local_text(project, capsys, tmp_path):
    model = {**yaml.safe_load((TT / "lora_single_device.yaml").read_text())["model"], "use_dora": True}
    dataset = {"_component_": "torchtune.datasets.text_completion_dataset", "source": "text",
               "data_files": "notes.txt", "packed": True}  # fmt: skip
    path = edited(tmp_path, "lora_single_device.yaml", model=model, dataset=dataset, dataset_val=None)
    code, _, err = run_import(capsys, path, "dora")
    assert code == 0
    cfg = composed(project, "dora")
    assert cfg["peft"]["name"] == "dora" and cfg["peft"]["config"]["use_dora"] is True
    data = cfg["dataset"]
    assert data["sources"] == [{"loader": "text", "data_files": "notes.txt"}]
    assert (data["format"], data["text_column"], data["train_on"], data["packing"]) == (
        "text",
        "text",
        "all",
        True,
    )
    assert "whole in one row" in reasons(err)["dataset.split_across_pack"]  # torchtune's default splits them
    assert "nothing to validate on" in reasons(err)["run_val_every_n_steps"]


def test_detection_takes_torchtune_and_leaves_the_other_formats(tmp_path):
    for path in sorted(TT.glob("*.yaml")):
        assert config_import.detect(importer.load(path)) == "torchtune"
    expected = {
        "model_compose_alpaca.yaml": "model-compose",
        "simplefoundation_default.json": "simplefoundation",
        "llamafarm_minimal_memory.yaml": "llamafarm",
        "llamafactory/lora_sft.yaml": "llama-factory",
        "llamafactory/lora_dpo.yaml": "llama-factory",
        "axolotl/lora.yaml": "axolotl",
        "axolotl/dpo.yaml": "axolotl",
    }
    for name, fmt in expected.items():
        assert config_import.detect(importer.load(DATA / name)) == fmt, name


@pytest.mark.slow
def test_imported_config_passes_preflight_and_trains_two_steps(project, capsys):
    from hydratune.preflight import check_config, compose
    from hydratune.train import run

    for folder in ("data", "assets"):
        (project / folder).symlink_to(ROOT / folder)
    assert run_import(capsys, TT / "lora_single_device.yaml", "imported")[0] == 0
    offline = ["model=tiny_llama", f"model.pretrained_model_name_or_path={ROOT}/assets/tiny-llama",
               "trainer=cpu", "trainer.precision=32-true", "model.attn_implementation=sdpa",
               "trainer.max_steps=2", "trainer.max_epochs=-1", "dataset.batch_size=2", "dataset.max_seq_length=128",
               "dataset.template=alpaca_short", "eval_before_training=false", "callbacks=none", "logger=none",
               f"dataset.sources=[{{loader:json,data_files:{{train:{ROOT}/data/sample/train.jsonl,"
               f"validation:{ROOT}/data/sample/eval.jsonl}}}}]"]  # fmt: skip
    out = project / "run"
    check_config(to_plain(compose(["experiment=imported", *offline], output_dir=str(out))))
    run(compose(["experiment=imported", *offline], output_dir=str(out)))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["train_loss"] > 0 and metrics["artifact"] == "adapter"
    assert (out / "adapter" / "adapter_config.json").is_file()
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == sorted(LLAMA_MODULES) and adapter["r"] == 32
