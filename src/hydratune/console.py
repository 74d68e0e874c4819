"""What a run prints: hydratune's lines, a progress bar on a terminal, the summary. The third-party
noise that a user cannot act on is filtered here, in one place; `HYDRATUNE_DEBUG=1` shows all of it.

Each entry names its source, so that a library upgrade that changes a message shows up as a test
failure (tests/test_console.py), not as a silently louder console.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

# Library loggers held at a level: the messages below it are about the library, not the run.
LOGGER_LEVELS = {
    # bitsandbytes 0.50 on an AVX512-BF16 CPU: "Failed to load CPU gemm_4bit_forward from
    # kernels-community" on every import (an optional package for a faster kernel; it falls back).
    "bitsandbytes": logging.ERROR,
    # datasets' file readers log "Failed to load JSON from file ..." / "Failed to read file ..." at ERROR and
    # then raise; hydratune.data.sources turns that error into one line naming the file (and line).
    "datasets.packaged_modules": logging.CRITICAL,
    # matplotlib: "generated new fontManager" on a machine's first plot.
    "matplotlib": logging.WARNING,
    # huggingface_hub with no network and HF_HUB_OFFLINE unset: a line per retry (~20 over ~50 s) before the
    # error, which hydratune says in one line with the way to skip the wait (review N1).
    "huggingface_hub.utils._http": logging.ERROR,
}
# (message regex, category) of Python warnings about the libraries' own code.
WARNINGS = [
    # transformers 5: peft reads the deprecated `is_gradient_checkpointing` property.
    (r"`is_gradient_checkpointing` is deprecated", FutureWarning),
    # torch 2.13: Lightning's own pytree helper builds the deprecated LeafSpec.
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
    # galore_torch 1.0's GaLoreAdamW (optimizer=galore_adamw) subclasses transformers' old AdamW, which warns.
    (r"This implementation of AdamW is deprecated", FutureWarning),
    # grokadamw 0.1's step enters torch.cuda.amp.autocast() even on a CPU: deprecated, and disabled there.
    (r"`torch.cuda.amp.autocast\(args...\)` is deprecated", FutureWarning),
    (r"CUDA is not available or torch_xla is imported. Disabling autocast", UserWarning),
    # bitsandbytes' paged optimizers (optimizer=paged_adamw_*) on a CPU: they run unpaged, as they should there.
    (r"Paged optimizers are not supported on CPU", UserWarning),
    # Hydra, composing conf/hydra/launcher/submitit_*.yaml: they are named as the submitit plugin's schemas on
    # purpose (the names users know), and that schema checks their keys.
    (r"\s*'hydra/launcher/submitit_\w+' is validated against ConfigStore schema", UserWarning),
    # Lightning, on any machine with SLURM installed, whether or not this run uses it.
    (r"The `srun` command is available on your system but is not used", Warning),
    # Lightning's ModelCheckpoint when a run resumes: resume=auto continues in its own folder on purpose,
    # and ckpt_path=FILE starts a new folder whose checkpoints are counted afresh (train.log says which).
    (r"Checkpoint directory .* exists and is not empty", UserWarning),
    (r"The dirpath has changed from", UserWarning),
    # Lightning's fit loop when an epoch has fewer batches than trainer.log_every_n_steps: logging counts
    # steps across epochs, so every log_every_n_steps-th step is still logged.
    (r"The number of training batches \(\d+\) is smaller than the logging interval", Warning),
    # Lightning under DDP, for each validation metric: the tasks sum their validation totals over the ranks
    # themselves (TaskModule.validation_totals), so its advice would reduce them twice.
    (r"It is recommended to use `self.log\('val/.*sync_dist=True", Warning),
]
# Lightning's info lines that advertise instead of inform.
LIGHTNING_ADVERTS = ("💡 Tip:",)


def debug() -> bool:
    return os.environ.get("HYDRATUNE_DEBUG") == "1"


class _DropAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(LIGHTNING_ADVERTS)


def quiet_console() -> None:
    """Filter third-party noise. Idempotent and cheap: call it first thing in every entry point, and
    again once Lightning is imported (its package adds its own console handler on import)."""
    if debug():
        return
    for name, level in LOGGER_LEVELS.items():
        logging.getLogger(name).setLevel(level)
    for message, category in WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    if not sys.stderr.isatty():
        # On a pipe (CI, batch jobs, `| tee`) progress bars are lines of carriage returns; train.log says
        # how long each data step took. Set before datasets and huggingface_hub read them on import.
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "lightning" in sys.modules:
        # Lightning prints through its own handler ("INFO: ...") and then through the root handlers
        # that Hydra set up (the console and train.log): every line twice. Keep the root's.
        for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
            logging.getLogger(name).handlers.clear()
        rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
        if not any(isinstance(f, _DropAdverts) for f in rank_zero.filters):
            rank_zero.addFilter(_DropAdverts())


def to_log_files(message: str, level: int = logging.ERROR) -> None:
    """`message` into the run's log files only (train.log): the console already has it. A run that ended on an
    error left a train.log that simply stopped (review L4)."""
    record = logging.LogRecord("hydratune", level, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
