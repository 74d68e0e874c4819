"""Run lifecycle pieces, in process: atomic checkpoint writes, the resumable data position, resume=auto's
choice of run, SIGTERM -> checkpoint at a step boundary, the NaN policy, and run.json."""

from __future__ import annotations

import json
import os
import signal

import lightning as L
import pytest
import torch
from conftest import Repeat, batch_samples, compose, fit_repeated, make_module

from hydratune.checkpoint import AtomicCheckpointIO, StepCheckpoint, TrainingRNG, find_resume_run
from hydratune.data.collate import PadCollator
from hydratune.data.sampler import ResumableDataLoader, WindowBatchSampler, WindowDataset
from hydratune.errors import NonFiniteLoss
from hydratune.signals import GracefulStop


def test_atomic_save_keeps_the_old_checkpoint_when_a_write_fails(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1}, path)
    with pytest.raises(Exception):  # noqa: B017 - pickling a lambda fails midway through the write
        io.save_checkpoint({"global_step": 2, "bad": lambda: None}, path)
    assert torch.load(path, weights_only=False) == {"global_step": 1}
    assert os.listdir(tmp_path) == ["last.ckpt"]  # no temporary file left behind


def _loader(n: int = 10, accumulate: int = 2) -> ResumableDataLoader:
    sampler = WindowBatchSampler(list(range(1, n + 1)), batch_size=2, accumulate=accumulate, seed=3)
    data = WindowDataset([{"i": i} for i in range(n)])
    return ResumableDataLoader(data, batch_sampler=sampler, collate_fn=lambda rows: [r["i"] for r in rows])


@pytest.mark.parametrize("consumed", [0, 1, 3, 5])
def test_resumed_loader_continues_with_the_next_unseen_batch(consumed):
    whole = _loader()
    whole.batch_sampler.set_epoch(1)
    expected = list(whole)
    first = _loader()
    first.batch_sampler.set_epoch(1)
    batches = iter(first)
    seen = [next(batches) for _ in range(consumed)]  # what the killed run trained on
    state = first.state_dict()
    assert state == {"epoch": 1, "consumed": consumed, "global_batch": 2}
    resumed = _loader()
    resumed.load_state_dict(state)
    resumed.batch_sampler.set_epoch(1)  # Lightning sets the epoch after loading, before iterating
    assert seen + list(resumed) == expected
    # The position applies to its own epoch only: the next epoch is whole again.
    resumed.batch_sampler.set_epoch(2)
    assert len(list(resumed)) == len(whole)


def test_a_resume_with_another_batch_size_goes_on_after_the_samples_trained():
    """The position was counted in batches of the new size: batches of 8 after 3 of 4 skipped 24 samples,
    12 of which were never trained (R12). It is converted through the samples consumed."""

    def loader(batch_size):
        sampler = WindowBatchSampler([1] * 40, batch_size=batch_size, seed=3)
        data = WindowDataset([{"i": i} for i in range(40)])
        return ResumableDataLoader(
            data, batch_sampler=sampler, collate_fn=lambda rows: [r["i"] for r in rows]
        )

    first = loader(4)
    batches = iter(first)
    seen = [i for _ in range(3) for i in next(batches)]
    resumed = loader(2)
    resumed.load_state_dict(first.state_dict())
    rest = [i for batch in resumed for i in batch]
    assert sorted(seen + rest) == list(range(40))  # every sample once


def test_resume_auto_picks_the_newest_run_with_a_checkpoint(tmp_path):
    for name, has_ckpt in (
        ("2026-01-01_00-00-00", True),
        ("2026-01-02_00-00-00", True),
        ("2026-01-03_00-00-00", False),
    ):
        (tmp_path / name).mkdir()
        if has_ckpt:
            (tmp_path / name / "checkpoints").mkdir()
            (tmp_path / name / "checkpoints" / "last.ckpt").write_bytes(b"x")
            os.utime(tmp_path / name / "checkpoints" / "last.ckpt", (int(name[8:10]), int(name[8:10])))
    new = tmp_path / "2026-01-04_00-00-00"
    new.mkdir()
    assert find_resume_run(new) == tmp_path / "2026-01-02_00-00-00"
    assert find_resume_run(tmp_path / "2026-01-01_00-00-00") == tmp_path / "2026-01-01_00-00-00"  # itself
    assert find_resume_run(tmp_path / "elsewhere" / "x") is None


