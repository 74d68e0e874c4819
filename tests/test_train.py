"""End-to-end runs: the run directory, and real clients (peft, transformers, TensorBoard) reading it."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import ROOT, run_cli

FAKE_TOKEN = "hf_FAKEtoken0123456789secret"


def _train(tiny_model_dir: Path, run_dir: Path, *overrides: str):
    result = run_cli(
        [
            "train.py",
            f"model.pretrained_model_name_or_path={tiny_model_dir}",
            "trainer.max_steps=6",
            "trainer.val_check_interval=3",
            "trainer.log_every_n_steps=2",
            "trainer.enable_progress_bar=false",
            "dataset.batch_size=8",
            f"hydra.run.dir={run_dir}",
            *overrides,
        ],
        env={"HF_TOKEN": FAKE_TOKEN},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("runs") / "lora"
    _train(tiny_model_dir, run_dir)
    return run_dir


@pytest.mark.slow
def test_run_directory_layout(lora_run):
    for name in ("config.yaml", "overrides.yaml", "hydra.yaml"):
        assert (lora_run / ".hydra" / name).is_file()
    assert (lora_run / "train.log").stat().st_size > 0
    assert (lora_run / "checkpoints" / "last.ckpt").is_file()
    assert list((lora_run / "checkpoints").glob("step=0000*.ckpt"))
    assert list((lora_run / "tensorboard").glob("events.out.tfevents.*"))
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ):
        assert (lora_run / "adapter" / name).is_file(), name
    assert (lora_run / "loss.png").stat().st_size > 1000
    metrics = json.loads((lora_run / "metrics.json").read_text())
    for key in (
        "train_loss",
        "val_loss",
        "initial_val_loss",
        "val_ppl",
        "steps",
        "tokens_seen",
        "wall_seconds",
        "tokens_per_s",
    ):
        assert key in metrics, key
    assert metrics["steps"] == 6
    assert metrics["artifact"] == "adapter"
    assert [step for step, _ in metrics["val_curve"]] == [0, 3, 6]  # step 6 evaluated in training, once


@pytest.mark.slow
def test_training_that_stops_between_evaluations_ends_with_one(tiny_model_dir, tmp_path):
    # 5 steps, evaluations every 3: without an evaluation at the end, the summary's val loss (and a sweep's
    # objective) would be that of step 3's weights, not the exported ones.
    run_dir = tmp_path / "run"
    result = _train(tiny_model_dir, run_dir, "trainer.max_steps=5", "logger=none", "callbacks=none")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [step for step, _ in metrics["val_curve"]] == [0, 3, 5]
    assert metrics["val_loss"] == metrics["val_curve"][-1][1] != metrics["val_curve"][-2][1]
    assert metrics["val_loss"] < metrics["initial_val_loss"]
    assert "evaluating the final weights (step 5; the last evaluation was at step 3)" in result.stdout


@pytest.mark.slow
def test_data_with_no_validation_split_trains_without_evaluation_and_says_so(tiny_model_dir, tmp_path):
    """One's own JSONL as the one data file (no validation split): trained as the Hugging Face Trainer does
    without an eval dataset, not a crash in the first evaluation."""
    mine = tmp_path / "mine.jsonl"
    mine.write_text((ROOT / "data" / "sample" / "train.jsonl").read_text())
    run_dir = tmp_path / "run"
    result = _train(tiny_model_dir, run_dir, f"dataset.sources.0.data_files={mine}", "trainer.max_steps=4")
    assert "dataset: no validation split, so no evaluation" in result.stdout + result.stderr
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 4 and "val_loss" not in metrics and metrics["train_loss"] > 0
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_secret_token_lands_in_no_file(lora_run):
    for path in lora_run.rglob("*"):
        if path.is_file():
            assert FAKE_TOKEN.encode() not in path.read_bytes(), f"HF token leaked into {path}"


@pytest.mark.slow
def test_tensorboard_reads_train_loss(lora_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in (lora_run / "tensorboard").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {"train/loss", "val/loss"} <= tags


@pytest.mark.slow
def test_peft_adapter_reproduces_module_logits(lora_run, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from hydratune.tasks.sft.module import SFTModule

    checkpoint = torch.load(lora_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    module = SFTModule(**checkpoint["hyper_parameters"])
    module.configure_model()
    module.load_state_dict(checkpoint["state_dict"], strict=False)
    module.eval()

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    loaded = PeftModel.from_pretrained(base, lora_run / "adapter").eval()
    batch = {
        "input_ids": torch.tensor([[1, 20, 21, 22, 23, 24, 25]]),
        "attention_mask": torch.ones(1, 7, dtype=torch.long),
    }
    with torch.no_grad():
        expected = module(batch)
        got = loaded(**batch).logits
    assert torch.allclose(expected, got, atol=1e-5)
    # The adapter really changed the model: it differs from the bare base.
    with torch.no_grad():
        bare = AutoModelForCausalLM.from_pretrained(tiny_model_dir)(**batch).logits
    assert not torch.allclose(bare, got, atol=1e-4)


@pytest.mark.slow
def test_full_finetune_exports_model_dir(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = tmp_path / "full"
    _train(tiny_model_dir, run_dir, "peft=none", "logger=csv", "eval_before_training=false")
    model_dir = run_dir / "model"
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    AutoTokenizer.from_pretrained(model_dir)
    assert not (run_dir / "adapter").exists()
    assert (run_dir / "csv" / "metrics.csv").is_file()
    # Weights changed from the base model.
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert not torch.equal(base.lm_head.weight, model.lm_head.weight)


SIGNAL_AT_STEP = """
import os
import signal

