"""Checkpoints and the disk: a full disk mid-save is one line and leaves the earlier checkpoints whole, a run
folder without room is refused before training, and save_total_limit holds across kills and resumes."""

from __future__ import annotations

import errno
import signal
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import Repeat, batch_samples, compose, make_module

from hydratune.checkpoint import AtomicCheckpointIO, StepCheckpoint, TrainingRNG
from hydratune.config import to_plain
from hydratune.data.collate import PadCollator
from hydratune.errors import UserError
from hydratune.signals import GracefulStop


class Killed(BaseException):
    """Stands for SIGKILL: the process ends where it is, nothing else is written."""


class KilledBeforeLast(AtomicCheckpointIO):
    """Dies right after writing the step file of `step`, before that step's last.ckpt (a kill between the
    two writes of one save)."""

    def __init__(self, step: int):
        super().__init__()
        self.step = step

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        if Path(path).name == "last.ckpt" and checkpoint["global_step"] == self.step:
            raise Killed
        super().save_checkpoint(checkpoint, path, storage_options)


def _fit(module, root, batch, callbacks, steps: int, io=None, ckpt_path=None) -> L.Trainer:
    trainer = L.Trainer(
        max_steps=steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        callbacks=callbacks,
        plugins=[io or AtomicCheckpointIO()],
        default_root_dir=root,
    )
    loader = torch.utils.data.DataLoader(Repeat(batch), batch_size=None)
    trainer.fit(module, train_dataloaders=loader, ckpt_path=ckpt_path)
    return trainer


class _Signal(L.Callback):
    def __init__(self, at_step: int):
        self.at_step = at_step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.at_step:
            signal.raise_signal(signal.SIGTERM)


def _step_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("step=*.ckpt"))


@pytest.fixture()
def batch(tokenizer):
    return PadCollator(tokenizer.pad_token_id)(batch_samples(tokenizer, n=4))


def test_save_total_limit_holds_after_a_kill_between_two_writes(tiny_model_dir, batch, tmp_path):
    """Saves every 2 steps, keep 2. Killed after step 8's file but before its last.ckpt: the resume starts
    at step 6 and must not leave step=000008.ckpt behind for the rest of the run."""
    folder = tmp_path / "checkpoints"
    with pytest.raises(Killed):
        _fit(make_module(tiny_model_dir), tmp_path, batch, [StepCheckpoint(folder, 2, 2), TrainingRNG()], 12,
             io=KilledBeforeLast(8))  # fmt: skip
    assert _step_files(folder) == ["step=000006.ckpt", "step=000008.ckpt"]
    assert torch.load(folder / "last.ckpt", weights_only=False)["global_step"] == 6
    resumed = StepCheckpoint(folder, 2, 2)
    _fit(
        make_module(tiny_model_dir),
        tmp_path,
        batch,
        [resumed, TrainingRNG()],
        12,
        ckpt_path=folder / "last.ckpt",
    )
    assert _step_files(folder) == ["step=000010.ckpt", "step=000012.ckpt"]
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt", "step=000010.ckpt", "step=000012.ckpt"]


def test_save_total_limit_counts_step_files_the_resumed_state_does_not_list(tiny_model_dir, batch, tmp_path):
    """A stop (SIGTERM) between saves, then a resume: files of earlier launches count toward the limit,
    also one the checkpoint's saved state does not know (written by a run whose state was lost)."""
    folder = tmp_path / "checkpoints"
    first = StepCheckpoint(folder, save_steps=4, save_total_limit=2)
    _fit(
        make_module(tiny_model_dir),
        tmp_path,
        batch,
        [first, GracefulStop(first), TrainingRNG(), _Signal(5)],
        12,
    )
    assert _step_files(folder) == ["step=000004.ckpt", "step=000006.ckpt"]  # the stop saved at step 6
    (folder / "step=000002.ckpt").write_bytes((folder / "step=000004.ckpt").read_bytes())  # not in the state
    resumed = StepCheckpoint(folder, save_steps=4, save_total_limit=2)
    _fit(
        make_module(tiny_model_dir),
        tmp_path,
        batch,
        [resumed, TrainingRNG()],
        12,
        ckpt_path=folder / "last.ckpt",
    )
    assert _step_files(folder) == ["step=000008.ckpt", "step=000012.ckpt"]


def test_save_total_limit_zero_writes_last_ckpt_only_and_resumes(tiny_model_dir, batch, tmp_path):
    """save_total_limit=0 (the HF Trainer's save_strategy: no, imported): no step files at all, and
    last.ckpt still holds the newest step, so a stop by signal can resume."""
    folder = tmp_path / "checkpoints"
    first = StepCheckpoint(folder, save_steps=2, save_total_limit=0)
    _fit(
        make_module(tiny_model_dir),
        tmp_path,
        batch,
        [first, GracefulStop(first), TrainingRNG(), _Signal(5)],
        8,
    )
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]
    assert torch.load(folder / "last.ckpt", weights_only=False)["global_step"] == 6
    resumed = StepCheckpoint(folder, save_steps=2, save_total_limit=0)
    _fit(
        make_module(tiny_model_dir),
        tmp_path,
        batch,
        [resumed, TrainingRNG()],
        8,
        ckpt_path=folder / "last.ckpt",
    )
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]
    assert torch.load(folder / "last.ckpt", weights_only=False)["global_step"] == 8