def test_resume_auto_in_a_sweep_continues_the_same_job_only(tmp_path):
    """A grid run again into its sweep folder (jobs c1_0, c1_1, ...) with resume=auto: each job continues its
    own grid point; a point that never started starts fresh (every job continued job 0's run before)."""

    def job(folder, name: str, checkpoint: bool):
        (folder / name).mkdir(parents=True)
        if checkpoint:
            (folder / name / "checkpoints").mkdir()
            (folder / name / "checkpoints" / "last.ckpt").write_bytes(b"x")

    sweep = tmp_path / "sweep"
    job(sweep, "0", True)
    job(sweep, "1", False)
    job(sweep, "c1_0", False)
    job(sweep, "c1_1", False)
    job(sweep, "c1_2", False)
    assert find_resume_run(sweep / "c1_0") == sweep / "0"
    assert find_resume_run(sweep / "c1_1") is None
    assert find_resume_run(sweep / "c1_2") is None
    # dated sweep folders (outputs/multirun/NAME/DATE/N): the same job number of an earlier sweep
    (sweep / "multirun.yaml").write_text("{}")
    job(tmp_path / "later", "0", False)
    (tmp_path / "later" / "multirun.yaml").write_text("{}")
    job(tmp_path / "unrelated", "0", True)  # no multirun.yaml: not a sweep folder
    assert find_resume_run(tmp_path / "later" / "0") == sweep / "0"

    # ... launched with this job's overrides: job 0 of another grid of the same name is another experiment,
    # which a resume trained on and overwrote (review S1)
    def overrides(folder, *values):
        (folder / ".hydra").mkdir(exist_ok=True)
        (folder / ".hydra" / "overrides.yaml").write_text("".join(f"- {v}\n" for v in values))

    overrides(sweep / "0", "peft=lora", "trainer.max_steps=4")
    overrides(tmp_path / "later" / "0", "peft=lora", "trainer.max_steps=4", "resume=auto")
    assert find_resume_run(tmp_path / "later" / "0") == sweep / "0"  # the same command plus resume=auto
    overrides(tmp_path / "later" / "0", "peft=dora", "trainer.max_steps=4", "resume=auto")
    assert find_resume_run(tmp_path / "later" / "0") is None


class _SendSignal(L.Callback):
    def __init__(self, at_batch: int, signum: int):
        self.at_batch, self.signum = at_batch, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.at_batch:
            os.kill(os.getpid(), self.signum)


def _trainer(tmp_path, callbacks, steps=8, accumulate=1, **kwargs):
    return L.Trainer(
        max_steps=steps,
        **kwargs,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        accumulate_grad_batches=accumulate,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=tmp_path,
        enable_checkpointing=any(isinstance(cb, StepCheckpoint) for cb in callbacks),
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_last_checkpoint_at_the_step_boundary_and_stops(
    tiny_model_dir, tokenizer, tmp_path, signum
):
    module = make_module(tiny_model_dir)
    batch = PadCollator(tokenizer.pad_token_id)(batch_samples(tokenizer, n=4))
    checkpoint = StepCheckpoint(tmp_path / "checkpoints", save_steps=100)
    stop = GracefulStop(checkpoint)
    # Batch 2 opens the second window of 2 micro-batches: the stop waits for its optimizer step.
    trainer = _trainer(tmp_path, [checkpoint, stop, TrainingRNG(), _SendSignal(2, signum)], accumulate=2)
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(Repeat(batch), batch_size=None))
    assert stop.received == signum
    assert trainer.global_step == 2
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == 2
    assert any("rng" in state for state in saved["callbacks"].values())
    assert signal.getsignal(signal.SIGTERM) is not stop.handle  # handlers restored after training


class _SendTwice(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 1:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)


def test_a_second_sigint_aborts_with_hydratunes_exception_not_lightnings_keyboardinterrupt(
    tiny_model_dir, tokenizer, tmp_path
):
    """Lightning turned the KeyboardInterrupt of a second Ctrl-C into its own message and exit 1; hydratune's
    Aborted passes through Lightning to train.fit, which says the last checkpoint is whole and exits 130 (R15)."""
    from hydratune.signals import Aborted

    module = make_module(tiny_model_dir)
    batch = PadCollator(tokenizer.pad_token_id)(batch_samples(tokenizer, n=4))
    checkpoint = StepCheckpoint(tmp_path / "checkpoints", save_steps=100)
    stop = GracefulStop(checkpoint)
    trainer = _trainer(tmp_path, [checkpoint, stop, TrainingRNG(), _SendTwice()])
    with pytest.raises(Aborted):
        trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(Repeat(batch), batch_size=None))
    assert stop.received == signal.SIGINT


class _CountEvaluations(L.Callback):
    def __init__(self):
        self.steps: list[int] = []

    def on_validation_end(self, trainer, pl_module):
        self.steps.append(trainer.global_step)


