"""`hydratune import`: the reference docs' own configs become experiments that compose and check."""

from __future__ import annotations

import shutil

import pytest
from conftest import ROOT

from hydratune.cli import main
from hydratune.config import to_plain

DATA = ROOT / "tests" / "data"


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A copy of conf/ to import into, so the checkout's conf/experiment stays as it is."""
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    monkeypatch.setenv("HYDRATUNE_ROOT", str(tmp_path))
    return tmp_path


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
    assert [line.split(":")[1].strip() for line in unmapped] == ["output_dir"]


def test_llamafarm_yaml(project, capsys):
    cfg, unmapped = imported(project, capsys, "llamafarm_minimal_memory.yaml", "lf")
    assert cfg["peft"]["name"] == "qlora" and cfg["peft"]["config"]["r"] == 8
    assert cfg["peft"]["config"]["lora_alpha"] == 16
    assert cfg["optimizer"]["_target_"] == "bitsandbytes.optim.PagedAdamW8bit"
    assert cfg["trainer"]["accelerator"] == "gpu"  # optimization.cuda -> trainer=cuda
    assert cfg["trainer"]["accumulate_grad_batches"] == 16
    assert cfg["model"]["attn_implementation"] == "flash_attention_2"
    assert sorted(line.split(":")[1].strip() for line in unmapped) == ["push_to_hub", "use_cpu_offload"]


def test_refuses_to_overwrite_and_unknown_formats(project, capsys, tmp_path):
    assert main(["import", str(DATA / "simplefoundation_default.json"), "--name", "sf"]) == 0
    assert main(["import", str(DATA / "simplefoundation_default.json"), "--name", "sf"]) == 2
    assert "exists" in capsys.readouterr().err
    other = tmp_path / "other.yaml"
    other.write_text("foo: 1\n")
    assert main(["import", str(other)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "cannot tell the format" in err


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
