"""A small protobuf wire-format decoder for the TensorFlow messages porter reads.

TensorFlow is never imported: GraphDef, MetaGraphDef, NodeDef, AttrValue, TensorProto,
TensorShapeProto and BundleEntryProto are decoded from their field numbers (as in
``tensorflow/core/framework/*.proto`` and ``tensorflow/core/protobuf/tensor_bundle.proto``).
Unknown fields are skipped, as protobuf itself does.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Any

import ml_dtypes
import numpy as np

from porter.errors import FormatError
from porter.importers.protowire import iter_fields, varint

__all__ = [
    "DTYPES", "dtype_name", "np_dtype", "parse_fields", "varint", "BundleEntry", "TensorSlice",
    "NodeDef", "GraphDef", "MetaGraphDef", "parse_bundle_entry", "parse_bundle_header",
    "parse_shape", "parse_tensor", "parse_graph_def", "parse_meta_graph", "parse_node",
]

# tensorflow/core/framework/types.proto: DataType enum -> numpy dtype (None: not a numeric array).
DTYPES: dict[int, tuple[str, Any]] = {
    1: ("float32", np.float32), 2: ("float64", np.float64), 3: ("int32", np.int32),
    4: ("uint8", np.uint8), 5: ("int16", np.int16), 6: ("int8", np.int8),
    7: ("string", object), 8: ("complex64", np.complex64), 9: ("int64", np.int64),
    10: ("bool", np.bool_), 11: ("qint8", np.int8), 12: ("quint8", np.uint8),
    13: ("qint32", np.int32), 14: ("bfloat16", ml_dtypes.bfloat16), 15: ("qint16", np.int16),
    16: ("quint16", np.uint16), 17: ("uint16", np.uint16), 18: ("complex128", np.complex128),
    19: ("float16", np.float16), 20: ("resource", None), 21: ("variant", None),
    22: ("uint32", np.uint32), 23: ("uint64", np.uint64),
    24: ("float8_e5m2", ml_dtypes.float8_e5m2), 25: ("float8_e4m3fn", ml_dtypes.float8_e4m3fn),
}


def dtype_name(code: int) -> str:
    """TF DataType enum -> name ("float32"); reference types (code + 100) map to their base."""
    code = code - 100 if code > 100 else code
    return DTYPES[code][0] if code in DTYPES else f"dtype{code}"


def np_dtype(code: int) -> np.dtype:
    """numpy dtype of a TF DataType, FormatError if porter cannot hold it as an array."""
    code = code - 100 if code > 100 else code
    if code not in DTYPES or DTYPES[code][1] is None:
        raise FormatError(f"unsupported TensorFlow dtype {dtype_name(code)}")
    return np.dtype(DTYPES[code][1])


# ---------------------------------------------------------------------------------- wire format

def parse_fields(buf: bytes | memoryview) -> dict[int, list[Any]]:
    """Field number -> values in order: int for varint/fixed, memoryview for length-delimited."""
    out: dict[int, list[Any]] = {}
    for num, wire, val in iter_fields(buf):
        if wire in (1, 5):
            val = int.from_bytes(val, "little")
        out.setdefault(num, []).append(val)
    return out


def _signed(v: int, bits: int = 64) -> int:
    if not isinstance(v, int):
        raise FormatError("malformed protobuf (bytes where a number belongs)")
    return v - (1 << bits) if v >= 1 << (bits - 1) else v


def _one(f: dict[int, list[Any]], num: int, default: Any = 0) -> Any:
    vals = f.get(num)
    return vals[-1] if vals else default


def _bytes(v: Any) -> bytes:
    """A length-delimited field's bytes; a number there (``bytes(10**12)`` would allocate a
    terabyte) is a corrupt message."""
    if not isinstance(v, (bytes, bytearray, memoryview)):
        raise FormatError("malformed protobuf (a number where text or bytes belong)")
    return bytes(v)


def _str(v: Any) -> str:
    return _bytes(v).decode("utf-8", errors="replace")


def _packed_varints(vals: list[Any]) -> list[int]:
    """Repeated varint field, packed (memoryview) or not (ints), in order."""
    out: list[int] = []
    for v in vals:
        if isinstance(v, memoryview):
            pos = 0
            while pos < len(v):
                x, pos = varint(v, pos)
                out.append(x)
        else:
            out.append(v)
    return out


def _packed_fixed(vals: list[Any], fmt: str, size: int) -> list[Any]:
    out: list[Any] = []
    for v in vals:
        if isinstance(v, memoryview):
            out.extend(x[0] for x in struct.iter_unpack("<" + fmt, v))
        else:  # unpacked: int holding the raw fixed bits
            out.append(struct.unpack("<" + fmt, v.to_bytes(size, "little"))[0])
    return out


# ------------------------------------------------------------------------- shapes and tensors

def parse_shape(buf: Any) -> tuple[int, ...] | None:
    """TensorShapeProto -> tuple of dims (-1 unknown), None for unknown rank."""
    f = parse_fields(buf)
    if _one(f, 3, 0):
        return None
    return tuple(_signed(_one(parse_fields(d), 1, 0)) for d in f.get(2, []))


@dataclass(frozen=True)
class TensorSlice:
    """One slice of a partitioned variable: (start, length) per dim, length -1 = whole dim."""

    extents: tuple[tuple[int, int], ...]


def _parse_slice(buf: Any) -> TensorSlice:
    ext = []
    for e in parse_fields(buf).get(1, []):
        f = parse_fields(e)
        ext.append((_signed(_one(f, 1, 0)), _signed(_one(f, 2, 0)) if 2 in f else -1))
    return TensorSlice(tuple(ext))


@dataclass(frozen=True)
class BundleEntry:
    """BundleEntryProto: where a tensor's bytes live in the data shards, and their checksum."""

    dtype: int
    shape: tuple[int, ...]
    shard_id: int = 0
    offset: int = 0
    size: int = 0
    crc32c: int = 0
    slices: tuple[TensorSlice, ...] = ()


