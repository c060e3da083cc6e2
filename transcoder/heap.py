"""Keep the worker's heap from holding on to the peak of its large buffers.

The worker moves source ranges (up to 1 MiB) and upload parts through Python. glibc serves blocks
over 128 KiB with mmap and unmaps them on free, but its threshold is dynamic: after the first such
free it rises to that block's size, later buffers come from the heap, and the heap keeps the
fragmented peak. In the benchmark a 30 s 1080p job peaked at 108 MiB that way and at 99-100 MiB
with the threshold fixed here (two runs each).

Only this process is changed (``mallopt``). The same setting through ``MALLOC_MMAP_THRESHOLD_``
would reach ffmpeg too, whose frame buffers would then be mapped and faulted in one by one.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 128 * 1024
ARENAS = 2  # the event loop and the default executor's few threads (MD5s, scratch clean-up)


def bound() -> bool:
    """Fix glibc's mmap threshold and arena count for this process; False where not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # musl, macOS: no mallopt, and no such threshold to pin
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_ARENA_MAX, ARENAS)
    )
