"""GRPO's pieces learn together: the bare-loop probe (scripts/grpo_probe.py) on the shipped tiny base.

The starting model answers ~26% of the held-out data/grpo prompts exactly; 60 steps of 8 prompts x 8
samples with the exact-match reward (about a minute on one thread) must add 25 points (seeds 0-2
added 45-61).
"""

from __future__ import annotations

import re

import pytest
from conftest import run_cli


@pytest.mark.slow
def test_grpo_probe_raises_held_out_exact_match():
    result = run_cli(["scripts/grpo_probe.py", "--steps", "60", "--eval-every", "60", "--threads", "1"])
    assert result.returncode == 0, result.stderr[-2000:]
    start, end = map(float, re.search(r"start ([\d.]+) -> end ([\d.]+)", result.stdout).groups())
    assert 0 < start <= 0.3
    assert end - start >= 0.25, result.stdout[-3000:]
