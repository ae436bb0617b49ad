"""Pulling a zoo entry into the local cache, checking every file's digest on every pull.

A pulled version is the plain porter output folder it was published from, at
``<cache>/pulls/<name>@<version>-<digest>`` (``<cache>`` as in ``porter.zoo.catalog.cache_dir``;
the digest is of the version manifest, so two zoos never share a folder by accident). A cached
copy is re-hashed each time it is pulled and fetched again if it differs; a blob whose bytes do
not match its digest in the zoo is refused (IntegrityError), and nothing half-fetched is
left in the cache (the folder is staged and swapped into place).
"""

from __future__ import annotations

import os
from pathlib import Path

from porter.errors import IntegrityError
from porter.source import sha256_file
from porter.zoo.layout import Resolved, blob_key, resolve
from porter.zoo.store import Store, open_store

__all__ = ["pull", "find", "pulls_dir", "fetch_blob"]


def pulls_dir() -> Path:
    from porter.zoo.catalog import cache_dir

    return cache_dir() / "pulls"


def _matches(folder: Path, entry: Resolved) -> bool:
    files = entry.manifest["files"]
    for rel, info in files.items():
        path = folder / rel
        try:
            if path.is_symlink() or os.stat(path).st_nlink != 1:
                return False
        except FileNotFoundError:
            return False
        if sha256_file(path) != info["sha256"]:
            return False
    return True


def fetch_blob(store: Store, digest: str, dest: Path) -> None:
    """Download blob ``digest`` to ``dest`` and check its sha256; IntegrityError if it differs."""
    store.download(blob_key(digest), dest)
    actual = sha256_file(dest)
    if actual != digest:
        dest.unlink(missing_ok=True)
        raise IntegrityError(f"{store.where(blob_key(digest))}: its bytes hash to {actual[:16]}…, "
                             "not the digest it is stored under (corrupt in the zoo; refusing it)")


def pull(ref: str, root: str | Path | None = None, dest: str | Path | None = None) -> Path:
    """Fetch ``name`` or ``name@version`` into the cache (or ``dest``); returns the folder.

    Every file is checked against the version manifest's sha256, also when it was cached.
    """
    from porter.zoo.atomic import staged_folder
    from porter.zoo.load import check_weights, zoo_root

    store = open_store(zoo_root(root))
    entry = resolve(store, ref)
    folder = Path(dest) if dest is not None else \
        pulls_dir() / f"{entry.name}@{entry.version}-{entry.sha256[:16]}"
    if folder.is_dir() and _matches(folder, entry):
        check_weights(folder)
        return folder
    with staged_folder(folder, force=dest is None) as stage:
        for rel, info in sorted(entry.manifest["files"].items()):
            target = stage / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            fetch_blob(store, info["sha256"], target)
        check_weights(stage)  # the output's own manifest must agree with its weights too
    return folder


def find(ref: str, root: str | Path | None = None) -> Path | None:
    """``pull(ref, root)``, or None when the zoo has no such entry (other errors propagate)."""
    from porter.errors import ZooError
    from porter.zoo.layout import NoSuchEntry, parse_ref

    try:
        parse_ref(ref)
    except ZooError:
        return None  # not a zoo reference at all
    try:
        return pull(ref, root)
    except NoSuchEntry:
        return None
