"""Every option of every config group composes, and every `_target_` binds to its target's signature."""

from __future__ import annotations

import inspect

import pytest
from conftest import CONF_DIR, compose, run_cli
from hydra.utils import get_class, get_method
from omegaconf import OmegaConf

from hydratune.optim import OWN_KEYS

GROUPS = sorted(p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in {"hydra"})
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONF_DIR / g).glob("*.yaml"))]


def test_groups_are_the_designed_ones():
    expected = {
        "model",
        "task",
        "dataset",
        "peft",
        "quantization",
        "optimizer",
        "scheduler",
        "trainer",
        "logger",
        "callbacks",
        "paths",
        "experiment",
        "debug",
    }
    assert expected <= set(GROUPS)


def _targets(node, path=""):
    if isinstance(node, dict):
        if "_target_" in node:
            yield path, node
        for key, value in node.items():
            yield from _targets(value, f"{path}.{key}" if path else key)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _targets(value, f"{path}[{i}]")


# Arguments supplied at the call site, not in YAML (LOMO takes the model instead of params; a GRPO reward
# function gets the prompts and completions of each step).
CALL_SITE = {"params", "model", "logger", "callbacks", "prompts", "completions"}


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_targets_bind(group, option):
    cfg = compose([f"{group}={option}"])
    plain = OmegaConf.to_container(cfg, resolve=True)
    for path, node in _targets(plain):
        target = node["_target_"]
        try:
            fn = get_class(target)
            signature = inspect.signature(fn.__init__)
            kwargs = {"self": None}
        except (ValueError, ImportError):
            fn = get_method(target)
            signature = inspect.signature(fn)
            kwargs = {}
        own = {*OWN_KEYS, *(["weight"] if ".rewards[" in path else [])}  # a reward's weight is hydratune's
        kwargs |= {k: v for k, v in node.items() if not k.startswith("_") and k not in own}
        kwargs |= {k: None for k in CALL_SITE if k in signature.parameters}
        try:
            signature.bind(**kwargs)
        except TypeError as err:
            pytest.fail(f"{group}={option}: {path} does not bind to {target}: {err}")


def test_default_config_is_complete():
    cfg = compose()
    assert cfg.peft.method == "lora"
    assert cfg.quantization.method == "none"
    assert cfg.dataset.format == "alpaca"
    assert OmegaConf.select(cfg, "trainer.max_steps") > 0


def test_hf_token_is_read_when_the_model_loads_and_never_resolved_into_a_config(monkeypatch):
    """`--cfg job --resolve` printed HF_TOKEN's value when the model group read it with oc.env (review Z9)."""
    from hydratune.model import _hub_kwargs

    monkeypatch.setenv("HF_TOKEN", "hf_FAKEresolved")
    for option in (p.stem for p in (CONF_DIR / "model").glob("*.yaml")):
        cfg = compose([f"model={option}"])
        assert "hf_FAKEresolved" not in OmegaConf.to_yaml(cfg, resolve=True), option
        assert (
            _hub_kwargs(OmegaConf.to_container(cfg.model, resolve=True), cfg.model.token)["token"]
            == "hf_FAKEresolved"
        )


