"""safetensors importer: ``.safetensors`` files and sharded ``*.safetensors.index.json`` folders.

A safetensors file is an 8-byte little-endian header length, a JSON header (name -> dtype,
shape, byte range) and one data buffer. porter validates the whole header before anything is
mapped: the length is bounded, every entry has a known dtype and a non-negative integer shape,
every byte range lies inside the file, ``dtype size x elements == range length``, ranges do not
overlap and leave no unaccounted bytes (the rules ``safetensors.safe_open`` applies). Tensors
are then memory-mapped read-only on first use. Shard files named by an index must lie inside
the index's folder and hold exactly the tensors the index assigns to them.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from porter.errors import FormatError, UnsafeSourceError
from porter.importers import importer, read_magic
from porter.source import Source, TensorRef

__all__ = ["load_safetensors", "read_header", "SAFETENSORS_DTYPES", "MAX_HEADER_BYTES"]

#: safetensors' own bound on the JSON header (100 MB).
MAX_HEADER_BYTES = 100_000_000
INDEX_SUFFIX = ".safetensors.index.json"


def _ml(name: str) -> np.dtype | None:
    try:
        import ml_dtypes
    except ImportError:  # bfloat16 / float8 tensors then refuse with a clear line
        return None
    return np.dtype(getattr(ml_dtypes, name))


#: safetensors dtype tag -> numpy dtype (little-endian); None where numpy has no such type.
SAFETENSORS_DTYPES: dict[str, np.dtype | None] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": _ml("bfloat16"), "F8_E4M3": _ml("float8_e4m3fn"), "F8_E5M2": _ml("float8_e5m2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"), "C64": np.dtype("<c8"),
}


def _sniff(path: Path) -> bool:
    name = path.name.lower()
    if path.is_file() and name.endswith(INDEX_SUFFIX):
        return True
    if path.is_file() and path.suffix.lower() == ".safetensors":
        return True
    # no suffix: a small header length followed by the JSON header's opening brace
    if path.is_file() and path.suffix == "":
        head = read_magic(path, 9)
        return len(head) == 9 and head[8:9] == b"{" and \
            struct.unpack("<Q", head[:8])[0] <= MAX_HEADER_BYTES
    return False


def read_header(path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, str], int]:
    """Validated ``(entries, metadata, data_start)`` of one safetensors file.

    ``entries`` maps a tensor name to ``{"dtype", "shape", "begin", "end"}`` (absolute file
    offsets). Any inconsistency raises FormatError naming the tensor; nothing is mapped.
    """
    size = path.stat().st_size
    if size < 8:
        raise FormatError(f"{path}: not a safetensors file ({size} bytes, no header length)")
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        if n > MAX_HEADER_BYTES:
            raise FormatError(f"{path}: safetensors header of {n} bytes exceeds the "
                              f"{MAX_HEADER_BYTES}-byte bound")
        if 8 + n > size:
            raise FormatError(f"{path}: safetensors header claims {n} bytes, the file has "
                              f"{size - 8} after the length")
        raw = fh.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path}: safetensors header is not valid JSON ({exc})") from exc
    if not isinstance(header, dict):
        raise FormatError(f"{path}: safetensors header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in meta.items()):
        raise FormatError(f"{path}: safetensors __metadata__ must map strings to strings")
    data_start, data_len = 8 + n, size - 8 - n
    entries: dict[str, dict[str, Any]] = {}
    for name, info in header.items():
        entries[name] = _check_entry(path, name, info, data_start, data_len)
    spans = sorted((e["begin"], e["end"], name) for name, e in entries.items())
    pos = data_start
    for begin, end, name in spans:
        if begin < pos:
            raise FormatError(f"{path}: tensor {name!r} overlaps the tensor before it "
                              f"(bytes {begin - data_start}..{end - data_start})")
        if begin > pos:
            raise FormatError(f"{path}: {begin - pos} unaccounted bytes before tensor {name!r}")
        pos = end
    if pos != size:
        raise FormatError(f"{path}: {size - pos} bytes after the last tensor are unaccounted")
    return entries, dict(meta), data_start


def _check_entry(path: Path, name: str, info: Any, data_start: int, data_len: int
                 ) -> dict[str, Any]:
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise FormatError(f"{path}: tensor {name!r}: header entry needs exactly dtype, shape "
                          "and data_offsets")
    tag, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if tag not in SAFETENSORS_DTYPES:
        raise FormatError(f"{path}: tensor {name!r} has unknown dtype {tag!r}")
    dtype = SAFETENSORS_DTYPES[tag]
    if dtype is None:
        raise FormatError(f"{path}: tensor {name!r} is {tag}, which needs the ml_dtypes package")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise FormatError(f"{path}: tensor {name!r} has a malformed shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(type(o) is int for o in offsets)):
        raise FormatError(f"{path}: tensor {name!r} has malformed data_offsets {offsets!r}")
    begin, end = offsets
    if not 0 <= begin <= end <= data_len:
        raise FormatError(f"{path}: tensor {name!r} bytes {begin}..{end} lie outside the "
                          f"{data_len}-byte data buffer")
    count = 1
    for d in shape:
        count *= d
    if count * dtype.itemsize != end - begin:
        raise FormatError(f"{path}: tensor {name!r}: {tag} x {shape} needs "
                          f"{count * dtype.itemsize} bytes, its range has {end - begin}")
    return {"dtype": dtype, "tag": tag, "shape": tuple(shape),
            "begin": data_start + begin, "end": data_start + end}


def _mapper(path: Path, entry: Mapping[str, Any]):
    def load() -> np.ndarray:
        shape, dtype = entry["shape"], entry["dtype"]
        if entry["end"] == entry["begin"]:
            return np.zeros(shape, dtype)
        arr = np.memmap(path, dtype=np.uint8, mode="r", offset=entry["begin"],
                        shape=(entry["end"] - entry["begin"],))
        return arr.view(dtype).reshape(shape)

    return load


def _refs(path: Path, entries: Mapping[str, Mapping[str, Any]]) -> dict[str, TensorRef]:
    return {name: TensorRef(name, e["shape"], e["dtype"], _mapper(path, e), "parameter")
            for name, e in entries.items()}


def _shard_path(base: Path, rel: Any) -> Path:
    if not isinstance(rel, str) or not rel or os.path.isabs(rel) or ".." in Path(rel).parts:
        raise UnsafeSourceError(f"shard {rel!r} is not a file name inside {base}")
    target = (base / rel).resolve()
    if base.resolve() not in target.parents:
        raise UnsafeSourceError(f"shard {rel!r} leads out of {base}")
    if not target.is_file():
        raise FormatError(f"shard {rel!r} named by the index is missing")
    return target


def _load_index(path: Path) -> Source:
    try:
        index = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{path}: not a readable safetensors index ({exc})") from exc
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise FormatError(f"{path}: safetensors index has no weight_map")
    by_shard: dict[str, set[str]] = {}
    for name, rel in weight_map.items():
        by_shard.setdefault(rel, set()).add(name)
    refs: dict[str, TensorRef] = {}
    files, metadata = [path], {}
    for rel, names in sorted(by_shard.items()):
        shard = _shard_path(path.parent, rel)
        entries, meta, _ = read_header(shard)
        if set(entries) != names:
            extra, missing = sorted(set(entries) - names), sorted(names - set(entries))
            raise FormatError(f"{shard}: holds other tensors than the index says "
                              f"(not in the index: {extra[:5]}, missing: {missing[:5]})")
        refs.update(_refs(shard, entries))
        metadata.update(meta)
        files.append(shard)
    order = {n: i for i, n in enumerate(weight_map)}
    refs = dict(sorted(refs.items(), key=lambda kv: order[kv[0]]))
    return Source(path=path, format="safetensors", tensors=refs,
                  meta={"metadata": metadata, "files": files, "shards": len(by_shard),
                        "index_metadata": index.get("metadata", {})})


@importer("safetensors", sniff=_sniff)
def load_safetensors(path: Path) -> Source:
    """A safetensors file (or a sharded index) as a Source; the header is validated up front."""
    if not path.is_file():
        raise FormatError(f"{path}: not a file")
    if path.name.lower().endswith(INDEX_SUFFIX):
        return _load_index(path)
    entries, meta, _ = read_header(path)
    return Source(path=path, format="safetensors", tensors=_refs(path, entries),
                  meta={"metadata": meta, "files": [path], "shards": 1})
