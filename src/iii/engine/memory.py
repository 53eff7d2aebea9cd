"""Giving freed memory back to the operating system after a burst.

A relay allocates and frees many 64 KiB buffers; glibc's allocator keeps freed heap memory for reuse and
returns it only now and then, so after a burst (hundreds of channels held back by slow readers, say) the
engine's resident size can stay hundreds of MiB above its idle size. ``malloc_trim(0)`` hands the free
pages back. The engine calls it from its housekeeping task every ``memory_trim_interval_s``; on a C
library without it (musl, macOS) this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    return trim


def release_free_memory() -> bool:
    """Return free heap pages to the system; returns whether the C library could do it."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
