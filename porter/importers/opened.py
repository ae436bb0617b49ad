"""A source file porter opens once (at import) and reads only through that descriptor.

Big weight files (TF1 checkpoint shards, Paddle ``.pdiparams``) are not read into memory: big
regions are views of one private, copy-on-write map of the whole file
(:func:`porter.mapped.map_private`), so a converted module can use a weight in place instead of
holding a second copy, and small ones are read with ``pread``. A file renamed over the
original later is never seen (porter holds the original's descriptor); one written in place
would show through pages not yet read, and is caught by :meth:`OpenedFile.check_unchanged`
before porter records a digest or hands the bytes to a reference.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import numpy as np

from porter.errors import FormatError, UnsafeSourceError

__all__ = ["MAP_MIN", "OpenedFile"]

#: Regions at least this big are views of the file's map; smaller ones are read (``pread``).
MAP_MIN = 1 << 20


class OpenedFile:
    """One file beside ``anchor`` (the model's main file), opened once and read through that
    descriptor only; ``what`` names it in messages ("data shard", "parameter file")."""

    def __init__(self, path: Path, anchor: Path, what: str) -> None:
        from porter.importers import check_beside

        check_beside(path, anchor, what)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise FormatError(f"{path}: cannot read ({exc.strerror})") from exc
        self.fh = os.fdopen(fd, "rb")
        self.stat = os.fstat(fd)
        named = path.stat()
        if not stat.S_ISREG(self.stat.st_mode) or self.stat.st_nlink > 1 or (
                self.stat.st_dev, self.stat.st_ino) != (named.st_dev, named.st_ino):
            self.fh.close()
            raise UnsafeSourceError(f"{path}: the {what} changed while porter opened it "
                                    "(or is not a plain file)")
        self.path, self.size, self.what = path, self.stat.st_size, what
        self._map: np.ndarray | None = None

    def region(self, offset: int, size: int) -> np.ndarray:
        """``size`` bytes at ``offset`` (checked inside the file by the caller) as uint8."""
        if size < MAP_MIN:
            data = os.pread(self.fh.fileno(), size, offset)
            if len(data) != size:
                raise FormatError(f"{self.path}: truncated (needs {size} bytes at {offset})")
            return np.frombuffer(data, np.uint8)
        if self._map is None:
            from porter.mapped import map_private

            self._map = map_private(self.fh, self.size)
        return self._map[offset:offset + size]

    def read(self) -> bytes:
        """The whole file's bytes, as they are now (for a reference; after check_unchanged)."""
        self.check_unchanged()
        data = bytearray(self.size)
        view, done = memoryview(data), 0
        while done < self.size:
            n = os.preadv(self.fh.fileno(), [view[done:]], done)
            if n <= 0:
                raise FormatError(f"{self.path}: truncated while porter read it")
            done += n
        self.check_unchanged()
        return bytes(data)

    def __bytes__(self) -> bytes:
        return self.read()

    def feed(self, h: Any) -> None:
        """Feed the file's bytes into the hash ``h`` through one 1 MiB buffer (no copy of the
        file held, nothing left behind on the heap)."""
        self.check_unchanged()
        buf = bytearray(min(1 << 20, self.size))
        view, done = memoryview(buf), 0
        while done < self.size:
            n = os.preadv(self.fh.fileno(), [view[:min(len(buf), self.size - done)]], done)
            if n <= 0:
                raise FormatError(f"{self.path}: truncated while porter read it")
            h.update(view[:n])
            done += n
        self.check_unchanged()

    def check_unchanged(self) -> None:
        """Refuse if the file was written since it was opened: its bytes are mapped, so an
        in-place write would show through pages not yet read."""
        now = os.fstat(self.fh.fileno())
        # ctime also moves when the file is unlinked (renamed over): only a linked file's ctime
        # says its bytes or times were touched
        keys = ("st_size", "st_mtime_ns") + (("st_ctime_ns",) if now.st_nlink else ())
        if any(getattr(now, k) != getattr(self.stat, k) for k in keys):
            raise UnsafeSourceError(f"{self.path}: the {self.what} was modified while porter "
                                    "was reading it; run again on a quiet copy")
