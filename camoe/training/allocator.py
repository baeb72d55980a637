"""Keep freed memory in the process for reuse while training (glibc's malloc on Linux).

A training step allocates and frees the same large activation and gradient tensors every step (tens of MB each
for the reference network: 4,096 rows × 8 experts × 256 floats is 33.5 MB). glibc's malloc serves blocks above its
mmap threshold (at most 32 MB) with fresh ``mmap`` pages and returns them with ``munmap`` on free, so every step
page-faults and zeroes those bytes again: about 110 MB per step for the MLP experts and 800 MB for the DCN experts
on the reference network (``benchmarks/throughput.py``). ``reuse_freed_memory`` sets ``M_MMAP_MAX = 0`` (large
blocks come from the heap too) and a high ``M_TRIM_THRESHOLD`` (freed heap memory is kept), so after the first
steps a step reuses the memory the previous one freed. The cost: the process keeps its peak memory until it exits.

This is what jemalloc / tcmalloc preloading does for PyTorch CPU training, without a preload; it is the
``train.reuse_freed_memory`` option (default on).
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["reuse_freed_memory"]

_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_MAX = -4
_TRIM_THRESHOLD_BYTES = 2**31 - 1  # the largest value mallopt takes: free memory is returned only beyond 2 GiB
_applied = False


def reuse_freed_memory() -> bool:
    """Ask glibc's malloc to serve large blocks from the heap and keep freed memory for reuse (process-wide, from
    now on; calling it again does nothing).

    Returns:
        True when the setting is in force (Linux with glibc); False elsewhere (macOS, Windows, musl), where
        nothing changes.
    """
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # musl has a mallopt that does nothing and returns 0: only glibc answers 1
    _applied = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES) == 1
    return _applied
