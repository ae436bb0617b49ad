"""Private (copy-on-write) memory maps of source files, and letting their pages go.

Why: a big model's weights are read from maps of its files (ONNX external data, TF1 checkpoint
shards), so a weight the converted module uses as it is stays a view of the file's pages
rather than a second, anonymous copy. A weight that must be transformed (a conv kernel HWIO ->
OIHW, a dense kernel [in, out] -> [out, in]) is copied once, and the pages of the source it
was copied from are let go block by block, so converting holds about one copy of the weights
and not the source plus its transform.

Pages are let go with ``MADV_DONTNEED``, except those written through the private map (a
module's weight changed in place: ``/proc/self/pagemap`` says which pages are private copies),
which stay; a clean page comes back from the file (the page cache) when touched again. Where
pagemap cannot be read, ``MADV_PAGEOUT`` (a hint that never loses data, but that leaves pages
not yet written back to disk resident) is used instead. Only maps made by :func:`map_private`
are touched, never anonymous memory.
"""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["map_private", "is_mapped", "release", "contiguous_copy", "update_hash",
           "sha256_hex", "BLOCK_BYTES"]

#: How much of a mapped source one step of a copy or a hash reads before its pages are let go
#: (and the most a hash of a strided view copies at once).
BLOCK_BYTES = 2 << 20

_MADV_DONTNEED = getattr(mmap, "MADV_DONTNEED", 4)
_MADV_PAGEOUT = getattr(mmap, "MADV_PAGEOUT", 21)  # Linux >= 5.4; older kernels say EINVAL
_PAGE = mmap.PAGESIZE
_MAPS: dict[int, int] = {}  # start address -> end address of each live map_private map
_LOCK = threading.Lock()
_libc: Any = None
_pagemap: list[int | None] = []  # the fd of /proc/self/pagemap, None if it cannot be read


def map_private(fh: Any, size: int) -> np.memmap:
    """The whole open file ``fh`` (``size`` bytes, > 0) as a private, copy-on-write uint8 map.

    Writes through the map (a module's weight changed in place) copy the page written and never
    reach the file. The map is known to :func:`release` while it lives.
    """
    whole = np.memmap(fh, dtype=np.uint8, mode="c", shape=(size,))
    start = whole.ctypes.data
    with _LOCK:
        _MAPS[start] = start + size
    weakref.finalize(whole, _forget, start)
    return whole


def _forget(start: int) -> None:
    with _LOCK:
        _MAPS.pop(start, None)


def _bounds(arr: np.ndarray) -> tuple[int, int]:
    """[low, high) addresses of the bytes ``arr`` spans (strided views included)."""
    try:
        from numpy.lib.array_utils import byte_bounds
    except ImportError:  # numpy < 2
        from numpy import byte_bounds
    return byte_bounds(arr)


def is_mapped(arr: np.ndarray) -> bool:
    """Whether ``arr``'s bytes lie in a live map made by :func:`map_private`."""
    if not isinstance(arr, np.ndarray) or arr.size == 0:
        return False
    low, high = _bounds(arr)
    with _LOCK:
        return any(start <= low and high <= end for start, end in _MAPS.items())


