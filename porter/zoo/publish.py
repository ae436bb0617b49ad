"""Publishing an output folder into a zoo (any backend), and listing, checking and cleaning it.

A publish goes in three steps, each safe to be killed after (see ``porter.zoo.layout``):

1. every file is uploaded as a content-addressed blob (an upload appears whole or not at all);
2. the version manifest ``versions/<name>/<n>.json`` is *created* (create-only, n = highest
   version + 1); if another publisher took ``n`` first, this one takes ``n + 1``, so two
   concurrent publishes of one name end as two distinct versions, never a mix;
3. ``latest/<name>.json`` is moved to ``n`` by a conditional write against what was read, and
   never backwards (a publisher that lost the race to a newer version leaves it).

A publish killed before step 2 leaves only unreferenced blobs, which ``gc`` removes once they
are older than its grace period (so it never races a publish in progress).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from porter.errors import IntegrityError, ZooError
from porter.source import sha256_file
from porter.zoo.layout import (
    FORMAT,
    blob_key,
    latest_key,
    names,
    read_latest,
    resolve,
    version_key,
    versions_of,
)
from porter.zoo.load import MANIFEST, check_name, read_manifest, single_file, zoo_root
from porter.zoo.store import LocalStore, Store, open_store

__all__ = ["publish", "list_entries", "verify_entry", "verify_all", "gc", "prepare_zoo",
           "Published"]

#: Tries at taking a version number or moving ``latest`` before giving up (each lost try means
#: another publisher got there first, so this bounds contention, not time).
TRIES = 64
#: Default age (seconds) below which ``gc`` keeps an unreferenced blob: a publish in progress
#: uploads its blobs before the version manifest that references them.
GRACE_S = 3600.0


@dataclass(frozen=True)
class Published:
    """What ``publish`` made: ``ref`` (``name@version``) in the zoo at ``zoo``."""

    name: str
    version: int
    zoo: str
    weights_sha256: str

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def __str__(self) -> str:
        return f"{self.ref} in {self.zoo}"


def prepare_zoo(root: str | Path | None = None) -> Store:
    """The zoo's store, checked to be reachable and writable; ZooError otherwise."""
    store = open_store(zoo_root(root))
    store.check(write=True)
    return store


def _files(out_dir: Path) -> dict[str, Path]:
    files = {}
    for item in sorted(out_dir.rglob("*")):
        rel = item.relative_to(out_dir)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if item.is_symlink():
            raise IntegrityError(f"{item}: a symbolic link in the output; refusing to publish")
        if item.is_file():
            files[rel.as_posix()] = single_file(item)
    return files


def _summary(manifest: dict[str, Any]) -> dict[str, Any]:
    parity = manifest.get("parity") or {}
    return {"graph": (manifest.get("graph") or {}).get("class"),
            "source_sha256": (manifest.get("source") or {}).get("sha256"),
            "weights_sha256": (manifest.get("weights") or {}).get("sha256"),
            "bytes": (manifest.get("weights") or {}).get("bytes"),
            "parity_max_abs": parity.get("worst_max_abs"),
            "npu": (manifest.get("npu") or {}).get("device"),
            "licence": (manifest.get("card") or {}).get("license"),
            "porter": manifest.get("porter"),
            "versions": manifest.get("versions")}


def _current_blobs(store: Store, name: str) -> set[str]:
    try:
        entry = resolve(store, name)
    except ZooError:
        return set()
    return {info["sha256"] for info in entry.manifest["files"].values()}


def _move_latest(store: Store, name: str, version: int, digest: str) -> None:
    pointer = json.dumps({"name": name, "version": version, "sha256": digest}).encode()
    for _ in range(TRIES):
        tag = store.tag(latest_key(name))
        current = read_latest(store, name) if tag is not None else None
        if current is not None and int(current["version"]) >= version:
            return  # a newer version was published meanwhile; latest never moves backwards
        if store.replace_if(latest_key(name), pointer, tag):
            return
    raise ZooError(f"zoo {store.url}: {name}@{version} is published, but latest could not be "
                   f"moved to it after {TRIES} tries (too many concurrent publishers)")


