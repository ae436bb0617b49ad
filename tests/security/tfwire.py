"""A minimal TF tensor-bundle writer for hostile test files (no TensorFlow needed).

Writes ``prefix.index`` (an SSTable: data blocks of key/value entries, an index block of block
handles, the 48-byte footer, each block with its type byte and masked CRC32C) and
``prefix.data-*``. Every field can be set to what a hostile file would claim.
"""

from __future__ import annotations

from pathlib import Path

from porter.importers.tf_bundle import _MAGIC, crc32c, mask_crc


def varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        out.append((v & 0x7F) | (0x80 if v > 0x7F else 0))
        v >>= 7
        if not v:
            return bytes(out)


def field(num: int, value: int | bytes) -> bytes:
    if isinstance(value, int):
        return varint(num << 3) + varint(value)
    return varint(num << 3 | 2) + varint(len(value)) + value


def fixed32(num: int, value: int) -> bytes:
    return varint(num << 3 | 5) + value.to_bytes(4, "little")


def header(num_shards: int = 1) -> bytes:
    return field(1, num_shards) + field(3, field(1, 1))


def entry(shape: tuple[int, ...], offset: int, size: int, crc: int, dtype: int = 1,
          shard: int = 0) -> bytes:
    dims = b"".join(field(2, field(1, d)) for d in shape)
    return (field(1, dtype) + field(2, dims) + field(3, shard) + field(4, offset)
            + field(5, size) + fixed32(6, crc))


def _with_trailer(contents: bytes, kind: int = 0) -> bytes:
    return contents + bytes([kind]) + mask_crc(crc32c(contents + bytes([kind]))).to_bytes(
        4, "little")


def handle(offset: int, size: int) -> bytes:
    return varint(offset) + varint(size)


def write_index(path: Path, items: list[tuple[bytes, bytes]], repeat_handle: int = 1,
                compressed: bytes | None = None) -> None:
    """One data block holding ``items`` (or the raw snappy block ``compressed``), referenced
    ``repeat_handle`` times by the index block."""
    data = compressed if compressed is not None else _body(items)
    blob = _with_trailer(data, 1 if compressed is not None else 0)
    h = handle(0, len(data))
    index_items = [(b"\xff" * (i + 1), h) for i in range(repeat_handle)]
    index = _body(index_items)
    index_off = len(blob)
    out = blob + _with_trailer(index)
    footer = handle(0, 0) + handle(index_off, len(index))
    footer = footer + bytes(40 - len(footer)) + _MAGIC.to_bytes(8, "little")
    path.write_bytes(out + footer)


def _body(items: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(varint(0) + varint(len(k)) + varint(len(v)) + k + v for k, v in items)
    return body + (0).to_bytes(4, "little") + (1).to_bytes(4, "little")


def write_bundle(prefix: Path, entries: list[tuple[str, bytes]], data: bytes,
                 num_shards: int = 1, **kw) -> None:
    """``prefix.index`` with the header and ``entries`` (name, BundleEntryProto bytes), plus
    ``prefix.data-00000-of-NNNNN`` holding ``data``."""
    items = [(b"", header(num_shards))] + [(k.encode(), v) for k, v in sorted(entries)]
    write_index(Path(f"{prefix}.index"), items, **kw)
    Path(f"{prefix}.data-00000-of-{num_shards:05d}").write_bytes(data)
