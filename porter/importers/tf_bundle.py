"""TensorFlow tensor-bundle V2 checkpoints (``prefix.index`` + ``prefix.data-*``), read without TF.

The ``.index`` is a LevelDB-style SSTable (``tensorflow/core/lib/io/table*.cc``): data blocks of
prefix-compressed key/value entries with restart points, an index block of block handles, a
48-byte footer ending in a magic number, and after every block a one-byte compression type
(none or snappy) and a masked CRC32C. Its keys are tensor names; its values BundleEntryProtos
saying which data shard holds the bytes, where, and their masked CRC32C. Partitioned variables
have a full-tensor entry listing slices, each slice stored under an OrderedCode-encoded key.
Every block and every tensor is checked against its CRC32C.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from porter.errors import FormatError
from porter.importers.opened import OpenedFile
from porter.importers.tf_proto import (
    BundleEntry,
    TensorSlice,
    dtype_name,
    np_dtype,
    parse_bundle_entry,
    parse_bundle_header,
    varint,
)

__all__ = ["crc32c", "mask_crc", "unmask_crc", "snappy_decompress", "read_table",
           "encode_tensor_name_slice", "BundleReader"]

# ------------------------------------------------------------------------------------- CRC32C

_POLY = 0x82F63B78  # Castagnoli, reflected


def _make_table() -> np.ndarray:
    table = np.zeros(256, np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        table[i] = c
    return table


_TABLE = _make_table()
_TABLE_PY = [int(x) for x in _TABLE]


def _update_py(state: int, data: bytes | memoryview) -> int:
    t = _TABLE_PY
    for b in bytes(data):
        state = t[(state ^ b) & 0xFF] ^ (state >> 8)
    return state


def _zeros_operator(n: int) -> list[int]:
    """Columns of the GF(2) 32x32 matrix that advances a raw CRC state over ``n`` zero bytes."""

    def apply(cols: list[int], x: int) -> int:
        out = 0
        k = 0
        while x:
            if x & 1:
                out ^= cols[k]
            x >>= 1
            k += 1
        return out

    one = [_update_py(1 << k, b"\0") for k in range(32)]
    result = [1 << k for k in range(32)]  # identity
    power = one
    while n:
        if n & 1:
            result = [apply(power, c) for c in result]
        n >>= 1
        if n:
            power = [apply(power, c) for c in power]
    return result


@lru_cache(maxsize=32)
def _zeros_tables(n: int) -> tuple[list[int], ...]:
    """The zero-advance operator as four byte lookup tables (one per byte of the state)."""
    cols = _zeros_operator(n)
    tables = []
    for byte in range(4):
        tab = []
        for v in range(256):
            out = 0
            for bit in range(8):
                if v >> bit & 1:
                    out ^= cols[8 * byte + bit]
            tab.append(out)
        tables.append(tab)
    return tuple(tables)


def _slice_tables() -> tuple[np.ndarray, ...]:
    """Slicing-by-4 tables: ``T[k][b]`` advances a CRC over byte ``b`` then ``k`` zero bytes."""
    tables = [_TABLE]
    for _ in range(3):
        tables.append((tables[-1] >> 8) ^ _TABLE[tables[-1] & 0xFF])
    return tuple(tables)


_T0, _T1, _T2, _T3 = _slice_tables()
#: Bytes one lane-parallel step covers: a long input is taken in steps this size, in order, so
#: a mapped tensor is read once front to back (its pages can go behind the reader).
CRC_STEP = 8 << 20


def _crc_lanes(buf: np.ndarray, state: int) -> int:
    """Advance the raw CRC ``state`` over ``buf`` (uint8, >= 4096 bytes): equal lanes whose raw
    CRCs numpy computes side by side, four bytes per step, chained at the end by the linear
    operator that shifts a state over a lane's length of zero bytes."""
    n = buf.size
    lanes = min(65536, max(64, int(math.isqrt(n))))
    length = n // lanes // 4 * 4
    words = buf[:lanes * length].reshape(lanes, length).view("<u4")
    raw = np.zeros(lanes, np.uint32)
    for j in range(0, words.shape[1], 16):  # 16 words of every lane at a time, made contiguous
        for w in np.ascontiguousarray(words[:, j:j + 16].T):
            x = raw ^ w
            raw = _T3[x & 0xFF] ^ _T2[(x >> 8) & 0xFF] ^ _T1[(x >> 16) & 0xFF] ^ _T0[x >> 24]
    t0, t1, t2, t3 = _zeros_tables(length)
    for r in raw.tolist():
        state = (t0[state & 0xFF] ^ t1[state >> 8 & 0xFF] ^ t2[state >> 16 & 0xFF]
                 ^ t3[state >> 24]) ^ r
    return _update_py(state, buf[lanes * length:].tobytes())


