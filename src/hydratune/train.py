"""`run(cfg)`: one training run, read top to bottom. No HydraConfig, no working directory: paths come from cfg.paths."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

from hydratune.config import build, redact, to_plain
from hydratune.preflight import check_config

log = logging.getLogger(__name__)


def run(cfg) -> float:
    """Train, export and summarise one run. Returns the final validation loss (the sweep objective)."""
    started = time.time()
    import lightning as L

    from hydratune.callbacks import History, Throughput
    from hydratune.data.datamodule import SFTDataModule
    from hydratune.export import export_artifact, logit_parity, merge_adapter
    from hydratune.model import load_tokenizer
    from hydratune.module import SFTModule

    quiet_library_loggers()
    check_config(to_plain(cfg))
    paths = to_plain(cfg.paths)
    run_dir = Path(paths["output_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, workers=True)

    model_cfg = to_plain(cfg.model)
    token = model_cfg.pop("token", None)
    gradient_checkpointing = bool(model_cfg.pop("gradient_checkpointing", False))
    tokenizer = load_tokenizer(model_cfg, token)

    dataset_cfg = to_plain(cfg.dataset)
    if cfg.task.name == "classification":
        from hydratune.classification import ClassificationDataModule, ClassificationModule, class_weights

        datamodule = ClassificationDataModule(tokenizer, dataset_cfg, seed=cfg.seed, cache_dir=paths.get("cache_dir"))
        datamodule.setup()  # the labels found in the data decide the size of the model's head
        module = ClassificationModule(
            model=model_cfg,
            peft=to_plain(cfg.peft),
            optimizer=to_plain(cfg.optimizer),
            scheduler=to_plain(cfg.scheduler),
            labels=datamodule.labels,
            pad_token_id=tokenizer.pad_token_id,
            class_weights=class_weights(to_plain(cfg.task).get("class_weights"), datamodule.class_counts),
            gradient_checkpointing=gradient_checkpointing,
            quantization=to_plain(cfg.quantization),
            hub_token=token,
        )
    else:
        datamodule = SFTDataModule(tokenizer, dataset_cfg, seed=cfg.seed, cache_dir=paths.get("cache_dir"))
        module = SFTModule(
            model=model_cfg,
            peft=to_plain(cfg.peft),
            optimizer=to_plain(cfg.optimizer),
            scheduler=to_plain(cfg.scheduler),
            gradient_checkpointing=gradient_checkpointing,
            quantization=to_plain(cfg.quantization),
            hub_token=token,
        )

    history, throughput = History(), Throughput()
    callbacks = [build(node) for node in (to_plain(cfg.callbacks) or {}).values()] + [history, throughput]
    loggers = [build(node) for node in (to_plain(cfg.logger) or {}).values()]
    trainer = build(cpu_fallbacks(to_plain(cfg.trainer)), logger=loggers or False, callbacks=callbacks)
    if cfg.get("tf32"):
        import torch

        torch.set_float32_matmul_precision("high")  # TF32 matmuls on Ampere and newer GPUs
    effective_batch = dataset_cfg["batch_size"] * trainer.accumulate_grad_batches * trainer.world_size
    log.info("effective batch size: %d (%d per device x %d accumulation x %d devices)", effective_batch,
             dataset_cfg["batch_size"], trainer.accumulate_grad_batches, trainer.world_size)
    for logger in loggers:
        logger.log_hyperparams(redact(to_plain(cfg)) | {"paths": None})

    if cfg.eval_before_training and not cfg.ckpt_path:
        trainer.validate(module, datamodule=datamodule, verbose=False)
        module.train()  # validate() leaves the modules in eval mode
    fit_started = time.time()
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    fit_seconds = time.time() - fit_started

    task_metrics = {}
    if cfg.task.name == "classification":
        from hydratune.classification import finish

        task_metrics = finish(trainer, module, datamodule, run_dir)  # best weights back, confusion_matrix.png
    artifact = export_artifact(module.model, tokenizer, run_dir)
    history.plot(run_dir / "loss.png")
    metrics = summarize(history, throughput, trainer.global_step, fit_seconds, time.time() - started)
    metrics["artifact"] = artifact.name
    metrics.update(task_metrics)
    metrics["effective_batch_size"] = effective_batch
    if cfg.export.merge and artifact.name == "adapter":
        compute_dtype = merge_dtype(to_plain(cfg.model), to_plain(cfg.quantization))
        merge_adapter(artifact, run_dir / "merged", compute_dtype)
        metrics["merge_max_abs_logit_diff"] = logit_parity(artifact, run_dir / "merged", compute_dtype)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print_summary(run_dir, metrics)
    # The sweep objective (Optuna): `objective` names a metrics.json key; hparams_search sets it.
    return metrics.get(cfg.get("objective") or "val_loss", float("nan"))


def cpu_fallbacks(trainer_cfg: dict) -> dict:
    """Settings that need CUDA, replaced by what runs on a CPU, with a warning that says so."""
    import torch

    if torch.cuda.is_available() or trainer_cfg.get("accelerator") not in (None, "auto", "cpu"):
        return trainer_cfg
    if str(trainer_cfg.get("precision")) in ("16-mixed", "16"):
        log.warning("trainer.precision=16-mixed (fp16 with loss scaling) needs a GPU: running bf16-mixed on CPU")
        trainer_cfg = trainer_cfg | {"precision": "bf16-mixed"}
    return trainer_cfg


def merge_dtype(model_cfg: dict, quantization_cfg: dict) -> str:
    """The dtype to merge in: the quantization's compute dtype, else the model's dtype."""
    compute = (quantization_cfg.get("config") or {}).get("bnb_4bit_compute_dtype")
    dtype = compute or model_cfg.get("dtype", "float32")
    return "float32" if dtype == "auto" else dtype


def quiet_library_loggers() -> None:
    """Lightning adds its own console handler; Hydra's root handlers already print and write train.log."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).handlers.clear()


