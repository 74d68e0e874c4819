"""Checkpoints: atomic writes, step/last/best files, RNG state for exact resume, and `resume=auto`.

A checkpoint holds the trainable weights (SFTModule.on_save_checkpoint), optimizer, scheduler, loop
state, the RNG states (TrainingRNG) and the data position (hydratune.data.sampler.ResumableDataLoader),
so a resumed run continues with the next unseen batch and reproduces the uninterrupted run.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from hydratune.config import greater_is_better
from hydratune.errors import UserError
from hydratune.folders import replace_folder
from hydratune.preflight import human_bytes

log = logging.getLogger(__name__)

LAST = "last.ckpt"
BEST = "best"
STEP_FILE = re.compile(r"step=(\d+)\.ckpt")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes `path.tmp-PID`, fsyncs, then renames over `path`: a kill mid-write leaves the old file whole.

    A full disk mid-write (ENOSPC, or torch's zip writer failing with "unexpected pos") becomes a UserError
    naming the file, the bytes the checkpoint needs and the last good checkpoint; the partial file is removed.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except (OSError, RuntimeError) as err:
            if not disk_full(err):
                raise
            tmp.unlink(missing_ok=True)
            free = shutil.disk_usage(path.parent).free
            raise UserError(
                f"{path}: the disk is full ({human_bytes(free)} free, this checkpoint needs "
                f"~{human_bytes(tensor_bytes(checkpoint))}); the last good checkpoint is "
                f"{last_good_checkpoint(path.parent)}; free disk or lower "
                "callbacks.model_checkpoint.save_total_limit, then resume=auto"
            ) from None
        finally:
            tmp.unlink(missing_ok=True)


def disk_full(err: BaseException) -> bool:
    """ENOSPC/EDQUOT, or torch's zip writer's "unexpected pos" (how a full disk shows through torch.save)."""
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    return "unexpected pos" in str(err) or "file write failed" in str(err)


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a (nested) checkpoint dict: about the size of the file."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def last_good_checkpoint(folder: Path) -> str:
    """The newest whole checkpoint in `folder` (temporary files aside), or a note that there is none."""
    found = [p for p in Path(folder).glob("*.ckpt") if p.is_file()]
    return str(max(found, key=lambda p: p.stat().st_mtime)) if found else "(none written yet)"


def _validation_follows(trainer) -> bool:
    """Whether Lightning's epoch loop evaluates right after this training batch (its own test, asked early)."""
    loop = trainer.fit_loop.epoch_loop
    try:
        return bool(loop._should_check_val_fx(trainer.fit_loop._data_fetcher)) and not loop._skip_next_val
    except (AttributeError, TypeError):  # another Lightning: save now, as before
        return False


