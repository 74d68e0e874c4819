"""Memory the run gives back before training: freed heap pages returned to the OS."""

from __future__ import annotations

import ctypes
import os

import pytest

from hydratune.train import release_freed_heap


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def has_malloc_trim() -> bool:
    try:
        return hasattr(ctypes.CDLL(None), "malloc_trim")
    except (OSError, TypeError):
        return False


@pytest.mark.skipif(not os.path.exists("/proc/self/statm") or not has_malloc_trim(), reason="glibc on Linux")
def test_pages_freed_below_a_live_allocation_go_back_to_the_os():
    # 64 MB in malloc'd chunks (bytes over pymalloc's 512-byte limit, under the mmap threshold); every 16th
    # stays alive, so the freed 60 MB are holes between live chunks, which free() never returns on its own.
    chunks = [bytes(4000) + i.to_bytes(4, "little") for i in range(16_000)]
    live = chunks[::16]
    before_free = rss_mb()
    del chunks
    after_free = rss_mb()
    release_freed_heap()
    after_trim = rss_mb()
    assert after_free > before_free - 16, "the freed chunks left the heap without a trim: nothing to test"
    assert after_trim < after_free - 32, (before_free, after_free, after_trim)
    assert len(live) == 1000
