"""Process-level performance settings for running converted modules on the CPU.

glibc's malloc serves large blocks (torch activations of a few MiB) with fresh mmap()s and hands
freed memory back to the kernel, so every forward pass page-faults its activations in again
(MODNet at 512x512: about 29,000 faults, 110 MiB zeroed by the kernel, per pass). onnxruntime
avoids this with its own arena. :func:`keep_freed_memory` asks glibc to do the same: serve every
block from the heap and keep freed blocks for reuse. The same can be set for any process,
generated ``model.py`` included, with the environment variables
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1073741824``. The price is the usual one of an
arena: the process keeps its peak heap instead of returning it to the system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

__all__ = ["keep_freed_memory", "keep_freed_memory_for_inference"]

log = logging.getLogger(__name__)
_KEPT: bool | None = None

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest accepted value on 64-bit systems
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Serve all blocks from the heap and keep freed ones for reuse (glibc only).

    True if it took effect. Blocks above 32 MiB (MODNet's largest activations) can only stay
    off mmap() with mmap disabled outright, hence ``M_MMAP_MAX = 0``.
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    return all(bool(mallopt(opt, value)) for opt, value in (
        (_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD)))


def keep_freed_memory_for_inference() -> bool:
    """:func:`keep_freed_memory` once per process, on behalf of porter's loader, and say so.

    ``porter.load`` / ``load_output`` / ``*.from_zoo`` call this unless given
    ``keep_memory=False``; the change is process-wide and logged (logger ``porter.perf``).
    """
    global _KEPT
    if _KEPT is None:
        _KEPT = keep_freed_memory()
        if _KEPT:
            log.info("porter: glibc malloc now keeps freed memory for reuse (M_MMAP_MAX=0, "
                     "M_TRIM_THRESHOLD=1 GiB) so torch reuses activation buffers as "
                     "onnxruntime's arena does; load with keep_memory=False to leave the "
                     "allocator alone")
    return _KEPT