class StepCheckpoint(ModelCheckpoint):
    """`step=NNNNNN.ckpt` every `save_steps` optimizer steps (or at each evaluation when None), the newest
    `save_total_limit` of them kept (none with 0), and `last.ckpt` beside them.

    `last.ckpt` is also written at the final step and, after `request_stop()` (SIGTERM/SIGINT), at the
    next optimizer-step boundary, after which training stops: never in the middle of an accumulation
    window, whose partial gradients a checkpoint cannot hold.
    """

    def __init__(
        self, dirpath: str | Path, save_steps: int | None = None, save_total_limit: int | None = None
    ):
        super().__init__(
            dirpath=dirpath,
            filename="step={step:06d}",
            auto_insert_metric_name=False,
            monitor="step",  # "keep the newest k" is top-k on the step counter
            mode="max",
            save_top_k=-1 if save_total_limit is None else save_total_limit,  # 0: last.ckpt only
            save_last=True,
            every_n_train_steps=save_steps,
            # A run continued from an earlier checkpoint in its own folder writes over the steps it redoes; a
            # versioned last-v1.ckpt beside the abandoned last.ckpt left resume=auto continuing the abandoned one.
            enable_version_counter=False,
        )
        self.stop_signal: str | None = None
        self.stopped_by_other_rank = False
        self._step_seen = -1
        self._after_validation = False
        self._save_after_logging = False

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        # A step's checkpoint waits until Lightning has sent the step's metrics to the loggers, right after this
        # callback's on_train_batch_end: saved before them, a kill in between lost that step's row for good
        # (the resumed run starts after it: review R1).
        connector = trainer._logger_connector
        log_step = connector.update_train_step_metrics
        if getattr(log_step, "saves_after", None) is self:
            return

        def log_then_save() -> None:
            log_step()
            if self._save_after_logging:
                self._save_after_logging = False
                self._save_as_of_batch_end(trainer)

        log_then_save.saves_after = self
        connector.update_train_step_metrics = log_then_save

    def _save_as_of_batch_end(self, trainer) -> None:
        """The save on_train_batch_end would have made: Lightning counts the batch completed just before it
        logs, and a checkpoint of that state resumes as one saved in on_train_batch_end (Lightning's own time)."""
        progress = trainer.fit_loop.epoch_loop.batch_progress
        progress.total.completed -= 1
        progress.current.completed -= 1
        try:
            self._save_now(trainer)
        finally:
            progress.total.completed += 1
            progress.current.completed += 1

    def request_stop(self, reason: str) -> None:
        self.stop_signal = reason

    def stop_now(self, trainer, reason: str) -> None:
        """Stop at this optimizer step with last.ckpt written (a pruned search trial), if an evaluation
        ended right after the step; else at the next step boundary, as `request_stop` does."""
        at_boundary = not trainer.fit_loop.epoch_loop._should_accumulate()
        if at_boundary and trainer.global_step == self._step_seen:
            self._save_now(trainer)
            trainer.should_stop = True
        else:
            self.request_stop(reason)

    # Saves happen only right after an optimizer step. Lightning's own timing can save mid-window (after a
    # validation, or deferred from the end of an epoch), and a checkpoint cannot hold partial gradients.
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        stepped, self._step_seen = trainer.global_step != self._step_seen, trainer.global_step
        if not stepped:
            return
        if trainer.world_size > 1:
            # A signal reaches each rank on its own time, maybe on either side of a step: every rank stops (and
            # saves, a collective) at the first step after any rank got one.
            anywhere = trainer.strategy.reduce_boolean_decision(self.stop_signal is not None, all=False)
            if anywhere and self.stop_signal is None:
                self.stop_signal, self.stopped_by_other_rank = "a stop signal to another rank", True
        every = self._every_n_train_steps
        due = (every > 0 and trainer.global_step % every == 0) or self._after_validation
        finished = 0 < trainer.max_steps <= trainer.global_step
        if (due or finished or self.stop_signal) and _validation_follows(trainer):
            # An evaluation comes right after this step: save after it, so the checkpoint holds its result
            # (the val curve, the best score, early stopping's count) and a resume does not lose it. A stop
            # signal waits for it too: the resumed run would not evaluate this step again. The final step's
            # too: a run continued past it with a higher max_steps lost that evaluation (review D1).
            self._after_validation = True
            return
        if due or finished or self.stop_signal:
            self._save_after_logging = True  # once this step's metrics reach the loggers (setup)
        if self.stop_signal:
            trainer.should_stop = True
            # Lightning evaluates once more when told to stop (for early stopping): not after a stop's save,
            # which would spend the signal's grace time and score a step the resumed run never evaluates.
            trainer.fit_loop.epoch_loop._skip_next_val = True

    def on_validation_end(self, trainer, pl_module) -> None:
        # Without save_steps, a checkpoint follows each evaluation; with save_steps, a step's save that an
        # evaluation of the same step was due to follow. Now if it came right after an optimizer step (the
        # usual case), else at the next step.
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        if self._every_n_train_steps > 0 and not self._after_validation:
            return
        at_boundary = not trainer.fit_loop.epoch_loop._should_accumulate()
        if at_boundary and trainer.global_step == self._step_seen:
            self._save_now(trainer)
            if self.stop_signal:  # the stop waited for this evaluation (on_train_batch_end)
                trainer.should_stop = True
        else:
            self._after_validation = True

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        pass  # the epoch's last optimizer step was already handled in on_train_batch_end

    def on_train_start(self, trainer, pl_module) -> None:
        self._count_earlier_files(trainer)

    def _count_earlier_files(self, trainer) -> None:
        """Make save_total_limit hold across kills and resumes.

        A kill can land between a step file's write and last.ckpt's: the resumed run then starts from an
        older last.ckpt whose saved state does not list the newer step file, and Lightning would keep it
        forever (and write its successor as `-v1`). So at the start of training: step files past the step
        training starts from are dropped (this run writes them again), earlier ones that the state does not
        list are counted, and the oldest go until save_total_limit are left.
        """
        if trainer.ckpt_path is None or not self.dirpath or not Path(self.dirpath).is_dir():
            return  # a fresh start: Lightning's own bookkeeping
        for path in Path(self.dirpath).glob("step=*.ckpt"):
            match = STEP_FILE.fullmatch(path.name)
            key = os.path.join(self.dirpath, path.name)
            if match is None:
                continue
            if int(match.group(1)) > trainer.global_step:
                self.best_k_models.pop(key, None)
                trainer.strategy.remove_checkpoint(key)
            elif self.save_top_k > 0 and key not in self.best_k_models:
                self.best_k_models[key] = torch.tensor(float(match.group(1)))
        if self.save_top_k < 1:
            return  # save_total_limit=null: every step file is kept (0: this run writes none)
        resumed_from = Path(trainer.ckpt_path).absolute() if trainer.ckpt_path else None
        while len(self.best_k_models) > self.save_top_k:
            oldest = min(self.best_k_models, key=self.best_k_models.get)
            self.best_k_models.pop(oldest)
            if Path(oldest).absolute() != resumed_from:
                trainer.strategy.remove_checkpoint(oldest)
        if len(self.best_k_models) == self.save_top_k:
            self.kth_best_model_path = min(self.best_k_models, key=self.best_k_models.get)
            self.kth_value = self.best_k_models[self.kth_best_model_path]
        if self.best_k_models:
            self.best_model_path = max(self.best_k_models, key=self.best_k_models.get)
            self.best_model_score = self.best_k_models[self.best_model_path]

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        """FSDP's sharded checkpoint is a folder that Lightning rewrites in place, so a kill mid-write left new
        shards beside the old meta.pt, which resumed silently from a mix (review R4): it is written whole to
        `.NAME.tmp-stepN/` (the same name on every rank), then swapped in by rank 0."""
        if not writes_folders(trainer):
            return super()._save_checkpoint(trainer, filepath)
        from weakref import proxy

        final = Path(filepath)
        tmp = final.with_name(f".{final.name}.tmp-step{trainer.global_step}")
        if trainer.is_global_zero and tmp.exists():
            shutil.rmtree(tmp)
        trainer.strategy.barrier("checkpoint-begin")
        trainer.save_checkpoint(tmp, self.save_weights_only)
        trainer.strategy.barrier("checkpoint-written")
        if trainer.is_global_zero:
            replace_folder(tmp, final)
        trainer.strategy.barrier("checkpoint-swapped")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    def _save_now(self, trainer) -> None:
        self._after_validation = False
        if self._last_global_step_saved == trainer.global_step or trainer.sanity_checking:
            return
        candidates = self._monitor_candidates(trainer)
        self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)


