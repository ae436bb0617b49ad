"""Hostile ``.pdparams`` pickles (issue 10, cases 3, 7 and 9): each is refused in one line.

Every file here is built by hand from what the allow-list used to hand out: numpy's own dtype
and ndarray constructors (heap corruption / disclosure), containers shared through the memo
(exponential walks) and ``bytearray(n)`` (allocation on command).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from tests.security.conftest import assert_one_line_error, open_all


class _Reduce:
    """Pickles as ``fn(*args)`` followed by BUILD ``state`` when given."""

    def __init__(self, fn, args, state=None) -> None:
        self.fn, self.args, self.state = fn, args, state

    def __reduce__(self):
        return (self.fn, self.args) if self.state is None else (self.fn, self.args, self.state)


def _write(folder: Path, obj, protocol: int = 2) -> Path:
    path = folder / "evil.pdparams"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


def _array(dtype_obj, shape, raw: bytes) -> _Reduce:
    from numpy._core.multiarray import _reconstruct

    return _Reduce(_reconstruct, (np.ndarray, (0,), b"b"), (1, shape, dtype_obj, False, raw))


def test_dtype_field_offset_build_is_refused_before_numpy_sees_it(arena) -> None:
    """Case 3: a dtype whose BUILD state puts a field at offset 10**7, then the big-param join
    (np.concatenate) over arrays of it: an out-of-bounds write (SIGSEGV) on the old reader."""
    model, cwd = arena
    evil_dtype = _Reduce(np.dtype, ("V8", False, True),
                         (3, "|", None, ("a",), {"a": (np.dtype("f8"), 10 ** 7)}, 8, 1, 16))
    part = _array(evil_dtype, (2,), bytes(16))
    path = _write(model, {"UnpackBigParamInfor@@": {"w": {"slices": ["w@@.0", "w@@.1"],
                                                          "OriginShape": [4]}},
                          "w@@.0": part, "w@@.1": part})
    assert path.stat().st_size < 1024
    proc = open_all(path, cwd)
    assert proc.returncode != -11  # no segfault
    assert_one_line_error(proc, "refused")


def test_ndarray_buffer_offset_constructor_is_refused(arena) -> None:
    """Case 3: ``numpy.ndarray((65536,), 'u1', b'x'*16, -65536)`` hands back 64 KiB of heap."""
    model, cwd = arena
    path = _write(model, {"leak": _Reduce(np.ndarray, ((65536,), "u1", b"x" * 16, -65536))})
    assert path.stat().st_size < 200
    proc = open_all(path, cwd)
    assert_one_line_error(proc, "numpy.ndarray")
    assert "tensors" not in proc.stdout  # nothing was read back


def test_array_bytes_must_match_shape(arena) -> None:
    """Case 3: BUILD state claiming more elements than bytes (an over-read) is a FormatError."""
    model, cwd = arena
    path = _write(model, {"w": _array(np.dtype("f4"), (1 << 20,), bytes(8))})
    assert_one_line_error(open_all(path, cwd), "needs 4194304")


def test_memo_shared_lists_do_not_hang(arena) -> None:
    """Case 7: 40 levels of lists sharing their children through the memo (2**40 paths) in a
    ~300-byte file: the old nesting check walked every path."""
    model, cwd = arena
    nest: list = []
    for _ in range(40):
        nest = [nest, nest]
    nested_dicts: dict = {}
    for _ in range(40):
        nested_dicts = {"a": nested_dicts, "b": nested_dicts}
    path = _write(model, {"w": np.ones(2, "float32"), "x": nest})
    assert path.stat().st_size < 1024
    proc = open_all(path, cwd, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]  # read, in linear time
    path = _write(model, {"w": np.ones(2, "float32"), "x": nested_dicts})
    assert_one_line_error(open_all(path, cwd, timeout=60), "shared through the pickle memo")


@pytest.mark.parametrize("payload,match", [
    (b"\x80\x02cbuiltins\nbytearray\nJ\x00^\xd0\xb2\x85R.", "bytearray(int)"),  # 17 bytes, 3e9
    (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00nopez\x86R.", "nopez"),
    (b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8e\xff\xff\xff\xff\x00\x00\x00\x00.",
     "truncated or corrupt"),  # BINBYTES8 claiming 4 GiB in a 20-byte file
    (b"\x80\x02}r\xff\xff\xff\x7f.", "memo slot"),  # LONG_BINPUT 2**31-1: a 16 GiB memo
])
def test_tiny_files_cannot_allocate_or_escape_as_foreign_errors(arena, payload: bytes,
                                                               match: str) -> None:
    """Cases 7 and 9: allocation on command and unknown codecs are one-line porter errors."""
    model, cwd = arena
    path = model / "evil.pdparams"
    path.write_bytes(payload)
    assert_one_line_error(open_all(path, cwd, timeout=60), match)
