"""An allow-list unpickler: numpy arrays and plain containers, nothing that can run code.

Paddle's ``.pdparams``/``.pdopt`` are pickles. A pickle is a program: ``GLOBAL`` + ``REDUCE``
calls any importable callable (``os.system``, ``builtins.eval``). :class:`SafeUnpickler` resolves
only the globals in :data:`ALLOWED`, and none of them is a numpy constructor: numpy's array,
dtype and scalar reconstructors are replaced by placeholders that record their arguments, and the
arrays are rebuilt by porter from checked bytes (shape x itemsize == byte length, plain numeric
dtypes only, no field offsets, no buffer offsets). Any other global, any persistent id, an
object-dtype array or an ndarray subclass raises :class:`~porter.errors.UnsafeSourceError`
naming what was refused, before anything is called. The work is bounded: the file's size, the
bytes the arrays copy (at most the file's size), the nesting depth, and a walk that visits each
shared object once. Paddle is never imported.
"""

from __future__ import annotations

import builtins
import codecs
import collections
import hashlib
import io
import os
import pickle
import pickletools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from porter.errors import FormatError, UnsafeSourceError

__all__ = ["SafeUnpickler", "safe_load", "safe_loads", "safe_load_file", "ALLOWED", "MAX_PICKLE_BYTES"]

#: Largest pickle file porter reads (bytes); ``PORTER_MAX_PICKLE_BYTES`` raises it.
MAX_PICKLE_BYTES = int(os.environ.get("PORTER_MAX_PICKLE_BYTES", 16 << 30))
_MAX_DEPTH = 100
_KINDS = "biufcSU"  # bool, ints, floats, complex, fixed bytes/str: no objects, voids, fields
_DTYPE_SPEC = re.compile(r"^[<>|=]?[a-zA-Z][a-zA-Z0-9]{0,12}$")


def _refuse(msg: str) -> UnsafeSourceError:
    return UnsafeSourceError(f"pickle refused: {msg}")


def _plain_dtype(spec: Any, where: str) -> np.dtype:
    """A builtin numeric (or fixed string) dtype from a short type code, nothing else."""
    if isinstance(spec, _Dtype):
        return spec.value()
    if not isinstance(spec, str) or not _DTYPE_SPEC.match(spec):
        raise _refuse(f"{where} with dtype {str(spec)[:40]!r} (only plain type codes)")
    try:
        dt = np.dtype(spec)
    except TypeError as exc:
        raise FormatError(f"unknown dtype {spec!r} in {where}") from exc
    if dt.hasobject:
        raise _refuse(f"{where} with object dtype {dt}")
    if dt.kind not in _KINDS or dt.fields is not None or dt.subdtype is not None:
        raise _refuse(f"{where} with dtype {dt} (only plain numeric dtypes)")
    if dt.itemsize > 1 << 20:
        raise _refuse(f"{where} with a {dt.itemsize}-byte element")
    return dt


class _Dtype:
    """Placeholder for ``numpy.dtype(spec)``; BUILD may only set its byte order."""

    def __init__(self, spec: Any, align: Any = False, copy: Any = True) -> None:
        self.dtype = _plain_dtype(spec, "dtype")
        self.order: str | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (8, 9) or state[0] not in (3, 4):
            raise _refuse("dtype state is not numpy's plain (version, byteorder, ...) tuple")
        order, subarray, names, fields = state[1:5]
        if subarray is not None or names is not None or fields is not None:
            raise _refuse("dtype state with sub-arrays or fields (offsets are not allowed)")
        if order not in ("<", ">", "|", "="):
            raise _refuse(f"dtype byte order {str(order)[:10]!r}")
        elsize = state[5]
        if not isinstance(elsize, int) or elsize not in (-1, self.dtype.itemsize):
            if self.dtype.kind in "SU" and isinstance(elsize, int) and 0 < elsize <= 1 << 20:
                self.dtype = np.dtype(f"{self.dtype.kind}{elsize // (4 if self.dtype.kind == 'U' else 1)}")
            else:
                raise _refuse(f"dtype state with element size {str(elsize)[:20]}")
        self.order = order

    def value(self) -> np.dtype:
        if self.order in ("<", ">") and self.dtype.itemsize > 1:
            return self.dtype.newbyteorder(self.order)
        return self.dtype