def rng_states() -> dict:
    """Every RNG a training step may draw from (dropout, sampling): torch CPU/CUDA, numpy, random."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    # Tensors, tuples and numbers only: Lightning loads checkpoints with torch.load(weights_only=True).
    numpy_state = (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss)
    states = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class TrainingRNG(L.Callback):
    """Keeps the training RNG stream a function of the training steps alone.

    The states after each step go into checkpoints, and are put back right before every batch: in a resumed
    run model building and dataloader set-up draw random numbers in between, and in any run what runs
    between two steps does (an evaluation's dataloader draws its seed before `on_validation_start`, a new
    epoch's dataloader its own). Validation (and sampled generations) also runs on a saved-and-restored
    state, so evaluating more or less often, or not at all after a resume, does not change the training
    that follows.
    """

    def __init__(self):
        self._after_step: dict | None = None
        self._to_restore: dict | None = None
        self._before_validation: dict | None = None
        self._rank, self._ranks = 0, 1

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._rank, self._ranks = trainer.global_rank, trainer.world_size

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        state = self._to_restore if self._to_restore is not None else self._after_step
        if state is not None:
            set_rng_states(state)
            self._to_restore = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._after_step = rng_states()

    def on_validation_start(self, trainer, pl_module) -> None:
        self._before_validation = rng_states()

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._before_validation is not None:
            set_rng_states(self._before_validation)
            self._before_validation = None

    def state_dict(self) -> dict:
        """This rank's states, and with several ranks every rank's (`rng_by_rank`): each draws its own dropout
        masks, and only rank 0 writes the checkpoint. Every rank saves together (Lightning's checkpoint
        saving is collective), so the states are gathered here."""
        if self._after_step is None:
            return {}
        state = {"rng": self._after_step}
        if self._ranks > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, self._after_step)
            state["rng_by_rank"] = gathered
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        by_rank = state_dict.get("rng_by_rank")
        if by_rank and len(by_rank) == self._ranks:
            self._to_restore = by_rank[self._rank]
        else:  # one process, or another number of ranks than saved: rank 0's stream
            self._to_restore = state_dict.get("rng")


def build_checkpointing(cfg: dict, dirpath: str | Path) -> list[L.Callback]:
    """The callbacks of the `callbacks.model_checkpoint` and `callbacks.early_stopping` nodes (plain keys).

    `checkpoint`: save_steps, save_total_limit, metric_for_best_model, greater_is_better; a best
    checkpoint (`best.ckpt`) is kept when metric_for_best_model is set.
    `early_stopping`: patience (evaluations without improvement) and threshold (the least change that
    counts as one) on metric_for_best_model.
    """
    callbacks: list[L.Callback] = []
    ckpt = cfg.get("model_checkpoint") or {}
    metric = ckpt.get("metric_for_best_model")
    mode = "max" if greater_is_better(ckpt) else "min"
    if cfg.get("model_checkpoint") is not None:
        # The best-checkpoint callback comes first: code that asks for "the" ModelCheckpoint's best path finds it.
        if metric:
            callbacks.append(
                ModelCheckpoint(
                    dirpath=dirpath,
                    filename=BEST,
                    monitor=metric,
                    mode=mode,
                    save_top_k=1,
                    auto_insert_metric_name=False,
                    enable_version_counter=False,
                )
            )
        callbacks.append(StepCheckpoint(dirpath, ckpt.get("save_steps"), ckpt.get("save_total_limit")))
    stopping = cfg.get("early_stopping")
    if stopping is not None:
        if not metric:
            raise UserError(
                "callbacks.early_stopping needs callbacks.model_checkpoint.metric_for_best_model (e.g. val/loss)"
            )
        callbacks.append(
            StopEarly(
                monitor=metric,
                mode=mode,
                patience=stopping.get("patience", 3),
                min_delta=stopping.get("threshold", 0.0),
                check_on_train_epoch_end=False,
                strict=False,  # no value before the first evaluation
            )
        )
    return callbacks


def final_weights_to_best(trainer, callbacks: list[L.Callback]) -> bool:
    """The evaluation of the final weights after training (train.evaluate_last_step) takes part in the best
    checkpoint, as every evaluation does in the Hugging Face Trainer: when it beats best.ckpt, the final step's
    last.ckpt is copied to best.ckpt. Lightning's callback sees no evaluation outside fit(), so the run exported
    weights it had measured as worse than its final ones (review L2)."""
    best = next((cb for cb in callbacks if type(cb) is ModelCheckpoint), None)
    if best is None or best.monitor is None or writes_folders(trainer):
        return False
    score = trainer.callback_metrics.get(best.monitor)
    if score is None or not torch.isfinite(torch.as_tensor(score)):
        return False
    score = torch.as_tensor(score, dtype=torch.float32).cpu()
    current = best.best_model_score
    if current is not None and not (score > current if best.mode == "max" else score < current):
        return False
    target = Path(best.dirpath) / f"{BEST}{best.FILE_EXTENSION}"
    last = Path(best.dirpath) / LAST
    if checkpoint_step(last) != trainer.global_step:
        return False  # no checkpoint of the final weights to copy (callbacks=none has no best either)
    if trainer.is_global_zero:
        partial = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(last, partial)
        os.replace(partial, target)
    trainer.strategy.barrier("best-from-final")
    best.best_model_path = best.kth_best_model_path = str(target)
    best.best_model_score = best.kth_value = score
    best.best_k_models = {str(target): score}
    log.info("the final weights (step %d, %s %.4f) are the best: copied %s to %s",
             trainer.global_step, best.monitor, float(score), LAST, target.name)  # fmt: skip
    return True


def best_checkpoint(callbacks: list[L.Callback]) -> Path | None:
    """The best checkpoint file that a run wrote, if any."""
    for cb in callbacks:
        if type(cb) is ModelCheckpoint and cb.best_model_path and Path(cb.best_model_path).is_file():
            return Path(cb.best_model_path)
    return None


def load_trainable_weights(module: L.LightningModule, path: str | Path) -> int:
    """Put a checkpoint's trained weights into `module` (the frozen base stays as loaded); returns the
    optimizer step they are of."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    state = checkpoint["state_dict"]
    missing_trained = [k for k, p in module.named_parameters() if p.requires_grad and k not in state]
    if missing_trained:
        raise UserError(
            f"{path}: holds no weights for {missing_trained[0]}; was it written by another config?"
        )
    module.load_state_dict(state, strict=False)
    module.evaluated_step = None  # what a task knew of the weights' evaluation is now another's
    return int(checkpoint.get("global_step", -1))


def writes_folders(trainer) -> bool:
    """Whether the strategy saves a checkpoint as a folder of shards (FSDP's sharded state dict)."""
    from lightning.pytorch.strategies import FSDPStrategy

    strategy = trainer.strategy
    return isinstance(strategy, FSDPStrategy) and getattr(strategy, "_state_dict_type", "full") == "sharded"


TMP_FOLDER = re.compile(r"\.(?P<name>.+)\.tmp-step\d+")
OLD_FOLDER = re.compile(r"\.(?P<name>.+)\.old-\d+")


def restore_interrupted_swaps(folder: Path) -> None:
    """A kill inside `replace_folder` left a checkpoint folder renamed aside: the complete new one (its meta.pt is
    written last) goes in place, else the old one goes back."""
    if not folder.is_dir():
        return
    for pattern in (TMP_FOLDER, OLD_FOLDER):
        for path in sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True):
            match = pattern.fullmatch(path.name)
            final = folder / match["name"] if match else None
            if final is not None and path.is_dir() and (path / "meta.pt").is_file() and not final.exists():
                os.replace(path, final)
                log.warning("checkpoints: %s was being swapped in when the run stopped; restored", final.name)


