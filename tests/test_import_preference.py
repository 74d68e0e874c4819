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
