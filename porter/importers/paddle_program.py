"""Paddle inference models without Paddle: program (ProgramDesc or PIR JSON) + ``.pdiparams``.

* ``.pdmodel``: a ``paddle.framework.proto.ProgramDesc`` protobuf (framework.proto). It is
  decoded by the small wire-format reader in :mod:`porter.importers.protowire` against the
  field numbers of framework.proto (Paddle's generated ``framework_pb2`` is not used: it would
  tie porter to Paddle's install and protobuf version).
* ``.json``: a PIR program (Paddle 3.x default). Only what porter needs is read: the
  ``builtin.parameter`` ops (names, persistable values) and the op list for the graph.
* ``.pdiparams``: the persistable variables, concatenated in sorted-name order (the order
  ``save_combine``/``load_combine`` use), each as a DenseTensor stream: u32 version, u64 LoD
  level (+ per level u64 byte size and data), u32 tensor version, i32 TensorDesc size +
  TensorDesc proto (data_type, dims), raw little-endian data. Tensors are memory-mapped.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from porter.errors import FormatError, UnsafeSourceError
from porter.importers.protowire import iter_fields, varint
from porter.source import Source, TensorRef

__all__ = ["find_model_files", "load_inference", "parse_program_desc", "read_combined_params",
           "program_graph", "DTYPES"]

_MODEL_SUFFIXES = (".pdmodel", ".json")


def _pair(model: Path) -> tuple[Path, Path] | None:
    params = model.with_suffix(".pdiparams")
    return (model, params) if params.is_file() else None


def _is_pir_json(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return head.lstrip()[:1] == b"{" and b'"program"' in head


def find_model_files(path: Path) -> tuple[Path, Path] | None:
    """(program file, params file) for a model path, a params path or a folder; else None.

    A folder must hold exactly one program with a ``.pdiparams`` beside it (``inference.*`` or
    ``model.*`` first); two candidates are ambiguous and raise FormatError.
    """
    path = Path(path)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".pdmodel":
            return _pair(path)
        if suffix == ".json" and _is_pir_json(path):
            return _pair(path)
        if suffix == ".pdiparams":
            for s in _MODEL_SUFFIXES:
                cand = path.with_suffix(s)
                if cand.is_file() and (s == ".pdmodel" or _is_pir_json(cand)):
                    return cand, path
        return None
    if not path.is_dir():
        return None
    found = []
    for cand in sorted(path.iterdir()):
        if cand.suffix.lower() in _MODEL_SUFFIXES and cand.is_file():
            pair = find_model_files(cand)
            if pair is not None:
                found.append(pair)
    if len(found) > 1:
        preferred = [p for p in found if p[0].stem in ("inference", "model")]
        if len(preferred) == 1:
            return preferred[0]
        names = ", ".join(p[0].name for p in found)
        raise FormatError(f"{path}: several Paddle inference models ({names}); name one")
    return found[0] if found else None


# --- protobuf wire format -------------------------------------------------------------------

def _fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) triples; length-delimited and fixed values as bytes."""
    return [(num, wt, bytes(val) if isinstance(val, memoryview) else val)
            for num, wt, val in iter_fields(buf)]


def _signed(v: int) -> int:
    """A varint read back as int64 (negative int32/int64 are sign-extended to 64 bits)."""
    return v - (1 << 64) if v >= 1 << 63 else v


def _repeated_ints(items: list[tuple[int, Any]]) -> list[int]:
    """Repeated varints, packed (wire type 2) or not."""
    out: list[int] = []
    for wt, val in items:
        if wt == 0:
            out.append(_signed(val))
        else:
            pos = 0
            while pos < len(val):
                v, pos = varint(val, pos)
                out.append(_signed(v))
    return out


def _repeated_fixed(items: list[tuple[int, Any]], fmt: str) -> list[float]:
    size = struct.calcsize(fmt)
    out: list[float] = []
    for _, val in items:
        out += [x for (x,) in struct.iter_unpack(fmt, val)] if len(val) % size == 0 else []
    return out


def _group(buf: bytes) -> dict[int, list[tuple[int, Any]]]:
    grouped: dict[int, list[tuple[int, Any]]] = {}
    for num, wt, val in _fields(buf):
        grouped.setdefault(num, []).append((wt, val))
    return grouped