class _NDArrayType:
    """What the unpickler hands out for ``numpy.ndarray``: a marker, never callable."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise _refuse("numpy.ndarray(...) called directly (buffer/offset constructor)")


_NDARRAY = _NDArrayType()


class _Budget:
    """Bytes the rebuilt arrays may copy: a pickle cannot hold more data than its own size."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def take(self, n: int, where: str) -> None:
        self.left -= n
        if self.left < 0:
            raise _refuse(f"{where}: arrays would copy more bytes than the file holds "
                          "(shared buffers reused many times)")


def _shape(shape: Any, where: str) -> tuple[int, ...]:
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, tuple) or len(shape) > 32 or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 48 for d in shape):
        raise FormatError(f"{where}: bad array shape {str(shape)[:60]}")
    return shape


def _from_bytes(raw: Any, dtype: np.dtype, shape: tuple[int, ...], fortran: bool,
                budget: _Budget, where: str) -> np.ndarray:
    if isinstance(raw, str):  # python-2 pickles carry bytes as latin-1 text
        raw = raw.encode("latin1")
    if not isinstance(raw, (bytes, bytearray)):
        raise _refuse(f"{where}: array data is {type(raw).__name__}, not bytes")
    count = 1
    for d in shape:
        count *= d
    if count * dtype.itemsize != len(raw):
        raise FormatError(f"{where}: {len(raw)} data bytes for shape {shape} of {dtype} "
                          f"(needs {count * dtype.itemsize})")
    budget.take(len(raw), where)
    # bytes are immutable: the (read-only) array can share them instead of a second copy
    arr = np.frombuffer(raw if isinstance(raw, bytes) else bytes(raw), dtype=dtype)
    return arr.reshape(shape, order="F" if fortran else "C")


class _Array:
    """Placeholder for ``numpy.core.multiarray._reconstruct``; BUILD gives it checked state."""

    def __init__(self, budget: _Budget) -> None:
        self.budget = budget
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if self.array is not None:
            raise _refuse("array state set twice")
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise _refuse("array state is not numpy's (version, shape, dtype, fortran, data)")
        if len(state) == 5:
            state = state[1:]
        shape, dtype, fortran, raw = state
        dt = _plain_dtype(dtype, "array") if not isinstance(dtype, np.dtype) else dtype
        arr = _from_bytes(raw, dt, _shape(shape, "array"), bool(fortran), self.budget, "array")
        # numpy's own ndarray.__setstate__ hands back native byte order; so does porter
        self.array = arr if dt.isnative else arr.astype(dt.newbyteorder("="))


def _codecs_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """Protocol-2 pickles spell ``bytes`` as ``_codecs.encode(str, 'latin1')``; only that."""
    try:
        name = codecs.lookup(encoding).name if isinstance(encoding, str) else None
    except LookupError:
        name = None
    if not isinstance(obj, str) or name not in ("iso8859-1", "utf-8") or errors != "strict":
        raise _refuse(f"_codecs.encode({type(obj).__name__}, {str(encoding)[:20]!r})")
    return codecs.encode(obj, encoding, errors)


def _bytearray(data: Any = b"", *args: Any) -> bytearray:
    """``bytearray(bytes)`` only: ``bytearray(3_000_000_000)`` would allocate on command."""
    if isinstance(data, str) and args:
        data = _codecs_encode(data, *args)
    if not isinstance(data, (bytes, bytearray)) or (args and not isinstance(data, str)):
        raise _refuse(f"bytearray({type(data).__name__}) (only bytearray(bytes))")
    return bytearray(data)


