"""Preference and RL configs from other trainers train what their tool would: the second import review (J1-J12),
on LLaMA-Factory, Axolotl, torchtune and alignment-handbook DPO, SimPO, KTO, reward and PPO files."""

from __future__ import annotations

import pytest
from test_import import composed, reasons, run_import

AXOLOTL_DPO = (
    "base_model: Qwen/Qwen2.5-0.5B\nadapter: lora\nlora_r: 8\nlora_alpha: 16\nlora_dropout: 0.2\n"
    "lora_target_linear: true\nrl: dpo\ndatasets:\n  - path: someone/prefs\n    type: chat_template.default\n"
    "micro_batch_size: 2\nlearning_rate: 0.00001\n"
)


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_axolotl_simpo_keeps_cpos_nll_term_and_preference_runs_drop_dropout(project, capsys, tmp_path):
    """rl: simpo runs TRL's CPO trainer, whose cpo_alpha (default 1.0) adds the chosen answers' NLL: the import
    wrote sft_weight 0 (J1). TRL's preference configs zero every dropout, LoRA's too (J4)."""
    simpo = AXOLOTL_DPO.replace("rl: dpo", "rl: simpo\nrl_beta: 2.0\nsimpo_gamma: 0.5")
    code, out, err = run_import(capsys, write(tmp_path, "simpo.yml", simpo), "ax_simpo")
    assert code == 0, err
    task = composed(project, "ax_simpo")["task"]
    assert (task["loss"], task["beta"], task["simpo_gamma"], task["sft_weight"]) == ("simpo", 2.0, 0.5, 1.0)
    assert "cpo_alpha" in out + err
    assert composed(project, "ax_simpo")["peft"]["config"]["lora_dropout"] == 0.0
    assert "disable_dropout" in reasons(err)["lora_dropout"]
    code, _, err = run_import(capsys, write(tmp_path, "s0.yml", simpo + "cpo_alpha: 0.0\n"), "ax_simpo0")
    assert code == 0 and composed(project, "ax_simpo0")["task"]["sft_weight"] == 0.0


@pytest.mark.parametrize(
    ("extra", "loss", "sft_weight", "smoothing", "reported"),
    [
        # TRL's sigmoid has no label smoothing; hydratune's would be conservative DPO (J2)
        ("dpo_label_smoothing: 0.1\n", "sigmoid", 0.0, 0.0, "dpo_label_smoothing"),
        ("dpo_loss_type: [robust]\ndpo_label_smoothing: 0.1\n", "robust", 0.0, 0.1, None),
        # dpo_loss_type / dpo_loss_weights were dropped and sigmoid trained (J3)
        ("dpo_loss_type: [sigmoid, sft]\ndpo_loss_weights: [1.0, 0.5]\n", "sigmoid", 0.5, 0.0, None),
        ("dpo_loss_type: [ipo]\n", "ipo", 0.0, 0.0, None),
    ],
)
def test_axolotl_dpo_loss_keys_are_trls(
    project, capsys, tmp_path, extra, loss, sft_weight, smoothing, reported
):
    code, _, err = run_import(capsys, write(tmp_path, "dpo.yml", AXOLOTL_DPO + extra), "ax_dpo")
    assert code == 0, err
    task = composed(project, "ax_dpo")["task"]
    assert (task["loss"], task["sft_weight"], task["label_smoothing"]) == (loss, sft_weight, smoothing)
    if reported:
        assert "robust only" in reasons(err)[reported]


def test_axolotl_dpo_loss_hydratune_has_not_stops_the_import(project, capsys, tmp_path):
    text = AXOLOTL_DPO + "dpo_loss_type: [apo_zero]\n"
    code, _, err = run_import(capsys, write(tmp_path, "apo.yml", text), "ax_apo")
    assert (
        code == 2
        and len(err.strip().splitlines()) == 1
        and "apo_zero" in err
        and "nothing was written" in err
    )
    assert not (project / "conf" / "experiment" / "ax_apo.yaml").exists()


