"""Wheels for `scripts/gpu_check.sh --wheels DIR` on a GPU machine that cannot reach a package index.

Such machines (a cluster's CUDA image, a lent GPU box) usually carry torch, transformers, Lightning, numpy and
the like, but not what only hydratune, the bench and the CUDA checks use. This downloads the locked versions
(constraints.txt) of those, for CPython 3.12 on x86-64 Linux, on a machine that can reach an index:

    python scripts/gpu_wheels.py [--dir .whl] [--cuda 130]      # then copy DIR along with the checkout
    bash scripts/gpu_check.sh --wheels .whl                      # there: installs them to a temp dir, runs

bitsandbytes ships one library per CUDA and ROCm version (~40 MB as a wheel); only the CPU one and
`--cuda`'s (130: CUDA 13.0, as PyTorch's cu130 builds) are kept, so the folder stays ~7 MB.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What a CUDA PyTorch image tends to lack (checked on the H200 image lent here, 2026-11), and their own needs
# that such images also lack. antlr4 (hydra's parser) is published as a source archive only.
WANTED = ["hydra-core", "omegaconf", "datasets", "dill", "multiprocess", "peft", "trl", "bitsandbytes"]
WANTED += ["galore-torch", "lomo-optim"]  # the CUDA-only optimizers' gpu tests
FROM_SOURCE = ["antlr4-python3-runtime"]
PLATFORMS = [
    "manylinux_2_28_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
]


def locked(name: str) -> str:
    """`name==version` as constraints.txt pins it."""
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if re.fullmatch(rf"{re.escape(name)}==\S+", line.strip(), flags=re.IGNORECASE):
            return line.strip()
    raise SystemExit(f"gpu_wheels: {name} is not in constraints.txt; run `make lock` first")


def slim_bitsandbytes(wheel: Path, cuda: str) -> None:
    """Rewrite the wheel without the libraries of other CUDA/ROCm/XPU versions (RECORD lines too)."""
    keep = {"libbitsandbytes_cpu.so", f"libbitsandbytes_cuda{cuda}.so"}

    def wanted(name: str) -> bool:
        base = name.rsplit("/", 1)[-1]
        return not (base.startswith("libbitsandbytes_") and base not in keep)

    slim = wheel.with_suffix(".slim")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as dst:
        if not any(n.endswith(f"libbitsandbytes_cuda{cuda}.so") for n in src.namelist()):
            raise SystemExit(f"gpu_wheels: {wheel.name} has no library for CUDA {cuda}; see --cuda")
        for item in src.infolist():
            if not wanted(item.filename):
                continue
            data = src.read(item)
            if item.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines()
                data = ("\n".join(line for line in lines if wanted(line.split(",")[0])) + "\n").encode()
            dst.writestr(item, data)
    slim.replace(wheel)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=".whl", help="where the wheels go (default .whl)")
    parser.add_argument(
        "--cuda", default="130", help="bitsandbytes' CUDA library to keep: 130, 128, 126, ..."
    )
    args = parser.parse_args()
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    platforms = [flag for p in PLATFORMS for flag in ("--platform", p)]
    pip = [sys.executable, "-m", "pip"]
    for name in WANTED:
        subprocess.run(
            [*pip, "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
             "--implementation", "cp", *platforms, "-d", str(out), locked(name)],
            check=True,
        )  # fmt: skip
    for name in FROM_SOURCE:
        subprocess.run([*pip, "wheel", "-q", "--no-deps", "-w", str(out), locked(name)], check=True)
    for wheel in out.glob("bitsandbytes-*.whl"):
        slim_bitsandbytes(wheel, args.cuda)
    wheels = sorted(out.glob("*.whl"))
    size = sum(w.stat().st_size for w in wheels) / 2**20
    print(
        f"{len(wheels)} wheels, {size:.1f} MB in {out}; on the GPU machine: bash scripts/gpu_check.sh --wheels {out}"
    )


if __name__ == "__main__":
    main()