def is_checkpoint(path: str | Path) -> bool:
    """A checkpoint file, or the folder that FSDP's sharded checkpoints are (one shard per rank + meta.pt)."""
    path = Path(path)
    return path.is_file() or (path.is_dir() and (path / "meta.pt").is_file())


def resume_file(run_dir: str | Path) -> Path | None:
    """The newest of a run's `checkpoints/last.ckpt`, its `step=N.ckpt` files and the `hpc_ckpt_N.ckpt` files
    that Lightning writes on SLURM's requeue signal (SIGUSR1) in the run folder. A step file counts too: a
    kill between a step file's write and last.ckpt's leaves it the newest (best.ckpt does not: it is the best
    state, not the latest)."""
    found = resume_candidates(run_dir)
    return found[0] if found else None


def resume_candidates(run_dir: str | Path) -> list[Path]:
    """Every checkpoint `resume_file` chooses from, newest first (an older one stands in for a damaged newer)."""
    run_dir = Path(run_dir)
    folder = run_dir / "checkpoints"
    restore_interrupted_swaps(folder)
    steps = [p for p in folder.glob("step=*.ckpt") if STEP_FILE.fullmatch(p.name)] if folder.is_dir() else []
    found = [p for p in [folder / LAST, *steps, *run_dir.glob("hpc_ckpt_*.ckpt")] if is_checkpoint(p)]
    # Newest first; at the same time last.ckpt, which is written after the step file of its step.
    return sorted(found, key=lambda p: (p.stat().st_mtime, p.name == LAST), reverse=True)