def _str(items: list[tuple[int, Any]] | None, default: str = "") -> str:
    if not items:
        return default
    if not isinstance(items[-1][1], (bytes, bytearray, memoryview)):
        raise FormatError("malformed ProgramDesc (a number where text belongs)")
    return bytes(items[-1][1]).decode("utf-8", "replace")


# --- framework.proto ------------------------------------------------------------------------

#: VarType.Type codes of framework.proto that hold tensor data -> numpy dtype.
DTYPES = {0: "bool", 1: "int16", 2: "int32", 3: "int64", 4: "float16", 5: "float32",
          6: "float64", 20: "uint8", 21: "int8", 22: "uint16", 23: "complex64",
          24: "complex128"}  # 22 is bfloat16: its raw bits are kept as uint16
_LOD_TENSOR = 7


def _attr(buf: bytes) -> tuple[str, Any]:
    """One OpDesc.Attr (name, value) decoded by its AttrType."""
    f = _group(buf)
    name = _str(f.get(1))
    kind = f.get(2, [(0, 0)])[-1][1]
    if kind in (0, 9):      # INT, LONG
        v = _signed(f.get(3 if kind == 0 else 13, [(0, 0)])[-1][1])
    elif kind == 1:         # FLOAT
        v = struct.unpack("<f", f[4][-1][1])[0] if 4 in f else 0.0
    elif kind == 15:        # FLOAT64
        v = struct.unpack("<d", f[19][-1][1])[0] if 19 in f else 0.0
    elif kind == 2:         # STRING
        v = _str(f.get(5))
    elif kind in (3, 11):   # INTS, LONGS
        v = _repeated_ints(f.get(6 if kind == 3 else 15, []))
    elif kind == 4:         # FLOATS
        v = _repeated_fixed(f.get(7, []), "<f")
    elif kind == 12:        # FLOAT64S
        v = _repeated_fixed(f.get(16, []), "<d")
    elif kind == 5:         # STRINGS
        v = [val.decode("utf-8", "replace") for _, val in f.get(8, [])]
    elif kind == 6:         # BOOLEAN
        v = bool(f.get(10, [(0, 0)])[-1][1])
    elif kind == 7:         # BOOLEANS
        v = [bool(x) for x in _repeated_ints(f.get(11, []))]
    elif kind == 8:         # BLOCK
        v = f"<block {f.get(12, [(0, 0)])[-1][1]}>"
    elif kind == 10:        # BLOCKS
        v = [f"<block {b}>" for b in _repeated_ints(f.get(14, []))]
    elif kind == 13:        # VAR
        v = _str(f.get(17))
    elif kind == 14:        # VARS
        v = [val.decode() for _, val in f.get(18, [])]
    elif kind == 16:        # SCALAR
        v = _scalar(f[20][-1][1]) if 20 in f else None
    elif kind == 17:        # SCALARS (e.g. assign_value's values in Paddle 3)
        v = [_scalar(val) for _, val in f.get(21, [])]
    else:                   # future kinds: kept raw, named so
        v = f"<attr type {kind}>"
    return name, v


def _scalar(buf: bytes) -> bool | int | float | complex | None:
    """One framework.proto ``Scalar``: BOOLEAN (1), LONG (2), FLOAT64 (3), COMPLEX128 (4)."""
    f = _group(buf)
    kind = f.get(1, [(0, 0)])[-1][1]
    if kind == 1:
        return bool(f.get(2, [(0, 0)])[-1][1])
    if kind == 2:
        return _signed(f.get(3, [(0, 0)])[-1][1])
    if kind == 3:
        return struct.unpack("<d", f[4][-1][1])[0] if 4 in f else 0.0
    if kind == 4 and 5 in f:
        c = _group(f[5][-1][1])
        real = struct.unpack("<d", c[1][-1][1])[0] if 1 in c else 0.0
        imag = struct.unpack("<d", c[2][-1][1])[0] if 2 in c else 0.0
        return complex(real, imag)
    return None


