"""Load a porter output folder or zoo entry back into its module, refusing a tampered file.

Every output of porter loads the same way: ``manifest.json`` names the graph as an importable
``"module:Class"`` (or ``"model.py:Class"`` relative to the folder, for generic conversions) with
its constructor kwargs, and the sha256 of ``model.safetensors``.

Loading never runs code the caller did not choose: a clean graph must live under
``porter.graphs``; generated source (``model.py``) is Python, so, like ``trust_remote_code`` in
transformers, it loads only with ``trust_code=True`` or when the caller pins its sha256
(``code_sha256=``, shown by ``porter inspect``). The manifest's own digest cannot vouch for the
code, since whoever wrote the code wrote the manifest too. Files with several hard links or
symbolic links are refused: their bytes could change through another name.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from porter.errors import IntegrityError, TrustError, ZooError
from porter.source import sha256_file

if TYPE_CHECKING:
    import torch

__all__ = ["zoo_root", "check_name", "single_file", "entry_dir", "read_manifest", "load_output",
           "ZooModel", "check_weights"]

WEIGHTS = "model.safetensors"
MANIFEST = "manifest.json"


CLEAN_GRAPHS = "porter.graphs."


def zoo_root(root: str | Path | None = None) -> str | Path:
    """``root``, else ``$PORTER_ZOO``, else ``zoo/`` in porter's per-user cache folder.

    A local zoo is a Path; a URL (``s3://bucket/prefix``, any fsspec protocol) stays a str.
    The cache folder is ``$PORTER_CACHE``, else ``$XDG_CACHE_HOME/porter``, else
    ``~/.cache/porter`` (as huggingface_hub does), so the zoo never depends on the current
    directory.
    """
    from porter.zoo.store import is_url

    chosen = root if root is not None else os.environ.get("PORTER_ZOO") or None
    if chosen is not None:
        return str(chosen) if is_url(chosen) else Path(chosen).expanduser()
    from porter.zoo.catalog import cache_dir

    return cache_dir() / "zoo"


def check_name(name: str) -> str:
    """A zoo entry name: one path component, not hidden, printable, no '@' (which starts a
    version: ``name@3``); ZooError otherwise."""
    if (not isinstance(name, str) or not name or name.startswith(".") or "/" in name
            or "\\" in name or "@" in name or not name.isprintable() or len(name) > 200):
        raise ZooError(f"invalid zoo entry name {name!r} (one folder name: letters, digits, "
                       "'_', '-', '.', not starting with '.', no '@')")
    return name


def entry_dir(name: str, root: str | Path | None = None) -> Path:
    """Local folder of zoo entry ``name`` or ``name@version``, pulled (and digest-checked) into
    the cache from whichever backend the zoo is on; ZooError if it is not there."""
    from porter.zoo.pull import pull

    return pull(name, root)


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The output folder's manifest.json as a dict; ZooError if missing or malformed."""
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
    if path.parent != folder:
        raise IntegrityError(f"{folder}: the manifest's weights file leaves the folder")
    single_file(path)
    actual = sha256_file(path)
    if actual != expected:
        raise IntegrityError(
            f"{path}: sha256 {actual[:16]}… does not match the manifest's {str(expected)[:16]}… "
            "(file altered or corrupt; refusing to load)")
    return actual


def single_file(path: Path) -> Path:
    """``path`` must be a regular file reached by no symbolic link and with one hard link."""
    try:
        st = os.lstat(path)
    except FileNotFoundError as exc:
        raise IntegrityError(f"{path}: file missing") from exc
    import stat

    if not stat.S_ISREG(st.st_mode):
        raise IntegrityError(f"{path}: not a regular file (a link or device); refusing it")
    if st.st_nlink > 1:
        raise IntegrityError(f"{path}: has {st.st_nlink} hard links, so it can change through "
                             "another name; refusing it (copy it to make it a file of its own)")
    return path


def _check_graph_trust(folder: Path, spec: str, trust_code: bool,
                       code_sha256: str | None) -> None:
    mod_name = spec.partition(":")[0]
    if mod_name.endswith(".py"):
        code = folder / mod_name
        if Path(mod_name).name != mod_name:
            raise TrustError(f"{folder}: graph source {mod_name!r} leaves the folder")
        single_file(code)
        digest = sha256_file(code)
        if code_sha256 is not None:
            if digest != code_sha256:
                raise TrustError(f"{code}: sha256 {digest} is not the pinned {code_sha256}; "
                                 "refusing to run it")
        elif not trust_code:
            raise TrustError(f"{code} is generated Python source and loading it runs it; read "
                             f"it, then trust it (--trust-code; trust_code=True in Python) or "
                             f"pin its digest (code_sha256='{digest}' in Python)")
    elif not (mod_name + ".").startswith(CLEAN_GRAPHS) and not trust_code:
        raise TrustError(f"{folder}: the manifest names {spec!r}, outside porter.graphs; "
                         "importing it runs its code (--trust-code, or trust_code=True in Python, if you "
                         "trust it)")


def load_output(folder: str | Path, map_location: str = "cpu", *, trust_code: bool = False,
                code_sha256: str | None = None, fast: bool = True,
                keep_memory: bool = False) -> torch.nn.Module:
    """Rebuild the module named by the manifest and load its verified weights.

    Generated source (generic conversions' ``model.py``) or a class outside ``porter.graphs``
    loads only with ``trust_code=True`` or a matching ``code_sha256`` (see the module doc).

    ``fast`` gives the module porter's CPU inference fast path (``porter.inference``: same
    class, same state dict; eval-mode no-grad CPU calls run an optimised copy of the graph).
    ``keep_memory=True`` (CPU loads only) makes glibc keep freed memory for reuse, process-wide
    and once, logged by ``porter.perf`` (see ``porter.perf.keep_freed_memory``). It is off by
    default: with mmap() disabled, a process that later runs a large model (BEN2 at 1024²)
    grows its heap far past what the model needs (one test worker reached 21 GB and was
    OOM-killed), so only a process that serves one model should ask for it.
    """
    from safetensors.torch import load_file

    from porter.graphs import import_graph
    from porter.mapping.recipe import load_strict

    folder = Path(folder)
    manifest = read_manifest(folder)
    check_weights(folder, manifest)
    graph = manifest["graph"]
    _check_graph_trust(folder, graph["class"], trust_code, code_sha256)
    cls = import_graph(graph["class"], base=folder)
    module = cls(**graph.get("kwargs", {}))
    state = load_file(str(folder / manifest["weights"]["file"]), device=map_location)
    module = load_strict(module, state).eval()
    if fast:
        from porter.inference import optimize_for_inference

        optimize_for_inference(module)
    if keep_memory and torch_device_is_cpu(map_location):
        from porter.perf import keep_freed_memory_for_inference

        keep_freed_memory_for_inference()
    return module


def torch_device_is_cpu(map_location: Any) -> bool:
    """Whether a ``map_location`` names the CPU."""
    return str(map_location).split(":")[0] == "cpu"


class ZooModel:
    """Mixin for graph classes: ``Class.from_zoo(name)`` loads a published, verified entry."""

    @classmethod
    def from_zoo(cls, name: str, root: str | Path | None = None, *, fast: bool = True,
                 keep_memory: bool = False) -> torch.nn.Module:
        """Load the verified zoo entry ``name`` or ``name@version`` from any backend (``root``,
        default: see ``zoo_root``), pulled into the local cache first; ``fast`` and
        ``keep_memory`` as for :func:`load_output`."""
        folder = entry_dir(name, root)
        module = load_output(folder, fast=fast, keep_memory=keep_memory)
        if not isinstance(module, cls):
            raise ZooError(f"zoo entry {name!r} holds {type(module).__name__}, not {cls.__name__}")
        return module
