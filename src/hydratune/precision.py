"""`trainer.precision: auto`: the precision a run trains in, and the reason the summary gives for it.

On a CPU with native bf16 matmuls (AVX512-BF16 or AMX-BF16) `auto` is bf16-mixed: the matmuls run
in bf16 under autocast (1.35-1.6x the fp32 rate of whole benchmark runs) while the trainable weights, the
optimizer, norms and the loss stay float32 (the linear layers that read one float32 tensor share one
bf16 copy of it: `hydratune.model.cast_shared_inputs_once`). On other CPUs bf16 is emulated and
slower than fp32, so `auto` is 32-true there; on a GPU `auto` keeps 32-true as well (`trainer=cuda` chooses bf16-mixed).
`HYDRATUNE_CPU_BF16=0` (or `1`) overrides the CPU probe: the test suite sets 0, so that its runs do
not depend on the CPU they run on. A CPU whose bf16 instructions torch is held below (ATEN_CPU_CAPABILITY,
ONEDNN_MAX_CPU_ISA) runs 32-true.
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
    forced = forced_bf16()
    if forced is not None:
        chosen = "bf16-mixed" if forced else "32-true"
        reason = f"auto: HYDRATUNE_CPU_BF16={os.environ['HYDRATUNE_CPU_BF16']}"
        return trainer_cfg | {"precision": chosen}, reason
    feature = cpu_bf16_feature()
    if feature is None:
        return trainer_cfg | {"precision": "32-true"}, "auto: CPU has no AVX512-BF16 or AMX-BF16"
    native, kernels = torch_bf16()
    # capped by ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA (containers, HPC modules): 3.6x slower
    if not native:
        return trainer_cfg | {"precision": "32-true"}, (
            f"auto: CPU has {feature}, but torch here runs {kernels} kernels without bf16 (ATEN_CPU_CAPABILITY or "
            "ONEDNN_MAX_CPU_ISA caps them), where bf16 is emulated"
        )
    return trainer_cfg | {"precision": "bf16-mixed"}, f"auto: CPU has {feature}"


TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def forced_bf16() -> bool | None:
    """HYDRATUNE_CPU_BF16 as a switch (1/true/yes/on, 0/false/no/off); None when unset. Another value is refused:
    `false` was read as unset, so bf16 ran where it was turned off (review N4)."""
    from hydratune.errors import UserError

    value = os.environ.get("HYDRATUNE_CPU_BF16", "").strip().lower()
    if not value:
        return None
    if value not in TRUE + FALSE:
        raise UserError(
            f"HYDRATUNE_CPU_BF16={os.environ['HYDRATUNE_CPU_BF16']}: use 1 (bf16-mixed) or 0 (32-true), or unset it "
            "to let the CPU decide"
        )
    return value in TRUE


def torch_bf16() -> tuple[bool, str]:
    """(whether torch runs native bf16 kernels in this process, the kernels it runs: "AVX512", "AVX2", ...). The
    CPU's flags are not enough: ATEN_CPU_CAPABILITY and ONEDNN_MAX_CPU_ISA hold torch below them (review N3)."""
    import torch

    kernels = torch.backends.cpu.get_cpu_capability()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()), kernels
    except (AttributeError, RuntimeError):  # a torch without oneDNN's probe: the flags decide
        return True, kernels


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