import lightning as L


class SignalAtStep(L.Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)
"""


@pytest.mark.slow
def test_a_stop_signal_during_the_final_step_finishes_the_run(tiny_model_dir, tmp_path):
    """SIGTERM while the last step trains: the run is whole, so it exports and writes metrics.json and exits 0;
    it was 'stopped' with no results, and its resume had nothing left to train (review S13)."""
    (tmp_path / "sigcb.py").write_text(SIGNAL_AT_STEP)
    run_dir = tmp_path / "run"
    result = run_cli(
        [
            "train.py",
            f"model.pretrained_model_name_or_path={tiny_model_dir}",
            "trainer.max_steps=4",
            "trainer.val_check_interval=3",
            "trainer.enable_progress_bar=false",
            "eval_before_training=false",
            f"hydra.run.dir={run_dir}",
            "+callbacks.sig._target_=sigcb.SignalAtStep",
            "+callbacks.sig.step=3",
        ],
        env={"PYTHONPATH": str(tmp_path)},
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "SIGTERM came during the final step (4): finishing the run" in out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["val_curve"][-1][0] == 4  # the final weights evaluated
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert "stopped by SIGTERM" not in out


@pytest.mark.slow
def test_default_run_learns(tmp_path):
    """The acceptance criterion of the default run: eval loss halves and held-out answers are exact."""
    from hydratune.data.formats import alpaca_prompt
    from hydratune.export import load_artifact
    from hydratune.generate import generate

    run_dir = tmp_path / "default"
    result = run_cli(["train.py", f"hydra.run.dir={run_dir}", "trainer.enable_progress_bar=false"])
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val_loss"] <= 0.5 * metrics["initial_val_loss"], metrics

    rows = [json.loads(line) for line in (ROOT / "data" / "sample" / "eval.jsonl").read_text().splitlines()]
    assert len(rows) >= 20
    model, tokenizer = load_artifact(run_dir / "adapter")
    prompts = [alpaca_prompt(r["instruction"], r["input"], "alpaca_short") for r in rows]
    answers = generate(model, tokenizer, prompts, max_new_tokens=16)
    exact = sum(a == r["output"] for a, r in zip(answers, rows)) / len(rows)
    assert exact >= 0.8, list(zip(answers, [r["output"] for r in rows]))[:10]

    # What README's "plain libraries" snippet does: the exported tokenizer's own `tokenizer(prompt)` starts
    # the prompt as training did (BOS first), so plain transformers + peft answer as hydratune does.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    plain_tokenizer = AutoTokenizer.from_pretrained(run_dir / "adapter")
    plain = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(ROOT / "assets" / "tiny-llama"), run_dir / "adapter"
    )
    for prompt, answer in list(zip(prompts, answers))[:4]:
        ids = plain_tokenizer(prompt, return_tensors="pt")
        out = plain.generate(**ids, max_new_tokens=16, do_sample=False)
        assert plain_tokenizer.decode(out[0, ids.input_ids.shape[1] :], skip_special_tokens=True) == answer

    # The command-line client wraps the prompt in the run's own template and stops at EOS.
    import subprocess
    import sys

    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "hydratune"),
            "generate",
            str(run_dir),
            "--prompt",
            "Write the word in capital letters.",
            "--input",
            "hydra",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "HYDRA"


def _summary(val_loss, val_metrics, caplog) -> tuple[dict, str]:
    import logging

    from hydratune.callbacks import History, Throughput
    from hydratune.train import print_summary, summarize

    history = History()
    history.train_loss = [(1, 2.0), (2, 1.5)]
    history.val_loss = val_loss
    history.val_metrics = val_metrics
    metrics = summarize(history, Throughput(), steps=6, fit_seconds=1.0, wall_seconds=2.0)
    with caplog.at_level(logging.INFO, logger="hydratune.train"):
        print_summary(Path("run"), metrics, list(val_metrics))
    return metrics, caplog.text


def test_summary_calls_initial_only_an_evaluation_before_training(caplog):
    curves = {"val/accuracy": [(0, 0.25), (6, 0.75)], "val/rewards/chosen": [(0, 0.0), (6, 1.5)]}
    metrics, text = _summary([(0, 3.0), (3, 2.0), (6, 1.0)], curves, caplog)
    assert (metrics["initial_val_loss"], metrics["val_loss"], metrics["best_val_loss"]) == (3.0, 1.0, 1.0)
    assert (metrics["initial_val_accuracy"], metrics["val_accuracy"]) == (0.25, 0.75)
    assert "val loss: 3.0000 -> 1.0000" in text and "val/accuracy: 0.2500 -> 0.7500" in text
    assert "val/rewards/chosen: 0.0000 -> 1.5000" in text  # the name as logged (it read val/rewards_chosen)


def test_summary_without_an_evaluation_before_training_has_no_initial_value(caplog):
    # eval_before_training=false: the first evaluation is step 3's, not the starting point's.
    metrics, text = _summary([(3, 2.0), (6, 1.0)], {"val/accuracy": [(3, 0.5), (6, 0.75)]}, caplog)
    assert "initial_val_loss" not in metrics and "initial_val_accuracy" not in metrics
    assert (metrics["val_loss"], metrics["val_accuracy"], metrics["val_curve"]) == (
        1.0,
        0.75,
        [[3, 2.0], [6, 1.0]],
    )
    assert "val loss: 1.0000 (ppl 2.72)" in text and "val/accuracy: 0.7500" in text and "->" not in text


class _TenBatches(L.LightningDataModule):
    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.randn(40, 3), batch_size=4)  # 10 batches an epoch


class _Linear(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.parametrize(
    ("epochs", "max_steps", "steps", "warned"),
    [
        (1.5, -1, 8, False),  # 10 batches in windows of 2: 5 optimizer steps an epoch; 1.5 epochs = 7.5 -> 8
        (0.5, -1, 3, False),
        (3, 12, 12, True),  # 3 epochs are 15 steps: max_steps ends the run first, and says so
        (2, -1, 10, False),
    ],
)
def test_epochs_are_counted_on_the_loader_and_may_be_fractional(caplog, epochs, max_steps, steps, warned):
    """trainer.max_epochs=1.5 (the HF Trainer's num_train_epochs, in LLaMA-Factory and Axolotl files) runs a
    half epoch more; it was cut to 1 by the import. Steps per epoch come from the loader (packing included)."""
    import logging
    import math

    from hydratune.callbacks import Epochs

    trainer = L.Trainer(
        max_epochs=math.ceil(epochs), max_steps=max_steps, accumulate_grad_batches=2, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
        callbacks=[Epochs(epochs, max_steps)],
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="hydratune.callbacks"):
        trainer.fit(_Linear(), datamodule=_TenBatches())
    assert trainer.global_step == steps
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    if warned:
        assert said == [
            "trainer.max_steps=12 ends the run before trainer.max_epochs=3 (15 optimizer steps, 5 an epoch); "
            "add trainer.max_steps=-1 to train the whole epochs"
        ]
    else:
        assert not [m for m in said if "max_epochs" in m]


def test_a_warmup_as_long_as_the_run_is_said(caplog):
    import logging

    from hydratune.train import warn_if_warmup_outlasts

    with caplog.at_level(logging.WARNING, logger="hydratune.train"):
        warn_if_warmup_outlasts({"scheduler": {"warmup_steps": 100}, "trainer": {"max_steps": 4}})
        warn_if_warmup_outlasts({"scheduler": {"warmup_steps": 3}, "trainer": {"max_steps": 4}})
        warn_if_warmup_outlasts({"scheduler": {"warmup_steps": 100}, "trainer": {"max_steps": -1}})
    assert [r.getMessage() for r in caplog.records] == [
        "scheduler.warmup_steps=100 >= trainer.max_steps=4: the learning rate never reaches optimizer.lr; "
        "lower scheduler.warmup_steps or use scheduler.warmup_ratio"
    ]


def test_a_callback_that_refuses_an_argument_is_one_line_naming_it():
    from hydratune.errors import UserError
    from hydratune.train import _callback

    node = {"_target_": "lightning.pytorch.callbacks.LearningRateMonitor", "logging_interval": "sometimes"}
    with pytest.raises(UserError) as caught:
        _callback("lr_monitor", node)
    assert str(caught.value) == (
        "callbacks.lr_monitor (lightning.pytorch.callbacks.LearningRateMonitor): logging_interval should be `step` "
        "or `epoch` or `None`."
    )


@pytest.mark.parametrize("artifact", ["adapter", "merged"])
def test_each_export_gets_a_model_card_with_its_prompt_format_and_load_code(tokenizer, tmp_path, artifact):
    """peft's card was an empty template (merged/ and model/ had none): nothing said how the run was prompted."""
    from hydratune.card import card_metadata, cards
    from hydratune.tasks.registry import get_task

    folder = tmp_path / artifact
    folder.mkdir()
    (folder / ("adapter_config.json" if artifact == "adapter" else "config.json")).write_text("{}")
    cfg = {
        "name": "words", "model": {"pretrained_model_name_or_path": "Qwen/Qwen2.5-0.5B"},
        "task": {"name": "sft"}, "peft": {"method": "lora"}, "optimizer": {"lr": 2e-4},
        "dataset": {"format": "alpaca", "template": "alpaca_short",
                    "sources": [{"loader": "json", "data_files": {"train": "/data/train.jsonl"}}]},
    }  # fmt: skip
    metrics = {"steps": 240, "effective_batch_size": 16, "val_loss": 0.1234, "precision": "32-true"}
    assert cards(tmp_path, cfg, metrics, get_task(cfg["task"]), tokenizer) == [folder / "README.md"]
    text = (folder / "README.md").read_text()
    meta = card_metadata(folder)
    assert meta["base_model"] == "Qwen/Qwen2.5-0.5B" and meta["library_name"] == (
        "peft" if artifact == "adapter" else "transformers"
    )
    assert (
        "### Instruction:\nWrite the word in capital letters.\n\n### Input:\nhydra\n\n### Response:\n" in text
    )
    assert "`train: train.jsonl`" in text and "- val_loss: 0.1234" in text
    loader = "AutoPeftModelForCausalLM" if artifact == "adapter" else "AutoModelForCausalLM"
    assert f'{loader}.from_pretrained("{artifact}")' in text


@pytest.mark.parametrize("logged", [True, False])
def test_a_card_of_a_format_that_takes_prompts_as_written_shows_one_of_the_runs_prompts(
    tokenizer, tmp_path, logged
):
    """The DPO and KTO cards rendered the default data's instruction ("Write the word ...") 'as written', a prompt
    unlike the run's `copy: szyc -> ` rows (review O11): the card now shows the run's first logged validation
    prompt, and without one says that the example is only an example."""
    import json

    from hydratune.card import cards
    from hydratune.tasks.registry import get_task

    (tmp_path / "merged").mkdir()
    (tmp_path / "merged" / "config.json").write_text("{}")
    if logged:
        rows = [{"step": 10, "prompt": "", "generation": "x"}, {"step": 10, "prompt": "copy: szyc -> "}]
        (tmp_path / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = {"name": "pref", "model": {"pretrained_model_name_or_path": "org/base"}, "task": {"name": "dpo"},
           "peft": {"method": "lora"}, "dataset": {"format": "pairs"}}  # fmt: skip
    cards(tmp_path, cfg, {"steps": 10}, get_task(cfg["task"]), tokenizer)
    text = (tmp_path / "merged" / "README.md").read_text()
    if logged:
        assert "A validation prompt of this run:\n\n```text\ncopy: szyc -> \n```" in text
        assert "Write the word" not in text
    else:
        assert (
            "with no template (the answer follows; BOS first where the tokenizer has one). For example:"
            in text
        )
        assert "```text\nWrite the word in capital letters.\n```" in text


def test_a_chat_runs_card_shows_a_logged_conversation_with_its_system_turn(tokenizer, tmp_path):
    """A chat run's card rendered the example as one user turn: without the system turn every row had, and with
    a template's default system prompt that the data never had (review T10). It shows a logged prompt now."""
    import json

    from hydratune.card import cards
    from hydratune.tasks.registry import get_task

    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    logged = "<|system|>\nAnswer with the word only.</s>\n<|user|>\nWrite the word in capital letters. qlew</s>\n<|assistant|>\n"
    (tmp_path / "generations.jsonl").write_text(json.dumps({"step": 4, "prompt": logged}) + "\n")
    cfg = {"name": "chat", "model": {"pretrained_model_name_or_path": "org/base"}, "task": {"name": "sft"},
           "peft": {"method": "lora"}, "dataset": {"format": "messages"}}  # fmt: skip
    cards(tmp_path, cfg, {"steps": 4}, get_task(cfg["task"]), tokenizer)
    text = (tmp_path / "adapter" / "README.md").read_text()
    assert (
        f"BOS first where the tokenizer has one). A validation prompt of this run:\n\n```text\n{logged}\n```"
        in text
    )
    assert "this run did not train on it" not in text  # it did: a chat format


def test_loader_workers_and_cpu_ranks_are_held_to_the_cores(monkeypatch, caplog):
    """An imported config's num_workers: 4 on 2 cores made torch warn from every loader (stderr); the workers
    are now cut to the cores, once said. trainer.devices above the cores on a CPU is a warning."""
    import logging

    from hydratune.data import sampler
    from hydratune.train import warn_if_ranks_outnumber_cores

    monkeypatch.setattr(sampler, "cpu_cores", lambda: 2)
    monkeypatch.setattr(sampler, "_said", {})
    with caplog.at_level(logging.INFO, logger="hydratune.data.sampler"):
        assert [sampler.workers({"num_workers": n}) for n in (None, 1, 2, 8, 8)] == [0, 1, 2, 2, 2]
    assert [r.getMessage() for r in caplog.records] == [
        "dataset.num_workers=8: 2 CPU cores here, so 2 loader workers"
    ]

    class CPUAccelerator:
        pass

    class Trainer:
        world_size, accelerator = 4, CPUAccelerator()

    monkeypatch.setattr("hydratune.data.sampler.cpu_cores", lambda: 2)
    with caplog.at_level(logging.WARNING, logger="hydratune.train"):
        warn_if_ranks_outnumber_cores(Trainer())
    assert "trainer.devices: 4 CPU processes on 2 cores" in caplog.records[-1].getMessage()


def test_an_evaluation_interval_inside_an_accumulation_window_is_raised_to_its_end():
    """debug=fast (every 2 batches) with accumulate_grad_batches=16 evaluated 8 times per optimizer step on
    the same weights: early stopping counted them and ended the run at step 0, exporting untrained weights."""
    from hydratune.train import evaluate_after_steps

    assert (
        evaluate_after_steps({"val_check_interval": 2, "accumulate_grad_batches": 16})["val_check_interval"]
        == 16
    )
    assert (
        evaluate_after_steps({"val_check_interval": 40, "accumulate_grad_batches": 16})["val_check_interval"]
        == 48
    )
    for kept in ({"val_check_interval": 32, "accumulate_grad_batches": 16}, {"val_check_interval": 3},
                 {"val_check_interval": 0.5, "accumulate_grad_batches": 4}):  # fmt: skip
        assert evaluate_after_steps(kept) == kept


def test_a_share_of_an_epoch_as_evaluation_interval_evaluates_after_an_optimizer_step(
    tiny_model_dir, tokenizer
):
    """val_check_interval=0.3 of 10 batches is every 3 batches: with accumulation 2 it evaluated mid-window
    (after batches 3, 6, 9), on the last step's weights again (R18). Now every 2 batches, after each optimizer
    step: a whole window, lowered, so the epoch loses none of its evaluations (raising it to 4 gave 2)."""
    from conftest import batch_samples, make_module

    from hydratune.callbacks import EvaluateAfterSteps
    from hydratune.data.collate import PadCollator

    class Evaluations(L.Callback):
        def __init__(self):
            self.at = []

        def on_validation_start(self, trainer, pl_module):
            if not trainer.sanity_checking:
                self.at.append(
                    (trainer.fit_loop.epoch_loop.batch_progress.current.completed, trainer.global_step)
                )

    batch = PadCollator(tokenizer.pad_token_id)(batch_samples(tokenizer, n=2))
    loader = lambda n: torch.utils.data.DataLoader([batch] * n, batch_size=None)  # noqa: E731
    seen = {}
    for callbacks in ([], [EvaluateAfterSteps()]):
        evaluations = Evaluations()
        trainer = L.Trainer(
            max_epochs=1, accumulate_grad_batches=2, val_check_interval=0.3, num_sanity_val_steps=0,
            callbacks=[evaluations, *callbacks], logger=False, enable_progress_bar=False,
            enable_model_summary=False, enable_checkpointing=False, accelerator="cpu",
        )  # fmt: skip
        trainer.fit(make_module(tiny_model_dir), train_dataloaders=loader(10), val_dataloaders=loader(1))
        seen[bool(callbacks)] = evaluations.at
    # Lightning's: batch 3 is mid-window, step 1's weights again
    assert seen[False] == [(3, 1), (6, 3), (9, 4)]
    assert seen[True] == [(2, 1), (4, 2), (6, 3), (8, 4), (10, 5)]  # every window: at least the 3 asked for


def test_an_export_of_the_best_checkpoint_reports_its_step_and_val_loss(tmp_path):
    """load_best_model_at_end exported best.ckpt's weights, while the summary, metrics.json and the card gave
    the final step's val loss as the artifact's (O6). greater_is_better on a loss makes step 2 the best."""
    run_dir = tmp_path / "best"
    result = run_cli([
        "train.py", f"hydra.run.dir={run_dir}", "trainer.max_steps=4", "trainer.val_check_interval=2",
        "eval_before_training=false", "eval_generations.num_prompts=0", "+trainer.limit_val_batches=1",
        "callbacks.model_checkpoint.greater_is_better=true", "callbacks.model_checkpoint.load_best_model_at_end=true",
        "callbacks.early_stopping=null", "trainer.enable_progress_bar=false",
    ])  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [step for step, _ in metrics["val_curve"]] == [2, 4]
    assert metrics["exported_step"] == 2 and metrics["exported_val_loss"] == metrics["val_curve"][0][1]
    assert "exported: best.ckpt's weights (step 2" in result.stdout + result.stderr
    assert "- exported_step: 2\n" in (run_dir / "adapter" / "README.md").read_text()  # a step, not 2.0000


def test_the_evaluation_of_the_final_weights_takes_part_in_the_best_checkpoint(tmp_path):
    """Training that ends between two evaluations evaluates its final weights; best.ckpt and
    load_best_model_at_end ignored that evaluation and exported step 4's weights, which the run had measured as
    worse than step 5's (review L2)."""
    from hydratune.checkpoint import checkpoint_step

    run_dir = tmp_path / "final_best"
    result = run_cli([
        "train.py", f"hydra.run.dir={run_dir}", "trainer.max_steps=5", "trainer.val_check_interval=2",
        "eval_before_training=false", "eval_generations.num_prompts=0", "+trainer.limit_val_batches=1",
        "callbacks.model_checkpoint.load_best_model_at_end=true", "trainer.enable_progress_bar=false",
    ])  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    curve = dict(metrics["val_curve"])
    assert (
        list(curve) == [2, 4, 5] and curve[5] < curve[4] < curve[2]
    )  # the loss falls: the final is the best
    assert checkpoint_step(run_dir / "checkpoints" / "best.ckpt") == 5
    assert (
        metrics["exported_step"] == 5 and metrics["exported_val_loss"] == curve[5] == metrics["best_val_loss"]
    )
    assert "the final weights (step 5, val/loss" in (run_dir / "train.log").read_text()


def test_greater_is_better_follows_the_metrics_name_unless_set():
    """conf/callbacks/default.yaml fixed greater_is_better=false, so naming an accuracy alone kept the least
    accurate checkpoint and early-stopped while accuracy rose (review L18). Null reads the name, as the Hugging
    Face Trainer does; a value given wins."""
    from hydratune.checkpoint import build_checkpointing
    from hydratune.config import greater_is_better

    def better(metric, given=None):
        return greater_is_better({"metric_for_best_model": metric, "greater_is_better": given})

    assert not any(better(m) for m in ("val/loss", "val/ppl", "eval_loss", "val/nll_loss", None))
    assert all(
        better(m) for m in ("val/acc", "val/accuracy", "val/f1_macro", "val/reward", "val/rewards/margins")
    )
    assert better("val/loss", True) and not better("val/acc", False)
    callbacks = build_checkpointing(
        {"model_checkpoint": {"metric_for_best_model": "val/acc", "greater_is_better": None},
         "early_stopping": {"patience": 2}}, "unused",
    )  # fmt: skip
    assert [cb.mode for cb in callbacks if hasattr(cb, "mode") and cb.monitor == "val/acc"] == ["max", "max"]


def test_the_summary_says_when_the_best_checkpoint_is_the_last_step(tmp_path, caplog):
    """The best step being the last was summarised as "not the last step's" (review X9)."""
    from hydratune.train import print_summary

    metrics = {
        "steps": 4,
        "exported_step": 4,
        "exported_val_loss": 1.0,
        "wall_seconds": 1.0,
        "tokens_per_s": 1.0,
    }
    with caplog.at_level("INFO", logger="hydratune.train"):
        print_summary(tmp_path, metrics)
        print_summary(tmp_path, {**metrics, "exported_step": 2})
    assert "exported: best.ckpt's weights (step 4, val loss 1.0000) (the last step's)" in caplog.text
    assert "exported: best.ckpt's weights (step 2, val loss 1.0000), not the last step's" in caplog.text


@pytest.mark.parametrize("method", ["dora", "rslora", "lora"])
def test_a_dora_or_rslora_adapters_card_points_converters_at_a_merged_model(tmp_path, tokenizer, method):
    """llama.cpp's LoRA converter stops at DoRA's magnitude vectors and scales rsLoRA by alpha/r: the card of
    such an adapter says to convert a merged model instead (review X10)."""
    from conftest import compose

    from hydratune.card import write_card
    from hydratune.config import to_plain
    from hydratune.tasks.registry import get_task

    cfg = to_plain(compose([f"peft={method}"]))
    folder = tmp_path / "adapter"
    folder.mkdir()
    text = write_card(folder, cfg, {"steps": 1}, get_task(cfg["task"]), tokenizer).read_text()
    assert ("llama.cpp's LoRA converter" in text) == (method != "lora")


def test_export_base_model_names_a_hub_id_as_the_adapters_base(tiny_model_dir, tokenizer, tmp_path):
    """An adapter trained on a local copy named that folder (/scratch/..., useless elsewhere); with
    export.base_model it names the hub id, and so does the card (review X8)."""
    from conftest import compose

    from hydratune.card import card_metadata, write_card
    from hydratune.config import to_plain
    from hydratune.export import name_adapter_base
    from hydratune.tasks.registry import get_task

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny_model_dir)}))
    name_adapter_base(adapter, "someone/tiny-llama")
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == (
        "someone/tiny-llama"
    )
    cfg = to_plain(compose(["export.base_model=someone/tiny-llama"]))
    text = write_card(adapter, cfg, {"steps": 1}, get_task(cfg["task"]), tokenizer).read_text()
    assert card_metadata(adapter)["base_model"] == "someone/tiny-llama" and "training machine" not in text