@pytest.mark.parametrize(("signal_at", "evaluated"), [(3, [2]), (1, [])])
def test_a_stop_signal_saves_after_a_due_evaluation_and_evaluates_nothing_after_its_save(
    tiny_model_dir, tokenizer, tmp_path, signal_at, evaluated
):
    """Evaluations every 4 batches (2 optimizer steps). A signal in the batch before an evaluation: the save
    waits for it, so the checkpoint holds it (a resume does not evaluate that step again: its val loss and
    best.ckpt were lost, R11). A signal elsewhere: save and stop, with no evaluation after the save (Lightning
    ran one, using the preemption's grace time, R3)."""
    module = make_module(tiny_model_dir)
    batch = PadCollator(tokenizer.pad_token_id)(batch_samples(tokenizer, n=4))
    checkpoint = StepCheckpoint(tmp_path / "checkpoints", save_steps=100)
    stop, evaluations = GracefulStop(checkpoint), _CountEvaluations()
    trainer = _trainer(
        tmp_path, [checkpoint, stop, TrainingRNG(), _SendSignal(signal_at, signal.SIGTERM), evaluations],
        accumulate=2, val_check_interval=4, limit_val_batches=1, num_sanity_val_steps=0,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(Repeat(batch), batch_size=None)
    trainer.fit(
        module,
        train_dataloaders=loader,
        val_dataloaders=torch.utils.data.DataLoader([batch], batch_size=None),
    )
    saved = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert evaluations.steps == evaluated
    assert saved["global_step"] == trainer.global_step == (2 if signal_at == 3 else 1)
    # The checkpoint was written after the evaluation of its step: its loop state has it done.
    done = saved["loops"]["fit_loop"]["epoch_loop.val_loop.batch_progress"]["total"]["completed"]
    assert done == len(evaluations.steps)


def _nan_on_call(module, call: int):
    """Make the `call`-th loss of the module NaN (SFTModule.nll: the summed NLL and the token count)."""
    nll, calls = module.nll, {"n": 0}

    def patched(batch):
        calls["n"] += 1
        value, count = nll(batch)
        return (value * float("nan"), count) if calls["n"] == call else (value, count)

    module.nll = patched


def test_nan_policy_skip_leaves_the_weights_and_goes_on(tiny_model_dir, tokenizer, tmp_path):
    module = make_module(tiny_model_dir)
    module.hparams.nan_policy = "skip"
    batch = PadCollator(tokenizer.pad_token_id)(batch_samples(tokenizer, n=4))
    module.configure_model()
    _nan_on_call(module, call=1)
    before = {k: v.clone() for k, v in module.named_parameters() if v.requires_grad}
    trainer = _trainer(tmp_path, [], steps=1)
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(Repeat(batch), batch_size=None))
    assert module.skipped_batches == 1
    for name, value in module.named_parameters():
        if name in before:
            assert torch.equal(before[name], value), name  # the NaN batch made no update
    trainer = _trainer(tmp_path, [], steps=3)
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(Repeat(batch), batch_size=None))
    assert any(not torch.equal(before[n], v) for n, v in module.named_parameters() if n in before)


def test_nan_policy_stop_raises_and_keeps_the_last_checkpoint(tiny_model_dir, tokenizer, tmp_path):
    module = make_module(tiny_model_dir)
    assert module.hparams.nan_policy == "stop"
    batch = PadCollator(tokenizer.pad_token_id)(batch_samples(tokenizer, n=4))
    module.configure_model()
    _nan_on_call(module, call=4)
    checkpoint = StepCheckpoint(tmp_path / "checkpoints", save_steps=2)
    trainer = _trainer(tmp_path, [checkpoint])
    with pytest.raises(NonFiniteLoss, match="nan at step 3"):
        trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(Repeat(batch), batch_size=None))
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2


def test_run_json_passport(tokenizer, tmp_path):
    from hydratune.passport import write_passport

    class Data:
        train_dataset, val_dataset = list(range(5)), None

        def setup(self, stage):
            pass

    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    cfg = {"name": "x", "seed": 7, "paths": {"root_dir": str(tmp_path)}, "model": {"token": "hf_secret"}}
    path = tmp_path / "run.json"
    record = write_passport(path, cfg, tokenizer, Data(), trainer, 32)
    assert json.loads(path.read_text()) == record
    assert record["seed"] == 7 and record["effective_batch_size"] == 32
    assert record["dataset"]["train"]["rows"] == 5
    assert len(record["tokenizer_sha256"]) == 16 and record["packages"]["torch"].startswith("2.")
    assert record["git"] == {}  # tmp_path is not a git checkout
    assert "hf_secret" not in path.read_text()
    write_passport(path, cfg, tokenizer, Data(), trainer, 32, resumed_from="last.ckpt")
    assert json.loads(path.read_text())["resumes"][0]["checkpoint"] == "last.ckpt"