#: (module, name) -> the object the unpickler hands out for it (resolved per unpickler).
ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Dtype,
    ("_codecs", "encode"): _codecs_encode,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "bytearray"): _bytearray,
    **{("builtins", n): getattr(builtins, n)
       for n in ("dict", "list", "tuple", "set", "frozenset", "complex")},
}
_NUMPY = ("multiarray._reconstruct", "multiarray.scalar", "numeric._frombuffer")
for _prefix in ("numpy.core", "numpy._core"):
    for _key in _NUMPY:
        _mod, _, _name = _key.rpartition(".")
        ALLOWED[(f"{_prefix}.{_mod}", _name)] = _key  # bound to the unpickler's budget below


class SafeUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only :data:`ALLOWED` globals and no persistent ids."""

    def __init__(self, file: Any, *, budget: int = MAX_PICKLE_BYTES, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self.budget = _Budget(budget)

    def find_class(self, module: str, name: str) -> Any:
        fn = ALLOWED.get((module, name))
        if fn is None:
            raise UnsafeSourceError(f"pickle refused: global {module}.{name} is not allowed "
                                    "(porter only reads numpy arrays and plain containers)")
        if fn == "multiarray._reconstruct":
            return self._reconstruct
        if fn == "multiarray.scalar":
            return self._scalar
        if fn == "numeric._frombuffer":
            return self._frombuffer
        return fn

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeSourceError(f"pickle refused: persistent id {str(pid)[:60]!r}")

    def _reconstruct(self, subtype: Any, shape: Any = (0,), dtype: Any = b"b") -> _Array:
        """numpy's ``_reconstruct`` restricted to plain ndarrays; the data comes via BUILD."""
        if subtype is not _NDARRAY:
            raise _refuse(f"array subclass {str(subtype)[:60]}")
        return _Array(self.budget)

    def _scalar(self, dtype: Any, raw: Any = None) -> Any:
        dt = _plain_dtype(dtype, "scalar")
        return _from_bytes(raw, dt, (), False, self.budget, "scalar")[()]

    def _frombuffer(self, buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
        if order not in ("C", "F"):
            raise _refuse(f"array order {str(order)[:10]!r}")
        if isinstance(buf, pickle.PickleBuffer):
            buf = bytes(buf.raw())
        return _from_bytes(buf, _plain_dtype(dtype, "array"), _shape(shape, "array"),
                           order == "F", self.budget, "array")


def _finish(obj: Any) -> Any:
    """Replace the placeholders by real numpy objects, visiting each shared object once."""
    done: dict[int, Any] = {}
    keep: list[Any] = []  # holds originals so ids stay unique during the walk

    def walk(o: Any, depth: int) -> Any:
        if isinstance(o, (str, bytes, int, float, complex, bool, type(None), np.generic,
                          np.ndarray)):
            return o
        key = id(o)
        if key in done:
            return done[key]
        if depth > _MAX_DEPTH:
            raise _refuse(f"nesting deeper than {_MAX_DEPTH} levels")
        keep.append(o)
        if isinstance(o, _Array):
            if o.array is None:
                raise _refuse("array without data (no BUILD state)")
            done[key] = o.array
        elif isinstance(o, _Dtype):
            done[key] = o.value()
        elif isinstance(o, dict):
            done[key] = o
            items = [(walk(k, depth + 1), walk(v, depth + 1)) for k, v in o.items()]
            o.clear()
            o.update(items)
        elif isinstance(o, list):
            done[key] = o
            o[:] = [walk(v, depth + 1) for v in o]
        elif isinstance(o, tuple):
            done[key] = tuple(walk(v, depth + 1) for v in o)
        elif isinstance(o, (set, frozenset)):
            done[key] = type(o)(walk(v, depth + 1) for v in o)
        else:  # bytearray, or what a subclass's own allow-list builds
            done[key] = o
        return done[key]

    return walk(obj, 0)


def safe_loads(data: bytes, what: str = "pickle") -> Any:
    """Unpickle ``data`` with :class:`SafeUnpickler`; corrupt data raises FormatError."""
    return _load(bytes(data), what)


def safe_load(path: str | Path) -> Any:
    """Unpickle the file at ``path`` with :class:`SafeUnpickler`."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_PICKLE_BYTES:
                raise FormatError(f"{path}: {size} bytes is over porter's pickle limit of "
                                  f"{MAX_PICKLE_BYTES} (raise PORTER_MAX_PICKLE_BYTES to read it)")
            data = fh.read()
    except OSError as exc:
        raise FormatError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    return _load(data, str(path))


def _prescan(data: bytes) -> None:
    """Walk the opcodes without running them: lengths that run past the end and memo slots
    far beyond the opcodes seen would make the C unpickler allocate what the header claims."""
    ops = 0
    for op, arg, _ in pickletools.genops(data):
        ops += 1
        if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and not 0 <= int(arg) <= ops:
            raise FormatError(f"memo slot {arg} after {ops} opcodes (corrupt)")
        if op.name == "STOP":
            return


def _load(data: bytes, what: str) -> Any:
    unpickler = SafeUnpickler(io.BytesIO(data), encoding="latin1", budget=len(data))
    with _errors(what):
        _prescan(data)
        return _finish(unpickler.load())


class _HashingReader:
    """A file's ``read``/``readline`` that feed sha256 with every byte handed out."""

    def __init__(self, fh: Any, size: int) -> None:
        self.fh, self.h, self.left = fh, hashlib.sha256(), size

    def read(self, n: int = -1) -> bytes:
        # never ask for more than the file holds: a length field claiming 4 GiB must not
        # make the reader allocate 4 GiB before finding the file short
        b = self.fh.read(self.left if n is None or n < 0 else min(n, self.left))
        self.left -= len(b)
        self.h.update(b)
        return b

    def readline(self) -> bytes:
        b = self.fh.readline()
        self.left -= len(b)
        self.h.update(b)
        return b

    def finish(self) -> str:
        """Hash the rest of the file (bytes after STOP) and return the digest."""
        while block := self.fh.read(8 << 20):
            self.h.update(block)
        return self.h.hexdigest()


def safe_load_file(path: str | Path, what: str | None = None) -> tuple[Any, str]:
    """(object, sha256 of the bytes read) for the pickle file at ``path``, read as a stream.

    The file is read twice, opcode prescan then load, and never held whole: memory is what
    the rebuilt arrays need, not the file's size on top. Both passes are hashed and must read
    the same bytes, so a file that changes between them is refused rather than half-trusted.
    """
    path = Path(path)
    what = what or str(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            reader = _HashingReader(fh, size)
            with _errors(what):
                _prescan(reader)
            first = reader.finish()
            fh.seek(0)
            reader = _HashingReader(fh, size)
            unpickler = SafeUnpickler(reader, encoding="latin1", budget=size)
            with _errors(what):
                obj = _finish(unpickler.load())
            second = reader.finish()
    except OSError as exc:
        raise FormatError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if first != second:
        raise FormatError(f"{what}: the file changed while porter read it")
    return obj, first


@contextmanager
def _errors(what: str) -> Iterator[None]:
    """Map what unpickling corrupt data raises to one FormatError / UnsafeSourceError line."""
    try:
        yield
    except UnsafeSourceError as exc:
        raise UnsafeSourceError(f"{what}: {exc}") from None
    except FormatError as exc:
        raise FormatError(f"{what}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, MemoryError, OverflowError, LookupError, RecursionError,
            UnicodeError, SystemError) as exc:
        raise FormatError(f"{what}: not a readable pickle (truncated or corrupt: "
                          f"{type(exc).__name__}: {str(exc)[:200]})") from exc
