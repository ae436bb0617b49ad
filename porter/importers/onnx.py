"""ONNX importer: initializers and Constant-node weights as lazy tensors, the op graph as networkx.

The protobuf is parsed without external data; tensors stored outside the file are read by porter
itself, and only from inside the model's own folder (absolute locations, ``..`` and symlinks that
lead out are refused), so a crafted model cannot make porter read arbitrary files. Each external
file is opened once, at import, and mapped privately: a file swapped for another afterwards
changes nothing porter reads, and one rewritten in place is caught before its digest is taken.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from porter.errors import FormatError, UnsafeSourceError
from porter.importers import importer, read_magic
from porter.source import Source, TensorRef

__all__ = ["ExternalFiles", "load_onnx", "source_from_model", "onnx_graph"]


def _sniff(path: Path) -> bool:
    if path.suffix.lower() == ".onnx" and path.is_file():
        return True
    # An ONNX ModelProto starts with field 1 (ir_version, varint): byte 0x08.
    return path.is_file() and path.suffix == "" and read_magic(path, 1) == b"\x08"


def _external_path(base: Path, location: str) -> Path:
    """Resolve an external-data location, refusing anything outside ``base``."""
    if not location or os.path.isabs(location) or Path(location).drive:
        raise UnsafeSourceError(f"external data location {location!r} is absolute")
    if ".." in Path(location).parts:
        raise UnsafeSourceError(f"external data location {location!r} leaves the model's folder")
    if "\x00" in location:
        raise UnsafeSourceError(f"external data location {location!r} holds a NUL byte")
    target = (base / location).resolve()
    root = base.resolve()
    if root not in target.parents:
        raise UnsafeSourceError(f"external data location {location!r} leads out of {base}")
    if not target.is_file():
        raise FormatError(f"external data file {location!r} not found beside the model")
    if target.stat().st_nlink > 1:  # a hard link can name any file on the same filesystem
        raise UnsafeSourceError(f"external data file {location!r} is a hard link (refused like "
                                "a symlink: it may point outside the model's folder)")
    return target


def _external_info(tensor: Any) -> tuple[str, int, int | None]:
    """(location, offset, length) of an external tensor, the numbers checked."""
    info = {e.key: e.value for e in tensor.external_data}
    try:
        offset = int(info.get("offset", 0) or 0)
        length = int(info["length"]) if info.get("length", "") != "" else None
    except ValueError as exc:
        raise FormatError(f"external data for {tensor.name!r}: offset/length must be integers "
                          f"({exc})") from exc
    if offset < 0 or (length is not None and length < 0):
        raise FormatError(f"external data for {tensor.name!r}: negative offset or length")
    return info.get("location", ""), offset, length


def _walk_tensors(graph: Any, main: bool = True):
    """Every TensorProto in ``graph`` and its subgraphs: (tensor, is_main_initializer)."""
    for t in graph.initializer:
        yield t, main
    for st in graph.sparse_initializer:
        yield st.values, False
        yield st.indices, False
    yield from _walk_nodes(graph.node)


def _walk_nodes(nodes: Any):
    """Every TensorProto in the attributes of ``nodes`` and their subgraphs."""
    for node in nodes:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t, False
            for t in a.tensors:
                yield t, False
            if a.HasField("sparse_tensor"):
                yield a.sparse_tensor.values, False
                yield a.sparse_tensor.indices, False
            for st in a.sparse_tensors:
                yield st.values, False
                yield st.indices, False
            if a.HasField("g"):
                yield from _walk_tensors(a.g, False)
            for g in a.graphs:
                yield from _walk_tensors(g, False)


def _walk_model(model: Any):
    """Every TensorProto of a model: its graph, its local functions' nodes and the graphs of
    its training info (ONNX lets each carry external data)."""
    yield from _walk_tensors(model.graph)
    for fn in model.functions:
        yield from _walk_nodes(fn.node)
    for info in model.training_info:
        for g in (info.initialization, info.algorithm):
            yield from _walk_tensors(g, False)


class ExternalFiles:
    """The external-data files of one model, each opened and mapped once (at import).

    Every later read (the converter's weights, onnxruntime's initializers, the digest) goes
    through these mappings, never through the path again: a file renamed over the original
    after import is not seen. A file written in place changes its status (ctime, size), which
    :meth:`check_unchanged` compares against what was recorded when it was opened.
    """

    def __init__(self, base: Path) -> None:
        self.base = base
        self._files: dict[str, tuple[Any, os.stat_result, np.ndarray | None]] = {}

    def paths(self) -> list[Path]:
        return [self.base / loc for loc in sorted(self._files)]

    def open(self, location: str) -> None:
        """Resolve ``location`` inside the folder (or refuse) and map it, once per location."""
        if location in self._files:
            return
        target = _external_path(self.base, location)
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            raise FormatError(f"external data file {location!r}: {exc.strerror}") from exc
        fh = os.fdopen(fd, "rb")
        st = os.fstat(fd)
        named = target.stat()
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1 or \
                (st.st_dev, st.st_ino) != (named.st_dev, named.st_ino):
            fh.close()
            raise UnsafeSourceError(f"external data file {location!r} changed while porter "
                                    "opened it (or is not a plain file)")
        from porter.mapped import map_private

        whole = map_private(fh, st.st_size) if st.st_size else None
        self._files[location] = (fh, st, whole)

    def region(self, location: str, offset: int, n: int | None, name: str) -> np.ndarray:
        """``n`` bytes (None: to the end) at ``offset`` of an opened file: a view of its
        private map."""
        self.open(location)
        _, st, whole = self._files[location]
        n = st.st_size - offset if n is None else n
        if offset < 0 or n < 0 or offset + n > st.st_size:
            raise FormatError(f"external data for {name!r} is truncated or mis-sized "
                              f"(needs {n} bytes at offset {offset}, {location!r} has "
                              f"{st.st_size})")
        if whole is None or n == 0:
            return np.empty(0, np.uint8)
        return whole[offset:offset + n]

    def check_unchanged(self) -> None:
        """Refuse if an opened file was written since it was opened (its bytes are mapped, so
        an in-place write would show through pages not yet read)."""
        for location, (fh, st, _) in sorted(self._files.items()):
            now = os.fstat(fh.fileno())
            # ctime also moves when the file is unlinked (renamed over): only a linked file's
            # ctime says its bytes or times were touched
            keys = ("st_size", "st_mtime_ns") + (("st_ctime_ns",) if now.st_nlink else ())
            if any(getattr(now, k) != getattr(st, k) for k in keys):
                raise UnsafeSourceError(f"external data file {location!r} was modified while "
                                        "porter was reading it; run again on a quiet copy")

    def digest(self, h: Any) -> None:
        """Feed each file (sorted by location: name, NUL, bytes) into the hash ``h``."""
        self.check_unchanged()
        for location in sorted(self._files):
            _, _, whole = self._files[location]
            h.update(location.encode() + b"\0")
            if whole is not None:
                for i in range(0, whole.size, 1 << 24):
                    h.update(memoryview(whole[i:i + (1 << 24)]))
        self.check_unchanged()


def check_external_data(model: Any, base: Path) -> ExternalFiles:
    """Resolve every external location in ``model`` inside ``base`` (or refuse) and open each
    file once; tensors other than the main graph's initializers (Constant values, attributes,
    subgraph initializers) are read now and inlined, so no later reader (onnx, the converter)
    resolves a location against the current directory."""
    from onnx import TensorProto

    files = ExternalFiles(base)
    for t, main in list(_walk_model(model)):
        if t.data_location != TensorProto.EXTERNAL:
            continue
        location, offset, length = _external_info(t)
        files.open(location)
        if main:
            continue
        raw = files.region(location, offset, length, t.name).tobytes()
        del t.external_data[:]
        t.data_location = TensorProto.DEFAULT
        t.raw_data = raw
    return files


def _tensor_loader(tensor: Any, files: ExternalFiles):
    """A zero-argument function that decodes ``tensor`` (a TensorProto) to numpy."""
    from onnx import TensorProto, helper, numpy_helper

    if tensor.data_location == TensorProto.EXTERNAL:
        location, offset, length = _external_info(tensor)
        np_dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
        shape = tuple(tensor.dims)
        expected = int(np.prod(shape, dtype=np.int64)) * np_dtype.itemsize

        def load_external() -> np.ndarray:
            n = expected if length is None else length
            if n != expected:
                raise FormatError(f"external data for {tensor.name!r} is mis-sized (length {n}, "
                                  f"its shape and type need {expected} bytes)")
            region = files.region(location, offset, n, tensor.name)
            if expected == 0:
                return np.empty(shape, np_dtype)
            # a view of the private (copy-on-write) map: the converter's weights can share it,
            # and a write to one copies that page instead of reaching the file
            return region.view(np_dtype).reshape(shape)

        return load_external
    return lambda: numpy_helper.to_array(tensor)


def _ref(tensor: Any, files: ExternalFiles, kind: str, name: str | None = None) -> TensorRef:
    from onnx import helper

    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type))
    except Exception as exc:
        raise FormatError(f"tensor {tensor.name!r} has unknown data type {tensor.data_type}") from exc
    if any(d < 0 for d in tensor.dims):
        raise FormatError(f"tensor {tensor.name!r} has a negative dimension {list(tensor.dims)}")
    return TensorRef(name or tensor.name, tuple(int(d) for d in tensor.dims), dtype,
                     _tensor_loader(tensor, files), kind)


_SCHEMA_TYPES: dict[tuple[str, str, int], dict[str, int] | None] = {}


def _schema_types(op_type: str, domain: str, opset: int) -> dict[str, int] | None:
    """attribute name -> AttributeProto type the ONNX schema declares (None: unknown op)."""
    key = (op_type, domain, opset)
    if key not in _SCHEMA_TYPES:
        import onnx.defs

        try:
            schema = onnx.defs.get_schema(op_type, max_inclusive_version=max(opset, 1),
                                          domain=domain)
            _SCHEMA_TYPES[key] = {n: int(a.type) for n, a in schema.attributes.items()}
        except Exception:  # unknown op or domain: nothing to check against
            _SCHEMA_TYPES[key] = None
    return _SCHEMA_TYPES[key]


def _attrs(node: Any, opset: int = 0) -> dict[str, Any]:
    from onnx import AttributeProto, helper

    out = {}
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    types = _schema_types(node.op_type, domain, opset) if opset else None
    for a in node.attribute:
        want = (types or {}).get(a.name)
        if want is not None and want != a.type and want != AttributeProto.UNDEFINED:
            raise FormatError(
                f"node {node.name or node.op_type!r} ({node.op_type}): attribute {a.name!r} is "
                f"{AttributeProto.AttributeType.Name(a.type)}, the ONNX schema says "
                f"{AttributeProto.AttributeType.Name(want)}")
        if a.type in (a.GRAPH, a.GRAPHS):
            out[a.name] = f"<subgraph {a.name}>"
            continue
        v = helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _value_info(vi: Any) -> dict[str, Any]:
    tt = vi.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
    return {"name": vi.name, "shape": dims, "elem_type": int(tt.elem_type)}


def onnx_graph(model: Any) -> nx.DiGraph:
    """The main graph as a DiGraph of nodes (keyed by unique node names) in file order.

    Node attributes: ``op_type``, ``domain``, ``inputs``, ``outputs``, ``attrs``, ``index``;
    each edge carries the connecting tensor's name as ``tensor``.
    """
    g = nx.DiGraph()
    producer: dict[str, str] = {}
    used: set[str] = set()
    opsets = {o.domain or "": int(o.version) for o in model.opset_import}
    for i, node in enumerate(model.graph.node):
        opset = opsets.get("" if node.domain == "ai.onnx" else node.domain, 0)
        key = node.name or f"{node.op_type}_{i}"
        while key in used:
            key = f"{key}_{i}"
        used.add(key)
        g.add_node(key, op_type=node.op_type, domain=node.domain, inputs=list(node.input),
                   outputs=list(node.output), index=i,
                   attrs=_attrs(node, opset))
        for t in node.input:
            if t in producer:
                g.add_edge(producer[t], key, tensor=t)
        for t in node.output:
            producer[t] = key
    return g


def _is_weight_constant(tensor: Any) -> bool:
    """Constant nodes holding float arrays are weights (Paddle exports weights this way)."""
    from onnx import TensorProto

    floats = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
    return tensor.data_type in floats and len(tensor.dims) >= 1 and all(d > 0 for d in tensor.dims)


def _bind_inputs(model: Any, bound: dict[str, TensorRef]) -> None:
    """Turn the graph inputs named in ``bound`` into initializers that declare type and shape
    only (their values come from the refs); each must match its ref exactly."""
    from onnx import TensorProto, helper

    inputs = {v.name: v for v in model.graph.input}
    taken = {t.name for t in model.graph.initializer}
    for name, ref in bound.items():
        if name not in inputs or name in taken:
            raise FormatError(f"bound tensor {name!r} is not an input of the model")
        tt = inputs[name].type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
        elem = helper.np_dtype_to_tensor_dtype(ref.dtype)
        if tt.elem_type != elem or dims != list(ref.shape):
            raise FormatError(f"bound tensor {name!r} is {ref.dtype} {list(ref.shape)}; the "
                              f"model's input is {helper.tensor_dtype_to_np_dtype(tt.elem_type)} "
                              f"{dims}")
        model.graph.initializer.append(TensorProto(name=name, data_type=elem,
                                                   dims=list(ref.shape)))


def source_from_model(model: Any, path: Path, head: Any = None,
                      bound: dict[str, TensorRef] | None = None) -> Source:
    """Build a Source from an in-memory ModelProto whose external data lives beside ``path``.

    ``head`` is a sha256 object fed with the bytes the model was parsed from: the source's
    digest is then of those bytes followed by each external file's mapped bytes (name, NUL,
    bytes), taken when asked (for a manifest, after the work is done).

    ``bound`` is for porter's own bridges only (never a user's file): graph inputs named there
    become initializers whose values are those refs, read by porter's own importer of the
    original source (a TF1 checkpoint's variables, which tf2onnx saw as Placeholders). No path
    is involved, so the external-data rules above are untouched: the model's own tensors still
    obey them, and a bound tensor is only ever what that importer already checked.
    """
    if bound:
        _bind_inputs(model, bound)
    files = check_external_data(model, path.parent)
    refs: dict[str, TensorRef] = {}
    for t in model.graph.initializer:
        refs[t.name] = bound[t.name] if bound and t.name in bound else _ref(
            t, files, "initializer")
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for a in node.attribute:
                if a.name == "value" and _is_weight_constant(a.t):
                    refs[node.output[0]] = _ref(a.t, files, "constant", node.output[0])
    opsets = {o.domain or "ai.onnx": int(o.version) for o in model.opset_import}
    init_names = {t.name for t in model.graph.initializer}
    meta = {
        "opset": opsets.get("ai.onnx", 0),
        "opsets": opsets,
        "ir_version": int(model.ir_version),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "inputs": [_value_info(v) for v in model.graph.input if v.name not in init_names],
        "outputs": [_value_info(v) for v in model.graph.output],
        "files": [path, *files.paths()],
    }
    if head is not None:
        def digest() -> str:
            h = head.copy()
            files.digest(h)
            return h.hexdigest()

        meta["sha256"] = digest
    return Source(path=path, format="onnx", tensors=refs, graph=onnx_graph(model), meta=meta,
                  native=model)


@importer("onnx", sniff=_sniff)
def load_onnx(path: Path) -> Source:
    """Parse an ONNX file (without pulling external data into memory) into a Source."""
    import onnx
    from google.protobuf.message import DecodeError

    if not path.is_file():
        raise FormatError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise FormatError(f"{path}: empty file")
    data = path.read_bytes()  # read once: parsed, hashed and (serialized) given to onnxruntime
    try:
        model = onnx.load_from_string(data)
    except (DecodeError, RuntimeError, ValueError, EOFError) as exc:
        raise FormatError(f"{path}: not a readable ONNX model (truncated or corrupt: {exc})") from exc
    if not model.graph.node and not model.graph.initializer:
        raise FormatError(f"{path}: not a readable ONNX model (no graph)")
    if not model.opset_import:
        raise FormatError(f"{path}: not a readable ONNX model (no opset_import)")
    return source_from_model(model, path, hashlib.sha256(data))
