"""Keep the C allocator from handing large buffers back to the OS between render steps (glibc only).

A render step allocates and frees the same large activation buffers hundreds of times. glibc serves every block over
its mmap threshold (at most 32 MB) with a fresh ``mmap`` and unmaps it on free, so each step the kernel faults in and
zeroes those pages again: at batch 32 on InceptionV1 at 224 px that was about a third of the step on CPU
(``bench/render_vs_lucent.py --batch 32``). With mmap off for allocations and the heap's trim threshold out of reach,
freed blocks stay in the heap and the next step reuses them. The price is that the process keeps its peak memory
until it exits, which a precompute job does when it is done. Elsewhere (macOS, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_MAX = -4
TRIM_ABOVE = 2**31 - 1  # the largest value mallopt takes: free space at the heap's top is kept up to 2 GB


def keep_freed_memory() -> bool:
    """Set glibc's malloc to reuse freed large blocks (see the module docstring); True when it took effect."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_ABOVE))