def summarize(history, throughput, steps: int, fit_seconds: float, wall_seconds: float) -> dict:
    """The numbers of metrics.json: final losses, perplexity, steps, tokens and speed."""
    metrics: dict = {"steps": steps}
    if history.train_loss:
        tail = [loss for _, loss in history.train_loss[-10:]]
        metrics["train_loss"] = sum(tail) / len(tail)  # mean of the last 10 batches
    if history.val_loss:
        metrics["initial_val_loss"] = history.val_loss[0][1]
        metrics["val_loss"] = history.val_loss[-1][1]
        metrics["best_val_loss"] = min(loss for _, loss in history.val_loss)
        metrics["val_curve"] = [[step, loss] for step, loss in history.val_loss]  # for sweep.png
        metrics["val_ppl"] = math.exp(min(metrics["val_loss"], 50.0))
    metrics.update(
        tokens_seen=throughput.tokens,
        trained_tokens=throughput.trained_tokens,
        tokens_per_s=round(throughput.tokens_per_second, 1),
        padding_efficiency=round(throughput.tokens / max(throughput.padded_tokens, 1), 4),
        fit_seconds=round(fit_seconds, 1),
        wall_seconds=round(wall_seconds, 1),
    )
    return metrics


def print_summary(run_dir: Path, metrics: dict) -> None:
    lines = [f"run directory: {run_dir}", f"steps: {metrics['steps']}"]
    if "train_loss" in metrics:
        lines.append(f"train loss: {metrics['train_loss']:.4f}")
    if "val_loss" in metrics:
        lines.append(
            f"val loss: {metrics['initial_val_loss']:.4f} -> {metrics['val_loss']:.4f} (ppl {metrics['val_ppl']:.2f})"
        )
    lines.append(f"wall time: {metrics['wall_seconds']:.1f}s, {metrics['tokens_per_s']:.0f} tokens/s")
    log.info("summary\n  %s", "\n  ".join(lines))