def publish(out_dir: str | Path, name: str, root: str | Path | None = None) -> Published:
    """Publish the output folder ``out_dir`` as the next version of ``name``; see module doc.

    The weights are re-hashed against the output's manifest first. Returns ``Published``.
    """
    out_dir = Path(out_dir)
    check_name(name)
    manifest = read_manifest(out_dir)
    weights = out_dir / check_weights_file(manifest)
    if weights.parent != out_dir:
        raise IntegrityError(f"{out_dir}: the manifest's weights file leaves the folder")
    single_file(weights)  # present, a regular file, one link
    store = prepare_zoo(root)
    # one read of each file: its digest names its blob, and the weights' is checked here
    files = {rel: (path, sha256_file(path), path.stat().st_size)
             for rel, path in _files(out_dir).items()}
    if MANIFEST not in files:
        raise ZooError(f"{out_dir}: no {MANIFEST}")
    expected = (manifest.get("weights") or {}).get("sha256")
    actual = files[weights.relative_to(out_dir).as_posix()][1]
    if actual != expected:
        raise IntegrityError(
            f"{weights}: sha256 {actual[:16]}… does not match the manifest's "
            f"{str(expected)[:16]}… (file altered or corrupt; refusing to publish)")
    present = _current_blobs(store, name)
    for path, digest, _ in files.values():
        if digest not in present:  # blobs of the current version are kept by gc; others upload
            store.upload(blob_key(digest), path)
    record = {"zoo": FORMAT, "name": name,
              "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "files": {rel: {"sha256": d, "bytes": n} for rel, (_, d, n) in files.items()},
              "summary": _summary(manifest)}
    for _ in range(TRIES):
        known = versions_of(store, name)
        version = (known[-1] if known else 0) + 1
        data = json.dumps({**record, "version": version}, indent=1, sort_keys=True).encode()
        if store.create(version_key(name, version), data):
            break
    else:
        raise ZooError(f"zoo {store.url}: no free version number for {name!r} after {TRIES} "
                       "tries (too many concurrent publishers)")
    _move_latest(store, name, version, hashlib.sha256(data).hexdigest())
    return Published(name, version, store.url, files[check_weights_file(manifest)][1])


def check_weights_file(manifest: dict[str, Any]) -> str:
    return (manifest.get("weights") or {}).get("file", "model.safetensors")


def _legacy(store: Store) -> list[dict[str, Any]]:
    """Entries in the old one-folder-per-entry local layout: listed, never read as entries."""
    if not isinstance(store, LocalStore) or not store.root.is_dir():
        return []
    out = []
    for d in sorted(store.root.iterdir()):
        if (not d.name.startswith(".") and d.name not in ("blobs", "versions", "latest")
                and (d / MANIFEST).is_file()):
            out.append({"name": d.name, "error": "an entry in the old folder layout; publish it "
                        f"again with `porter zoo push {d} --name {d.name} --zoo {store.url}`"})
    return out


def list_entries(root: str | Path | None = None, *,
                 all_versions: bool = False) -> list[dict[str, Any]]:
    """One summary dict per entry (its latest version; every version with ``all_versions``).

    Keys: name, version, ref, versions_published, graph, source_sha256, weights_sha256, bytes,
    parity_max_abs, npu, licence, porter, versions (library versions), published; an entry
    that cannot be read has only name and error.
    """
    store = open_store(zoo_root(root))
    out = []
    found = names(store)
    if not found:
        store.check()  # an empty listing: say so if the zoo is unreachable or has no bucket
    for name in found:
        try:
            latest = resolve(store, name)
            known = versions_of(store, name)
            chosen = [latest] if not all_versions else [resolve(store, f"{name}@{v}")
                                                         for v in known]
        except ZooError as exc:
            out.append({"name": name, "error": str(exc)})
            continue
        for entry in chosen:
            out.append({"name": name, "version": entry.version, "ref": entry.ref,
                        "latest": entry.version == latest.version,
                        "versions_published": len(known),
                        **(entry.manifest.get("summary") or {}),
                        "published": entry.manifest.get("published")})
    return out + _legacy(store)