def _written(low: int, pages: int) -> np.ndarray | None:
    """Per page from ``low``: whether it is a private copy (written through the map); None
    where /proc/self/pagemap cannot be read."""
    import os

    if not _pagemap:
        try:
            _pagemap.append(os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC))
        except OSError:
            _pagemap.append(None)
    if _pagemap[0] is None:
        return None
    try:
        raw = os.pread(_pagemap[0], 8 * pages, low // _PAGE * 8)
    except OSError:
        return None
    if len(raw) != 8 * pages:
        return None
    entries = np.frombuffer(raw, np.uint64)
    present, file_page = entries >> np.uint64(63), (entries >> np.uint64(61)) & np.uint64(1)
    return (present == 1) & (file_page == 0)


def release(arr: np.ndarray) -> None:
    """Let the resident pages under ``arr`` go, where ``arr`` lies in a :func:`map_private` map
    (anything else is left alone): the whole pages its bytes span, but for any written through
    the map. A page it shares with a neighbour comes back on the neighbour's next read."""
    global _libc
    if not is_mapped(arr):
        return
    low, high = _bounds(arr)
    low -= low % _PAGE
    high += -high % _PAGE
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    pages = (high - low) // _PAGE
    written = _written(low, pages)
    if written is None:
        _libc.madvise(low, high - low, _MADV_PAGEOUT)  # a hint: never loses a written page
        return
    # runs of pages not written through the map: dropping those loses nothing
    edges = np.flatnonzero(np.diff(np.concatenate(([True], written, [True])).astype(np.int8)))
    for start, stop in zip(edges[::2], edges[1::2]):
        _libc.madvise(low + int(start) * _PAGE, int(stop - start) * _PAGE, _MADV_DONTNEED)


def _blocks(arr: np.ndarray) -> tuple[int, int]:
    """(rows of ``arr``'s first axis per step, number of rows). On a mapped source a step
    spans at least one page of every source row it reads across (a transposed view reads a
    column stripe of its source), so no page is let go and then read again by the next."""
    rows = arr.shape[0]
    row_bytes = max(arr.nbytes // max(rows, 1), 1)
    per = max(BLOCK_BYTES // row_bytes, 1)
    if not arr.flags.c_contiguous and is_mapped(arr):
        stride = min((abs(s) for s in arr.strides if s), default=arr.itemsize)
        per = max(per, -(-_PAGE // stride))
    return per, rows


def _source_order(arr: np.ndarray) -> tuple[int, ...] | None:
    """The axis order in which ``arr`` (a permuted view) reads its source front to back: its
    axes by decreasing stride, where that makes it C-contiguous; None otherwise."""
    if any(s <= 0 for s in arr.strides):
        return None
    order = tuple(sorted(range(arr.ndim), key=lambda a: -arr.strides[a]))
    return order if arr.transpose(order).flags.c_contiguous else None


def contiguous_copy(arr: np.ndarray) -> np.ndarray:
    """A C-contiguous, writable copy of ``arr``; where ``arr`` views a mapped source, its pages
    are let go as the copy proceeds (one block's worth resident at a time, not the tensor).

    A permuted view (a transposed kernel) is copied in its source's order, block by block of
    source rows written across the copy: read column-wise, every page of the source would be
    mapped at once (the kernel maps the cached pages around each one faulted).
    """
    if not is_mapped(arr) or arr.ndim == 0:
        return np.array(arr, order="C", copy=True)
    out = np.empty(arr.shape, arr.dtype)
    order = _source_order(arr)
    src, dst = (arr.transpose(order), out.transpose(order)) if order else (arr, out)
    per, rows = _blocks(src)
    for i in range(0, rows, per):
        dst[i:i + per] = src[i:i + per]
        release(src[i:i + per])
    return out


def update_hash(h: Any, arr: np.ndarray,
                release_after: Callable[[np.ndarray], None] | None = release) -> Any:
    """Feed ``arr``'s bytes in C order into ``h`` (a hashlib object) without copying a
    contiguous array, block by block for any other, letting a mapped source's pages go after
    each block. Returns ``h``."""
    if arr.ndim == 0 or arr.size == 0:
        h.update(np.ascontiguousarray(arr).tobytes())
        return h
    per, rows = _blocks(arr)
    for i in range(0, rows, per):
        block = arr[i:i + per]
        h.update(memoryview(np.ascontiguousarray(block)).cast("B"))
        if release_after is not None:
            release_after(block)
    return h


def sha256_hex(arr: np.ndarray) -> str:
    """sha256 of ``arr``'s bytes in C order (see :func:`update_hash`)."""
    return update_hash(hashlib.sha256(), arr).hexdigest()