def lf_file(tmp_path, name: str, **changes) -> object:
    """tests/data/llamafactory/lora_dpo.yaml with keys replaced (None: left out) or added."""
    import yaml
    from test_import import LF

    data = yaml.safe_load((LF / "lora_dpo.yaml").read_text())
    data.update(changes)
    data = {k: v for k, v in data.items() if v is not None}
    return write(tmp_path, name, yaml.safe_dump(data, sort_keys=False))


def run_lf(capsys, path, name):
    from test_import import DATASET_INFO

    return run_import(capsys, path, name, "--dataset-info", str(DATASET_INFO))


@pytest.mark.parametrize(
    ("changes", "said"),
    [
        # a loss hydratune has not trained sigmoid DPO instead (J5)
        ({"pref_loss": "kto_pair"}, "pref_loss: kto_pair: hydratune's preference losses are"),
        # LLaMA-Factory refuses the file itself (J9c)
        (
            {"pref_loss": "ipo", "dpo_label_smoothing": 0.1},
            "dpo_label_smoothing: 0.1: LLaMA-Factory reads it",
        ),
    ],
)
def test_llamafactory_losses_it_would_not_train_stop_the_import(project, capsys, tmp_path, changes, said):
    code, _, err = run_lf(capsys, lf_file(tmp_path, "lf.yaml", **changes), "lf_refused")
    assert code == 2 and len(err.strip().splitlines()) == 1 and said in err and "nothing was written" in err
    assert not (project / "conf" / "experiment" / "lf_refused.yaml").exists()


def test_llamafactory_preference_keys_say_what_they_did_there(project, capsys, tmp_path):
    """Smoothing maps with sigmoid; pref_ftx under orpo and kto, and LLaMA-Factory's own BCO, LD-DPO and quantized
    reference keys, were 'not used' or 'no counterpart known' though LLaMA-Factory trains them (J9)."""
    path = lf_file(tmp_path, "sig.yaml", pref_loss="sigmoid", dpo_label_smoothing=0.1, simpo_gamma=None)
    code, _, err = run_lf(capsys, path, "lf_sig")
    assert code == 0, err
    assert composed(project, "lf_sig")["task"]["label_smoothing"] == 0.1  # LLaMA-Factory's cDPO
    extra = {"pref_bco_weight": 0.5, "ld_alpha": 0.5, "ref_model_quantization_bit": 4}
    code, _, err = run_lf(capsys, lf_file(tmp_path, "orpo.yaml", pref_loss="orpo", **extra), "lf_orpo")
    assert code == 0, err
    said = reasons(err)
    assert "NLL on top" in said["pref_ftx"]
    assert (
        all("no hydratune counterpart known" not in said[key] for key in extra)
        and "BCO" in said["pref_bco_weight"]
    )
    kto = lf_file(
        tmp_path, "kto.yaml", stage="kto", pref_loss=None, dpo_label_smoothing=None, simpo_gamma=None
    )
    code, _, err = run_lf(capsys, kto, "lf_kto")
    assert code == 0, err
    assert "KTO has no NLL term" in reasons(err)["pref_ftx"]


def test_llamafactory_ppo_samples_as_llamafactory_does(project, capsys, tmp_path):
    """stage: ppo got the demo's 12-token completions at temperature 1, 8 generations for each of 8 prompts, and
    pref_beta (which its PPO never reads) as the KL weight (J6, J7)."""
    path = lf_file(tmp_path, "ppo.yaml", stage="ppo", pref_loss=None, pref_ftx=None, simpo_gamma=None,
                   dpo_label_smoothing=None, reward_model="saves/rm", per_device_train_batch_size=2,
                   gradient_accumulation_steps=8, max_steps=100)  # fmt: skip
    code, out, err = run_lf(capsys, path, "lf_ppo")
    assert code == 0, err
    cfg = composed(project, "lf_ppo")
    task = cfg["task"]
    assert (task["max_new_tokens"], task["temperature"], task["top_p"]) == (1024, 0.95, 0.7)
    # 16 answers per PPO step, 4 passes over them (ppo_epochs' default): 2 prompts x 8, 4 optimizer steps
    assert (
        task["num_generations"],
        cfg["dataset"]["batch_size"],
        cfg["trainer"]["accumulate_grad_batches"],
    ) == (8, 2, 1)
    assert (task["num_iterations"], cfg["trainer"]["max_steps"], task["beta"]) == (4, 400, 0.2)
    assert "does not read it" in reasons(err)["pref_beta"] and "top_k 50" in out + err