def _logger_cfg(*names: str, output_dir) -> dict:
    from conftest import compose

    from hydratune.config import to_plain

    return {
        k: v for name in names for k, v in to_plain(compose([f"logger={name}"], output_dir).logger).items()
    }


@pytest.mark.slow
def test_wandb_offline_and_mlflow_keep_their_run_ids_for_resume(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    from hydratune.loggers import build_loggers

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = _logger_cfg("wandb", "mlflow", output_dir=tmp_path)
    wandb_logger, mlflow_logger = build_loggers(cfg, tmp_path)
    mlflow_logger.log_metrics({"train/loss": 1.5}, step=1)
    ids = json.loads((tmp_path / "logger_ids.json").read_text())
    assert ids["wandb"] == wandb_logger.version and ids["mlflow"] == mlflow_logger.run_id
    # the run's folder names the MLflow run (every run was "capable-auk-759": review L6); no "anonymous" (L7)
    run = mlflow_logger.experiment.get_run(ids["mlflow"])
    assert run.info.run_name == f"{tmp_path.parent.name}/{tmp_path.name}"
    assert "anonymous" not in wandb_logger._wandb_init
    wandb_logger.experiment.finish()
    # A resumed run builds its loggers again in the same folder: the same runs, not new ones.
    again = build_loggers(cfg, tmp_path)
    assert again[0]._wandb_init["id"] == ids["wandb"] and again[1].run_id == ids["mlflow"]
    again[1].log_metrics({"train/loss": 1.0}, step=2)
    history = again[1].experiment.get_metric_history(ids["mlflow"], "train/loss")
    assert [m.value for m in history] == [1.5, 1.0]
    assert list((tmp_path / "mlruns").iterdir())


def test_missing_logger_extra_names_it(tmp_path, monkeypatch):
    """The preflight passed a logger whose package was missing, and the run told a user without wandb to log in to
    W&B first (review L1): the check now comes with the config's, before the login checks and the data."""
    import importlib.util

    import hydratune.loggers as loggers
    from hydratune.config import to_plain
    from hydratune.errors import UserError
    from hydratune.preflight import check_config

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("wandb", "mlflow") else find_spec(name, *a),
    )
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    # the locked versions: without -c, pip would float torch to a CUDA build
    locked = r"pip install -c constraints.txt --build-constraint constraints.txt -e '\.\[wandb\]'"
    with pytest.raises(UserError, match=rf"logger.wandb needs the wandb extra: {locked}"):
        loggers.build_loggers(_logger_cfg("wandb", output_dir=tmp_path), tmp_path)
    for logger, extra in (("wandb", "wandb"), ("mlflow", "mlflow")):
        with pytest.raises(UserError, match=rf"^logger\.{extra} needs the {extra} extra"):
            check_config(to_plain(compose([f"logger={logger}"])))


def test_missing_optimizer_package_names_the_extra(monkeypatch):
    import importlib

    import hydratune.optim as optim

    real = importlib.import_module

    def missing(name, *args):
        if name.startswith("bitsandbytes"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args)

    monkeypatch.setattr(optim.importlib, "import_module", missing)
    with pytest.raises(
        ImportError, match=r"needs the bitsandbytes package: pip install -c constraints.txt .*'\.\[bnb\]'"
    ):
        optim.optimizer_class("bitsandbytes.optim.AdamW8bit")


def test_checkpoint_and_early_stopping_keys_map_to_lightning(tmp_path):
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from hydratune.checkpoint import build_checkpointing
    from hydratune.errors import UserError

    cfg = {
        "model_checkpoint": {
            "save_steps": 50,
            "save_total_limit": 3,
            "metric_for_best_model": "val/acc",
            "greater_is_better": True,
            "load_best_model_at_end": True,
        },
        "early_stopping": {"patience": 2, "threshold": 0.01},
    }
    best, steps, stopping = build_checkpointing(cfg, tmp_path)
    assert type(best) is ModelCheckpoint and (best.monitor, best.mode, best.save_top_k) == (
        "val/acc",
        "max",
        1,
    )
    assert isinstance(steps, StepCheckpoint)
    assert (steps._every_n_train_steps, steps.save_top_k, steps.monitor, steps.save_last) == (
        50,
        3,
        "step",
        True,
    )
    assert isinstance(stopping, EarlyStopping)
    assert (stopping.monitor, stopping.patience, abs(stopping.min_delta)) == ("val/acc", 2, 0.01)
    assert stopping.monitor_op(torch.tensor(2.0), torch.tensor(1.0))  # greater is better
    unlimited = build_checkpointing({"model_checkpoint": {"save_total_limit": None}}, tmp_path)
    assert [cb.save_top_k for cb in unlimited] == [-1]  # no metric: no best.ckpt, every step file kept
    with pytest.raises(UserError, match="metric_for_best_model"):
        build_checkpointing({"model_checkpoint": {}, "early_stopping": {"patience": 1}}, tmp_path)