def parse_bundle_entry(buf: Any) -> BundleEntry:
    f = parse_fields(buf)
    shape = parse_shape(_one(f, 2, b"")) or ()
    return BundleEntry(dtype=_one(f, 1, 0), shape=shape, shard_id=_one(f, 3, 0),
                       offset=_signed(_one(f, 4, 0)), size=_signed(_one(f, 5, 0)),
                       crc32c=_one(f, 6, 0),
                       slices=tuple(_parse_slice(s) for s in f.get(7, [])))


def parse_bundle_header(buf: Any) -> dict[str, Any]:
    """BundleHeaderProto: num_shards, endianness ("little"/"big"), version."""
    f = parse_fields(buf)
    version = parse_fields(_one(f, 3, b""))
    return {"num_shards": _one(f, 1, 1), "endianness": "big" if _one(f, 2, 0) else "little",
            "version": _one(version, 1, 0), "min_consumer": _one(version, 2, 0)}


def _fill(values: np.ndarray, count: int, name: str) -> np.ndarray:
    """TensorProto semantics: fewer values than elements repeat the last one; none means zeros."""
    if values.size == count:
        return values
    if values.size == 0:
        return np.zeros(count, values.dtype)
    if values.size > count:
        raise FormatError(f"tensor {name!r} holds {values.size} values for {count} elements")
    return np.concatenate([values, np.full(count - values.size, values[-1], values.dtype)])


#: Largest tensor a TensorProto may decode to (fill-encoded: a few bytes can claim gigabytes);
#: ``PORTER_MAX_TENSOR_BYTES`` raises it.
MAX_TENSOR_BYTES = int(os.environ.get("PORTER_MAX_TENSOR_BYTES", 4 << 30))
_ATTR_INLINE = 1 << 16  # elements of a tensor-valued attribute decoded when a graph is read


def _count(shape: tuple[int, ...], name: str) -> int:
    if any(d < 0 for d in shape):
        raise FormatError(f"tensor {name!r} has an unknown or negative dimension {list(shape)}")
    count = 1
    for d in shape:
        count *= d
    return count


