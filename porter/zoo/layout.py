"""The zoo's layout, the same on every backend, and reading entries from it.

```
<zoo>/blobs/sha256/<digest>          every file of every version, stored once, by content
<zoo>/versions/<name>/<n>.json       version n of an entry: its files' digests (create-only)
<zoo>/latest/<name>.json             which version ``name`` means (moved by a conditional write)
```

A version manifest is written only after all its blobs, and never changes; ``latest`` points
at one by number and by the sha256 of its bytes. So a reader sees a whole version or none, and
a killed publisher leaves at most unreferenced blobs (``porter zoo gc`` removes them).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from porter.errors import IntegrityError, ZooError
from porter.zoo.store import Store

__all__ = ["NoSuchEntry", "read_latest", "FORMAT", "blob_key", "version_key", "latest_key",
           "parse_ref", "Resolved", "resolve", "versions_of", "names", "check_rel"]

FORMAT = 1


class NoSuchEntry(ZooError):
    """The zoo holds no entry (or no such version) by that name."""


def blob_key(digest: str) -> str:
    return f"blobs/sha256/{digest}"


def version_key(name: str, version: int) -> str:
    return f"versions/{name}/{version}.json"


def latest_key(name: str) -> str:
    return f"latest/{name}.json"


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``name`` or ``name@version`` -> (name, version or None for the latest)."""
    from porter.zoo.load import check_name

    name, at, version = str(ref).rpartition("@")
    if not at:
        return check_name(str(ref)), None
    if not version.isdigit() or int(version) < 1:
        raise ZooError(f"invalid zoo reference {ref!r}: the version after '@' is a number >= 1")
    return check_name(name), int(version)


def check_rel(rel: str) -> str:
    """A file path inside an entry: relative, no '..', nothing hidden; ZooError otherwise."""
    parts = PurePosixPath(rel).parts
    if (not parts or PurePosixPath(rel).is_absolute() or "\\" in rel
            or any(p in ("", ".", "..") or p.startswith(".") for p in parts)):
        raise ZooError(f"zoo version manifest names a file {rel!r} outside its entry")
    return rel


@dataclass(frozen=True)
class Resolved:
    """One version of an entry as recorded in the zoo."""

    name: str
    version: int
    manifest: dict[str, Any]  # the version manifest
    sha256: str  # of the version manifest's bytes

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


def versions_of(store: Store, name: str) -> list[int]:
    """The version numbers published under ``name``, ascending."""
    out = []
    for item in store.list(f"versions/{name}"):
        stem = item[:-len(".json")] if item.endswith(".json") else ""
        if stem.isdigit():
            out.append(int(stem))
    return sorted(out)


def names(store: Store) -> list[str]:
    """Entry names that have a ``latest`` pointer, sorted."""
    return sorted(item[:-len(".json")] for item in store.list("latest")
                  if item.endswith(".json") and not item.startswith("."))


def read_latest(store: Store, name: str) -> dict[str, Any] | None:
    data = store.read(latest_key(name))
    if data is None:
        return None
    try:
        pointer = json.loads(data)
        int(pointer["version"])
        return pointer
    except (ValueError, KeyError, TypeError) as exc:
        raise ZooError(f"{store.where(latest_key(name))}: malformed latest pointer") from exc


def resolve(store: Store, ref: str) -> Resolved:
    """The version manifest ``ref`` names, checked against the digest ``latest`` records."""
    name, version = parse_ref(ref)
    expected = None
    if version is None:
        pointer = read_latest(store, name)
        if pointer is None:
            store.check()  # an unreachable zoo or a missing bucket says so, not "no entry"
            raise NoSuchEntry(f"no zoo entry {name!r} in {store.url} (see `porter zoo list`)")
        version, expected = int(pointer["version"]), pointer.get("sha256")
    data = store.read(version_key(name, version))
    if data is None:
        known = versions_of(store, name)
        raise NoSuchEntry(f"no version {version} of {name!r} in {store.url}"
                       + (f" (it has {', '.join(map(str, known))})" if known else ""))
    digest = hashlib.sha256(data).hexdigest()
    if expected is not None and digest != expected:
        raise IntegrityError(f"{store.where(version_key(name, version))}: sha256 {digest[:16]}… "
                             f"is not the {str(expected)[:16]}… that latest records (altered)")
    try:
        manifest = json.loads(data)
        files = manifest["files"]
        for rel, info in files.items():
            check_rel(rel)
            if not (isinstance(info, dict) and isinstance(info.get("sha256"), str)
                    and len(info["sha256"]) == 64):
                raise ValueError(f"file {rel!r} has no sha256")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ZooError(f"{store.where(version_key(name, version))}: malformed version manifest "
                       f"({exc})") from exc
    return Resolved(name, version, manifest, digest)