def test_early_stopping_threshold_counts_as_the_hugging_face_trainer_does():
    """threshold was Lightning's min_delta: the best stayed put until a gain beat it by more than the threshold,
    so steady small gains reset the patience and a config from the HF Trainer trained on where it had stopped
    (review L10). Now the best moves on every gain, and a gain under the threshold counts as none."""
    from hydratune.checkpoint import StopEarly

    def stops_at(losses, threshold, patience=2, mode="min"):
        stopping = StopEarly(monitor="val/loss", patience=patience, min_delta=threshold, mode=mode)
        for n, loss in enumerate(losses, 1):
            if stopping._evaluate_stopping_criteria(torch.tensor(loss))[0]:
                return n, float(stopping.best_score)
        return None, float(stopping.best_score)

    falling = [10.0, 9.4, 8.8, 8.2, 7.6, 7.0]
    assert stops_at(falling, 1.0) == (
        3,
        pytest.approx(8.8),
    )  # two gains of 0.6 < 1.0 in a row; Lightning's rule never stopped
    assert stops_at(falling, 0.5) == (None, pytest.approx(7.0))  # every gain beats 0.5
    assert stops_at([10.0, 11.0, 9.0, 12.0, 12.5], 0.0) == (5, 9.0)  # worse twice after the best
    assert stops_at([0.5, 0.55, 0.6, 0.58, 0.57], 0.02, mode="max") == (
        5,
        pytest.approx(0.6),
    )  # accuracy: higher is better


def test_load_best_model_at_end_puts_the_checkpoint_weights_back(tiny_model_dir, tmp_path):
    from hydratune.checkpoint import load_trainable_weights
    from hydratune.errors import UserError

    module = make_module(tiny_model_dir)
    module.configure_model()
    best = {k: v.detach().clone() + 1 for k, v in module.named_parameters() if v.requires_grad}
    torch.save({"state_dict": best}, tmp_path / "best.ckpt")
    load_trainable_weights(module, tmp_path / "best.ckpt")
    assert all(torch.equal(v, best[k]) for k, v in module.named_parameters() if k in best)
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(UserError, match="holds no weights"):
        load_trainable_weights(module, tmp_path / "other.ckpt")


def test_callback_nodes_set_to_null_are_switched_off(tmp_path):
    """`callbacks.early_stopping=null` (or any callback node) turns that callback off, as `~callbacks.X` does."""
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor

    from hydratune.config import to_plain
    from hydratune.train import build_trainer

    cfg = to_plain(
        compose(["callbacks.early_stopping=null", "callbacks.lr_monitor=null"], output_dir=tmp_path)
    )
    trainer, _, _ = build_trainer(cfg, tmp_path, tokenizer=None, generative=False)
    assert not any(isinstance(cb, EarlyStopping | LearningRateMonitor) for cb in trainer.callbacks)
    cfg = to_plain(compose([], output_dir=tmp_path))
    callbacks = build_trainer(cfg, tmp_path, tokenizer=None, generative=False)[0].callbacks
    assert any(isinstance(cb, EarlyStopping) for cb in callbacks)
    assert any(isinstance(cb, LearningRateMonitor) for cb in callbacks)


def test_wandb_without_a_login_is_refused_before_the_run_with_the_offline_fix(tmp_path, monkeypatch):
    from hydratune.errors import UserError
    from hydratune.preflight import check_wandb_login

    for key in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_DISABLED", "WANDB_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    with pytest.raises(UserError, match=r"logger.wandb: no W&B login here .* WANDB_MODE=offline"):
        check_wandb_login({"project": "p"})
    check_wandb_login({"project": "p", "offline": True})  # WandbLogger(offline=True)
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password 0123456789abcdef\n")
    (tmp_path / "netrc").chmod(0o600)
    check_wandb_login({"project": "p"})  # what `wandb login` wrote
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")  # a private server: another host
    with pytest.raises(UserError, match="wandb login` for wandb.example.org"):
        check_wandb_login({"project": "p"})
    monkeypatch.setenv("WANDB_MODE", "offline")
    check_wandb_login({"project": "p"})


