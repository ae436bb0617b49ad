"""Source and TensorRef: one lazy, read-only view of a foreign model, whatever its format.

Every importer returns a :class:`Source`. Tensors are described up front (name, shape, dtype)
and only read when ``.numpy()`` is called, so inspecting a large file costs next to nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TensorRef", "Source", "sha256_file"]


@dataclass(frozen=True)
class TensorRef:
    """A named tensor of a source, read lazily.

    ``kind`` says where it lives in the source: ``"initializer"``, ``"constant"`` (an ONNX
    Constant node or a frozen TF Const), ``"variable"`` (a checkpoint entry), ``"parameter"``.
    """

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    _load: Callable[[], np.ndarray] = field(repr=False, compare=False)
    kind: str = "initializer"

    def numpy(self) -> np.ndarray:
        """Read the tensor; the result is read-only so a source can never be altered."""
        from porter.errors import FOREIGN_ERRORS, PorterError, foreign_error

        try:
            arr = self._load()
            if not isinstance(arr, np.ndarray):  # asarray would drop a np.memmap's subclass,
                arr = np.asarray(arr)             # which says the array views a mapped file
        except PorterError:
            raise
        except FOREIGN_ERRORS as exc:  # a lazily decoded tensor is still the importer's input
            raise foreign_error(f"tensor {self.name!r}", exc) from exc
        if arr.flags.writeable:
            arr = arr.view()
            arr.flags.writeable = False
        return arr

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


class TensorTable(Mapping[str, TensorRef]):
    """Read-only, insertion-ordered mapping of tensor name to :class:`TensorRef`."""

    def __init__(self, refs: Mapping[str, TensorRef] | None = None) -> None:
        self._refs: dict[str, TensorRef] = dict(refs or {})

    def __getitem__(self, name: str) -> TensorRef:
        return self._refs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)

    def __repr__(self) -> str:
        return f"TensorTable({len(self)} tensors)"


@dataclass
class Source:
    """What ``porter.open`` returns.

    ``format`` names what was sniffed (``"onnx"``, ``"tf1-checkpoint"``, ``"paddle-params"`` …);
    ``tensors`` maps names to lazy refs; ``graph`` is the op graph as a networkx DiGraph where the
    format has one (nodes are ops with ``op_type``/``inputs``/``outputs``/``attrs``, edges carry the
    tensor name in ``tensor``), else None. ``meta`` holds format specifics (opset, inputs, outputs).
    ``native`` is the parsed framework object where porter keeps one (an ``onnx.ModelProto``).
    """

    path: Path
    format: str
    tensors: TensorTable
    graph: Any = None
    meta: dict[str, Any] = field(default_factory=dict)
    native: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.tensors, TensorTable):
            self.tensors = TensorTable(self.tensors)

    def sha256(self) -> str:
        """Digest of the source file (of the folder's files in sorted order for a directory).

        Where the importer kept the file's bytes (``native`` is ``bytes``) or their digest
        (``meta["sha256"]``), the digest is of those bytes: what porter read, parsed and hands
        to a reference, not what the path holds now.
        """
        if isinstance(self.native, bytes):
            return hashlib.sha256(self.native).hexdigest()
        if callable(self.meta.get("sha256")):  # an importer's digest of what it holds mapped
            self.meta["sha256"] = self.meta["sha256"]()
        if isinstance(self.meta.get("sha256"), str):  # taken by the importer from what it read
            return self.meta["sha256"]
        return sha256_file(self.path)

    def files(self) -> list[Path]:
        """Files that make up this source (the data shards of a checkpoint, a model's folder…)."""
        return list(self.meta.get("files", [self.path]))

    def __repr__(self) -> str:
        g = f", graph={self.graph.number_of_nodes()} ops" if self.graph is not None else ""
        return f"Source({self.format!r}, {self.path.name!r}, {len(self.tensors)} tensors{g})"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file, or of every file under a folder in sorted relative-path order."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_dir():
        for sub in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(sub.relative_to(path).as_posix().encode() + b"\0")
            with open(sub, "rb") as fh:
                while block := fh.read(chunk):
                    h.update(block)
        return h.hexdigest()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