def parse_tensor(buf: Any, name: str = "") -> tuple[int, tuple[int, ...], Any]:
    """TensorProto -> (dtype code, shape, loader); the loader decodes values on demand, at
    most :data:`MAX_TENSOR_BYTES`."""
    f = parse_fields(buf)
    code = _one(f, 1, 0)
    shape = parse_shape(_one(f, 2, b"")) or ()

    def load() -> np.ndarray:
        dt = np_dtype(code)
        count = _count(shape, name)
        if count * dt.itemsize > MAX_TENSOR_BYTES:
            raise FormatError(f"tensor {name!r} of shape {list(shape)} would decode to "
                              f"{count * dt.itemsize} bytes, over porter's limit of "
                              f"{MAX_TENSOR_BYTES} (raise PORTER_MAX_TENSOR_BYTES)")
        content = _one(f, 4, None)
        if dt.kind == "O":
            vals = np.empty(len(f.get(8, [])), object)
            vals[:] = [bytes(s) for s in f.get(8, [])]
        elif content is not None and len(content):
            if len(content) != count * dt.itemsize:
                raise FormatError(f"tensor {name!r}: {len(content)} content bytes for "
                                  f"{count} x {dt}")
            vals = np.frombuffer(bytes(content), dt.newbyteorder("<")).astype(dt)
        elif code in (19, 14):  # half_val holds the 16-bit patterns in int32s
            vals = np.array(_packed_varints(f.get(13, [])), np.uint16).view(dt)
        elif code == 1:
            vals = np.array(_packed_fixed(f.get(5, []), "f", 4), dt)
        elif code == 2:
            vals = np.array(_packed_fixed(f.get(6, []), "d", 8), dt)
        elif code == 9:
            vals = np.array([_signed(v) for v in _packed_varints(f.get(10, []))], dt)
        elif code == 23:
            vals = np.array(_packed_varints(f.get(17, [])), dt)
        elif code == 22:
            vals = np.array(_packed_varints(f.get(16, [])), dt)
        elif code == 10:
            vals = np.array(_packed_varints(f.get(11, [])), dt)
        elif code in (8, 18):
            fld, fmt, size = (9, "f", 4) if code == 8 else (12, "d", 8)
            parts = np.array(_packed_fixed(f.get(fld, []), fmt, size))
            vals = (parts[0::2] + 1j * parts[1::2]).astype(dt)
        elif code in (24, 25):
            vals = np.frombuffer(_bytes(_one(f, 18, b"")), np.uint8).view(dt)
        else:  # int32, int16, int8, uint8, uint16, quantized: int_val
            # negative int32s are sign-extended to 64 bits on the wire
            vals = np.array([_signed(v) for v in _packed_varints(f.get(7, []))],
                            np.int64).astype(dt)
        return _fill(vals, count, name).reshape(shape)

    return code, shape, load


# --------------------------------------------------------------------------- graphs and nodes

def _attr_tensor(buf: Any) -> Any:
    """A tensor-valued attribute: decoded when small, else described (weights stay lazy)."""
    code, shape, load = parse_tensor(buf)
    count = _count(shape, "attribute")
    if count > _ATTR_INLINE:
        return f"<tensor {dtype_name(code)} {list(shape)}>"
    return load()


