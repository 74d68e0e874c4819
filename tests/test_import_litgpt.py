"""`hydratune import` of litgpt finetune YAMLs: the fixtures (written after litgpt's config_hub/finetune) become
experiments that compose, pass the schema and carry litgpt's meaning, defaults included."""

from __future__ import annotations

import pytest
from conftest import ROOT
from test_import import composed, reasons, run_import

from hydratune.config import to_plain
from hydratune.config_import import detect
from hydratune.importer import load

DATA = ROOT / "tests" / "data"
LIT = DATA / "litgpt"


def write(tmp_path, text: str):
    path = tmp_path / "litgpt.yaml"
    path.write_text(text)
    return path


def test_lora_on_every_linear_layer_with_alpaca2k(project, capsys):
    code, out, err = run_import(capsys, LIT / "lora.yaml", "lit_lora")
    assert code == 0 and "as litgpt" in out
    cfg = composed(project, "lit_lora")
    assert (
        cfg["model"]["pretrained_model_name_or_path"] == "Qwen/Qwen2.5-0.5B"
    )  # checkpoints/Qwen/Qwen2.5-0.5B
    assert (cfg["model"]["dtype"], cfg["trainer"]["precision"]) == ("bfloat16", "bf16-true")
    lora = cfg["peft"]["config"]
    assert (cfg["peft"]["name"], lora["r"], lora["lora_alpha"], lora["lora_dropout"]) == ("lora", 16, 32, 0.1)
    assert lora["target_modules"] == "all-linear"  # query, key, value, projection and mlp: every linear layer
    assert cfg["quantization"]["method"] == "none"
    trainer = cfg["trainer"]
    # global_batch_size 16 = micro_batch_size 2 x 8 accumulated batches on one device
    assert (cfg["dataset"]["batch_size"], trainer["accumulate_grad_batches"]) == (2, 8)
    assert (
        cfg["dataset"]["eval_batch_size"] == 2
    )  # litgpt validates in micro batches (eval.max_iters of them)
    assert (trainer["max_epochs"], trainer["max_steps"]) == (3, 400)  # whichever ends first, as in litgpt
    assert trainer["val_check_interval"] == 40 * 8  # eval.interval counts optimizer steps
    assert (trainer["log_every_n_steps"], trainer["limit_val_batches"]) == (1, 25)
    assert trainer["gradient_clip_val"] is None  # litgpt's finetune scripts never clip
    assert cfg["optimizer"]["_target_"] == "torch.optim.AdamW"
    assert (cfg["optimizer"]["lr"], cfg["optimizer"]["weight_decay"], cfg["optimizer"]["betas"]) == (
        3e-4,
        0.05,
        [0.9, 0.98],
    )
    assert (cfg["scheduler"]["name"], cfg["scheduler"]["warmup_steps"], cfg["scheduler"]["warmup_ratio"]) == (
        "cosine",
        30,
        0.0,
    )
    data = cfg["dataset"]
    assert data["sources"] == [{"path": "mhenrichsen/alpaca_2k_test", "split": "train"}]
    assert data["ops"] == [{"split": {"eval": 0.1, "seed": 7}}]
    assert (data["format"], data["template"], data["train_on"]) == (
        "alpaca",
        "alpaca",
        "response",
    )  # mask_prompt
    assert (data["max_seq_length"], data["num_workers"]) == (768, 2)
    assert (
        cfg["callbacks"]["model_checkpoint"]["save_steps"] == 150
        and cfg["callbacks"]["early_stopping"] is None
    )
    assert cfg["eval_before_training"] is True and cfg["eval_generations"]["max_new_tokens"] == 64
    assert "tensorboard" in cfg["logger"] and cfg["seed"] == 2024
    assert set(reasons(err)) == {
        "out_dir",
        "access_token",
        "train.min_lr",
        "data.init_args.download_dir",
    }  # fmt: skip (final_validation: true is what runs)
    assert "decay to 0" in reasons(err)["train.min_lr"]
    written = (project / "conf" / "experiment" / "lit_lora.yaml").read_text()
    assert "hf_not_a_real_token" not in written and "hf_not_a_real_token" not in err  # a secret stays out


