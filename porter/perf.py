"""Process-level performance settings for running converted modules on the CPU.

glibc's malloc serves large blocks (torch activations of a few MiB) with fresh mmap()s and hands
freed memory back to the kernel, so every forward pass page-faults its activations in again.
onnxruntime avoids this with its own arena. :func:`keep_freed_memory` asks glibc to keep freed
blocks for reuse instead; the same can be set for any process, generated ``model.py`` included,
with the environment variables ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest accepted value on 64-bit systems
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Keep freed heap blocks up to 32 MiB for reuse (glibc only); True if it took effect."""
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
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
