"""Keep freed memory in the process instead of handing it back to the kernel after each chunk.

A chunk's numpy temporaries are a few MB each. glibc serves blocks that large with fresh
``mmap`` pages and returns them on ``free``, so every chunk page-faults its working set in
again: measured on 1M rows, 160k page faults and 1.0-1.5 s of system time out of 8 CPU
seconds. Raising glibc's mmap and trim thresholds lets the same pages be reused: 35k faults,
0.5 s of system time, 0.3-0.6 s less wall-clock time, at 10-40 MB more peak RSS (still flat
in the number of rows, since a chunk's working set is bounded).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 64 << 20  # blocks below this come from the heap, and are reused
TRIM_THRESHOLD = 256 << 20  # free memory kept at the top of the heap before trimming


@functools.cache
def keep_freed_memory() -> bool:
    """Set the thresholds once per process; True where it took effect (glibc), else False.

    Process-wide, like any allocator setting, and harmless to everything else: memory is
    still returned beyond ``TRIM_THRESHOLD`` and blocks above ``MMAP_THRESHOLD`` still map.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, musl without mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