def test_qlora_with_a_json_file_and_wandb(project, capsys):
    code, _, err = run_import(capsys, LIT / "qlora.yaml", "lit_qlora")
    assert code == 0
    cfg = composed(project, "lit_qlora")
    assert cfg["model"]["pretrained_model_name_or_path"] == "meta-llama/Llama-2-7b-hf"
    assert cfg["peft"]["name"] == "qlora"
    quant = cfg["quantization"]["config"]
    assert (quant["bnb_4bit_quant_type"], quant["bnb_4bit_use_double_quant"]) == ("nf4", True)  # bnb.nf4-dq
    assert quant["bnb_4bit_compute_dtype"] == "bfloat16"  # precision: bf16-true
    lora = cfg["peft"]["config"]
    assert (lora["r"], lora["lora_alpha"], lora["lora_dropout"]) == (8, 16, 0.05)  # the file's, not qlora's
    assert lora["target_modules"] == [
        "q_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
        "lm_head",
    ]
    # litgpt swaps in bitsandbytes' PagedAdamW when quantizing; weight decay and betas are the class defaults
    optimizer = cfg["optimizer"]
    assert optimizer["_target_"] == "bitsandbytes.optim.PagedAdamW32bit" and optimizer["lr"] == 1e-4
    assert (optimizer["weight_decay"], optimizer["betas"]) == (0.01, [0.9, 0.999])
    trainer = cfg["trainer"]
    assert (trainer["accumulate_grad_batches"], trainer["log_every_n_steps"]) == (8, 2)  # 32 / 4; 16 / 8
    assert (trainer["max_epochs"], trainer["max_steps"], trainer["val_check_interval"]) == (2, -1, 400)
    data = cfg["dataset"]
    assert data["sources"] == [{"loader": "json", "data_files": {"train": "data/sample/train.jsonl"}}]
    assert data["ops"] == [{"split": {"eval": 0.2, "seed": 11}}]
    assert data["train_on"] == "all"  # mask_prompt: false trains the prompt's tokens too
    assert cfg["eval_before_training"] is False and cfg["eval_generations"]["num_prompts"] == 1
    wandb = cfg["logger"]["wandb"]
    assert (wandb["project"], wandb["name"], wandb["group"]) == ("litgpt-imports", "llama2-qlora", "qlora")
    assert set(reasons(err)) == {"out_dir", "train.min_lr"}


def test_full_finetune_on_four_devices(project, capsys):
    code, _, err = run_import(capsys, LIT / "full.yaml", "lit_full")
    assert code == 0 and "note: no lora_* keys: read as `litgpt finetune_full`" in err
    cfg = composed(project, "lit_full")
    assert cfg["peft"]["name"] == "none"
    assert cfg["model"]["pretrained_model_name_or_path"] == "microsoft/phi-2"
    assert (cfg["model"]["dtype"], cfg["trainer"]["precision"]) == ("float32", "bf16-mixed")  # fp32 weights
    trainer = cfg["trainer"]
    assert "FSDPStrategy" in trainer["strategy"]["_target_"] and trainer["devices"] == 4
    assert trainer["accumulate_grad_batches"] == 64 // 4 // 2
    assert trainer["val_check_interval"] == 100 * 8
    optimizer = cfg["optimizer"]
    assert (optimizer["_target_"], optimizer["lr"], optimizer["momentum"]) == ("torch.optim.SGD", 0.01, 0.9)
    assert (optimizer["weight_decay"], optimizer["nesterov"]) == (0.0, False)
    data = cfg["dataset"]
    assert data["sources"] == [
        {"path": "HuggingFaceH4/deita-10k-v0-sft", "split": {"train": "train_sft", "validation": "test_sft"}}
    ]
    assert data["ops"] == [
        {"map": {"instruction": "{{ messages[0].content }}", "output": "{{ messages[1].content }}"}}
    ]  # the first exchange of each conversation, as litgpt's Deita does
    assert cfg["resume"] == "auto" and "mlflow" in cfg["logger"]
    assert set(reasons(err)) == {
        "out_dir",
        "eval.final_validation",
    }  # false: the final weights are evaluated anyway


