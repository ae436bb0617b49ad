"""Publishing an output folder into the local zoo, and checking what is there."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from porter.errors import ZooError
from porter.zoo.atomic import staged_folder
from porter.zoo.load import MANIFEST, check_weights, entry_dir, read_manifest, zoo_root

__all__ = ["publish", "list_entries", "verify_entry"]


def publish(out_dir: str | Path, name: str, root: str | Path | None = None) -> Path:
    """Copy ``out_dir`` to ``<zoo>/<name>`` atomically (staged copy + rename), after re-hashing."""
    out_dir = Path(out_dir)
    check_weights(out_dir)
    zoo = zoo_root(root)
    zoo.mkdir(parents=True, exist_ok=True)
    if not name or "/" in name or name.startswith("."):
        raise ZooError(f"invalid zoo entry name {name!r}")
    dest = zoo / name
    with staged_folder(dest) as stage:
        for item in out_dir.iterdir():
            if item.is_file() and not item.name.startswith("."):
                shutil.copy2(item, stage / item.name)
        check_weights(stage)
    return dest


def list_entries(root: str | Path | None = None) -> list[dict[str, Any]]:
    """One summary dict per published entry (name, graph, source digest, parity, sizes)."""
    zoo = zoo_root(root)
    if not zoo.is_dir():
        return []
    out = []
    for d in sorted(p for p in zoo.iterdir() if (p / MANIFEST).is_file()):
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
                    "npu": (m.get("npu") or {}).get("device")})
    return out


def verify_entry(name: str, root: str | Path | None = None) -> dict[str, Any]:
    """Re-hash an entry's weights against its manifest; IntegrityError if they differ."""
    folder = entry_dir(name, root)
    digest = check_weights(folder)
    return {"name": name, "path": str(folder), "sha256": digest, "ok": True}