def _attr_value(buf: Any) -> Any:
    """AttrValue -> a python value (str, int, float, bool, dtype name, shape, ndarray, list)."""
    f = parse_fields(buf)
    if 2 in f:
        return _str(f[2][-1])
    if 3 in f:
        return _signed(f[3][-1])
    if 4 in f:
        return struct.unpack("<f", f[4][-1].to_bytes(4, "little"))[0]
    if 5 in f:
        return bool(f[5][-1])
    if 6 in f:
        return dtype_name(f[6][-1])
    if 7 in f:
        return parse_shape(f[7][-1])
    if 8 in f:
        return _attr_tensor(f[8][-1])
    if 9 in f:
        return f"<placeholder {_str(f[9][-1])}>"
    if 10 in f:
        return _str(_one(parse_fields(f[10][-1]), 1, b""))
    if 1 in f:
        lf = parse_fields(f[1][-1])
        if 2 in lf:
            return [_str(s) for s in lf[2]]
        if 3 in lf:
            return [_signed(v) for v in _packed_varints(lf[3])]
        if 4 in lf:
            return _packed_fixed(lf[4], "f", 4)
        if 5 in lf:
            return [bool(v) for v in _packed_varints(lf[5])]
        if 6 in lf:
            return [dtype_name(v) for v in _packed_varints(lf[6])]
        if 7 in lf:
            return [parse_shape(s) for s in lf[7]]
        if 8 in lf:
            return [_attr_tensor(t) for t in lf[8][:_ATTR_INLINE]]
        if 9 in lf:
            return [_str(_one(parse_fields(x), 1, b"")) for x in lf[9]]
        return []
    return None


@dataclass
class NodeDef:
    """One op of a GraphDef; ``attrs`` are decoded lazily except ``raw_attrs`` (AttrValue bytes)."""

    name: str
    op: str
    inputs: list[str]
    device: str
    raw_attrs: dict[str, Any] = field(repr=False)

    def attr(self, key: str, default: Any = None) -> Any:
        return _attr_value(self.raw_attrs[key]) if key in self.raw_attrs else default

    def attrs(self, skip: tuple[str, ...] = ("value",)) -> dict[str, Any]:
        """All attributes decoded, except ``skip`` (a Const's value stays lazy)."""
        return {k: _attr_value(v) for k, v in self.raw_attrs.items() if k not in skip}

    def const(self) -> tuple[int, tuple[int, ...], Any]:
        """For a Const: (dtype code, shape, loader) of its ``value`` attribute."""
        t = parse_fields(self.raw_attrs["value"]).get(8)
        if not t:
            raise FormatError(f"Const {self.name!r} has no tensor value")
        return parse_tensor(t[-1], self.name)


def parse_node(buf: Any) -> NodeDef:
    f = parse_fields(buf)
    attrs = {}
    for entry in f.get(5, []):
        ef = parse_fields(entry)
        attrs[_str(_one(ef, 1, b""))] = _one(ef, 2, b"")
    return NodeDef(_str(_one(f, 1, b"")), _str(_one(f, 2, b"")), [_str(s) for s in f.get(3, [])],
                   _str(_one(f, 4, b"")), attrs)


@dataclass
class GraphDef:
    nodes: list[NodeDef]
    producer: int = 0
    functions: int = 0


def parse_graph_def(buf: Any) -> GraphDef:
    f = parse_fields(buf)
    versions = parse_fields(_one(f, 4, b""))
    library = parse_fields(_one(f, 2, b""))
    return GraphDef([parse_node(n) for n in f.get(1, [])], _one(versions, 1, 0),
                    len(library.get(1, [])))


@dataclass
class MetaGraphDef:
    graph: GraphDef
    tags: list[str]
    tensorflow_version: str
    saver: dict[str, Any]
    collections: list[str]


def parse_meta_graph(buf: Any) -> MetaGraphDef:
    f = parse_fields(buf)
    info = parse_fields(_one(f, 1, b""))
    saver = parse_fields(_one(f, 3, b""))
    collections = [_str(_one(parse_fields(c), 1, b"")) for c in f.get(4, [])]
    return MetaGraphDef(
        graph=parse_graph_def(_one(f, 2, b"")),
        tags=[_str(t) for t in info.get(4, [])],
        tensorflow_version=_str(_one(info, 5, b"")),
        saver={"filename_tensor_name": _str(_one(saver, 1, b"")),
               "save_tensor_name": _str(_one(saver, 2, b"")),
               "restore_op_name": _str(_one(saver, 3, b"")),
               "sharded": bool(_one(saver, 5, 0)), "version": _one(saver, 7, 0)},
        collections=collections)
