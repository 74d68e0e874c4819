"""scripts/gpu_check.sh on a machine without CUDA: one line, exit status 2, nothing written or installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("extra", [[], ["--install"], ["--wheels", "/nonexistent"]])
def test_gpu_check_refuses_cleanly_without_cuda(extra, tmp_path):
    out = tmp_path / "gpu_check"
    env = os.environ | {"PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, even on a GPU machine
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), *extra, "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert "no CUDA device" in result.stderr
    assert not out.exists()