def test_what_the_file_leaves_out_is_litgpts_default(project, capsys, tmp_path):
    path = write(tmp_path, "checkpoint_dir: checkpoints/meta-llama/Llama-3.2-1B\ntrain:\n  epochs: 1\n")
    code, _, err = run_import(capsys, path, "lit_defaults")
    assert code == 0
    assert "note: no precision: litgpt's default, bf16-mixed" in err
    assert "note: no data: litgpt's default, litgpt.data.Alpaca" in err
    assert "note: train.max_seq_length unset" in err
    cfg = composed(project, "lit_defaults")
    assert cfg["model"]["pretrained_model_name_or_path"] == "meta-llama/Llama-3.2-1B"
    assert cfg["peft"]["name"] == "none" and cfg["trainer"]["precision"] == "bf16-mixed"
    trainer = cfg["trainer"]
    assert (cfg["dataset"]["batch_size"], trainer["accumulate_grad_batches"]) == (1, 16)
    assert trainer["val_check_interval"] == 600 * 16  # finetune_full's eval interval
    assert (cfg["optimizer"]["lr"], cfg["optimizer"]["weight_decay"]) == (1e-3, 0.01)  # torch's AdamW
    assert cfg["scheduler"]["warmup_steps"] == 100 and cfg["seed"] == 1337
    assert "csv" in cfg["logger"]
    data = cfg["dataset"]
    assert data["sources"] == [{"path": "yahma/alpaca-cleaned", "split": "train"}]
    assert data["ops"] == [{"split": {"eval": 0.03865, "seed": 42}}] and data["train_on"] == "all"
    # Flat keys only: checkpoint_dir and a LoRA layer flag are enough to tell litgpt.
    path.write_text(
        "checkpoint_dir: checkpoints/meta-llama/Llama-3.2-1B\nlora_r: 4\nlora_key: false\nseed: 7\n"
    )
    assert run_import(capsys, path, "lit_lora_defaults")[0] == 0
    cfg = composed(project, "lit_lora_defaults")
    lora = cfg["peft"]["config"]
    assert (lora["r"], lora["lora_alpha"], lora["lora_dropout"]) == (4, 16, 0.05)
    assert lora["target_modules"] == ["q_proj", "v_proj"]  # lora_query and lora_value default to true
    assert cfg["trainer"]["val_check_interval"] == 100 * 16 and cfg["seed"] == 7


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (
            "checkpoint_dir: checkpoints/a/b\nadapter_start_layer: 2\ntrain: {epochs: 1}\n",
            "adapter_start_layer",
        ),
        (
            "checkpoint_dir: checkpoints/a/b\nout_dir: out/finetune/adapter-v2\ntrain: {epochs: 1}\n",
            "out_dir",
        ),
        (
            "model_name: pythia-14m\ndata: {class_path: litgpt.data.TinyStories}\ntrain: {epochs: 1}\n",
            "model_name",
        ),
        (
            "checkpoint_dir: checkpoints/a/b\ndata: {class_path: litgpt.data.TextFiles}\ntrain: {}\n",
            "data.class_path",
        ),
        (
            "checkpoint_dir: checkpoints/a/b\nquantize: bnb.nf4\nprecision: bf16-mixed\ntrain: {}\n",
            "quantize",
        ),
        ("checkpoint_dir: checkpoints/a/b\nlora_query: false\nlora_value: false\ntrain: {}\n", "lora_query"),
    ],
)
def test_methods_and_stages_without_a_counterpart_are_refused(project, capsys, tmp_path, text, key):
    code, out, err = run_import(capsys, write(tmp_path, text), "refused")
    assert code == 2 and not out
    assert len(err.strip().splitlines()) == 1 and key in err and "nothing was written" in err
    assert not (project / "conf" / "experiment" / "refused.yaml").exists()


@pytest.mark.parametrize(
    ("checkpoint_dir", "flags", "modules"),
    [
        ("checkpoints/tiiuae/falcon-7b", "lora_mlp: true\n",
         ["query_key_value", "dense_h_to_4h", "dense_4h_to_h"]),
        ("checkpoints/EleutherAI/pythia-160m", "lora_projection: true\nlora_head: true\n",
         ["query_key_value", "dense", "embed_out"]),
        ("checkpoints/microsoft/phi-2", "lora_mlp: true\n", ["q_proj", "v_proj", "fc1", "fc2"]),
        ("checkpoints/google/gemma-2b", "lora_head: true\n", ["q_proj", "v_proj", "lm_head"]),
    ],
)  # fmt: skip
def test_lora_flags_become_the_families_module_names(
    project, capsys, tmp_path, checkpoint_dir, flags, modules
):
    path = write(tmp_path, f"checkpoint_dir: {checkpoint_dir}\nlora_r: 8\n{flags}train: {{epochs: 1}}\n")
    code, _, err = run_import(capsys, path, "lit_family")
    assert code == 0
    assert composed(project, "lit_family")["peft"]["config"]["target_modules"] == modules
    assert ("fuse q, k and v" in err) == (
        "query_key_value" in modules
    )  # query and value asked, key comes too