def test_a_classifier_adapters_card_says_which_loaders_need_a_merged_model(tmp_path, tokenizer):
    """AutoPeftModelForSequenceClassification and pipeline rebuild the base with two labels and fail on the
    head's size; the card of a classifier adapter says so, and what loads instead (review X4)."""
    from conftest import compose

    from hydratune.card import write_card
    from hydratune.config import to_plain
    from hydratune.tasks.registry import get_task

    cfg = to_plain(compose(["task=classification", "dataset=topics"]))
    for name in ("adapter", "merged"):
        folder = tmp_path / name
        folder.mkdir()
        labels = {"0": "food", "1": "sports", "2": "tech"}
        (folder / "config.json").write_text(
            json.dumps({"architectures": ["LlamaForSequenceClassification"], "id2label": labels})
        )
        if name == "adapter":
            (folder / "adapter_config.json").write_text(json.dumps({"task_type": "SEQ_CLS"}))
        text = write_card(folder, cfg, {"steps": 1}, get_task(cfg["task"]), tokenizer).read_text()
        assert ("rebuild the base with two labels" in text) == (name == "adapter")
        # the labels for AutoPeft's one line (review L8), and the text columns, not an SFT format ('alpaca')
        told = ('AutoPeftModelForSequenceClassification.from_pretrained("adapter", num_labels=3, id2label={0: '
                "'food', 1: 'sports', 2: 'tech'}, label2id={'food': 0, 'sports': 1, 'tech': 2})")  # fmt: skip
        assert (told in text) == (name == "adapter")
        assert "Text: column `text`." in text and "Format:" not in text