def verify_entry(name: str, root: str | Path | None = None) -> dict[str, Any]:
    """Re-hash every blob of ``name`` (or ``name@version``) in the zoo; IntegrityError if one
    differs or is missing, or if the output's manifest disagrees with its weights."""
    return _verify(open_store(zoo_root(root)), name)


def _verify(store: Store, name: str) -> dict[str, Any]:
    entry = resolve(store, name)
    files = entry.manifest["files"]
    for rel, info in sorted(files.items()):
        actual = store.digest(blob_key(info["sha256"]))
        if actual is None:
            raise IntegrityError(f"{entry.ref}: {rel} (blob {info['sha256'][:16]}…) is missing "
                                 f"from {store.url}")
        if actual != info["sha256"]:
            raise IntegrityError(f"{entry.ref}: {rel} blob hashes to {actual[:16]}…, not "
                                 f"{info['sha256'][:16]}… it is stored under (corrupt in the zoo)")
    data = store.read(blob_key(files[MANIFEST]["sha256"])) if MANIFEST in files else None
    try:
        manifest = json.loads(data) if data is not None else None
    except ValueError as exc:
        raise ZooError(f"{entry.ref}: malformed {MANIFEST} ({exc})") from exc
    if not isinstance(manifest, dict):
        raise ZooError(f"{entry.ref}: no {MANIFEST}")
    weights = check_weights_file(manifest)
    expected = (manifest.get("weights") or {}).get("sha256")
    if weights not in files or files[weights]["sha256"] != expected:
        raise IntegrityError(f"{entry.ref}: the weights file {weights} does not match the "
                             "manifest's sha256")
    return {"name": entry.name, "version": entry.version, "ref": entry.ref,
            "path": store.where(version_key(entry.name, entry.version)),
            "sha256": expected, "ok": True}


def verify_all(root: str | Path | None = None) -> list[dict[str, Any]]:
    """``verify_entry`` for every version of every entry; failures are reported, not raised."""
    store = open_store(zoo_root(root))
    out = []
    for name in names(store):
        for v in versions_of(store, name):
            try:
                out.append(_verify(store, f"{name}@{v}"))
            except (ZooError, IntegrityError) as exc:
                out.append({"name": name, "version": v, "ref": f"{name}@{v}", "ok": False,
                            "error": str(exc)})
    return out


def gc(root: str | Path | None = None, grace_s: float = GRACE_S) -> list[str]:
    """Remove blobs no version references, temporary files and unfinished uploads of killed
    publishes, when older than ``grace_s`` seconds (so a publish in progress keeps its blobs);
    returns what was removed."""
    store = open_store(zoo_root(root))
    referenced: set[str] = set()
    for name in store.list("versions"):
        for v in versions_of(store, name):
            try:
                entry = resolve(store, f"{name}@{v}")
            except ZooError:
                continue
            referenced |= {info["sha256"] for info in entry.manifest["files"].values()}
    cleared = []
    folders = ["blobs/sha256", "latest"] + [f"versions/{n}" for n in store.list("versions")]
    for folder in folders:
        for item in store.list(folder):
            key = f"{folder}/{item}"
            temp = item.startswith(".") and LocalStore.TMP in item
            orphan = folder == "blobs/sha256" and not temp and item not in referenced
            if (temp or orphan) and store.age_s(key) >= grace_s:
                store.delete(key)
                cleared.append(key)
    return cleared + store.clear_stale_uploads(grace_s)