def test_the_learning_rate_is_logged_once_per_optimizer_step(tiny_model_dir, tokenizer, tmp_path):
    """Lightning's LearningRateMonitor logged at every micro-batch: with accumulation 2, metrics.csv held each
    step's learning rate twice (R4)."""
    import csv

    from lightning.pytorch.loggers import CSVLogger

    from hydratune.callbacks import LRMonitor

    module = make_module(tiny_model_dir)
    batch = PadCollator(tokenizer.pad_token_id)(batch_samples(tokenizer, n=4))
    trainer = L.Trainer(
        max_steps=4, accumulate_grad_batches=2, log_every_n_steps=1, logger=CSVLogger(tmp_path, name="csv"),
        callbacks=[LRMonitor(logging_interval="step")], enable_progress_bar=False, enable_model_summary=False,
        accelerator="cpu", enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(Repeat(batch), batch_size=None))
    with open(next(tmp_path.rglob("metrics.csv"))) as f:
        steps = [
            row["step"] for row in csv.DictReader(f) if any(k == "train/lr" and v for k, v in row.items())
        ]
    assert steps == ["1", "2", "3", "4"]  # step N's rate at N, beside its loss


def test_a_sample_generations_reference_is_the_first_answer_only(tokenizer):
    """A conversation's sample prompt ends where its first answer starts; the reference was every token after
    it, later questions and answers too (review C10)."""
    from types import SimpleNamespace

    from hydratune.callbacks import SampleGenerations

    ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    prompt, answer, rest = ids("q1 "), ids("A1"), ids(" q2 A2")
    row = {"input_ids": prompt + answer + rest, "labels": [-100] * len(prompt) + answer + [-100] * len(rest)}
    trainer = SimpleNamespace(datamodule=SimpleNamespace(val_dataset=[row]))
    samples = SampleGenerations(tokenizer, "unused.jsonl", num_prompts=1)._prompts(trainer)
    assert samples == [(prompt, "A1")]


def test_a_sample_prompt_keeps_the_chat_templates_markers(tokenizer):
    """generations.jsonl decoded prompts without special tokens: a chat prompt lost its turn markers (review T12)."""
    from hydratune.callbacks import SampleGenerations

    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    text = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    ids = [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]
    assert SampleGenerations(tokenizer, "unused.jsonl").prompt_text(ids) == text


def test_throughput_is_logged_at_every_logged_step(tiny_model_dir, tokenizer, tmp_path):
    """tokens/s was logged once per 10 batches and Lightning repeated that value at every logged step after it
    (a run shorter than 10 batches logged none); now each logged step has the rate of its last 10 batches
    (review V12)."""
    import csv

    from lightning.pytorch.loggers import CSVLogger

    from hydratune.callbacks import Throughput
    from hydratune.loggers import StepAxis

    module = make_module(tiny_model_dir)
    batch = PadCollator(tokenizer.pad_token_id)(batch_samples(tokenizer, n=4))
    trainer = L.Trainer(
        max_steps=4, log_every_n_steps=1, logger=CSVLogger(tmp_path, name="csv"), accelerator="cpu",
        callbacks=[Throughput(), StepAxis(tmp_path)], enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(Repeat(batch), batch_size=None))
    with open(next(tmp_path.rglob("metrics.csv"))) as f:
        rows = [row for row in csv.DictReader(f) if row.get("train/tokens_per_s")]
    assert [row["step"] for row in rows] == ["1", "2", "3", "4"]
    assert all(float(row["train/tokens_per_s"]) > 0 for row in rows)


def test_a_resumed_runs_tokens_per_second_leaves_out_each_launchs_warm_up(monkeypatch):
    """A resumed run counted its first launch's warm-up (carried in the checkpoint) and its own: its tokens/s read
    about half an unbroken run's on a short run (review Q3). Each launch's first batch is left out of the rate and
    its time kept in warmup_seconds."""
    from types import SimpleNamespace

    from hydratune import callbacks
    from hydratune.callbacks import Throughput

    clock = iter(range(10**6))
    monkeypatch.setattr(callbacks.time, "perf_counter", lambda: float(next(clock)))
    trainer = SimpleNamespace(_logger_connector=SimpleNamespace(should_update_logs=False))
    batch = {"input_ids": torch.ones(2, 50, dtype=torch.long), "labels": torch.ones(2, 50, dtype=torch.long)}

    def train(counter, seconds_per_batch):  # batches of 100 tokens; each launch's first takes 10 s
        for seconds in seconds_per_batch:
            counter.on_train_batch_start(trainer, None, batch, 0)
            for _ in range(seconds - 1):
                next(clock)
            counter.on_train_batch_end(trainer, None, None, batch, 0)

    unbroken = Throughput()
    train(unbroken, [10, 1, 1, 1, 1, 1, 1, 1])
    first = Throughput()
    train(first, [10, 1, 1, 1])
    resumed = Throughput()  # a new process: the checkpoint's counters, its own warm-up
    resumed.load_state_dict(first.state_dict())
    train(resumed, [10, 1, 1, 1])
    assert unbroken.tokens_per_second == resumed.tokens_per_second == 100.0
    assert (unbroken.warmup_seconds, resumed.warmup_seconds) == (10.0, 20.0)
    assert (resumed.tokens, resumed.train_seconds, resumed.samples_per_second) == (800, 26.0, 2.0)
    only_warm_up = Throughput()  # a one-batch run has nothing else to go by
    train(only_warm_up, [4])
    assert only_warm_up.tokens_per_second == 25.0