def _card_code(text: str) -> str:
    return text.split("## Load")[1].split("```python\n")[1].split("```")[0]


def test_a_grpo_runs_cards_are_a_language_models_and_a_reward_models_snippet_prints_its_reward(
    tiny_model_dir, tokenizer, tmp_path, monkeypatch
):
    """GRPO's cards were a classifier's (it writes no generations.jsonl, so not 'generative'): a snippet that failed
    and a random head (review O1); an adapter's trained stop ids were lost to peft's loaders (O2); the reward
    card's pipeline printed a sigmoid of another token's score, not the reward (O4)."""
    from conftest import compose
    from transformers import AutoModelForSequenceClassification

    from hydratune.card import write_card
    from hydratune.config import to_plain
    from hydratune.tasks.registry import get_task
    from hydratune.tasks.reward.inference import score

    cfg = to_plain(compose(["task=grpo"]))
    adapter = tmp_path / "grpo" / "adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"task_type": "CAUSAL_LM"}))
    (adapter / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 99]}))
    text = write_card(adapter, cfg, {"steps": 1}, get_task(cfg["task"]), tokenizer).read_text()
    assert "AutoPeftModelForCausalLM" in text and "Text: column" not in text and "Format:" in text
    assert 'model.generation_config = GenerationConfig.from_pretrained("adapter")' in text
    assert "end its answers at '\\n'" in text and "stop string" in text  # GGUF keeps EOS only (review O5)

    cfg = to_plain(compose(["task=reward", "peft=none"]))
    merged = tmp_path / "reward" / "merged"
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir, num_labels=1, id2label={0: "reward"}, label2id={"reward": 0}
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(merged)
    tokenizer.save_pretrained(merged)
    text = write_card(merged, cfg, {"steps": 1}, get_task(cfg["task"]), tokenizer).read_text()
    assert "Text: column" not in text and "the reward is the one logit" in text
    # a QLoRA run's merge is not the model its metrics are of (review O6): the card says so
    qlora = to_plain(compose(["peft=qlora", "quantization=nf4"]))
    (tmp_path / "q" / "merged").mkdir(parents=True)
    (tmp_path / "q" / "merged" / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForCausalLM"]})
    )
    card = write_card(
        tmp_path / "q" / "merged", qlora, {"steps": 1}, get_task(qlora["task"]), tokenizer
    ).read_text()
    assert "trained its adapter on a 4-bit (nf4) quantized base, and its metrics are that model's" in card
    monkeypatch.chdir(merged.parent)
    space: dict = {}
    exec(_card_code(text), space)  # the card's snippet, as a user pastes it
    expected = score(model.eval(), tokenizer, ["copy: stone -> "], ["STONE"], cfg["dataset"])[0]
    assert space["reward"] == pytest.approx(expected, abs=1e-5)