def test_a_hub_source_reads_one_folder_of_its_repository(tmp_path):
    """torchtune's stack-exchange recipes read lvwerra/stack-exchange-paired's data/rl folder only (J8); a local
    copy laid out as the hub repository stands in for it."""
    import json

    from hydratune.data.sources import load_source

    for folder, rows in (("data/rl", 3), ("data/finetune", 5)):
        (tmp_path / folder).mkdir(parents=True)
        lines = [json.dumps({"question": f"q{i}", "response_j": "a", "response_k": "b"}) for i in range(rows)]
        (tmp_path / folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    loaded = load_source({"path": str(tmp_path), "split": "train", "data_dir": "data/rl"})
    assert len(loaded["train"]) == 3
    assert len(load_source({"path": str(tmp_path), "split": "train"})["train"]) == 8  # the whole repository


def test_axolotl_reward_model_rows_and_centering_carry_over(project, capsys, tmp_path):
    """bradley_terry.chat_template (every Axolotl reward example) was 'write the columns by hand'; its
    center_rewards_coefficient and num_labels: 1 were 'no counterpart known' (J10)."""
    text = (
        "base_model: Qwen/Qwen2.5-0.5B\nreward_model: true\nnum_labels: 1\ncenter_rewards_coefficient: 0.01\n"
        "datasets:\n  - path: argilla/distilabel-intel-orca-dpo-pairs\n    type: bradley_terry.chat_template\n"
        "micro_batch_size: 2\nlearning_rate: 0.00001\n"
    )
    code, _, err = run_import(capsys, write(tmp_path, "rm.yaml", text), "ax_rm")
    assert code == 0, err
    said = reasons(err)
    assert not {"num_labels", "center_rewards_coefficient", "datasets.0.type"} & set(said), said
    cfg = composed(project, "ax_rm")
    assert cfg["task"]["center_rewards_coefficient"] == 0.01
    data = cfg["dataset"]
    assert (data["format"], data["prompt_column"], data["system_column"]) == ("chat_pairs", "input", "system")
    assert (data["chosen_column"], data["rejected_column"]) == ("chosen", "rejected")


def test_a_reward_models_margin_column_and_centring_term_are_trls(tiny_model_dir, tokenizer):
    """TRL's RewardTrainer subtracts each pair's `margin` column and adds center_rewards_coefficient x (chosen +
    rejected)^2; the column was dropped with a warning and the term refused (review P8, J10)."""
    import torch
    from conftest import compose

    from hydratune.config import to_plain
    from hydratune.data.pairs import PairCollator, tokenize_pairs
    from hydratune.losses import bradley_terry_loss
    from hydratune.tasks.registry import get_task

    rows = [{"prompt": "copy: ab -> ", "chosen": "AB", "rejected": "abab", "margin": 2.0},
            {"prompt": "copy: sky -> ", "chosen": "SKY", "rejected": "s", "margin": 0}]  # fmt: skip
    tokenized = tokenize_pairs(rows, tokenizer, {"format": "pairs", "max_seq_length": 64})
    assert tokenized["margin"] == [2.0, 0.0]
    pairs = [
        {k: tokenized[k][i] for k in ("prompt_ids", "chosen_ids", "rejected_ids", "margin")} for i in range(2)
    ]
    batch = PairCollator(tokenizer.pad_token_id)(pairs)
    cfg = to_plain(
        compose(["task=reward", "peft=none", "task.center_rewards_coefficient=0.1", "task.margin=5"])
    )
    cfg["model"]["pretrained_model_name_or_path"] = str(tiny_model_dir)
    module = get_task(cfg["task"]).module(cfg, None, tokenizer)
    module.configure_model()
    with torch.no_grad():
        chosen, rejected = module.scores(batch)
        losses = module.pair_losses(batch, chosen, rejected)
    # the column wins over task.margin, as in TRL; the centring term is added to each pair
    expected = bradley_terry_loss(chosen, rejected, torch.tensor([2.0, 0.0])) + 0.1 * (chosen + rejected) ** 2
    torch.testing.assert_close(losses, expected)
    del batch["margin"]
    with torch.no_grad():
        without = module.pair_losses(batch, chosen, rejected)
    torch.testing.assert_close(
        without, bradley_terry_loss(chosen, rejected, torch.full((2,), 5.0)) + 0.1 * (chosen + rejected) ** 2
    )
    with pytest.raises(Exception, match="column 'margin' holds 'big'"):
        tokenize_pairs([{**rows[0], "margin": "big"}], tokenizer, {"format": "pairs", "max_seq_length": 64})


def test_a_trl_recipe_with_a_chat_template_reads_its_unseen_rows_as_conversations(project, capsys, tmp_path):
    """The zephyr-141b ORPO recipe sets a Jinja chat_template over a hub dataset the import cannot see: the rows
    were taken as strings and the template dropped, and following the note (format=chat_pairs) trained with the
    tokenizer's own template (J11)."""
    import yaml

    template = "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
    recipe = {"model_name_or_path": "a/b", "dataset_name": "someone/capybara-dpo", "beta": 0.05,
              "chat_template": template, "max_length": 2048}  # fmt: skip
    path = write(tmp_path, "orpo.yaml", yaml.safe_dump(recipe))
    code, _, err = run_import(capsys, path, "ah_orpo", "--stage", "orpo")
    assert code == 0, err
    data = composed(project, "ah_orpo")["dataset"]
    assert (data["format"], data["chat_template"]) == ("chat_pairs", template)
    assert "chat_template" not in reasons(err)


def test_torchtune_grpo_loss_means_over_the_batch_and_the_async_recipe_stops_in_one_line(
    project, capsys, tmp_path
):
    """GRPOLoss averages over every token of the batch (bnpo), GRPOSimpleLoss per sequence (grpo); the async
    recipe's ${eval:...} values stopped the import with an error naming no key (J13)."""
    recipe = (
        "output_dir: /tmp/out\nmodel:\n  _component_: torchtune.models.qwen2_5.qwen2_5_3b\n"
        "checkpointer:\n  _component_: torchtune.training.FullModelHFCheckpointer\n  checkpoint_dir: /m/qwen\n"
        "dataset:\n  _component_: torchtune.dev.grpo.gsm8k.gsm8k_dataset\n"
        "loss:\n  _component_: torchtune.dev.grpo.loss.GRPOLoss\n  epsilon: 0.2\n  kl_coeff: 0.04\n"
        "optimizer:\n  _component_: torch.optim.AdamW\n  lr: 1e-5\nbatch_size: 2\ngrpo_samples: 8\n"
    )
    code, _, err = run_import(capsys, write(tmp_path, "g.yaml", recipe), "tt_grpo")
    assert code == 0, err
    assert composed(project, "tt_grpo")["task"]["aggregation"] == "bnpo"
    simple = recipe.replace("loss.GRPOLoss", "loss.GRPOSimpleLoss")
    code, _, err = run_import(capsys, write(tmp_path, "s.yaml", simple), "tt_simple")
    assert code == 0 and composed(project, "tt_simple")["task"]["aggregation"] == "grpo"
    async_recipe = (
        "model:\n  _component_: torchtune.models.qwen2_5.qwen2_5_3b\n"
        "dataset:\n  _component_: torchtune.dev.grpo.gsm8k.gsm8k_dataset\ninference:\n  batch_size: 2\n  group_size: 8\n  total_batch_size: ${eval:'${inference.batch_size} * 2'}\n"
        "orchestration:\n  num_inference_workers: 1\ntraining:\n  loss:\n    _component_: torchtune.dev.rl.X\n"
    )
    code, _, err = run_import(capsys, write(tmp_path, "a.yaml", async_recipe), "tt_async")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "asynchronous GRPO recipe" in err and "nothing was written" in err
    evaluated = recipe.replace(
        "batch_size: 2", "batch_size: ${eval:'1 * 2'}"
    )  # a resolver of torchtune's own
    code, _, err = run_import(capsys, write(tmp_path, "e.yaml", evaluated), "tt_eval")
    assert code == 2 and err.startswith(
        "hydratune import: error: batch_size: ${eval:'1 * 2'}: cannot resolve"
    )