def crc32c(data: bytes | memoryview | np.ndarray, crc: int = 0,
           after_step: Callable[[np.ndarray], None] | None = None) -> int:
    """CRC32C (Castagnoli) of ``data``, continuing from ``crc`` like ``crc32c::Extend``.

    Large inputs go through numpy lanes (CRCs are linear over GF(2)), so pure Python stays
    fast; they are taken in :data:`CRC_STEP` steps front to back, and ``after_step`` (if given)
    gets each step's bytes once they are read.
    """
    buf = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data.view(
        np.uint8).reshape(-1)
    state = crc ^ 0xFFFFFFFF
    if buf.size < 4096:
        return _update_py(state, buf.tobytes()) ^ 0xFFFFFFFF
    for start in range(0, buf.size, CRC_STEP):
        part = buf[start:start + CRC_STEP]
        state = _crc_lanes(part, state) if part.size >= 4096 else _update_py(state,
                                                                             part.tobytes())
        if after_step is not None:
            after_step(part)
    return state ^ 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    """LevelDB/TF masking: rotate right by 15 and add a constant (so CRCs of CRCs differ)."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def unmask_crc(masked: int) -> int:
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


# ------------------------------------------------------------------------------------- snappy

#: Most shards a bundle header may declare; ``PORTER_MAX_TF_SHARDS`` raises it.
MAX_SHARDS = int(os.environ.get("PORTER_MAX_TF_SHARDS", 10_000))


def snappy_decompress(data: bytes | memoryview) -> bytes:
    """Decode a raw (unframed) snappy block: a varint length, then literals and back-copies.

    Snappy expands at most ~22x (a 3-byte copy tag yields 64 bytes), so a header claiming more
    is corrupt and refused before any work; output never grows past the header's size.
    """
    data = memoryview(data)
    size, pos = varint(data, 0)
    n = len(data)
    if size > 32 * n + 64:
        raise FormatError(f"corrupt snappy block (header says {size} bytes from {n})")
    out = bytearray()
    while pos < n:
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal; lengths >= 60 spill into 1-4 little-endian bytes
            length = tag >> 2
            if length >= 60:
                extra = length - 59
                length = int.from_bytes(data[pos:pos + extra], "little")
                pos += extra
            length += 1
            if pos + length > n or len(out) + length > size:
                raise FormatError("corrupt snappy block (literal runs past the end)")
            out += data[pos:pos + length]
            pos += length
            continue
        if kind == 1:
            length = 4 + ((tag >> 2) & 7)
            offset = ((tag >> 5) << 8) | data[pos]
            pos += 1
        elif kind == 2:
            length = (tag >> 2) + 1
            offset = int.from_bytes(data[pos:pos + 2], "little")
            pos += 2
        else:
            length = (tag >> 2) + 1
            offset = int.from_bytes(data[pos:pos + 4], "little")
            pos += 4
        if offset == 0 or offset > len(out):
            raise FormatError("corrupt snappy block (copy offset out of range)")
        if len(out) + length > size:
            raise FormatError(f"corrupt snappy block (decodes past the {size} bytes it declares)")
        start = len(out) - offset
        if offset >= length:
            out += out[start:start + length]
        else:  # overlapping copy repeats the last `offset` bytes
            out += (out[start:] * (length // offset + 1))[:length]
    if len(out) != size:
        raise FormatError(f"corrupt snappy block ({len(out)} bytes decoded, header says {size})")
    return bytes(out)


# ------------------------------------------------------------------------------------ SSTable

_FOOTER = 48
_MAGIC = 0xDB4775248B80FB57
_TRAILER = 5


def _handle(buf: memoryview, pos: int = 0) -> tuple[int, int, int]:
    offset, pos = varint(buf, pos)
    size, pos = varint(buf, pos)
    return offset, size, pos


def _read_block(data: memoryview, offset: int, size: int, where: str) -> memoryview:
    if offset < 0 or offset + size + _TRAILER > len(data):
        raise FormatError(f"{where}: truncated (block at {offset}+{size} past end of file)")
    contents = data[offset:offset + size]
    kind = data[offset + size]
    stored = int.from_bytes(data[offset + size + 1:offset + size + 5], "little")
    actual = crc32c(data[offset:offset + size + 1])
    if unmask_crc(stored) != actual:
        raise FormatError(f"{where}: block at offset {offset} fails its CRC32C check "
                          f"(stored {unmask_crc(stored):08x}, computed {actual:08x})")
    if kind == 0:
        return contents
    if kind == 1:
        return memoryview(snappy_decompress(contents))
    raise FormatError(f"{where}: block at offset {offset} has unknown compression type {kind}")


def _block_entries(block: memoryview, where: str) -> Iterator[tuple[bytes, memoryview]]:
    if len(block) < 4:
        raise FormatError(f"{where}: malformed block (too short)")
    restarts = int.from_bytes(block[-4:], "little")
    limit = len(block) - 4 * (restarts + 1)
    if limit < 0:
        raise FormatError(f"{where}: malformed block (bad restart count {restarts})")
    pos, key = 0, b""
    while pos < limit:
        shared, pos = varint(block, pos)
        unshared, pos = varint(block, pos)
        vlen, pos = varint(block, pos)
        if shared > len(key) or pos + unshared + vlen > limit:
            raise FormatError(f"{where}: malformed block entry at {pos}")
        key = key[:shared] + bytes(block[pos:pos + unshared])
        pos += unshared
        yield key, block[pos:pos + vlen]
        pos += vlen


def read_table(path: str | Path, raw: bytes | None = None) -> list[tuple[bytes, memoryview]]:
    """Every (key, value) of an SSTable file (or its bytes ``raw``, already read), in key
    order, with all block CRCs checked."""
    path = Path(path)
    try:
        data = memoryview(path.read_bytes() if raw is None else raw)
    except OSError as exc:
        raise FormatError(f"{path}: cannot read ({exc.strerror})") from exc
    if len(data) < _FOOTER:
        raise FormatError(f"{path}: truncated index ({len(data)} bytes, shorter than the footer)")
    footer = data[len(data) - _FOOTER:]
    if int.from_bytes(footer[-8:], "little") != _MAGIC:
        raise FormatError(f"{path}: not a TensorFlow checkpoint index (bad footer magic; "
                          "truncated or another format)")
    _, _, pos = _handle(footer)
    index_off, index_size, _ = _handle(footer, pos)
    index = _read_block(data, index_off, index_size, str(path))
    out: list[tuple[bytes, memoryview]] = []
    end = 0
    for _, handle in _block_entries(index, str(path)):
        off, size, _ = _handle(handle)
        if off < end:  # blocks follow each other: a handle repeated or pointing back is corrupt
            raise FormatError(f"{path}: corrupt index (data block at {off} overlaps or repeats "
                              "an earlier one)")
        end = off + size + _TRAILER
        out.extend(_block_entries(_read_block(data, off, size, str(path)), str(path)))
    return out


# ----------------------------------------------------------------------- OrderedCode slice keys

def _num_increasing(v: int) -> bytes:
    body = v.to_bytes((v.bit_length() + 7) // 8, "big") if v else b""
    return bytes([len(body)]) + body


def _signed_num_increasing(v: int) -> bytes:
    x = ~v if v < 0 else v
    length = x.bit_length() // 7 + 1  # 7 payload bits per byte, at most 10 bytes
    if length == 1:
        return bytes([(0x80 ^ v) & 0xFF])
    raw = bytearray((v & ((1 << (8 * length)) - 1)).to_bytes(length, "big"))
    # header: `length` one-bits from the top of the first two bytes (then the sign bit)
    header = ((1 << length) - 1) << (16 - length)
    raw[0] ^= header >> 8
    raw[1] ^= header & 0xFF
    return bytes(raw)


def _ordered_string(s: bytes) -> bytes:
    return s.replace(b"\xff", b"\xff\x00").replace(b"\x00", b"\x00\xff") + b"\x00\x01"


def encode_tensor_name_slice(name: str, tslice: TensorSlice) -> bytes:
    """The SSTable key TF stores one slice of a partitioned variable under."""
    key = _num_increasing(0) + _ordered_string(name.encode()) + _num_increasing(
        len(tslice.extents))
    for start, length in tslice.extents:
        key += _signed_num_increasing(start) + _signed_num_increasing(length)
    return key


# ------------------------------------------------------------------------------ bundle reader



class BundleReader:
    """The entries of one tensor bundle; ``read(name)`` returns a checked numpy array.

    The index is read once, on opening, into ``blobs`` (file name -> bytes). Each data shard
    is opened once, on opening, and read only through that descriptor
    (:class:`porter.importers.opened.OpenedFile`): big tensors are views of a private map of
    it, checked against their CRC32C on first read.
    :meth:`feed` and :meth:`read_file` give a digest and a reference the same bytes.
    """

    def __init__(self, prefix: str | Path) -> None:
        self.prefix = Path(prefix)
        self.index_path = Path(f"{self.prefix}.index")
        if not self.index_path.is_file():
            raise FormatError(f"{self.index_path}: checkpoint index not found")
        try:
            raw = self.index_path.read_bytes()
        except OSError as exc:
            raise FormatError(f"{self.index_path}: cannot read ({exc.strerror})") from exc
        self.blobs: dict[str, bytes] = {self.index_path.name: raw}
        table = read_table(self.index_path, raw)
        if not table or table[0][0] != b"":
            raise FormatError(f"{self.index_path}: checkpoint index has no bundle header")
        self.header = parse_bundle_header(table[0][1])
        self.entries: dict[str, BundleEntry] = {}
        self._slice_entries: dict[bytes, BundleEntry] = {}
        for key, value in table[1:]:
            if key[:1] == b"\x00":  # an OrderedCode slice key of a partitioned variable
                self._slice_entries[key] = parse_bundle_entry(value)
            else:
                self.entries[key.decode("utf-8", errors="replace")] = parse_bundle_entry(value)
        n = self.header["num_shards"]
        if not 0 <= n <= MAX_SHARDS:
            raise FormatError(f"{self.index_path}: bundle header declares {n} data shards, over "
                              f"porter's limit of {MAX_SHARDS} (raise PORTER_MAX_TF_SHARDS)")
        self.shards = [Path(f"{self.prefix}.data-{i:05d}-of-{n:05d}") for i in range(n)]
        used = {e.shard_id for e in (*self.entries.values(), *self._slice_entries.values())
                if e.size}
        missing = [self.shards[i] for i in sorted(used) if 0 <= i < n and
                   not self.shards[i].is_file()]
        if missing:  # say so on opening, not on the first read of a tensor
            raise FormatError(f"{missing[0]}: data shard missing"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        self._open: dict[str, OpenedFile] = {
            shard.name: OpenedFile(shard, self.index_path, "data shard") for shard in self.shards
            if shard.is_file()}
        self._checked: set[tuple[int, int, int]] = set()  # (shard, offset, size) CRC-checked

    def dtype(self, name: str) -> np.dtype:
        return np_dtype(self.entries[name].dtype)

    def dtype_name(self, name: str) -> str:
        return dtype_name(self.entries[name].dtype)

    def _raw(self, name: str, entry: BundleEntry) -> np.ndarray:
        if not 0 <= entry.shard_id < len(self.shards):
            raise FormatError(f"{self.index_path}: {name!r} names shard {entry.shard_id} of "
                              f"{len(self.shards)}")
        shard = self.shards[entry.shard_id]
        opened = self._open.get(shard.name)
        if opened is None:
            raise FormatError(f"{shard}: data shard missing (needed for {name!r})")
        dt = np_dtype(entry.dtype)
        count = int(np.prod(entry.shape, dtype=np.int64))
        if entry.offset < 0 or entry.size < 0 or entry.offset + entry.size > opened.size:
            raise FormatError(f"{shard}: {name!r} at offset {entry.offset} size {entry.size} "
                              f"lies outside the {opened.size}-byte shard")
        if any(d < 0 for d in entry.shape) or (dt.kind == "O" and count > entry.size) or (
                dt.kind != "O" and count * dt.itemsize != entry.size):
            raise FormatError(f"{shard}: {name!r} has {entry.size} bytes for shape "
                              f"{list(entry.shape)} of {dt}")
        if dt.kind == "O":
            return self._strings(name, opened.region(entry.offset, entry.size).tobytes(),
                                 count, entry)
        data = opened.region(entry.offset, entry.size)
        where = (entry.shard_id, entry.offset, entry.size)
        if where not in self._checked:  # once: the map is private and the file is watched
            from porter.mapped import release

            # a big tensor is read front to back, its pages let go behind the check (the
            # caller's first real use reads them again; many tensors never all resident)
            if unmask_crc(entry.crc32c) != crc32c(data, after_step=release):
                raise FormatError(f"{shard}: CRC32C mismatch for {name!r} (data corrupt)")
            self._checked.add(where)
        order = "<" if self.header["endianness"] == "little" else ">"
        arr = data.view(dt.newbyteorder(order) if dt.itemsize > 1 else dt)
        return arr.astype(dt, copy=False).reshape(entry.shape)

    def _strings(self, name: str, data: bytes, count: int, entry: BundleEntry) -> np.ndarray:
        # [varint64 len]*count, masked CRC32C of the lengths (as uint32), then the bytes
        view = memoryview(data)
        lengths, pos, crc = [], 0, 0
        for _ in range(count):
            n, pos = varint(view, pos)
            lengths.append(n)
            crc = crc32c(n.to_bytes(4 if n <= 0xFFFFFFFF else 8, "little"), crc)
        stored = data[pos:pos + 4]
        if len(stored) != 4 or unmask_crc(int.from_bytes(stored, "little")) != crc:
            raise FormatError(f"{self.shards[entry.shard_id]}: CRC32C mismatch for the string "
                              f"lengths of {name!r}")
        crc = crc32c(stored, crc)
        pos += 4
        out = np.empty(count, object)
        for i, n in enumerate(lengths):
            out[i] = data[pos:pos + n]
            pos += n
        crc = crc32c(view[pos - sum(lengths):pos], crc)
        if unmask_crc(entry.crc32c) != crc:
            raise FormatError(f"{self.shards[entry.shard_id]}: CRC32C mismatch for {name!r}")
        return out.reshape(entry.shape)

    def read(self, name: str) -> np.ndarray:
        """The full tensor ``name`` (assembled from its slices for a partitioned variable)."""
        entry = self.entries[name]
        if not entry.slices:
            return self._raw(name, entry)
        dt = np_dtype(entry.dtype)
        parts = [self._slice_entries.get(encode_tensor_name_slice(name, t)) for t in entry.slices]
        stored = sum(p.size for p in parts if p is not None)
        count = int(np.prod(entry.shape, dtype=np.int64))
        if any(d < 0 for d in entry.shape) or count * (dt.itemsize if dt.kind != "O" else 1) > (
                stored):
            raise FormatError(f"{self.index_path}: {name!r} of shape {list(entry.shape)} is "
                              f"larger than its {stored} bytes of slices")
        full = np.zeros(entry.shape, dt) if dt.kind != "O" else np.empty(entry.shape, object)
        for tslice in entry.slices:
            key = encode_tensor_name_slice(name, tslice)
            part = self._slice_entries.get(key)
            if part is None:
                raise FormatError(f"{self.index_path}: slice {tslice.extents} of {name!r} "
                                  "has no entry")
            index = tuple(slice(None) if length < 0 else slice(start, start + length)
                          for start, length in tslice.extents)
            full[index] = self._raw(f"{name}{list(tslice.extents)}", part)
        return full

    def files(self) -> list[Path]:
        return [self.index_path, *self.shards]

    def read_file(self, name: str) -> bytes:
        """The bytes of one of the bundle's files (by file name) as porter holds it open."""
        if name in self.blobs:
            return self.blobs[name]
        return self._open[name].read()

    def feed(self, h: Any, name: str) -> None:
        """Feed one of the bundle's files (by file name) into the hash ``h``, in blocks."""
        if name in self.blobs:
            h.update(self.blobs[name])
        else:
            self._open[name].feed(h)

    def file_names(self) -> list[str]:
        """Names of the files porter opened: the index and each present data shard."""
        return [self.index_path.name, *self._open]

    def check_unchanged(self) -> None:
        """Refuse if a data shard was written in place since porter opened it."""
        for shard in self._open.values():
            shard.check_unchanged()


def checkpoint_prefix(path: str | Path) -> Path | None:
    """The bundle prefix a path stands for: the prefix itself, its .index/.data file, a folder."""
    path = Path(path)
    text = os.fspath(path)
    if path.is_dir():
        state = path / "checkpoint"
        if state.is_file():
            for line in state.read_text(errors="replace").splitlines():
                key, _, value = line.partition(":")
                if key.strip() == "model_checkpoint_path":
                    named = Path(value.strip().strip('"'))
                    # only inside this folder: "/abs/x" and "../../x" never open another
                    # checkpoint; an absolute path from another machine keeps its file name
                    target = path / named
                    inside = not named.is_absolute() and path.resolve() in (
                        Path(f"{target}.index").resolve().parents)
                    if inside and Path(f"{target}.index").is_file():
                        return target
                    if named.name and Path(f"{path / named.name}.index").is_file():
                        return path / named.name
        indexes = sorted(path.glob("*.index"))
        return indexes[0].with_suffix("") if len(indexes) == 1 else None
    if text.endswith(".index") and path.is_file():
        return Path(text[:-len(".index")])
    if ".data-" in path.name and "-of-" in path.name:
        return Path(text[:text.rindex(".data-")])
    if Path(text + ".index").is_file():
        return path
    return None