class _Alternate(torch.utils.data.IterableDataset):
    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        while True:
            yield from self.batches


def test_the_logged_train_loss_is_the_whole_optimizer_steps(tiny_model_dir, tokenizer, tmp_path):
    """With gradient accumulation the loggers' train/loss was the step's last micro-batch alone, loss.png drew a
    second point per step at the previous step's x (review L11), and its learning rate ran a step ahead of the
    loggers' (L19). Now: the step's token-weighted loss, one point per step, the rate each step used."""
    import copy
    import csv

    from lightning.pytorch.loggers import CSVLogger

    from hydratune.callbacks import History, LRMonitor
    from hydratune.loggers import StepAxis

    module = make_module(tiny_model_dir, scheduler="linear")
    collate = PadCollator(tokenizer.pad_token_id)
    short, long = (
        collate(batch_samples(tokenizer, n=2, seed=1)),
        collate(batch_samples(tokenizer, n=6, seed=2)),
    )
    module.configure_model()
    start = copy.deepcopy(module.eval())
    with (
        torch.no_grad()
    ):  # step 1's loss at the starting weights: both micro-batches, weighted by their tokens
        (a, ta), (b, tb) = start.nll(short), start.nll(long)
    expected = float((a + b) / (ta + tb))
    history = History()
    trainer = L.Trainer(
        max_steps=3, accumulate_grad_batches=2, log_every_n_steps=1, logger=CSVLogger(tmp_path, name="csv"),
        accelerator="cpu", callbacks=[history, LRMonitor(logging_interval="step"), StepAxis(tmp_path)],
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(
        module.train(),
        train_dataloaders=torch.utils.data.DataLoader(_Alternate([short, long]), batch_size=None),
    )
    with open(next(tmp_path.rglob("metrics.csv"))) as f:
        rows = [row for row in csv.DictReader(f) if row.get("train/loss")]
    logged = {int(row["step"]): float(row["train/loss"]) for row in rows}
    assert list(logged) == [1, 2, 3] and logged[1] == pytest.approx(expected, rel=1e-4)
    assert [step for step, _ in history.train_loss] == [1, 2, 3]
    assert [loss for _, loss in history.train_loss] == pytest.approx(list(logged.values()), rel=1e-6)
    with open(next(tmp_path.rglob("metrics.csv"))) as f:
        lr_logged = {int(r["step"]): float(r["train/lr"]) for r in csv.DictReader(f) if r.get("train/lr")}
    assert dict(history.lr) == pytest.approx(lr_logged) and len({lr for _, lr in history.lr}) == 3  # it moves


def test_without_a_progress_bar_the_log_says_how_training_goes(
    tiny_model_dir, tokenizer, caplog, monkeypatch
):
    """Off a terminal the bar is off and train.log showed nothing between the parameter count and the summary
    (review L8); the bar drew on stdout but was switched by stderr (L13) and read "Epoch 0/-2" (L9)."""
    import io
    import logging
    import sys
    from types import SimpleNamespace

    from hydratune.callbacks import ProgressLines, Throughput
    from hydratune.train import StepsBar, quiet_when_piped

    module = make_module(tiny_model_dir)
    batch = PadCollator(tokenizer.pad_token_id)(batch_samples(tokenizer, n=4))
    with caplog.at_level(logging.INFO, logger="hydratune.callbacks"):
        fit_repeated(module, batch, 5, callbacks=[ProgressLines(2), Throughput()], log_every_n_steps=1)
    lines = [r.getMessage() for r in caplog.records if r.name == "hydratune.callbacks"]
    assert [line.split(":")[0] for line in lines] == ["step 2/5", "step 4/5", "step 5/5"]
    assert all("train/loss " in line and " tokens/s" in line and ", lr " in line for line in lines)
    piped = SimpleNamespace(isatty=lambda: False)
    terminal = SimpleNamespace(isatty=lambda: True)
    for out, err, shown in ((terminal, terminal, True), (piped, terminal, False), (terminal, piped, False)):
        monkeypatch.setattr(sys, "stdout", out)
        monkeypatch.setattr(sys, "stderr", err)
        assert quiet_when_piped({"enable_progress_bar": True})["enable_progress_bar"] is shown
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    bar = StepsBar()
    bar._trainer = SimpleNamespace(max_epochs=-1, max_steps=6, global_step=3)
    assert bar._get_train_description(0) == "Training"
    bar._trainer.max_epochs = 3  # a run counted in epochs keeps Lightning's "Epoch 0/2"
    assert bar._get_train_description(0).strip() == "Epoch 0/2"


def test_an_mlflow_server_that_cannot_be_reached_is_one_line_before_the_model_loads(monkeypatch):
    """MLflow retried an unreachable server for minutes, after the model loaded, before its error (review Z5)."""
    import socket

    from hydratune.errors import UserError
    from hydratune.preflight import check_mlflow_server

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    node = {
        "_target_": "lightning.pytorch.loggers.MLFlowLogger",
        "tracking_uri": f"http://u:pw@127.0.0.1:{port}",
    }
    check_mlflow_server("mlflow", node)  # listening: passes
    server.close()
    with pytest.raises(
        UserError, match=r"^logger\.mlflow\.tracking_uri: the MLflow server at http://\*\*\*@127"
    ) as err:
        check_mlflow_server("mlflow", node)
    assert "pw" not in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")  # the URI from the environment
    with pytest.raises(UserError, match="cannot be reached"):
        check_mlflow_server("mlflow", {"_target_": node["_target_"]})
    check_mlflow_server("mlflow", {"tracking_uri": "file:/tmp/mlruns"})  # a file store: nothing to reach


def test_tensorboard_gets_the_runs_settings_in_its_hparams_tab(tmp_path):
    """Lightning writes TensorBoard's hparams only with a metric value, and conf/logger/tensorboard.yaml has no
    default metric: the HPARAMS tab was empty (review L5). The settings go in, with the curves that compare runs,
    and no made-up point on those curves."""
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from hydratune.loggers import tensorboard_hparams

    logger = TensorBoardLogger(tmp_path, name="tb", version="", default_hp_metric=False)
    settings = {"optimizer": {"lr": 2e-4, "betas": [0.9, 0.999]}, "peft": {"r": 8}, "resume": None}
    logger.log_hyperparams(settings)
    tensorboard_hparams(logger, settings, ["val/loss", "val/accuracy"])
    logger.finalize("success")
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    start, experiment = content["_hparams_/session_start_info"], content["_hparams_/experiment"]
    assert b"optimizer/lr" in start and b"peft/r" in start and b"[0.9, 0.999]" in start
    assert b"val/loss" in experiment and b"val/accuracy" in experiment
    assert events.Tags()["scalars"] == []  # no value on the compared curves


def test_the_learning_rate_has_one_name_whatever_the_optimizer():
    """Lightning named the curve lr-AdamW, lr-SGD/pg1 ...: runs of a sweep over optimizers, or with LoRA+, had no
    common learning-rate curve (review L17)."""
    from hydratune.callbacks import LRMonitor

    assert LRMonitor.renamed({"lr-AdamW": 0.1}) == {"train/lr": 0.1}
    assert LRMonitor.renamed({"lr-SGD/pg1": 0.1, "lr-SGD/pg2": 1.6, "momentum-SGD/pg1": 0.9}) == {
        "train/lr": 0.1, "train/lr/pg2": 1.6, "momentum-SGD/pg1": 0.9,
    }  # fmt: skip


def test_a_launch_from_step_0_drops_the_records_of_an_attempt_that_saved_nothing(tmp_path):
    """A run killed before its first checkpoint, launched again into its folder (or with resume=auto, which finds
    nothing to continue), appended a second run's rows to csv/metrics.csv and generations.jsonl (review L15)."""
    from hydratune.loggers import build_loggers

    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text("epoch,step,train/loss\n0,0,9.0\n0,1,8.0\n")
    (tmp_path / "generations.jsonl").write_text('{"step": 0, "answer": "a"}\n{"step": 1, "answer": "b"}\n')
    (tb,) = build_loggers(_logger_cfg("tensorboard", output_dir=tmp_path), tmp_path)
    assert (tmp_path / "csv" / "metrics.csv").read_text().splitlines() == ["epoch,step,train/loss"]
    assert (tmp_path / "generations.jsonl").read_text() == ""
    assert tb._kwargs.get("purge_step") == 0  # TensorBoard hides the attempt's events
    resumed = tmp_path / "resumed"  # a resume keeps what its checkpoint's steps logged
    (resumed / "csv").mkdir(parents=True)
    (resumed / "csv" / "metrics.csv").write_text("epoch,step,train/loss\n0,1,8.0\n")
    build_loggers(_logger_cfg("tensorboard", output_dir=resumed), resumed, resumed_step=1)
    assert (resumed / "csv" / "metrics.csv").read_text().splitlines()[-1] == "0,1,8.0"