def _slots(items: list[tuple[int, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for _, val in items:
        f = _group(val)
        out[_str(f.get(1))] = [a.decode("utf-8", "replace") for _, a in f.get(2, [])]
    return out


def _tensor_desc(buf: bytes) -> tuple[int, list[int]]:
    f = _group(buf)
    return f.get(1, [(0, -1)])[-1][1], _repeated_ints(f.get(2, []))


def _var(buf: bytes) -> dict[str, Any]:
    f = _group(buf)
    vtype = _group(f[2][-1][1]) if 2 in f else {}
    kind = vtype.get(1, [(0, -1)])[-1][1]
    dtype, dims = None, None
    if kind == _LOD_TENSOR and 3 in vtype:
        lod = _group(vtype[3][-1][1])
        if 1 in lod:
            dtype, dims = _tensor_desc(lod[1][-1][1])
    return {"name": _str(f.get(1)), "type": kind, "dtype": dtype, "dims": dims,
            "persistable": bool(f.get(3, [(0, 0)])[-1][1]),
            "is_parameter": bool(f.get(5, [(0, 0)])[-1][1])}


def parse_program_desc(data: bytes) -> list[dict[str, Any]]:
    """Blocks of a ProgramDesc: ``[{"idx", "parent", "vars": [...], "ops": [...]}]``.

    Ops are ``{"type", "inputs": {slot: [var]}, "outputs": {slot: [var]}, "attrs": {...}}``.
    """
    blocks = []
    for num, wt, val in _fields(data):
        if num != 1 or wt != 2:
            continue
        f = _group(val)
        ops = []
        for _, op_buf in f.get(4, []):
            o = _group(op_buf)
            ops.append({"type": _str(o.get(3)), "inputs": _slots(o.get(1, [])),
                        "outputs": _slots(o.get(2, [])),
                        "attrs": dict(_attr(a) for _, a in o.get(4, []))})
        blocks.append({"idx": f.get(1, [(0, 0)])[-1][1],
                       "parent": _signed(f.get(2, [(0, 0)])[-1][1]),
                       "vars": [_var(v) for _, v in f.get(3, [])], "ops": ops})
    if not blocks:
        raise FormatError("no blocks in the ProgramDesc")
    return blocks


# --- .pdiparams -----------------------------------------------------------------------------

def read_combined_params(path: Path, names: list[str],
                         expected: dict[str, tuple[int, ...]] | None = None,
                         raw: bytes | None = None) -> dict[str, TensorRef]:
    """Lazy refs for a ``.pdiparams`` holding ``names`` (already in file order).

    Headers are parsed up front (dtype, dims, offset); data is memory-mapped on ``.numpy()``,
    or sliced from ``raw`` (the file's bytes, or a private map of it, opened once) when given.
    A dims clash with ``expected``, a short file or trailing bytes raise FormatError.
    """
    if raw is not None:
        data: Any = memoryview(raw)
    else:
        data = np.memmap(path, dtype=np.uint8, mode="r") if path.stat().st_size else b""
    size, pos = len(data), 0
    refs: dict[str, TensorRef] = {}

    def need(n: int, what: str) -> None:
        if pos + n > size:
            raise FormatError(f"{path.name}: truncated in {what} (needs {pos + n} bytes, "
                              f"file has {size})")

    for name in names:
        need(12, f"header of {name!r}")
        pos += 4  # DenseTensor version (0)
        (lod_levels,) = struct.unpack_from("<Q", data, pos)
        pos += 8
        if lod_levels > 64:
            raise FormatError(f"{path.name}: corrupt header of {name!r} (LoD level {lod_levels})")
        for _ in range(lod_levels):
            need(8, f"LoD of {name!r}")
            (nbytes,) = struct.unpack_from("<Q", data, pos)
            pos += 8
            need(nbytes, f"LoD of {name!r}")
            pos += nbytes
        need(8, f"tensor header of {name!r}")
        pos += 4  # tensor version (0)
        (desc_size,) = struct.unpack_from("<i", data, pos)
        pos += 4
        if desc_size < 0:
            raise FormatError(f"{path.name}: corrupt TensorDesc size for {name!r}")
        need(desc_size, f"TensorDesc of {name!r}")
        code, dims = _tensor_desc(bytes(data[pos:pos + desc_size]))
        pos += desc_size
        if code not in DTYPES:
            raise FormatError(f"{path.name}: {name!r} has unsupported data type code {code}")
        dtype = np.dtype(DTYPES[code]).newbyteorder("<")
        shape = tuple(int(d) for d in dims)
        if any(d < 0 for d in shape):
            raise FormatError(f"{path.name}: {name!r} has negative dims {list(shape)}")
        if expected is not None and name in expected and tuple(expected[name]) != shape:
            raise FormatError(f"{path.name}: {name!r} is {list(shape)} in the params file but "
                              f"{list(expected[name])} in the program (wrong order or pairing)")
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        need(nbytes, f"data of {name!r}")
        load = (_mapped(path, dtype, shape, pos) if raw is None
                else _sliced(raw, dtype, shape, pos))
        refs[name] = TensorRef(name, shape, dtype, load, "parameter")
        pos += nbytes
    if pos != size:
        raise FormatError(f"{path.name}: {size - pos} trailing bytes after {len(names)} tensors "
                          "(params file does not belong to this program)")
    return refs


def _mapped(path: Path, dtype: np.dtype, shape: tuple[int, ...], offset: int):
    def load() -> np.ndarray:
        if not shape or 0 in shape:
            with open(path, "rb") as fh:
                fh.seek(offset)
                raw = fh.read(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
            return np.frombuffer(raw, dtype=dtype).reshape(shape)
        # copy-on-write: converted weights view these pages; a write never reaches the file
        return np.memmap(path, dtype=dtype, mode="c", offset=offset, shape=shape)

    return load


def _sliced(raw: bytes, dtype: np.dtype, shape: tuple[int, ...], offset: int):
    def load() -> np.ndarray:
        count = int(np.prod(shape, dtype=np.int64))
        return np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(shape)

    return load


# --- programs -> Source -----------------------------------------------------------------------

_DROP_ATTRS = {"op_callstack", "op_device", "op_namescope", "op_role", "op_role_var",
               "with_quant_attr"}


def _legacy(model: Path, data: bytes | None = None) -> dict[str, Any]:
    blocks = parse_program_desc(model.read_bytes() if data is None else data)
    main = blocks[0]
    vars_ = {v["name"]: v for v in main["vars"]}
    params = sorted(v["name"] for v in main["vars"]
                    if v["persistable"] and v["type"] == _LOD_TENSOR
                    and v["name"] not in ("feed", "fetch"))
    ops, inputs, outputs = [], [], []
    for op in main["ops"]:
        attrs = {k: v for k, v in op["attrs"].items() if k not in _DROP_ATTRS}
        slot = "Out" if op["type"] == "feed" else "X"
        if op["type"] in ("feed", "fetch") and not (
                op["outputs"] if op["type"] == "feed" else op["inputs"]).get(slot):
            raise FormatError(f"{model.name}: {op['type']} op without its {slot!r} variable")
        if op["type"] == "feed":
            name = op["outputs"]["Out"][0]
            v = vars_.get(name, {})
            inputs.append((attrs.get("col", 0), {"name": name, "shape": v.get("dims"),
                                                 "dtype": DTYPES.get(v.get("dtype"))}))
        elif op["type"] == "fetch":
            name = op["inputs"]["X"][0]
            v = vars_.get(name, {})
            outputs.append((attrs.get("col", 0), {"name": name, "shape": v.get("dims"),
                                                  "dtype": DTYPES.get(v.get("dtype"))}))
        ins = [(slot, a) for slot, args in sorted(op["inputs"].items()) for a in args]
        outs = [(slot, a) for slot, args in sorted(op["outputs"].items()) for a in args]
        ops.append({"op_type": op["type"], "inputs": [a for _, a in ins],
                    "outputs": [a for _, a in outs], "attrs": attrs,
                    "slots": {"inputs": op["inputs"], "outputs": op["outputs"]}})
    expected = {n: tuple(vars_[n]["dims"] or ()) for n in params}
    return {"program_format": "program-desc", "ops": ops, "params": params,
            "expected": expected, "blocks": len(blocks),
            "inputs": [v for _, v in sorted(inputs, key=lambda t: t[0])],
            "outputs": [v for _, v in sorted(outputs, key=lambda t: t[0])]}


_PIR_DIALECTS = {"0": "builtin", "1": "pd_op", "2": "cf", "3": "pd_kernel"}
_PIR_DTYPES = {"t_f32": "float32", "t_f16": "float16", "t_f64": "float64", "t_bf16": "uint16",
               "t_i64": "int64", "t_i32": "int32", "t_i16": "int16", "t_i8": "int8",
               "t_ui8": "uint8", "t_bool": "bool", "t_c64": "complex64", "t_c128": "complex128"}


def _pir_name(code: str) -> str:
    if code == "p":
        return "builtin.parameter"
    dialect, _, name = code.partition(".")
    return f"{_PIR_DIALECTS.get(dialect, dialect)}.{name}" if name else code


def _pir_value(at: Any) -> Any:
    if isinstance(at, dict) and "D" in at:
        d = at["D"]
        return [_pir_value(x) for x in d] if at.get("#", "").endswith("a_array") else d
    return at


def _pir_type(tt: Any) -> tuple[str | None, list[int] | None]:
    try:
        d = tt["D"]
        code = d[0]["#"].partition(".")[2]
        return _PIR_DTYPES.get(code, code), [int(x) for x in d[1]]
    except (KeyError, IndexError, TypeError, ValueError):
        return None, None


def _pir(model: Path, data: bytes | None = None) -> dict[str, Any]:
    try:
        doc = json.loads(model.read_text() if data is None else data.decode())
        block = doc["program"]["regions"][0]["blocks"][0]
        raw_ops = block["ops"]
        if not isinstance(raw_ops, list):
            raise TypeError("ops is not a list")
    except (ValueError, KeyError, IndexError, TypeError, RecursionError) as exc:
        raise FormatError(f"{model.name}: not a readable PIR program ({type(exc).__name__}: "
                          f"{str(exc)[:120]})") from exc
    try:
        return _pir_ops(doc, raw_ops)
    except (KeyError, IndexError, TypeError, AttributeError, ValueError, RecursionError) as exc:
        raise FormatError(f"{model.name}: malformed PIR program ({type(exc).__name__}: "
                          f"{str(exc)[:120]})") from exc


def _pir_ops(doc: Any, raw_ops: list[Any]) -> dict[str, Any]:
    names: dict[int, str] = {}
    ops, inputs, outputs, expected = [], [], [], {}
    unchecked: set[str] = set()
    for raw in raw_ops:
        op_type = _pir_name(raw.get("#", "?"))
        outs = raw.get("O", [])
        outs = [outs] if isinstance(outs, dict) else outs
        if op_type == "builtin.parameter":
            name = raw["A"][3]
            attrs = {"parameter_name": name}
            _, dims = _pir_type(outs[0].get("TT"))
            expected[name] = tuple(dims or ())
            oa = raw.get("OA")
            if isinstance(oa, list) and oa and oa[0] == 0:
                # not persistable (an RNN's dropout state): declared as a parameter but not
                # saved in the params file
                unchecked.add(name)
        else:
            attrs = {a["N"]: _pir_value(a["AT"]) for a in raw.get("A", [])
                     if isinstance(a, dict) and "N" in a}
            name = attrs.get("name") if op_type in ("pd_op.data", "pd_op.feed") else None
        out_names = []
        for i, o in enumerate(outs):
            vid = o.get("%")
            if vid is None:
                continue
            names[vid] = name if (name and i == 0) else f"%{vid}"
            out_names.append(names[vid])
        in_names = [names.get(i.get("%"), f"%{i.get('%')}") for i in raw.get("I", [])
                    if isinstance(i, dict)]
        if op_type in ("pd_op.data", "pd_op.feed") and outs:
            dtype, dims = _pir_type(outs[0].get("TT"))
            inputs.append({"name": name, "shape": dims, "dtype": dtype})
        if op_type in ("pd_op.fetch", "builtin.shadow_output"):
            dtype, dims = _pir_type(outs[0].get("TT")) if outs else (None, None)
            outputs.append({"name": attrs.get("name", attrs.get("output_name")),
                            "value": in_names[0] if in_names else None,
                            "shape": dims, "dtype": dtype})
        ops.append({"op_type": op_type, "inputs": in_names, "outputs": out_names,
                    "attrs": attrs})
    params = sorted(k for k in expected if k not in unchecked)
    expected = {k: v for k, v in expected.items() if k not in unchecked}
    return {"program_format": "pir", "ops": ops, "params": params, "expected": expected,
            "blocks": 1, "inputs": inputs, "outputs": outputs,
            "pir_version": doc.get("base_code", {}).get("version")}


def program_graph(ops: list[dict[str, Any]]) -> nx.DiGraph:
    """The op list as a DiGraph, same convention as the ONNX importer's graph."""
    g = nx.DiGraph()
    producer: dict[str, str] = {}
    for i, op in enumerate(ops):
        key = f"{op['op_type']}_{i}"
        g.add_node(key, op_type=op["op_type"], inputs=list(op["inputs"]),
                   outputs=list(op["outputs"]), attrs=op["attrs"], index=i,
                   **({"slots": op["slots"]} if "slots" in op else {}))
        for t in op["inputs"]:
            if t in producer:
                g.add_edge(producer[t], key, tensor=t)
        for t in op["outputs"]:
            producer[t] = key
    return g


#: Paddle ops that touch files, the network or Python (legacy names; PIR ``pd_op.NAME``):
#: an inference program has no business with them, and Paddle Inference would run them.
IO_OPS = frozenset({
    "save", "save_combine", "load", "load_combine", "py_func", "read_file", "read",
    "create_py_reader", "create_double_buffer_reader", "create_custom_reader", "open_files",
    "checkpoint_notify", "send", "recv", "send_v2", "recv_v2", "listen_and_serv",
    "send_barrier", "fetch_barrier", "recv_save", "sparse_tensor_load", "decode_jpeg",
    "enqueue", "dequeue", "queue_generator", "file_reader", "py_layer", "run_program",
})


def load_inference(path: Path) -> Source:
    """A Paddle inference model (program + ``.pdiparams``, or their folder) as a Source."""
    pair = find_model_files(path)
    if pair is None:
        raise FormatError(f"{path}: no Paddle inference model (.pdmodel/.json + .pdiparams)")
    model, params = pair
    from porter.importers import check_beside

    check_beside(params, model, "parameter file")
    if model.stat().st_size == 0:
        raise FormatError(f"{model}: empty program file")
    # the program is read once: parsed from, hashed and given to the reference as these bytes;
    # the weights file is opened once and mapped (a converted weight views it, no second
    # copy), and hashed and given to the reference through that descriptor, refused if it is
    # written in place meanwhile (a file renamed over it is never seen)
    from porter.importers.opened import OpenedFile

    model_bytes = model.read_bytes()
    weights = OpenedFile(params, model, "parameter file")
    prog = (_legacy(model, model_bytes) if model.suffix.lower() == ".pdmodel"
            else _pir(model, model_bytes))
    for op in prog["ops"]:
        name = str(op.get("op_type", ""))
        if name.rsplit(".", 1)[-1].rstrip("_") in IO_OPS:
            raise UnsafeSourceError(
                f"{model.name}: op {name!r} ({op.get('outputs') or op.get('inputs')}) reads, "
                "writes or runs something outside the model; porter refuses I/O and Python "
                "ops in Paddle programs")
    try:
        refs = read_combined_params(params, prog["params"], prog["expected"],
                                    weights.region(0, weights.size) if weights.size else b"")
    except struct.error as exc:
        raise FormatError(f"{params.name}: truncated or corrupt ({exc})") from exc
    meta = {k: prog[k] for k in ("program_format", "inputs", "outputs", "blocks")}
    meta.update({"model_file": model, "params_file": params, "files": [model, params],
                 "param_order": prog["params"]})

    def digest() -> str:
        h = hashlib.sha256()
        for f, data in sorted([(model, model_bytes), (params, weights)], key=lambda t: t[0]):
            h.update(f.name.encode() + b"\0")
            if isinstance(data, OpenedFile):
                data.feed(h)  # streamed through the descriptor, checked unchanged
            else:
                h.update(data)
        return h.hexdigest()

    meta["sha256"] = digest  # Source.sha256 takes it when first asked
    if "pir_version" in prog:
        meta["pir_version"] = prog["pir_version"]
    # a reference gets bytes(...) of each: the program's, and the weights read through the
    # same descriptor (refused if written since they were opened)
    return Source(path=path, format="paddle-inference", tensors=refs,
                  graph=program_graph(prog["ops"]), meta=meta,
                  native={model.name: model_bytes, params.name: weights})
