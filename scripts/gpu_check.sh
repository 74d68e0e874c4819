#!/usr/bin/env bash
# The first GPU session's checklist in one command: gpu-marked tests, the GPU benchmark (hydratune vs TRL
# vs a bare loop, ~0.5B model, bf16, packed and unpacked, MFU), a QLoRA nf4 step, a 16-mixed run, a
# packed-vs-alone logit check (sdpa, flash-attention where installed) and a 1-GPU FSDP smoke run.
# Hardware: one CUDA GPU, H100/H200 class; ~6 minutes (each check has a limit; they add up to 9).
# Output: outputs/gpu_check/gpu_check.json (every figure), gpu_check.md (the summary table), logs.
# Without CUDA it refuses in one line with exit status 2 and writes nothing.
#
#   bash scripts/gpu_check.sh [--out DIR] [--skip bench,fsdp]
#   bash scripts/gpu_check.sh --install [...]   # first install as the README does, plus TRL for the bench:
#                                               # pip install -c constraints.txt -e ".[dev,bnb,bench]"
#   bash scripts/gpu_check.sh --wheels DIR [...]   # no package index there: the image's torch/transformers,
#                                                  # plus the wheels scripts/gpu_wheels.py put in DIR
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
cuda_or_refuse() {
  "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null \
    || { echo "gpu_check: no CUDA device; nothing installed" >&2; exit 2; }
}
if [ "${1:-}" = "--install" ]; then
  shift
  cuda_or_refuse
  "$PY" -m pip install -q -c constraints.txt -e ".[dev,bnb,bench]"
elif [ "${1:-}" = "--wheels" ]; then
  wheels=${2:?--wheels needs a folder of wheels (python scripts/gpu_wheels.py)}
  shift 2
  cuda_or_refuse
  site=$(mktemp -d)
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$wheels"/*.whl
  export PYTHONPATH="$site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$PY" scripts/gpu_check.py "$@"