def _disk_full_at(path_name: str, error: BaseException, monkeypatch):
    """torch.save fails (as on a full disk) when writing `path_name`, after writing some bytes."""
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if f".{path_name}.tmp-" in str(getattr(f, "name", "")):
            f.write(b"partial")
            raise error
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1536 vs 1460"),
    ],
    ids=["ENOSPC", "unexpected-pos"],
)
def test_full_disk_during_a_save_is_one_line_and_keeps_the_last_good_checkpoint(
    tiny_model_dir, batch, tmp_path, monkeypatch, error
):
    folder = tmp_path / "checkpoints"
    _fit(make_module(tiny_model_dir), tmp_path, batch, [StepCheckpoint(folder, 2, 2), TrainingRNG()], 2)
    good = torch.load(folder / "last.ckpt", weights_only=False)
    assert good["global_step"] == 2
    _disk_full_at("step=000004.ckpt", error, monkeypatch)
    with pytest.raises(UserError) as caught:
        _fit(make_module(tiny_model_dir), tmp_path, batch, [StepCheckpoint(folder, 2, 2), TrainingRNG()], 4,
             ckpt_path=folder / "last.ckpt")  # fmt: skip
    message = str(caught.value)
    assert "\n" not in message
    assert str(folder / "step=000004.ckpt") in message and "disk is full" in message
    assert "needs ~" in message and "KB" in message  # the size of the checkpoint that did not fit
    assert f"last good checkpoint is {folder}" in message
    assert not list(folder.glob(".*tmp*")), "the partial file is removed"
    monkeypatch.undo()
    assert torch.load(folder / "last.ckpt", weights_only=False)["global_step"] == 2  # still loadable
    assert torch.load(folder / "step=000002.ckpt", weights_only=False)["global_step"] == 2


def test_other_write_errors_are_not_called_a_full_disk(tmp_path):
    io = AtomicCheckpointIO()
    with pytest.raises(Exception) as caught:  # noqa: B017 - pickling a lambda fails midway through the write
        io.save_checkpoint({"bad": lambda: None}, tmp_path / "last.ckpt")
    assert not isinstance(caught.value, UserError)


def test_a_run_folder_without_room_for_its_checkpoints_is_refused(tmp_path, monkeypatch):
    import shutil

    from hydratune.preflight import check_disk_room

    cfg = to_plain(compose([], output_dir=tmp_path / "run"))
    check_disk_room(cfg)  # the shipped model's checkpoints fit on this disk
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1_000_000))
    with pytest.raises(UserError, match=r"paths.output_dir: 1.0 MB free at .*checkpoints need ~.* MB"):
        check_disk_room(cfg)


def test_a_step_checkpoint_is_written_after_the_step_reaches_the_loggers(tiny_model_dir, tokenizer, tmp_path):
    """The step-N checkpoint was written before Lightning logged step N: a kill in between resumed after step N,
    whose row then never reached metrics.csv (review R1). Each save now finds its step's row logged."""
    from lightning.pytorch.loggers import Logger

    class Rows(Logger):
        name, version = "rows", 0
        steps: list[int] = []

        def log_metrics(self, metrics, step=None):
            if "train/loss" in metrics:
                self.steps.append(step)

        def log_hyperparams(self, params, *args, **kwargs):
            pass

    class Saves(AtomicCheckpointIO):
        seen: list[tuple[int, int | None]] = []

        def save_checkpoint(self, checkpoint, path, storage_options=None):
            self.seen.append((checkpoint["global_step"], Rows.steps[-1] if Rows.steps else None))
            super().save_checkpoint(checkpoint, path, storage_options)

    batch = PadCollator(tokenizer.pad_token_id)(batch_samples(tokenizer))
    trainer = L.Trainer(max_steps=6, logger=Rows(), log_every_n_steps=1, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", plugins=[Saves()],
                        callbacks=[StepCheckpoint(tmp_path / "checkpoints", 2, 2)])  # fmt: skip
    trainer.fit(
        make_module(tiny_model_dir),
        train_dataloaders=torch.utils.data.DataLoader(Repeat(batch), batch_size=None),
    )
    assert [step for step, _ in Saves.seen] == [2, 2, 4, 4, 6, 6]  # the step file, then last.ckpt
    # Lightning logs optimizer step N as step N - 1: every save comes after its own step's row
    assert all(logged == step - 1 for step, logged in Saves.seen), Saves.seen
