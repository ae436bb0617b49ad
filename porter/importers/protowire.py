"""Protocol-buffer wire format, decoded without any framework's generated code.

TensorFlow's checkpoint index, GraphDef and MetaGraphDef and Paddle's ProgramDesc are protobuf
messages; porter reads them with this small decoder so that opening a model never imports the
framework. Malformed input raises FormatError, never IndexError.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from porter.errors import FormatError

__all__ = ["varint", "iter_fields"]


def varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``; returns (value, new position)."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise FormatError("truncated protobuf varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise FormatError("malformed protobuf varint (too long)")


_FIXED = {1: 8, 5: 4}


def iter_fields(buf: bytes | memoryview) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) in order: an int for varints, a memoryview of the raw
    bytes for length-delimited and fixed32/fixed64 fields."""
    if not isinstance(buf, (bytes, bytearray, memoryview)):
        raise FormatError(f"malformed protobuf (a {type(buf).__name__} where a message belongs)")
    buf = memoryview(buf)
    pos, n = 0, len(buf)
    while pos < n:
        key, pos = varint(buf, pos)
        num, wire = key >> 3, key & 7
        if num == 0:
            raise FormatError("malformed protobuf (field number 0)")
        if wire == 0:
            val, pos = varint(buf, pos)
        elif wire == 2 or wire in _FIXED:
            if wire == 2:
                size, pos = varint(buf, pos)
            else:
                size = _FIXED[wire]
            if pos + size > n:
                raise FormatError(f"truncated protobuf field {num}")
            val = buf[pos:pos + size]
            pos += size
        else:
            raise FormatError(f"malformed protobuf (wire type {wire} for field {num})")
        yield num, wire, val