def remove_stale_temporaries(run_dir: str | Path) -> list[Path]:
    """The half-written `.NAME.tmp-PID` files (AtomicCheckpointIO) and `.NAME.tmp-stepN/` folders (FSDP's shards)
    that a kill mid-save left, and folders a finished swap had renamed aside, removed."""
    folder = Path(run_dir) / "checkpoints"
    stale = [*folder.glob(".*.tmp-*"), *folder.glob(".*.old-*")] if folder.is_dir() else []
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale


def saved_config(run_dir: Path) -> dict | None:
    """A run's saved .hydra/config.yaml as written (interpolations unresolved); None when unreadable."""
    import yaml

    try:
        return yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None


def saved_identity(run_dir: Path) -> tuple[str | None, str | None]:
    """(name, task) of a run from its saved .hydra/config.yaml; (None, None) when unreadable."""
    cfg = saved_config(run_dir)
    return (None, None) if cfg is None else (cfg.get("name"), task_id(cfg.get("task") or {}))


def task_id(task_cfg: dict) -> str:
    """A task config's identity: its `_target_` (a user's task), else its name."""
    return str(task_cfg.get("_target_") or task_cfg.get("name") or "sft")


def find_resume_run(run_dir: str | Path, name: str | None = None, task: str | None = None) -> Path | None:
    """The run directory that `resume=auto` continues: this one if it has a checkpoint, else the newest
    earlier run of the same name and task that has one. Earlier runs are the sibling date folders of the
    default layout (`outputs/<name>/<date>`; a folder given with hydra.run.dir elsewhere has none: only it is
    continued); for sweeps, the same job number in this sweep folder or a sibling one."""
    run_dir = Path(run_dir)
    if resume_file(run_dir) is not None:
        return run_dir
    job = re.fullmatch(r"(?:c\d+_)?(\d+)", run_dir.name)
    if (
        job
    ):  # outputs/multirun/<name>/<date>/<job.num>, or c1_<job.num> in a sweep folder run again: the same job
        same_job = re.compile(rf"(?:c\d+_)?{job.group(1)}")
        sweeps = (
            p for p in run_dir.parent.parent.glob("*") if (p / "multirun.yaml").is_file()
        )  # Hydra's mark
        folders = [run_dir.parent, *(p for p in sweeps if p != run_dir.parent)]
        # Job N of another sweep of this name is another experiment unless it was launched with this job's
        # overrides (the same command again, in a new date folder); in this sweep's folder it is this grid's.
        mine = job_overrides(run_dir)
        candidates = [
            p for folder in folders if folder.is_dir() for p in folder.glob("*")
            if same_job.fullmatch(p.name) and (folder == run_dir.parent or job_overrides(p) == mine)
        ]  # fmt: skip
    else:  # outputs/<name>/<date>
        if name is not None and run_dir.parent.name != name:
            return None
        candidates = list(run_dir.parent.glob("*"))
    found = []
    for folder in candidates:
        if folder == run_dir or not folder.is_dir():
            continue
        saved_name, saved_task = saved_identity(folder)
        if name is not None and (saved_name, saved_task) != (name, task):
            continue  # another experiment's or another task's run (all tasks share name: default)
        checkpoint = resume_file(folder)
        if checkpoint is not None:
            found.append((checkpoint.stat().st_mtime, folder))
    return max(found)[1] if found else None


