"""Write a ``.safetensors`` file in one pass, hashing the bytes as they go out.

``safetensors.torch.save_file`` writes fast but gives no digest, so porter used to write the file
and then read it back to hash it: the read-back costs as much as the write again. This writer
emits the format itself (an 8-byte little-endian header length, the JSON header padded with
spaces to a multiple of 8, then each tensor's raw little-endian bytes, tensors ordered as
safetensors orders them: widest dtype first, then by name) and feeds every chunk it writes to
sha256 on a second thread, so hashing overlaps the write instead of following it. Tensors are
written straight from their memory (a memory-mapped source stays mapped: no copy is made), and
the output is checked bit-exact against safetensors' own reader by the tests.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

__all__ = ["write_safetensors", "DTYPES"]

CHUNK = 8 << 20  # bytes handed to write() and to sha256 at a time

#: torch dtype name -> (safetensors dtype, rank). The rank follows the declaration order of
#: safetensors' Dtype enum, which is how ``save_file`` orders tensors (highest rank first).
DTYPES: dict[str, tuple[str, int]] = {
    "bool": ("BOOL", 0), "uint8": ("U8", 4), "int8": ("I8", 5),
    "float8_e5m2": ("F8_E5M2", 6), "float8_e4m3fn": ("F8_E4M3", 7),
    "float8_e8m0fnu": ("F8_E8M0", 8),
    "int16": ("I16", 9), "uint16": ("U16", 10), "float16": ("F16", 11), "bfloat16": ("BF16", 12),
    "int32": ("I32", 13), "uint32": ("U32", 14), "float32": ("F32", 15),
    "complex64": ("C64", 16), "float64": ("F64", 17), "int64": ("I64", 18),
    "uint64": ("U64", 19),
}


def _raw(tensor: Any) -> tuple[str, int, list[int], memoryview]:
    """(safetensors dtype, rank, shape, bytes) of a torch tensor, without copying a CPU one."""
    import torch

    name = str(tensor.dtype).removeprefix("torch.")
    if name not in DTYPES:
        from porter.errors import OutputError

        raise OutputError(f"cannot write a {tensor.dtype} tensor to safetensors")
    st, rank = DTYPES[name]
    t = tensor.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    shape = [int(d) for d in t.shape]
    if t.numel() == 0:
        return st, rank, shape, memoryview(b"")
    flat = t.reshape(-1).view(torch.uint8)  # numpy has no bfloat16 / float8: go by bytes
    # numpy shares the tensor's memory; the memoryview keeps the tensor alive while it is used
    return st, rank, shape, memoryview(flat.numpy()).cast("B")


def _header(entries: Iterable[tuple[str, str, list[int], int]],
            metadata: Mapping[str, str] | None) -> bytes:
    head: dict[str, Any] = {}
    if metadata:
        head["__metadata__"] = {str(k): str(v) for k, v in sorted(metadata.items())}
    offset = 0
    for name, st, shape, nbytes in entries:
        head[name] = {"dtype": st, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(head, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-(len(text) + 8) % 8)
    return struct.pack("<Q", len(text)) + text


class _Hasher:
    """sha256 fed on one worker thread, in submission order (hashlib releases the GIL)."""

    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="porter-sha256")
        self.pending: list[Future] = []

    def feed(self, data: memoryview | bytes) -> Future:
        fut = self.pool.submit(self.h.update, data)
        self.pending.append(fut)
        if len(self.pending) > 4:  # bound the chunks in flight
            self.pending.pop(0).result()
        return fut

    def wait(self) -> None:
        """Block until every chunk fed so far is hashed (so a buffer can be reused)."""
        for f in self.pending:
            f.result()
        self.pending.clear()

    def hexdigest(self) -> str:
        self.wait()
        self.pool.shutdown()
        return self.h.hexdigest()


def write_safetensors(path: str | Path, tensors: Mapping[str, Any],
                      metadata: Mapping[str, str] | None = None,
                      release: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write ``tensors`` (name -> torch tensor) to ``path``; returns sha256, bytes, tensors.

    ``release(name)`` is called once a tensor's bytes are written and hashed, so a caller can
    drop its reference (and let a memory-mapped source's pages go) as the file grows.
    """
    if sys.byteorder != "little":  # safetensors is little-endian; porter writes native bytes
        from porter.errors import OutputError

        raise OutputError("writing safetensors needs a little-endian machine")
    order = sorted(tensors, key=lambda n: (-DTYPES.get(
        str(tensors[n].dtype).removeprefix("torch."), ("", -1))[1], n))
    raws = {}
    for name in order:
        st, _, shape, data = _raw(tensors[name])
        raws[name] = (st, shape, data)
    header = _header(((n, st, shape, data.nbytes) for n, (st, shape, data) in raws.items()),
                     metadata)
    hasher = _Hasher()
    total, count = 0, len(raws)
    with open(path, "wb", buffering=0) as fh:
        for data in _chunks(header, raws, release, hasher):
            hasher.feed(data)
            view = memoryview(data)
            while view.nbytes:  # a raw write may be short
                n = fh.write(view)
                view = view[n:]
            total += len(data)
    return {"sha256": hasher.hexdigest(), "bytes": total, "tensors": count}


def _chunks(header: bytes, raws: dict[str, tuple[str, list[int], memoryview]],
            release: Callable[[str], None] | None, hasher: _Hasher):
    yield header
    for name in list(raws):
        data = raws[name][2]
        for start in range(0, data.nbytes, CHUNK):
            yield data[start:start + CHUNK]
        del raws[name]
        if release is not None:
            hasher.wait()  # its bytes must be hashed before the caller lets them go
            release(name)
