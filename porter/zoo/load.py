"""Load a porter output folder or zoo entry back into its module, refusing a tampered file.

Every output of porter loads the same way: ``manifest.json`` names the graph as an importable
``"module:Class"`` (or ``"model.py:Class"`` relative to the folder, for generic conversions) with
its constructor kwargs, and the sha256 of ``model.safetensors``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from porter.errors import IntegrityError, ZooError
from porter.source import sha256_file

__all__ = ["zoo_root", "entry_dir", "read_manifest", "load_output", "ZooModel", "check_weights"]

WEIGHTS = "model.safetensors"
MANIFEST = "manifest.json"


def zoo_root(root: str | Path | None = None) -> Path:
    """``root``, else ``$PORTER_ZOO``, else ``model_zoo/`` of the current directory."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get("PORTER_ZOO", "model_zoo"))


def entry_dir(name: str, root: str | Path | None = None) -> Path:
    """Folder of a published zoo entry; ZooError if it is not there."""
    if not name or "/" in name or name.startswith("."):
        raise ZooError(f"invalid zoo entry name {name!r}")
    path = zoo_root(root) / name
    if not (path / MANIFEST).is_file():
        raise ZooError(f"no zoo entry {name!r} in {zoo_root(root)} (see `porter zoo list`)")
    return path


def read_manifest(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ZooError(f"{folder}: no {MANIFEST}") from exc
    except json.JSONDecodeError as exc:
        raise ZooError(f"{path}: malformed manifest ({exc})") from exc


def check_weights(folder: str | Path, manifest: dict[str, Any] | None = None) -> str:
    """Re-hash the weights file and compare with the manifest; returns the digest."""
    folder = Path(folder)
    manifest = manifest or read_manifest(folder)
    expected = manifest.get("weights", {}).get("sha256")
    path = folder / manifest.get("weights", {}).get("file", WEIGHTS)
    if not path.is_file():
        raise IntegrityError(f"{path}: weights file missing")
    actual = sha256_file(path)
    if actual != expected:
        raise IntegrityError(
            f"{path}: sha256 {actual[:16]}… does not match the manifest's {str(expected)[:16]}… "
            "(file altered or corrupt; refusing to load)")
    return actual


def load_output(folder: str | Path, map_location: str = "cpu") -> torch.nn.Module:
    """Rebuild the module named by the manifest and load its verified weights."""
    from safetensors.torch import load_file

    from porter.graphs import import_graph
    from porter.mapping.recipe import load_strict

    folder = Path(folder)
    manifest = read_manifest(folder)
    check_weights(folder, manifest)
    graph = manifest["graph"]
    cls = import_graph(graph["class"], base=folder)
    module = cls(**graph.get("kwargs", {}))
    state = load_file(str(folder / manifest["weights"]["file"]), device=map_location)
    return load_strict(module, state).eval()


class ZooModel:
    """Mixin for graph classes: ``Class.from_zoo(name)`` loads a published, verified entry."""

    @classmethod
    def from_zoo(cls, name: str, root: str | Path | None = None) -> torch.nn.Module:
        folder = entry_dir(name, root)
        module = load_output(folder)
        if not isinstance(module, cls):
            raise ZooError(f"zoo entry {name!r} holds {type(module).__name__}, not {cls.__name__}")
        return module
