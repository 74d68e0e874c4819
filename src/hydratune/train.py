"""`run(cfg)`: one training run in three phases: `set_up` (tokenizer, task, data, module, trainer), `fit`,
`finish` (export, metrics). No HydraConfig, no working directory: paths come from cfg.paths.

What differs by training objective is asked of the task (`hydratune.tasks`), never decided here."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydratune.config import build, read_json, redact, to_plain
from hydratune.console import quiet_console
from hydratune.errors import NonFiniteLoss, UserError
from hydratune.locks import LOCK_FILE, process_alive
from hydratune.precision import choose_precision, precision_note
from hydratune.preflight import check_config, check_disk_room
from hydratune.tasks.registry import get_task
from hydratune.tasks.task import Task

if TYPE_CHECKING:
    from hydratune.signals import StopBeforeTraining

log = logging.getLogger(__name__)


@dataclass
class Run:
    """The pieces of one run, built by `set_up` and used by `fit` and `finish`."""

    cfg: dict  # the plain run config
    run_dir: Path
    task: Task
    tokenizer: Any
    datamodule: Any
    module: Any
    trainer: Any
    loggers: list
    history: Any
    throughput: Any
    stop: Any  # hydratune.signals.GracefulStop
    checkpointing: list
    ckpt_path: str | None
    effective_batch: int
    started: float = field(default_factory=time.time)
    fit_seconds: float = 0.0


def run(cfg) -> float:
    """Train, export and summarise one run. Returns the final validation loss (the sweep objective)."""
    started = time.time()
    import lightning  # noqa: F401  (it adds a console handler on import, which quiet_console removes)

    from hydratune.signals import StopBeforeTraining, Stopped

    quiet_console()
    check_config(to_plain(cfg))
    check_disk_room(to_plain(cfg))  # room for the checkpoints and export, as `hydratune preflight` reckons
    check_accelerator(str(cfg.trainer.get("accelerator", "auto")))
    ckpt_path = resume_checkpoint(cfg)  # resume=auto may point paths.output_dir at the run it continues
    done = finished_result(cfg, ckpt_path)
    if done is not None:
        return done
    lock = RunLock(Path(cfg.paths.output_dir))  # one launch trains in a folder at a time
    early = StopBeforeTraining()  # a signal while data and model load: one line, exit 128 + signal
    try:
        state = set_up(to_plain(cfg), ckpt_path)
        state.started = started
        fit(state, early)
        return finish(state)
    except Stopped as stopped:
        log.warning(
            "stopped by %s before training started; nothing was trained in this launch%s",
            stopped, f" (the checkpoint {ckpt_path} is unchanged)" if ckpt_path else "",
        )  # fmt: skip
        raise SystemExit(128 + stopped.signum) from None
    finally:
        early.restore()
        lock.release()


def finished_result(cfg, ckpt_path: str | None) -> float | None:
    """resume=auto on a run that already reached trainer.max_steps (its checkpoint at that step, its
    metrics.json written): nothing to train, evaluate or export again; its objective, for a sweep."""
    from hydratune.checkpoint import checkpoint_identity

    if not ckpt_path or cfg.get("ckpt_path") or cfg.get("resume") != "auto":
        return None
    run_dir, max_steps = Path(cfg.paths.output_dir), int(cfg.trainer.get("max_steps") or -1)
    identity = checkpoint_identity(ckpt_path)
    metrics = read_json(run_dir / "metrics.json")
    if identity is None or metrics is None or not 0 < max_steps == identity["step"] == metrics.get("steps"):
        return None
    log.info(
        "resume=auto: %s already finished at step %d (metrics.json); nothing to train. To train on, raise "
        "trainer.max_steps", run_dir, max_steps,
    )  # fmt: skip
    return metrics.get(cfg.get("objective") or "val_loss", float("nan"))


class RunLock:
    """`.hydratune.lock` in the run folder while a launch trains there (process id, host, start): a second
    launch into the same folder (a double sbatch, resume=auto typed in another terminal, a requeue while
    the old job lingers) is refused while the first lives on this host, instead of both writing last.ckpt,
    the step files and the logs. A lock whose process is gone (SIGKILL) is taken over. Held by rank 0 only."""

    NAME = LOCK_FILE

    def __init__(self, run_dir: Path):
        import socket

        self.path, self.held = run_dir / self.NAME, False
        if not _rank_zero():
            return
        host, pid = socket.gethostname(), os.getpid()
        holder = read_json(self.path) or {}
        if (
            holder.get("host") == host
            and holder.get("pid") not in (None, pid)
            and process_alive(holder["pid"])
        ):
            raise UserError(
                f"{run_dir} is being trained by process {holder['pid']} on {host} (since {holder.get('started')}): "
                "wait for it to end, or stop it (its checkpoint stays), then resume=auto"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        self.path.write_text(json.dumps({"pid": pid, "host": host, "started": started}) + "\n")
        self.held = True

    def release(self) -> None:
        if self.held and (read_json(self.path) or {}).get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False


def _rank_zero() -> bool:
    """This process is the first of its job (torchrun's RANK, SLURM's task, a Lightning-started rank)."""
    return all(os.environ.get(var, "0") == "0" for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"))


def warn_if_warmup_outlasts(cfg: dict) -> None:
    """scheduler.warmup_steps as long as the run: the learning rate never reaches optimizer.lr."""
    warmup, max_steps = (
        (cfg.get("scheduler") or {}).get("warmup_steps") or 0,
        cfg["trainer"].get("max_steps") or -1,
    )
    if 0 < max_steps <= warmup:
        log.warning(
            "scheduler.warmup_steps=%d >= trainer.max_steps=%d: the learning rate never reaches optimizer.lr; "
            "lower scheduler.warmup_steps or use scheduler.warmup_ratio", warmup, max_steps,
        )  # fmt: skip


def warn_if_ranks_outnumber_cores(trainer) -> None:
    """More CPU processes (trainer.devices) than cores: each rank gets a share of a core, slower than fewer."""
    from hydratune.data.sampler import cpu_cores

    if trainer.world_size > 1 and type(trainer.accelerator).__name__ == "CPUAccelerator":
        cores = cpu_cores()
        if trainer.world_size > cores:
            log.warning(
                "trainer.devices: %d CPU processes on %d cores share them, which is slower than fewer; "
                "trainer.devices=%d", trainer.world_size, cores, cores,
            )  # fmt: skip


def check_accelerator(accelerator: str) -> None:
    """A GPU run where there is none: one line before the data and model (Lightning's exception came after the
    data were prepared). Here, in the job, not in the command-line check: a SLURM job checks on its node."""
    import torch

    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise UserError(
            f"trainer.accelerator={accelerator}: no CUDA device here (torch.cuda.is_available() is False); use "
            "trainer=cpu here, or run it on GPU nodes (hydra/launcher=submitit_slurm)"
        )


def set_up(cfg: dict, ckpt_path: str | None) -> Run:
    """Seed, tokenizer, task, data (prepared here, before any other rank starts), module, trainer."""
    import lightning as L

    from hydratune.model import load_tokenizer
    from hydratune.optim import hand_clipping_to_fused_backward

    run_dir = Path(cfg["paths"]["output_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg["seed"], workers=True)
    tokenizer = load_tokenizer(cfg["model"], cfg["model"].get("token"))
    task = get_task(cfg["task"])
    datamodule = task.datamodule(tokenizer, cfg)
    prepare_data(datamodule)
    if getattr(datamodule, "val_dataset", ()) is None and cfg["trainer"].get("limit_val_batches", 1.0) != 0:
        # As the Hugging Face Trainer without an eval dataset: train, and say what that costs.
        log.warning(
            "dataset: no validation split, so no evaluation (no val loss, early stopping or best checkpoint); "
            "add one with data_files: {train: ..., validation: ...} or dataset.ops=[{split:{eval:0.05,seed:0}}]"
        )
        cfg["trainer"]["limit_val_batches"] = 0
    hand_clipping_to_fused_backward(cfg)
    module = task.module(cfg, datamodule, tokenizer)
    trainer, loggers, parts = build_trainer(cfg, run_dir, tokenizer, task.generative, ckpt_path)
    effective_batch = cfg["dataset"]["batch_size"] * trainer.accumulate_grad_batches * trainer.world_size
    warn_if_warmup_outlasts(cfg)
    warn_if_ranks_outnumber_cores(trainer)
    log.info(
        "effective batch size: %d (%d per device x %d accumulation x %d devices)",
        effective_batch, cfg["dataset"]["batch_size"], trainer.accumulate_grad_batches, trainer.world_size,
    )  # fmt: skip
    return Run(
        cfg,
        run_dir,
        task,
        tokenizer,
        datamodule,
        module,
        trainer,
        loggers,
        *parts,
        ckpt_path,
        effective_batch,
    )


def prepare_data(datamodule) -> None:
    """Read, format and tokenize the data (cached). Under DDP rank 0 does it before Lightning starts the
    other ranks, which then read the cache. The seconds it took are kept as `datamodule.prepare_seconds`."""
    started = time.perf_counter()
    datamodule.setup("fit")
    release_freed_heap()
    datamodule.prepare_seconds = time.perf_counter() - started


def release_freed_heap() -> None:
    """Hand the heap pages that reading, tokenizing and packing freed back to the OS (glibc's malloc_trim).

    Those objects are gone by now, but glibc keeps their pages resident wherever a live allocation sits
    above them in the heap; the training step's tensors, mostly too large for those holes, are mapped
    beside them, so the peak RSS counts both (on the bench: ~20 MB, ~60 MB in the run that tokenizes).
    Without glibc (musl, macOS, Windows) there is no such call and nothing is done.
    """
    import ctypes
    import gc

    gc.collect()
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the symbols already loaded, libc's among them
    except (AttributeError, OSError, TypeError):
        return
    trim(0)


def build_trainer(cfg: dict, run_dir: Path, tokenizer, generative: bool = True, ckpt_path: str | None = None):
    """The Lightning Trainer with hydratune's callbacks and loggers, for a run that starts from `ckpt_path`
    when given; returns (trainer, loggers, (history, throughput, stop, checkpointing))."""
    from hydratune.callbacks import (
        Epochs,
        EvaluateAfterSteps,
        GradNorm,
        History,
        ProgressLines,
        SampleGenerations,
        Throughput,
    )
    from hydratune.checkpoint import (
        AtomicCheckpointIO,
        RunIdentity,
        StepCheckpoint,
        TrainingRNG,
        build_checkpointing,
        checkpoint_step,
    )
    from hydratune.loggers import StepAxis, build_loggers
    from hydratune.search import trial_callbacks
    from hydratune.signals import GracefulStop

    history, throughput = History(), Throughput()
    callbacks_cfg = cfg.get("callbacks") or {}
    checkpointing = build_checkpointing(callbacks_cfg, run_dir / "checkpoints")
    stop = GracefulStop(next((cb for cb in checkpointing if isinstance(cb, StepCheckpoint)), None))
    callbacks = [_callback(name, node) for name, node in callbacks_cfg.items() if node and "_target_" in node]
    callbacks += checkpointing + [history, throughput, GradNorm(), TrainingRNG(), stop, RunIdentity(cfg)]
    callbacks += [StepAxis(run_dir), EvaluateAfterSteps()]
    epochs = cfg["trainer"].get("max_epochs") or -1
    if epochs > 0:  # steps per epoch from the loader; a fractional epoch count
        callbacks.append(Epochs(epochs, cfg["trainer"].get("max_steps") or -1))
    callbacks += trial_callbacks()  # a trial of an Optuna search: report val/loss, stop when pruned
    generations = cfg.get("eval_generations") or {}
    if generative and generations.get("num_prompts", 0) > 0:
        callbacks.append(SampleGenerations(tokenizer, run_dir / "generations.jsonl", **generations))
    loggers = build_loggers(
        cfg.get("logger") or {}, run_dir, checkpoint_step(ckpt_path) if ckpt_path else None
    )
    if not loggers:  # logger=none: Lightning's LR monitor refuses to run without a logger
        from lightning.pytorch.callbacks import LearningRateMonitor

        callbacks = [cb for cb in callbacks if not isinstance(cb, LearningRateMonitor)]
    trainer_cfg, reason = choose_precision(evaluate_after_steps(cfg["trainer"]))  # trainer.precision: auto
    if epochs > 0:  # Lightning counts whole epochs; Epochs stops a fractional one at its step
        trainer_cfg = {**trainer_cfg, "max_epochs": math.ceil(epochs)}
    trainer_cfg, strategy = split_strategy(quiet_when_piped(cpu_fallbacks(trainer_cfg)), cfg["model"])
    if trainer_cfg.get("enable_progress_bar", True):
        callbacks.append(StepsBar())
    else:
        callbacks.append(ProgressLines(trainer_cfg.get("log_every_n_steps") or 50))
    log.info("precision: %s (%s)", trainer_cfg.get("precision"), reason)
    try:
        trainer = build(
            trainer_cfg,
            logger=loggers or False,
            callbacks=callbacks,
            plugins=[AtomicCheckpointIO()],
            # callbacks=none: no checkpoints, not Lightning's default ones
            enable_checkpointing=bool(checkpointing),
            **strategy,
        )
    except (
        Exception
    ) as err:  # Lightning refuses a setting (MisconfigurationException), via Hydra's instantiate
        cause = err.__cause__ or err
        if type(cause).__name__ != "MisconfigurationException":
            raise
        raise UserError(f"trainer: {str(cause).splitlines()[0]}") from None
    if cfg.get("tf32"):
        import torch

        torch.set_float32_matmul_precision("high")  # TF32 matmuls on Ampere and newer GPUs
    return trainer, loggers, (history, throughput, stop, checkpointing)


def _callback(name: str, node: dict):
    """One `callbacks.NAME` node built, or one line naming it when its class refuses an argument."""
    try:
        return build(node)
    except Exception as err:  # Hydra's InstantiationException around the class's own error
        cause = err.__cause__ or err
        raise UserError(f"callbacks.{name} ({node['_target_']}): {str(cause).splitlines()[0]}") from None


def fit(state: Run, early: StopBeforeTraining | None = None) -> None:
    """Log the hyperparameters, write run.json, evaluate the starting point, train; a signal ends the
    process here with a checkpoint to resume from."""
    from lightning.pytorch.loggers import TensorBoardLogger

    from hydratune.loggers import tensorboard_hparams
    from hydratune.passport import write_passport
    from hydratune.sharding import is_fsdp

    cfg, trainer, run_dir = state.cfg, state.trainer, state.run_dir
    continuing = state.ckpt_path is not None and (run_dir / "run.json").is_file()  # same folder, same runs
    for logger in state.loggers if not continuing else []:  # once: MLflow refuses a changed value (resume=)
        logger.log_hyperparams(redact(cfg) | {"paths": None})
        if isinstance(logger, TensorBoardLogger) and trainer.is_global_zero:
            metric = ((cfg.get("callbacks") or {}).get("model_checkpoint") or {}).get("metric_for_best_model")
            tensorboard_hparams(
                logger, redact(cfg) | {"paths": None}, list(dict.fromkeys(["val/loss", metric or "val/loss"]))
            )
    if trainer.is_global_zero:  # DDP: the ranks share the run folder
        write_passport(
            run_dir / "run.json", cfg, state.tokenizer, state.datamodule, trainer, state.effective_batch,
            state.ckpt_path,
        )  # fmt: skip
    if cfg.get("eval_before_training") and not state.ckpt_path and trainer.limit_val_batches:
        if is_fsdp(trainer):
            log.info("eval_before_training: skipped under FSDP (a validate() before fit() leaves the model "
                     "wrapped without its FSDP root); the first evaluation is at trainer.val_check_interval")  # fmt: skip
        else:
            trainer.validate(state.module, datamodule=state.datamodule, verbose=False)
            state.module.train()  # validate() leaves the modules in eval mode
            check_monitored(cfg, trainer.callback_metrics)  # before a step is spent
    from hydratune.signals import Aborted

    fit_started = time.time()
    try:
        trainer.fit(state.module, datamodule=state.datamodule, ckpt_path=state.ckpt_path)
    except NonFiniteLoss as err:
        raise UserError(f"{err}; the last good checkpoint is {last_checkpoint(run_dir)}") from None
    except Aborted:
        log.warning(
            "aborted by a second SIGINT at step %d; checkpoints are written whole or not at all, so %s is "
            "intact: resume with the same command plus resume=auto", trainer.global_step, last_checkpoint(run_dir),
        )  # fmt: skip
        raise SystemExit(128 + signal.SIGINT) from None
    except Exception as err:  # Lightning's ModelCheckpoint/EarlyStopping on a metric no evaluation logs
        if "could not find the monitored key" in str(err):
            check_monitored(cfg, trainer.callback_metrics)
        if trainer.world_size > 1 and _peer_lost(err):  # a 123-line gloo/NCCL traceback otherwise (review R9)
            raise UserError(
                f"another rank stopped (killed, or out of memory) at step {trainer.global_step}; checkpoints are "
                f"written whole or not at all, so {last_checkpoint(run_dir)} is intact: rerun the same command plus "
                "resume=auto"
            ) from None
        # the resumed weights' shapes are not this model's
        if state.ckpt_path and "size mismatch for" in str(err):
            first = next(line.strip() for line in str(err).splitlines() if "size mismatch for" in line)
            raise UserError(
                f"{state.ckpt_path}: its weights do not fit this launch's model ({first}); resume with the model "
                "and adapter settings it was trained with, or start a new run"
            ) from None
        raise
    if early is not None:  # from here a signal is Python's again (GracefulStop put StopBeforeTraining back)
        early.restore()
    state.fit_seconds = time.time() - fit_started
    stop = state.stop
    other_rank = any(getattr(cb, "stopped_by_other_rank", False) for cb in state.checkpointing)  # DDP
    if (stop.received is not None or other_rank) and trainer.global_step >= state.module.planned_steps():
        # The signal came during the last step: the run is whole, so it ends as one (export, metrics.json),
        # not as a stopped run whose resume would have nothing left to train (review S13).
        log.warning("%s came during the final step (%d): finishing the run",
                    stop.signal_name or "a stop signal to another rank", trainer.global_step)  # fmt: skip
        evaluate_last_step(state)
        return
    if stop.requeue:
        log.warning("stopped by %s at step %d; checkpoint: %s", stop.signal_name, trainer.global_step,
                    last_checkpoint(run_dir))  # fmt: skip
        stop.requeue_job()
    if stop.received is not None:
        log.warning(
            "stopped by %s at step %d; checkpoint: %s. Resume with the same command plus resume=auto "
            "(or ckpt_path=%s)",
            stop.signal_name, trainer.global_step, last_checkpoint(run_dir), last_checkpoint(run_dir),
        )  # fmt: skip
        raise SystemExit(128 + stop.received)
    if other_rank:
        log.warning("stopped at step %d: another rank got a stop signal", trainer.global_step)
        raise SystemExit(128 + signal.SIGTERM)
    evaluate_last_step(state)


def check_monitored(cfg: dict, logged) -> None:
    """callbacks.model_checkpoint.metric_for_best_model names a metric the evaluation logs (best.ckpt and
    early stopping follow it), or one line with those it does log and a did-you-mean."""
    from hydratune.errors import did_you_mean

    metric = ((cfg.get("callbacks") or {}).get("model_checkpoint") or {}).get("metric_for_best_model")
    names = sorted(k for k in logged if k.startswith("val/"))
    if not metric or not names or metric in logged:
        return
    hint = did_you_mean(metric, names)
    raise UserError(
        f"callbacks.model_checkpoint.metric_for_best_model={metric}: the evaluation logs no such metric"
        f"{'; ' + hint.strip() if hint else ''} (it logs {', '.join(names)})"
    )


def evaluate_last_step(state: Run) -> None:
    """Evaluate the final weights when training stopped between two evaluations (max_steps not a multiple
    of trainer.val_check_interval, or below it): the summary's and metrics.json's val loss, and with it a
    sweep's objective, are then those of the final weights, not of an earlier step's or of the start's."""
    from hydratune.sharding import is_fsdp

    trainer, history = state.trainer, state.history
    evaluated = [step for step, _ in history.val_loss]
    has_data = len(getattr(state.datamodule, "val_dataset", None) or []) > 0
    if not trainer.limit_val_batches or not has_data or (evaluated and evaluated[-1] == trainer.global_step):
        return
    if is_fsdp(trainer):  # Lightning cannot run a stage after fit() on a model that FSDP wrapped
        if trainer.is_global_zero:
            log.info("val loss: that of step %s, the last evaluation in training (FSDP: none after fit)",
                     evaluated[-1] if evaluated else "-")  # fmt: skip
        return
    if trainer.is_global_zero:
        last = f"; the last evaluation was at step {evaluated[-1]}" if evaluated else ""
        log.info("evaluating the final weights (step %d%s)", trainer.global_step, last)
    history.last_step_evaluation = True
    try:
        trainer.validate(state.module, datamodule=state.datamodule, verbose=False)
    finally:
        history.last_step_evaluation = False
    from hydratune.checkpoint import final_weights_to_best

    final_weights_to_best(trainer, state.checkpointing)


def finish(state: Run) -> float:
    """Best weights back if asked, the task's own wrap-up, then (rank 0) export, plot, metrics.json."""
    from hydratune.checkpoint import best_checkpoint, load_trainable_weights
    from hydratune.export import export_artifact, rebuilt_with
    from hydratune.sharding import full_state_dict, is_fsdp

    cfg, trainer, run_dir = state.cfg, state.trainer, state.run_dir
    best, exported_step = best_checkpoint(state.checkpointing), None
    if (cfg.get("callbacks") or {}).get("model_checkpoint", {}).get("load_best_model_at_end") and best:
        log.info("load_best_model_at_end: exporting the weights of %s", best)
        exported_step = load_trainable_weights(state.module, best)
    task_metrics = state.task.finish(trainer, state.module, state.datamodule, run_dir)
    weights = full_state_dict(trainer) if is_fsdp(trainer) else None  # every rank: a collective
    if not trainer.is_global_zero:
        return float("nan")  # DDP: rank 0 writes the artifact and metrics.json; the others only trained
    model = state.module.model if weights is None else rebuilt_with(state.module.model, weights)
    stops = getattr(state.module, "stop_token_ids", None)  # GRPO: the task.stop tokens that ended its samples
    artifact = export_artifact(model, state.tokenizer, run_dir, stops() if stops else ())
    state.history.plot(run_dir / "loss.png")
    metrics = summarize(state.history, state.throughput, trainer.global_step, state.fit_seconds,
                        time.time() - state.started, getattr(state.module, "val_loss_is_nll", True))  # fmt: skip
    metrics["artifact"] = artifact.name
    if best is not None:
        metrics["best_checkpoint"] = best.name
    if (
        exported_step is not None
    ):  # the export is best.ckpt's weights, not the final step's that val_loss scores
        metrics["exported_step"] = exported_step
        scored = dict(state.history.val_loss).get(exported_step)
        if scored is not None:
            metrics["exported_val_loss"] = scored
    metrics.update(task_metrics)
    metrics["effective_batch_size"] = state.effective_batch
    metrics["precision"] = precision_note(cfg["trainer"], str(trainer.precision))
    stopped = next((cb.message for cb in state.checkpointing if getattr(cb, "message", None)), None)
    if stopped:  # early stopping ended the run (hydratune.checkpoint.StopEarly)
        metrics["early_stopping"] = stopped.rstrip(". ")
    if cfg["export"]["merge"] and artifact.name == "adapter":
        metrics.update(merge_export(artifact, run_dir, cfg))
    # export.base_model: after the merge, which reads the local copy
    if cfg["export"].get("base_model") and artifact.name == "adapter":
        from hydratune.export import name_adapter_base

        name_adapter_base(artifact, str(cfg["export"]["base_model"]))
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    from hydratune.card import cards

    cards(
        run_dir, cfg, metrics, state.task, state.tokenizer
    )  # README.md: what, from what, how to prompt and load
    print_summary(run_dir, metrics, list(state.history.val_metrics))
    # The sweep objective (Optuna): `objective` names a metrics.json key; hparams_search sets it.
    return metrics.get(cfg.get("objective") or "val_loss", float("nan"))


def merge_export(adapter: Path, run_dir: Path, cfg: dict) -> dict:
    """export.merge: the adapter folded into its base in `run_dir/merged`, checked against the adapter. A
    merge that fails the check is removed with a warning; the run's own results stand."""
    from hydratune.export import logit_parity, merge_adapter, merge_dtype, quantized_merge_gap

    compute_dtype = merge_dtype(adapter, cfg["model"].get("dtype"))
    merge_adapter(adapter, run_dir / "merged", compute_dtype)
    try:
        measured = {"merge_max_abs_logit_diff": logit_parity(adapter, run_dir / "merged", compute_dtype)}
    except RuntimeError as err:
        shutil.rmtree(run_dir / "merged")
        log.warning(
            "export.merge: %s; merged/ removed (try: hydratune merge %s --dtype float32)", err, run_dir
        )
        return {"merge": f"removed: {err}"}
    return measured | quantized_merge_gap(adapter, run_dir / "merged", cfg)


def resume_checkpoint(cfg) -> str | None:
    """The checkpoint to resume: `ckpt_path` as given, or for `resume=auto` the newest checkpoint of the
    newest run of this name and task, whose folder then becomes this run's (same checkpoints, same logger
    run). Either way a checkpoint of another task or adapter method is refused here, before any model
    loads; resume=auto names the settings this launch changes from the run it continues."""
    from hydratune import sweep
    from hydratune.checkpoint import (
        find_resume_run,
        remove_stale_temporaries,
        resume_candidates,
        saved_config,
        task_id,
    )

    if cfg.get("ckpt_path"):  # the file itself was checked with the config (check_config)
        saved = check_same_kind(cfg.ckpt_path, cfg, "ckpt_path")
        warn_changed_settings(saved, cfg, None, resolved=True, key="ckpt_path")  # it said nothing (review R6)
        return str(cfg.ckpt_path)
    if cfg.get("resume") in (None, False):
        restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
        if not restarts:
            return None
        log.info("SLURM requeued this job (restart %d): resume=auto", restarts)
        cfg.resume = "auto"
    if cfg.resume != "auto":
        raise UserError(f"resume={cfg.resume!r}: use resume=auto, or ckpt_path=PATH for a given checkpoint")
    here, task = Path(cfg.paths.output_dir), task_id(to_plain(cfg.task))
    previous = find_resume_run(here, cfg.name, task)
    if previous is None:
        log.info(
            "resume=auto: no earlier run named %r of task=%s has a checkpoint; starting fresh", cfg.name, task
        )
        return None
    checkpoint = usable_checkpoint(resume_candidates(previous))
    saved, resolved = check_same_kind(checkpoint, cfg, "resume=auto"), True  # as the launch resolved it
    if saved is None and previous != here:  # a checkpoint from before RunIdentity: the folder's saved config
        saved, resolved = saved_config(previous), False
    warn_changed_settings(saved, cfg, here if previous != here else None, resolved)
    if previous != here:
        log.info("resume=auto: continuing %s (%s keeps only this launch's config and log)", previous, here)
        cfg.paths.output_dir = str(previous)
        here.mkdir(parents=True, exist_ok=True)  # a sweep's summary shows this job as continued there
        (here / sweep.CONTINUED_FILE).write_text(json.dumps({"run": str(previous)}) + "\n")
        handler = logging.FileHandler(previous / "train.log")  # the continued run's log goes on in its folder
        handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        logging.getLogger().addHandler(handler)
    remove_stale_temporaries(previous)  # half-written files a kill mid-save left
    log.info("resume=auto: resuming from %s", checkpoint)
    return str(checkpoint)


def usable_checkpoint(candidates: list[Path]) -> Path:
    """The newest checkpoint that reads whole; a damaged newer one (a full disk, a copy cut short) is named and
    passed over for the one before it (it stopped resume=auto with an intact step checkpoint beside it: review R5)."""
    from hydratune.preflight import check_resume_file

    for i, checkpoint in enumerate(candidates):
        try:
            check_resume_file(checkpoint, "resume=auto")
        except UserError as err:
            if i + 1 == len(candidates):
                raise
            log.warning("%s; resuming from the checkpoint before it, %s", err, candidates[i + 1].name)
            continue
        return checkpoint
    raise UserError("resume=auto: no checkpoint to resume from")


def _peer_lost(err: BaseException) -> bool:
    """A collective failed because another process of the run died (gloo's closed connection, NCCL's abort)."""
    from torch.distributed import DistBackendError

    markers = ("Connection closed by peer", "Connection reset by peer", "NCCL communicator was aborted")
    return isinstance(err, DistBackendError) or any(marker in str(err) for marker in markers)


# Settings that decide which tensors train and their shapes (the model's own is its path, warned about below).
SHAPE_KEYS = ("peft.config.r", "peft.config.target_modules", "peft.config.layers_to_transform",
              "peft.config.modules_to_save", "peft.trainable_layers", "peft.trainable_modules")  # fmt: skip


def _dotted(cfg: dict, key: str):
    for part in key.split("."):
        cfg = cfg.get(part) if isinstance(cfg, dict) else None
    return cfg


def check_same_kind(checkpoint, cfg, key: str) -> dict | None:
    """Refuse a checkpoint of another task or adapter method (it would train one objective in another's
    run, or fail deep in the optimizer's state); the model path differing is a warning (a folder may have
    moved). Returns the config the checkpoint's run was launched with, when the checkpoint records it."""
    from hydratune.checkpoint import checkpoint_identity, task_id
    from hydratune.preflight import MODEL_KEY

    identity = checkpoint_identity(checkpoint)
    if identity is None:
        return None
    plain = to_plain(cfg)
    task, peft = task_id(plain.get("task") or {}), (plain.get("peft") or {}).get("method", "none")
    saved_peft = ((identity.get("config") or {}).get("peft") or {}).get("config") or {}
    dora = (
        bool(saved_peft.get("use_dora")) if identity.get("config") else None,
        bool(((plain.get("peft") or {}).get("config") or {}).get("use_dora")),
    )  # a LoRA checkpoint has no DoRA magnitudes: it failed deep in the optimizer's state
    kinds = (("task", identity.get("task"), task), ("peft", identity.get("peft"), peft),
             ("peft.config.use_dora", *dora))  # fmt: skip
    for what, then, now in kinds:
        if then is not None and then != now:
            raise UserError(
                f"{key}={checkpoint}: a checkpoint of a {what}={then} run, and this launch is {what}={now}; a "
                "checkpoint continues its own run's training (optimizer state, data position, step). To start "
                f"from its weights, merge them into a model (hydratune merge RUN_DIR) and set {MODEL_KEY}=RUN_DIR/merged"
            )
    saved = identity.get("config") or {}
    # the trained tensors' shapes: a change failed deep in load_state_dict (review R2)
    for what in SHAPE_KEYS:
        then, now = _dotted(saved, what), _dotted(plain, what)
        if saved and then != now:
            raise UserError(
                f"{key}={checkpoint}: its run trained with {what}={then} and this launch has {what}={now}: the trained "
                f"tensors' shapes differ, so it cannot continue; set {what}={then} to resume it, or start a new run"
            )
    max_steps = (plain.get("trainer") or {}).get("max_steps") or -1
    if 0 < max_steps < identity.get("step", -1):
        raise UserError(
            f"{key}={checkpoint}: the checkpoint is at step {identity['step']}, past trainer.max_steps={max_steps}: "
            f"nothing would train and its step-{identity['step']} weights would be exported as step {max_steps}'s; "
            f"raise trainer.max_steps above {identity['step']} to train on"
        )
    model = (plain.get("model") or {}).get("pretrained_model_name_or_path")
    if identity.get("model") not in (None, model):
        log.warning(
            "%s: the checkpoint's run trained %s; this launch loads %s (the same model moved, or another?)",
            key, identity.get("model"), model,
        )  # fmt: skip
    return identity.get("config")


# Keys whose change between launches is the resume itself (where things go, what to continue).
RESUME_KEYS = ("paths", "resume", "ckpt_path")


def warn_changed_settings(
    saved: dict | None, cfg, here: Path | None, resolved: bool = False, key: str = "resume=auto"
) -> None:
    """Name the settings a resume=auto launch changes from the run it continues (`saved`: its config,
    `resolved` or as written). Optimizer settings do not take effect: its state, learning rates included,
    comes back from the checkpoint."""
    changed = changed_settings(saved, cfg, resolve=resolved) if saved else []
    if not changed:
        return
    where = f" (this launch's config: {here / '.hydra'})" if here else ""
    source = "the run it continues" if key == "resume=auto" else "the run the checkpoint is of"
    log.warning("%s: this launch changes %s from %s%s", key, ", ".join(changed), source, where)
    ignored = [c for c in changed if c.startswith("optimizer.")]
    if ignored:
        log.warning(
            "%s: %s takes no effect: the optimizer's state, its learning rates included, comes back "
            "from the checkpoint (the schedule's length follows trainer.max_steps)", key, ", ".join(ignored),
        )  # fmt: skip
    length = [c for c in changed if c.startswith(("trainer.max_steps=", "trainer.max_epochs="))]
    scheduler = (to_plain(cfg).get("scheduler") or {}).get("name")
    if length and scheduler not in (None, "constant", "reduce_lr_on_plateau"):
        log.warning(
            "%s: %s: the %s schedule is planned again over the new length, so the learning rate where the run "
            "resumes is not the one it stopped at (a decaying one steps up when the run is made longer)",
            key, ", ".join(length), scheduler,
        )  # fmt: skip


def changed_settings(saved: dict, cfg, limit: int = 8, resolve: bool = False) -> list[str]:
    """`key=old -> new` for each setting of `cfg` that differs from the config an earlier launch saved
    (`resolve`: compare `cfg` with its interpolations resolved, as the saved one was)."""
    from omegaconf import OmegaConf

    def flat(node, prefix: str = "") -> dict:
        if isinstance(node, dict):
            return {k: v for key, value in node.items() for k, v in flat(value, f"{prefix}{key}.").items()}
        return {prefix[:-1]: node}

    def plain(data: dict) -> dict:
        return flat({k: v for k, v in redact(data).items() if k not in RESUME_KEYS and k != "hydra"})

    before, now = (
        plain(saved),
        plain(to_plain(cfg) if resolve else OmegaConf.to_container(cfg, resolve=False)),
    )
    old_dir = (saved.get("paths") or {}).get("output_dir")
    new_dir = OmegaConf.select(cfg, "paths.output_dir", default=None) if resolve else None
    if isinstance(old_dir, str) and isinstance(new_dir, str) and old_dir != new_dir:
        # Settings derived from the run folder (a logger's save_dir, the trainer's root) move with it
        before = {k: v.replace(old_dir, new_dir) if isinstance(v, str) else v for k, v in before.items()}
    differ = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))

    def node(key: str) -> str:  # a group's option (logger.wandb, callbacks.early_stopping), else the key
        return ".".join(key.split(".")[:2])

    # A node that one side lacks whole (a logger dropped, a callback added) is one entry, not a key each (L14)
    whole = {
        prefix: ("removed" if side is before else "added")
        for prefix in {node(k) for k in differ if k.count(".") >= 2}
        for side, other in ((before, now), (now, before))
        if not any(k == prefix or k.startswith(f"{prefix}.") for k in other)
        and any(k.startswith(f"{prefix}.") for k in side)
    }
    changes, said = [], set()
    for k in differ:
        if node(k) in whole:
            if node(k) not in said:
                said.add(node(k))
                changes.append(f"{node(k)} {whole[node(k)]}")
            continue
        changes.append(f"{k}={before.get(k)} -> {now.get(k)}")
    return changes[:limit] + ([f"{len(changes) - limit} more"] if len(changes) > limit else [])