def test_secrets_are_redacted_by_their_key_in_any_case_and_url_credentials_are_masked(tiny_model_dir):
    """A key named otherwise than the few exact names (openai_api_key, HF_TOKEN, a list under hub_token) and a
    basic-auth URL reached hparams.yaml, checkpoints and the importer's lines (review Z1, Z4, Z6, Z8)."""
    from types import SimpleNamespace

    from conftest import make_module

    from hydratune.config import REDACTED, is_secret_key, mask_url, redact
    from hydratune.errors import UserError
    from hydratune.preflight import check_no_secrets

    assert all(
        is_secret_key(k) for k in ("token", "HF_TOKEN", "openai_api_key", "db_password", "aws_secret_key")
    )
    assert not any(
        is_secret_key(k) for k in ("eos_token", "pad_token", "max_new_tokens", "tokenizer", "stop")
    )
    cfg = {"rewards": [{"api_key": "sk-FAKE", "judge_url": "https://user:fakepass@host/v1", "weight": 1}],
           "model": {"hub_token": ["hf_FAKE"], "pad_token": "<pad>"}}  # fmt: skip
    assert redact(cfg) == {
        "rewards": [{"api_key": REDACTED, "judge_url": "https://***@host/v1", "weight": 1}],
        "model": {"hub_token": REDACTED, "pad_token": "<pad>"},
    }
    assert mask_url("see http://a:b@x.org/p and https://x.org") == "see http://***@x.org/p and https://x.org"
    for given in ("model.token=${oc.env:HF_TOKEN,hf_FAKEdefault}", "+hydra.job.env_set.HF_TOKEN=hf_FAKE"):
        with pytest.raises(UserError, match="a secret on the command line is saved in clear text"):
            check_no_secrets([given])
    check_no_secrets(["model.token=${oc.env:HF_TOKEN}", "model.token=${oc.env:HF_TOKEN,null}"])
    # a logger's key read from the environment was W&B's TypeError traceback after the model loaded (Z9)
    from hydratune.preflight import check_logger_credentials

    wandb = {"_target_": "lightning.pytorch.loggers.WandbLogger", "api_key": "${oc.env:WANDB_API_KEY}"}
    with pytest.raises(UserError, match=r"^logger.wandb.api_key: .*remove the key and export WANDB_API_KEY$"):
        check_logger_credentials({"wandb": wandb})
    check_logger_credentials({"wandb": {k: v for k, v in wandb.items() if k != "api_key"}})
    # a URL's password on the command line is refused (Z5), and a logger that cannot start is one line, masked
    with pytest.raises(UserError, match=r"^logger.mlflow.tracking_uri: a URL with user:password@ is saved"):
        check_no_secrets(["logger.mlflow.tracking_uri=http://user:fakepass@host:5000"])
    from hydratune.loggers import build_loggers

    with pytest.raises(
        UserError, match=r"^logger.bad \(int\) could not start: .*'http://\*\*\*@host/x'$"
    ) as err:
        build_loggers(
            {"bad": {"_target_": "builtins.int", "_args_": ["http://user:fakepass@host/x"]}}, "/tmp/none"
        )
    assert "fakepass" not in str(err.value)
    # a module's saved settings go to checkpoints redacted, and Lightning does not log them (train.fit logs the
    # redacted config)
    module = make_module(tiny_model_dir)
    assert module._log_hyperparams is False
    module._trainer = SimpleNamespace(strategy=None)
    checkpoint = {"hyper_parameters": {**module.hparams, "rewards": cfg["rewards"]}, "state_dict": {}}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["hyper_parameters"]["rewards"][0]["api_key"] == REDACTED


def test_train_help_lists_groups():
    result = run_cli(["train.py", "--help"])
    assert result.returncode == 0, result.stderr
    for group in ("model", "peft", "optimizer", "scheduler", "trainer", "logger", "callbacks", "dataset"):
        assert f"{group}:" in result.stdout


def test_train_help_shows_the_choices_and_config_of_the_overrides():
    result = run_cli(["train.py", "peft=qlora", "optimizer.lr=3e-4", "--help"])
    assert result.returncode == 0, result.stderr
    assert "peft: dora, freeze, lora, none, *qlora, rslora" in result.stdout
    assert "*nf4" in result.stdout.split("quantization:")[1].splitlines()[0]  # qlora's own choice
    config = OmegaConf.create(result.stdout.split("== Config (any key: KEY=VALUE) ==")[1])
    assert config.peft.config.r == 64 and config.optimizer.lr == 3e-4
    assert "hydra" not in config
    bad = run_cli(["train.py", "optimizer=nope", "--help"])
    assert bad.returncode == 2 and "optimizer=nope: no such option" in bad.stderr


def test_cfg_job_prints_config():
    result = run_cli(["train.py", "--cfg", "job"])
    assert result.returncode == 0, result.stderr
    printed = OmegaConf.create(result.stdout)
    assert printed.peft.method == "lora"
    assert printed.seed == 42


def test_hydratune_console_script_help():
    import subprocess
    import sys
    from pathlib import Path

    script = Path(sys.executable).parent / "hydratune"  # installed by pyproject's [project.scripts]
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "generate" in result.stdout


def test_a_secret_written_in_an_experiment_is_refused(project):
    """`model.token: hf_...` in an experiment was saved as written in .hydra/config.yaml with no word (review Z3)."""
    from hydratune.errors import UserError
    from hydratune.preflight import check_command_line, run_preflight

    (project / "conf" / "experiment" / "with_token.yaml").write_text(
        "# @package _global_\nmodel:\n  token: hf_FAKEyamlTOKEN123\n"
    )
    for check in (
        lambda: check_command_line(["experiment=with_token"]),
        lambda: run_preflight(["experiment=with_token"]),
    ):
        with pytest.raises(
            UserError, match=r"^model.token: a secret written in a config file is saved"
        ) as err:
            check()
        assert "hf_FAKE" not in str(err.value)
