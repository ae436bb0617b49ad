"""An allow-list unpickler: numpy arrays and plain containers, nothing that can run code.

Paddle's ``.pdparams``/``.pdopt`` are pickles. A pickle is a program: ``GLOBAL`` + ``REDUCE``
calls any importable callable (``os.system``, ``builtins.eval``). :class:`SafeUnpickler` resolves
only the globals in :data:`ALLOWED` (numpy's array/dtype/scalar reconstructors, wrapped so their
arguments are checked too, and builtin containers); any other global, any persistent id, an
object-dtype array or an ndarray subclass raises :class:`~porter.errors.UnsafeSourceError`
naming what was refused, before anything is called. Paddle is never imported.
"""

from __future__ import annotations

import builtins
import codecs
import collections
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from porter.errors import FormatError, UnsafeSourceError

__all__ = ["SafeUnpickler", "safe_load", "safe_loads", "ALLOWED"]


def _check_dtype(dt: np.dtype, where: str) -> np.dtype:
    if dt.hasobject:
        raise UnsafeSourceError(f"pickle refused: {where} with object dtype {dt}")
    return dt


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """numpy's ``_reconstruct`` restricted to plain ndarrays (no subclasses, no objects)."""
    if subtype is not np.ndarray:
        raise UnsafeSourceError(f"pickle refused: array subclass {subtype!r}")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _dtype(*args: Any) -> np.dtype:
    return _check_dtype(np.dtype(*args), "dtype")


def _scalar(dtype: Any, *args: Any) -> Any:
    from numpy._core.multiarray import scalar

    _check_dtype(np.dtype(dtype), "scalar")
    return scalar(dtype, *args)


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    from numpy._core.numeric import _frombuffer

    _check_dtype(np.dtype(dtype), "array")
    return _frombuffer(buf, dtype, shape, order)


def _codecs_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """Protocol-2 pickles spell ``bytes`` as ``_codecs.encode(str, 'latin1')``; only that."""
    if not isinstance(obj, str) or codecs.lookup(encoding).name not in ("iso8859-1", "utf-8"):
        raise UnsafeSourceError(f"pickle refused: _codecs.encode({type(obj).__name__}, "
                                f"{encoding!r})")
    return codecs.encode(obj, encoding, errors)


_NUMPY = {
    "multiarray._reconstruct": _reconstruct,
    "multiarray.scalar": _scalar,
    "numeric._frombuffer": _frombuffer,
}

#: (module, name) -> the object the unpickler hands out for it.
ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _codecs_encode,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{("builtins", n): getattr(builtins, n)
       for n in ("dict", "list", "tuple", "set", "frozenset", "bytearray", "complex")},
}
for _prefix in ("numpy.core", "numpy._core"):
    for _key, _fn in _NUMPY.items():
        _mod, _, _name = _key.rpartition(".")
        ALLOWED[(f"{_prefix}.{_mod}", _name)] = _fn


class SafeUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only :data:`ALLOWED` globals and no persistent ids."""

    def find_class(self, module: str, name: str) -> Any:
        fn = ALLOWED.get((module, name))
        if fn is None:
            raise UnsafeSourceError(f"pickle refused: global {module}.{name} is not allowed "
                                    "(porter only reads numpy arrays and plain containers)")
        return fn

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeSourceError(f"pickle refused: persistent id {str(pid)[:60]!r}")


def _walk_check(obj: Any, depth: int = 0) -> None:
    """Refuse object arrays that slipped in through ``ndarray.__setstate__``."""
    if depth > 100:
        raise UnsafeSourceError("pickle refused: nesting deeper than 100 levels")
    if isinstance(obj, np.ndarray):
        _check_dtype(obj.dtype, "array")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _walk_check(k, depth + 1)
            _walk_check(v, depth + 1)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for v in obj:
            _walk_check(v, depth + 1)


def safe_loads(data: bytes, what: str = "pickle") -> Any:
    """Unpickle ``data`` with :class:`SafeUnpickler`; corrupt data raises FormatError."""
    return _load(io.BytesIO(data), what)


def safe_load(path: str | Path) -> Any:
    """Unpickle the file at ``path`` with :class:`SafeUnpickler`."""
    path = Path(path)
    with open(path, "rb") as fh:
        return _load(fh, str(path))


def _load(fh: Any, what: str) -> Any:
    unpickler = SafeUnpickler(fh, encoding="latin1")
    try:
        obj = unpickler.load()
    except UnsafeSourceError as exc:
        raise UnsafeSourceError(f"{what}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, MemoryError, OverflowError) as exc:
        raise FormatError(f"{what}: not a readable pickle (truncated or corrupt: "
                          f"{type(exc).__name__}: {exc})") from exc
    _walk_check(obj)
    return obj