def last_checkpoint(run_dir: Path) -> str:
    path = run_dir / "checkpoints" / "last.ckpt"
    return str(path) if path.is_file() else "(none written yet)"


def evaluate_after_steps(trainer_cfg: dict) -> dict:
    """An evaluation interval (in batches) that ends inside an accumulation window, raised to the next
    window's end. An evaluation mid-window scores the weights of the last optimizer step again: with an
    interval below the window, early stopping counted those repeats as evaluations without improvement and
    ended runs at step 0; a best.ckpt saved there cannot resume exactly (it cannot hold partial gradients)."""
    interval, accumulate = (
        trainer_cfg.get("val_check_interval"),
        trainer_cfg.get("accumulate_grad_batches") or 1,
    )
    if (
        not isinstance(interval, int)
        or isinstance(interval, bool)
        or accumulate <= 1
        or interval % accumulate == 0
    ):
        return trainer_cfg
    raised = -(-interval // accumulate) * accumulate
    log.info(
        "trainer.val_check_interval=%d batches ends inside an accumulation window of %d: evaluating every %d "
        "batches (%d optimizer steps), after an optimizer step", interval, accumulate, raised, raised // accumulate,
    )  # fmt: skip
    return {**trainer_cfg, "val_check_interval": raised}


def quiet_when_piped(trainer_cfg: dict) -> dict:
    """No progress bar unless stdout and stderr are terminals (batch jobs, CI, redirected logs): a line every
    log_every_n_steps says how training goes instead (callbacks.ProgressLines). The bar (rich's) draws on stdout,
    so `> file` at a terminal put its frames in the file (review L13)."""
    import sys

    if trainer_cfg.get("enable_progress_bar", True) and not (sys.stdout.isatty() and sys.stderr.isatty()):
        return trainer_cfg | {"enable_progress_bar": False}
    return trainer_cfg


def StepsBar():  # noqa: N802  (a class made on first use: rich is imported only when a bar is drawn)
    """Lightning's progress bar, without an epoch total on a run counted in steps ("Epoch 0/-2": review L9)."""
    from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
    from lightning.pytorch.utilities.imports import _RICH_AVAILABLE

    if not _RICH_AVAILABLE:
        return TQDMProgressBar()

    class _StepsBar(RichProgressBar):
        def _get_train_description(self, current_epoch: int) -> str:
            if self.trainer.max_epochs is not None and self.trainer.max_epochs > 0:
                return super()._get_train_description(current_epoch)
            return "Training"  # the bar counts the batches itself; this is set once, at the epoch's start

    return _StepsBar()


def split_strategy(trainer_cfg: dict, model_cfg: dict) -> tuple[dict, dict]:
    """FSDP's `auto_wrap_policy: decoder_layer` becomes the model's decoder block classes.

    The strategy is then built here and handed to the Trainer as an object (a set of classes
    cannot live in a config node).
    """
    strategy = trainer_cfg.get("strategy")
    if not (isinstance(strategy, dict) and strategy.get("auto_wrap_policy") == "decoder_layer"):
        return trainer_cfg, {}
    from hydra.utils import get_class

    from hydratune.model import decoder_layer_classes

    kwargs = {k: v for k, v in strategy.items() if not k.startswith("_")}
    kwargs["auto_wrap_policy"] = decoder_layer_classes(model_cfg)
    rest = {k: v for k, v in trainer_cfg.items() if k != "strategy"}
    return rest, {"strategy": get_class(strategy["_target_"])(**kwargs)}


def cpu_fallbacks(trainer_cfg: dict) -> dict:
    """Settings that need CUDA, replaced by what runs on a CPU, with a warning that says so."""
    import torch

    if torch.cuda.is_available() or trainer_cfg.get("accelerator") not in (None, "auto", "cpu"):
        return trainer_cfg
    if str(trainer_cfg.get("precision")) in ("16-mixed", "16"):
        log.warning(
            "trainer.precision=16-mixed (fp16 with loss scaling) needs a GPU: running bf16-mixed on CPU"
        )
        trainer_cfg = trainer_cfg | {"precision": "bf16-mixed"}
    return trainer_cfg


def summarize(
    history, throughput, steps: int, fit_seconds: float, wall_seconds: float, loss_is_nll: bool = True
) -> dict:
    """The numbers of metrics.json: final losses, perplexity (when the loss is a per-token NLL), the task's
    own validation curves (initial and final value of each), steps, tokens and speed."""
    from hydratune.callbacks import peak_memory_mb

    metrics: dict = {"steps": steps}
    if history.train_loss:
        tail = [loss for _, loss in history.train_loss[-10:]]
        metrics["train_loss"] = sum(tail) / len(tail)  # mean of the last 10 optimizer steps
    if history.val_loss:
        if history.val_loss[0][0] == 0:  # evaluated before training: not with eval_before_training=false
            metrics["initial_val_loss"] = history.val_loss[0][1]
        metrics["val_loss"] = history.val_loss[-1][1]
        metrics["best_val_loss"] = min(loss for _, loss in history.val_loss)
        metrics["val_curve"] = [[step, loss] for step, loss in history.val_loss]  # for sweep.png
        if loss_is_nll:
            metrics["val_ppl"] = math.exp(min(metrics["val_loss"], 50.0))
    for (
        name,
        points,
    ) in history.val_metrics.items():  # e.g. val/accuracy -> initial_val_accuracy, val_accuracy
        key = name.replace("/", "_")
        if points[0][0] == 0:
            metrics[f"initial_{key}"] = points[0][1]
        metrics[key] = points[-1][1]
    if throughput.token_labels:  # a classifier trains no tokens: 0 read as nothing trained
        metrics["trained_tokens"] = throughput.trained_tokens
    metrics.update(
        tokens_seen=throughput.tokens,
        tokens_per_s=round(throughput.tokens_per_second, 1),
        samples_per_s=round(throughput.samples_per_second, 2),
        warmup_seconds=round(throughput.warmup_seconds, 2),
        peak_memory_mb=round(peak_memory_mb(), 1),
        padding_efficiency=round(throughput.tokens / max(throughput.padded_tokens, 1), 4),
        fit_seconds=round(fit_seconds, 1),
        wall_seconds=round(wall_seconds, 1),
    )
    return metrics


def print_summary(run_dir: Path, metrics: dict, curves: list[str] = ()) -> None:
    """The run's summary in the log; `curves`: the task's own validation curves as logged (`val/rewards/chosen`:
    metrics.json's `val_rewards_chosen`)."""
    lines = [f"run directory: {run_dir}", f"steps: {metrics['steps']}"]
    if "train_loss" in metrics:
        lines.append(f"train loss: {metrics['train_loss']:.4f}")
    if "val_loss" in metrics:
        ppl = f" (ppl {metrics['val_ppl']:.2f})" if "val_ppl" in metrics else ""
        start = f"{metrics['initial_val_loss']:.4f} -> " if "initial_val_loss" in metrics else ""
        lines.append(f"val loss: {start}{metrics['val_loss']:.4f}{ppl}")
    for logged in curves:  # e.g. val/accuracy: its first value (when evaluated before training) and last
        name = logged.replace("/", "_")
        start = f"{metrics[f'initial_{name}']:.4f} -> " if f"initial_{name}" in metrics else ""
        lines.append(f"{logged}: {start}{metrics[name]:.4f}")
    if "exported_step" in metrics:
        scored = f", val loss {metrics['exported_val_loss']:.4f}" if "exported_val_loss" in metrics else ""
        last = (
            " (the last step's)"
            if metrics["exported_step"] == metrics.get("steps")
            else ", not the last step's"
        )
        lines.append(f"exported: best.ckpt's weights (step {metrics['exported_step']}{scored}){last}")
    if "early_stopping" in metrics:
        lines.append(f"ended by early stopping: {metrics['early_stopping']}")
    if "precision" in metrics:
        lines.append(f"precision: {metrics['precision']}")
    lines.append(f"wall time: {metrics['wall_seconds']:.1f}s, {metrics['tokens_per_s']:.0f} tokens/s")
    log.info("summary\n  %s", "\n  ".join(lines))
