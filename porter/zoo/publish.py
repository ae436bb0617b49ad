"""Publishing an output folder into the local zoo, and checking and cleaning what is there.

A zoo is a folder of entries, one folder each. Publishing copies an output into a staged
folder, re-hashes it and swaps it into place while holding a lock on the zoo folder, so
concurrent publishes are serialised and a killed publisher leaves at most hidden debris, which
the next publish (or ``porter zoo gc``) clears; hidden folders are never listed as entries.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from porter.errors import IntegrityError, ZooError
from porter.zoo.atomic import OLD_TAG, STAGE_TAG, folder_lock, staged_folder, sweep
from porter.zoo.load import (
    MANIFEST,
    WEIGHTS,
    check_name,
    check_weights,
    entry_dir,
    read_manifest,
    single_file,
    zoo_root,
)
from porter.zoo.st_write import copy_hashed

__all__ = ["publish", "list_entries", "verify_entry", "gc", "prepare_zoo"]


def prepare_zoo(root: str | Path | None = None) -> Path:
    """The zoo folder, created if missing; OutputError/ZooError if it cannot be written."""
    import os

    zoo = zoo_root(root)
    nearest = zoo
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent  # the folder that will hold the zoo once it is created
    if not nearest.is_dir():
        raise ZooError(f"zoo {zoo}: {nearest} is a file, not a folder")
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise ZooError(f"zoo {zoo}: {nearest} is not writable")
    return zoo


def publish(out_dir: str | Path, name: str, root: str | Path | None = None) -> Path:
    """Copy ``out_dir`` to ``<zoo>/<name>`` atomically (staged copy + swap); the weights are
    hashed as they are copied and must match the manifest, else nothing is published."""
    out_dir = Path(out_dir)
    check_name(name)
    manifest = read_manifest(out_dir)
    weights = out_dir / manifest.get("weights", {}).get("file", WEIGHTS)
    if weights.parent != out_dir:
        raise IntegrityError(f"{out_dir}: the manifest's weights file leaves the folder")
    single_file(weights)  # present, a regular file, one link
    expected = manifest.get("weights", {}).get("sha256")
    zoo = prepare_zoo(root)
    zoo.mkdir(parents=True, exist_ok=True)
    dest = zoo / name
    with staged_folder(dest, force=True) as stage:
        for item in sorted(out_dir.rglob("*")):
            rel = item.relative_to(out_dir)
            if any(part.startswith(".") for part in rel.parts):
                continue
            if item.is_symlink():
                raise IntegrityError(f"{item}: a symbolic link in the output; refusing to publish")
            if item.is_dir():
                (stage / rel).mkdir()
            elif item == weights:  # one read of the weights feeds both the copy and its digest
                digest = copy_hashed(single_file(item), stage / rel)
                if digest != expected:
                    raise IntegrityError(
                        f"{item}: sha256 {digest[:16]}… does not match the manifest's "
                        f"{str(expected)[:16]}… (file altered or corrupt; refusing to publish)")
            else:
                shutil.copyfile(single_file(item), stage / rel)
    return dest


def _entries(zoo: Path) -> list[Path]:
    return sorted(p for p in zoo.iterdir()
                  if not p.name.startswith(".") and p.is_dir() and (p / MANIFEST).is_file())


def list_entries(root: str | Path | None = None) -> list[dict[str, Any]]:
    """One summary dict per published entry (name, graph, source digest, parity, sizes)."""
    zoo = zoo_root(root)
    if not zoo.is_dir():
        return []
    out = []
    for d in _entries(zoo):
        try:
            m = read_manifest(d)
        except ZooError as exc:
            out.append({"name": d.name, "error": str(exc)})
            continue
        parity = m.get("parity") or {}
        out.append({"name": d.name, "graph": m.get("graph", {}).get("class"),
                    "source_sha256": m.get("source", {}).get("sha256"),
                    "weights_sha256": m.get("weights", {}).get("sha256"),
                    "bytes": m.get("weights", {}).get("bytes"),
                    "parity_max_abs": parity.get("worst_max_abs"),
                    "npu": (m.get("npu") or {}).get("device"),
                    "licence": (m.get("card") or {}).get("license")})
    return out


def verify_entry(name: str, root: str | Path | None = None) -> dict[str, Any]:
    """Re-hash an entry's weights against its manifest; IntegrityError if they differ."""
    folder = entry_dir(name, root)
    digest = check_weights(folder)
    return {"name": name, "path": str(folder), "sha256": digest, "ok": True}


def gc(root: str | Path | None = None) -> list[str]:
    """Clear what killed publishes left in the zoo (staged and old copies); returns their names.

    Runs under the zoo's lock, so a publish in progress is never disturbed.
    """
    zoo = zoo_root(root)
    if not zoo.is_dir():
        return []
    cleared: list[str] = []
    with folder_lock(zoo):
        names = set()
        for p in zoo.iterdir():
            for tag in (STAGE_TAG, OLD_TAG):
                if p.name.startswith(".") and tag in p.name:
                    names.add(p.name[1:p.name.index(tag)])
        for name in sorted(names):
            cleared += sweep(zoo, name)
    return cleared