def job_overrides(folder: Path) -> list[str] | None:
    """A sweep job's command-line overrides (its .hydra/overrides.yaml), less those that only say where and
    whether to resume; None where Hydra saved none."""
    import yaml

    path = Path(folder) / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    saved = yaml.safe_load(path.read_text()) or []
    return sorted(o for o in saved if not str(o).lstrip("+~").startswith(("resume=", "ckpt_path=", "hydra.")))


class RunIdentity(L.Callback):
    """Writes into every checkpoint what run it is of: the task, the adapter method, the model and the
    launch's config (secrets redacted). A resume reads it back (`checkpoint_identity`) to refuse continuing
    another task's or method's run and to name the settings a launch changes, in any folder layout."""

    def __init__(self, cfg: dict):
        from hydratune.config import redact

        self.identity = {
            "task": task_id(cfg.get("task") or {}),
            "peft": (cfg.get("peft") or {}).get("method", "none"),
            "model": (cfg.get("model") or {}).get("pretrained_model_name_or_path"),
            "config": redact({k: v for k, v in cfg.items() if k != "hydra"}),
        }

    def state_dict(self) -> dict:
        return self.identity

    def load_state_dict(self, state_dict: dict) -> None:
        pass  # what the checkpoint was is read before training (checkpoint_identity); this launch is itself


