"""Safe folder writes: check the destination, stage beside it, swap it into place under a lock.

Every folder porter writes (a conversion output, a zoo entry) goes through ``staged_folder``:

- the destination is checked *before* any work (``check_destination``): a file in the way, or a
  non-empty folder porter did not write, is refused unless ``force``;
- the new content is built in ``.NAME.porter-stage-XXXX`` beside it and swapped in by rename
  (an atomic exchange where the kernel offers ``renameat2``), so a reader sees the old folder or
  the new one, never a mix;
- writers into the same parent folder are serialised by ``flock`` on that folder (no lock file
  is left behind), and each writer first clears the debris a killed writer left (``sweep``);
- files end up 0644 and folders 0755 under the usual umask 022 (the umask is honoured).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from porter.errors import OutputError

__all__ = ["staged_folder", "check_destination", "folder_lock", "sweep", "is_porter_output",
           "STAGE_TAG", "OLD_TAG", "apply_umask"]

STAGE_TAG = ".porter-stage-"
OLD_TAG = ".porter-old-"


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(root: Path) -> None:
    """Give ``root`` and everything under it the modes a plain ``mkdir``/``open`` would."""
    mask = _umask()
    os.chmod(root, 0o777 & ~mask)
    for dirpath, dirs, files in os.walk(root):
        for d in dirs:
            os.chmod(os.path.join(dirpath, d), 0o777 & ~mask)
        for f in files:
            os.chmod(os.path.join(dirpath, f), 0o666 & ~mask)


def is_porter_output(folder: Path) -> bool:
    """True for a folder porter wrote: it holds a manifest.json with a ``porter`` version."""
    try:
        data = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "porter" in data


def check_destination(dest: str | Path, *, force: bool = False, what: str = "--out") -> Path:
    """Refuse a destination porter must not replace; returns it as an absolute-free Path.

    Allowed: a missing path (its parent is created later), an empty folder, or a folder porter
    wrote before. A file in the way, or a non-empty foreign folder, needs ``force``. The nearest
    existing ancestor must be a writable folder.
    """
    dest = Path(dest)
    if dest.name in ("", ".", "..") or dest.resolve() == Path(dest.resolve().anchor):
        raise OutputError(f"{what} {dest}: name a folder of its own (not '.', '..' or /)")
    if dest.is_symlink():
        raise OutputError(f"{what} {dest} is a symbolic link; refusing to write through it")
    if dest.exists():
        if not dest.is_dir():
            raise OutputError(f"{what} {dest} is a file, not a folder; refusing to replace it"
                              + ("" if not force else " (even with --force)"))
        try:
            foreign = any(True for _ in dest.iterdir()) and not is_porter_output(dest)
        except OSError as exc:
            raise OutputError(f"{what} {dest}: cannot read it ({exc.strerror})") from exc
        if foreign and not force:
            raise OutputError(f"{what} {dest} is a non-empty folder porter did not write; "
                              "refusing to replace it (choose another folder, or --force)")
    parent = dest.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{what} {dest}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {dest}: {parent} is not writable")
    return dest


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``folder`` (which must exist) for the block."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def sweep(parent: Path, name: str) -> list[str]:
    """Clear what a killed writer of ``parent/name`` left; call with the parent's lock held.

    Staged folders are removed. An old copy is restored when the destination is missing (the
    writer died between its two renames), else removed. Returns the names cleared.
    """
    cleared = []
    try:
        items = sorted(parent.iterdir())
    except FileNotFoundError:
        return cleared
    dest = parent / name
    for item in items:
        if item.name.startswith(f".{name}{STAGE_TAG}"):
            shutil.rmtree(item, ignore_errors=True)
            cleared.append(item.name)
    for item in items:
        if item.name.startswith(f".{name}{OLD_TAG}"):
            if not dest.exists():
                os.replace(item, dest)
            else:
                shutil.rmtree(item, ignore_errors=True)
            cleared.append(item.name)
    return cleared


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with renameat2(RENAME_EXCHANGE); False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


@contextmanager
def staged_folder(dest: Path, *, force: bool = False) -> Iterator[Path]:
    """Yield an empty folder beside ``dest``; on success it replaces ``dest``.

    On any error (or interrupt) the staged folder is removed and ``dest`` is left as it was, so
    a reader never sees a half-written output. The destination is re-checked under the lock, so
    a folder that appeared while porter worked is not destroyed either.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(dest.parent):
        sweep(dest.parent, dest.name)
        check_destination(dest, force=force)
        stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}{STAGE_TAG}", dir=dest.parent))
        try:
            yield stage
            apply_umask(stage)
            if not dest.exists():
                os.replace(stage, dest)
            elif _exchange(stage, dest):
                shutil.rmtree(stage, ignore_errors=True)  # now holds the previous content
            else:
                old = dest.with_name(f".{dest.name}{OLD_TAG}{os.getpid()}")
                os.replace(dest, old)
                os.replace(stage, dest)
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
