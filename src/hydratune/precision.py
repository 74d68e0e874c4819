"""`trainer.precision: auto`: the precision a run trains in, and the reason the summary gives for it.

On a CPU with native bf16 matmuls (AVX512-BF16 or AMX-BF16) `auto` is bf16-mixed: the matmuls run
in bf16 under autocast (1.35-1.6x the fp32 rate of whole benchmark runs) while the trainable weights, the
optimizer, norms and the loss stay float32 (the linear layers that read one float32 tensor share one
bf16 copy of it: `hydratune.model.cast_shared_inputs_once`). On other CPUs bf16 is emulated and
slower than fp32, so `auto` is 32-true there; on a GPU `auto` keeps 32-true as well (`trainer=cuda` chooses bf16-mixed).
`HYDRATUNE_CPU_BF16=0` (or `1`) overrides the CPU probe: the test suite sets 0, so that its runs do
not depend on the CPU they run on.
"""

from __future__ import annotations

import os
from pathlib import Path

# /proc/cpuinfo flag -> the instruction set's name, the better one first
CPU_BF16_FLAGS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16"}


def cpu_bf16_feature(cpuinfo: str | None = None) -> str | None:
    """The CPU's native bf16 instruction set ("AMX-BF16", "AVX512-BF16"), or None.

    Read from the `flags` line of /proc/cpuinfo (Linux); elsewhere, None.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return None
    flags = next(
        (line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), []
    )
    return next((name for flag, name in CPU_BF16_FLAGS.items() if flag in flags), None)


def choose_precision(trainer_cfg: dict) -> tuple[dict, str]:
    """`trainer.precision: auto` replaced by the precision to run, and why (the summary's wording)."""
    precision = str(trainer_cfg.get("precision"))
    if precision != "auto":
        return trainer_cfg, "trainer.precision"
    import torch

    accelerator = trainer_cfg.get("accelerator") or "auto"
    on_cpu = (
        accelerator == "cpu"
        or accelerator == "auto"
        and not (torch.cuda.is_available() or torch.backends.mps.is_available())
    )
    if not on_cpu:
        return trainer_cfg | {
            "precision": "32-true"
        }, "auto: not a CPU run; trainer=cuda trains in bf16-mixed"
    forced = os.environ.get("HYDRATUNE_CPU_BF16")
    if forced in ("0", "1"):
        chosen = "bf16-mixed" if forced == "1" else "32-true"
        return trainer_cfg | {"precision": chosen}, f"auto: HYDRATUNE_CPU_BF16={forced}"
    feature = cpu_bf16_feature()
    if feature is None:
        return trainer_cfg | {"precision": "32-true"}, "auto: CPU has no AVX512-BF16 or AMX-BF16"
    return trainer_cfg | {"precision": "bf16-mixed"}, f"auto: CPU has {feature}"


def precision_note(trainer_cfg: dict, ran: str) -> str:
    """What the summary says: the precision that ran and why, e.g. "bf16-mixed (auto: CPU has AVX512-BF16)"."""
    requested = str(trainer_cfg.get("precision"))
    if requested == "auto":
        reason = choose_precision(trainer_cfg)[1]
    elif requested != ran:
        reason = f"trainer.precision={requested} needs a GPU"
    else:
        reason = "trainer.precision"
    return f"{ran} ({reason})"