def checkpoint_identity(path: str | Path) -> dict | None:
    """What `RunIdentity` wrote into a checkpoint file; None for a folder (FSDP's shards) or one written
    before it existed. The tensors are memory-mapped, not read."""
    state = _checkpoint_head(path)
    if state is None:
        return None
    identity = next(
        (v for k, v in (state.get("callbacks") or {}).items() if k.startswith("RunIdentity")), None
    )
    return {**identity, "step": int(state.get("global_step", -1))} if identity is not None else None


def checkpoint_step(path: str | Path) -> int | None:
    """The optimizer steps a checkpoint file was saved after; None for a folder (FSDP's shards)."""
    state = _checkpoint_head(path)
    return None if state is None else int(state.get("global_step", -1))


def _checkpoint_head(path: str | Path) -> dict | None:
    path = Path(path)
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=False, mmap=True)


class StopEarly(EarlyStopping):
    """Lightning's EarlyStopping, with two changes for resumed runs: the patience is this launch's (Lightning
    restores the checkpoint's, so raising it could not continue a run), and a run that it already ended
    stays ended (Lightning trained on until the next evaluation, then stopped again with other results)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.message: str | None = None

    @property
    def state_key(self) -> str:  # Lightning's own key: checkpoints of either class load into the other
        return super().state_key.replace(type(self).__qualname__, "EarlyStopping", 1)

    def load_state_dict(self, state_dict: dict) -> None:
        patience = self.patience
        super().load_state_dict(state_dict)
        self.patience = patience
        self.message = state_dict.get("stopping_reason_message") if self.wait_count >= patience else None

    def on_train_start(self, trainer, pl_module) -> None:
        if self.message and self.wait_count >= self.patience:
            log.warning(
                "early stopping ended this run at step %d (%s); nothing more is trained. To train on, raise "
                "callbacks.early_stopping.patience above %d", trainer.global_step, self.message.rstrip(". "),
                self.wait_count,
            )  # fmt: skip
            trainer.should_stop = True

    def _evaluate_stopping_criteria(self, current: torch.Tensor):
        """The Hugging Face Trainer's rule, which `threshold` is named after: an evaluation counts as an
        improvement when it beats the best so far by more than the threshold, and the best so far moves on
        every gain, small ones too. Lightning's kept its best until a gain beat it by more than the threshold,
        so small gains added up and reset the patience: imported runs trained on where they had stopped
        (review L10)."""
        previous = self.best_score.clone()
        result = super()._evaluate_stopping_criteria(current)
        if torch.isfinite(current) and self.monitor_op(current, previous.to(current.device)):
            self.best_score = current  # a gain under the threshold: the best moves, the patience still counts
        return result

    def on_validation_end(self, trainer, pl_module) -> None:
        stopping = trainer.should_stop
        super().on_validation_end(trainer, pl_module)
        if trainer.should_stop and not stopping and self.stopping_reason_message:
            self.message = self.stopping_reason_message
            log.info("early stopping: %s", self.message.rstrip(". "))