def test_a_checkpoint_dir_that_is_not_a_hub_copy_is_reported(project, capsys, tmp_path):
    path = write(tmp_path, "checkpoint_dir: /data/merged-run\nlora_r: 8\ntrain: {epochs: 1}\nfoo: 1\n")
    code, _, err = run_import(capsys, path, "lit_local")
    assert code == 0
    assert "model.pretrained_model_name_or_path" in reasons(err)["checkpoint_dir"]
    assert "not an argument of litgpt" in reasons(err)["foo"]


def test_prompt_styles(project, capsys, tmp_path):
    base = "checkpoint_dir: checkpoints/a/b\nlora_r: 8\ntrain: {epochs: 1, max_seq_length: 256}\n"
    path = write(
        tmp_path, base + "data:\n  class_path: litgpt.data.LongForm\n  init_args: {mask_prompt: true}\n"
    )
    assert run_import(capsys, path, "lit_longform")[0] == 0
    data = composed(project, "lit_longform")["dataset"]
    assert (data["format"], data["prompt_column"], data["response_column"]) == (
        "prompt_response",
        "prompt",
        "output",
    )
    assert data["ops"][0] == {"rename_columns": {"input": "instruction"}}
    assert data["ops"][1]["map"]["prompt"].endswith("### Instruction:\n{instruction}\n\n### Response:\n")
    assert data["train_on"] == "response"
    path.write_text(
        base + "data:\n  class_path: JSON\n  init_args: {json_path: rows/, prompt_style: llama3}\n"
    )
    code, _, err = run_import(capsys, path, "lit_chat")
    data = composed(project, "lit_chat")["dataset"]
    assert code == 0 and "prompt_style: llama3" in err
    assert (data["format"], data["chat_template"], data["train_on"]) == ("alpaca_chat", None, "all")
    assert data["sources"] == [{"loader": "json", "data_dir": "rows/"}]  # train.json and val.json inside


def test_detection_takes_litgpt_files_and_leaves_the_others(tmp_path):
    for path in sorted(LIT.glob("*.yaml")):
        assert detect(load(path)) == "litgpt", path.name
    expected = {DATA / "model_compose_alpaca.yaml": "model-compose", DATA / "llamafarm_minimal_memory.yaml": "llamafarm",
                DATA / "simplefoundation_default.json": "simplefoundation"}  # fmt: skip
    for folder, fmt in (("llamafactory", "llama-factory"), ("axolotl", "axolotl"), ("torchtune", "torchtune"),
                        ("trl", "trl")):  # fmt: skip
        expected |= {path: fmt for path in (DATA / folder).glob("*.yaml")}
    for path, fmt in expected.items():
        assert detect(load(path)) == fmt, path
    # An Axolotl file with a `checkpoint_dir`-less `optimizer:` name stays Axolotl.
    assert detect({"base_model": "a/b", "optimizer": "adamw_torch", "datasets": []}) == "axolotl"


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["lora.yaml", "qlora.yaml"])
def test_imported_config_passes_preflight_and_trains_two_steps(project, capsys, monkeypatch, fixture):
    import json

    from hydratune.preflight import check_config, compose
    from hydratune.train import run

    for folder in ("data", "assets"):
        (project / folder).symlink_to(ROOT / folder)
    monkeypatch.chdir(ROOT)  # the JSON module's json_path is relative, as litgpt reads it
    assert run_import(capsys, LIT / fixture, "imported")[0] == 0
    offline = ["model=tiny_llama", "model.dtype=float32", "trainer=cpu", "trainer.precision=32-true",
               "optimizer=adamw_torch", "trainer.max_steps=2", "trainer.max_epochs=-1", "dataset.batch_size=2",
               "dataset.max_seq_length=512", "eval_before_training=false", "callbacks=none", "logger=none"]  # fmt: skip
    if fixture == "lora.yaml":  # hub data: the shipped sample in its place (the same alpaca columns)
        offline.append(
            f"dataset.sources=[{{loader:json,data_files:{{train:{ROOT}/data/sample/train.jsonl}}}}]"
        )
    else:  # the imported W&B settings stay in logger.wandb when logger=none drops the W&B logger itself
        offline.append("~logger.wandb")
    out = project / "run"
    check_config(to_plain(compose(["experiment=imported", *offline], output_dir=str(out))))
    run(compose(["experiment=imported", *offline], output_dir=str(out)))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["train_loss"] > 0 and metrics["artifact"] == "adapter"
