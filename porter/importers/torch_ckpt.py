"""PyTorch checkpoint importer (``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt``), without ``torch.load``.

Two layouts are read: the zip format of ``torch.save`` (``<root>/data.pkl`` plus one entry per
storage under ``<root>/data/``) and the legacy format (magic number, protocol, sys-info and the
object pickle, then the storage keys and each storage's bytes). The object pickle goes through
porter's allow-list unpickler (:mod:`porter.importers.safe_pickle`) extended, additively, with
the few torch globals a tensor needs (storage types, dtypes, ``torch._utils._rebuild_tensor*``,
``_rebuild_parameter``), each replaced by a porter function that only records *where* a tensor's
bytes are. Nothing from torch is called, so a pickle that names anything else is refused before
any call. Tensors are read lazily from their storage (memory-mapped when the zip entry is
stored uncompressed, as ``torch.save`` writes it) with their size, stride and offset checked.

Checkpoints usually wrap the state dict: ``{"model_state_dict": …}``, ``{"state_dict": …}``,
``{"model": …, "optimizer": …}``, a ``module.`` prefix from DataParallel, EMA copies. The
branch used, the prefix stripped and everything dropped are recorded in ``source.meta``.
"""

from __future__ import annotations

import functools
import io
import os
import pickle
import re
import struct
import zipfile
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from porter.errors import FormatError, UnsafeSourceError
from porter.importers import importer, read_magic
from porter.importers.safe_pickle import ALLOWED, SafeUnpickler, _finish
from porter.source import Source, TensorRef

__all__ = ["load_torch_checkpoint", "read_checkpoint", "resolve_state_dict", "TORCH_ALLOWED",
           "STATE_DICT_KEYS", "EMA_KEYS"]

SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_PICKLE_PROTO = b"\x80"


def _ml(name: str) -> np.dtype | None:
    try:
        import ml_dtypes
    except ImportError:
        return None
    return np.dtype(getattr(ml_dtypes, name))


# torch dtype name -> numpy dtype (little-endian, as torch.save writes on every supported host)
_DTYPES: dict[str, np.dtype | None] = {
    "float32": np.dtype("<f4"), "float64": np.dtype("<f8"), "float16": np.dtype("<f2"),
    "bfloat16": _ml("bfloat16"), "int64": np.dtype("<i8"), "int32": np.dtype("<i4"),
    "int16": np.dtype("<i2"), "int8": np.dtype("i1"), "uint8": np.dtype("u1"),
    "bool": np.dtype("?"), "complex64": np.dtype("<c8"), "complex128": np.dtype("<c16"),
    "uint16": np.dtype("<u2"), "uint32": np.dtype("<u4"), "uint64": np.dtype("<u8"),
    "float8_e4m3fn": _ml("float8_e4m3fn"), "float8_e5m2": _ml("float8_e5m2"),
}
# legacy typed-storage class name -> torch dtype name
_STORAGES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
    "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
}


@dataclass(frozen=True)
class _StorageType:
    """What ``torch.FloatStorage`` (or ``torch.UntypedStorage``) unpickles to here."""

    dtype: str | None  # None for UntypedStorage (the dtype comes with _rebuild_tensor_v3)


@dataclass(frozen=True)
class _DType:
    """What ``torch.float8_e4m3fn`` & co. unpickle to here."""

    name: str


@dataclass
class _Storage:
    """One storage of the checkpoint: its key, element dtype and element count."""

    key: str
    dtype: str | None
    numel: int


@dataclass
class _TensorSpec:
    """Where one tensor lives: a storage plus offset, size and stride (in elements)."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: str
    parameter: bool = False


def _int_tuple(x: Any, what: str) -> tuple[int, ...]:
    if not isinstance(x, (tuple, list)) or not all(type(v) is int for v in x):
        raise UnsafeSourceError(f"pickle refused: tensor {what} {x!r} is not a tuple of ints")
    return tuple(x)


def _check_hooks(hooks: Any) -> None:
    if hooks not in (None, {}, OrderedDict()) and not (isinstance(hooks, dict) and not hooks):
        raise UnsafeSourceError("pickle refused: tensor carries backward hooks")


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any) -> _TensorSpec:
    if not isinstance(storage, _Storage) or type(offset) is not int or offset < 0:
        raise UnsafeSourceError("pickle refused: _rebuild_tensor without a storage")
    if storage.dtype is None:
        raise UnsafeSourceError("pickle refused: untyped storage without a dtype")
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(size) != len(stride) or any(d < 0 for d in size) or any(s < 0 for s in stride):
        raise UnsafeSourceError(f"pickle refused: tensor size {size} / stride {stride}")
    return _TensorSpec(storage, offset, size, stride, storage.dtype)


def _rebuild_tensor_v2(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any,
                       hooks: Any, metadata: Any = None) -> _TensorSpec:
    _check_hooks(hooks)
    if metadata:  # conj / neg bits: a lazy view of the raw bytes would be wrong
        raise UnsafeSourceError(f"pickle refused: tensor metadata {metadata!r} is not supported")
    return _rebuild_tensor(storage, offset, size, stride)


def _rebuild_tensor_v3(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any,
                       hooks: Any, dtype: Any, metadata: Any = None) -> _TensorSpec:
    if not isinstance(dtype, _DType) or not isinstance(storage, _Storage):
        raise UnsafeSourceError("pickle refused: _rebuild_tensor_v3 without a dtype")
    if storage.dtype is None:  # an untyped storage counts bytes: recount in elements once
        dt = _DTYPES.get(dtype.name)
        if dt is None:
            raise UnsafeSourceError(f"pickle refused: unsupported dtype {dtype.name}")
        if storage.numel % dt.itemsize:
            raise UnsafeSourceError(f"pickle refused: {storage.numel} bytes are not whole "
                                    f"{dtype.name} elements")
        storage.dtype, storage.numel = dtype.name, storage.numel // dt.itemsize
    elif storage.dtype != dtype.name:
        raise UnsafeSourceError(f"pickle refused: storage {storage.key} read as both "
                                f"{storage.dtype} and {dtype.name}")
    spec = _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, metadata)
    spec.dtype = dtype.name
    return spec


def _rebuild_parameter(data: Any, requires_grad: Any, hooks: Any, state: Any = None
                       ) -> _TensorSpec:
    if not isinstance(data, _TensorSpec):
        raise UnsafeSourceError("pickle refused: _rebuild_parameter without a tensor")
    _check_hooks(hooks)
    if state:
        raise UnsafeSourceError("pickle refused: parameter with extra python state")
    data.parameter = True
    return data


#: ALLOWED plus the torch globals a plain tensor checkpoint needs, each a recorder.
TORCH_ALLOWED: dict[tuple[str, str], Any] = {
    **ALLOWED,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "UntypedStorage"): _StorageType(None),
    ("torch.storage", "UntypedStorage"): _StorageType(None),
    **{("torch", name): _StorageType(dt) for name, dt in _STORAGES.items()},
    **{("torch", name): _DType(name) for name in _DTYPES},
}


class _CheckpointUnpickler(SafeUnpickler):
    """SafeUnpickler with :data:`TORCH_ALLOWED` and storage persistent ids."""

    def __init__(self, fh: Any, legacy: bool) -> None:
        super().__init__(fh, encoding="latin1")
        self.legacy = legacy
        self.storages: dict[str, _Storage] = {}
        self.views: dict[str, tuple[str, int, int]] = {}

    def find_class(self, module: str, name: str) -> Any:
        fn = TORCH_ALLOWED.get((module, name))
        if fn is None:
            raise UnsafeSourceError(f"pickle refused: global {module}.{name} is not allowed "
                                    "(porter reads tensors and plain containers only)")
        return fn

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid or pid[0] not in ("storage", b"storage"):
            raise UnsafeSourceError(f"pickle refused: persistent id {str(pid)[:60]!r}")
        fields = pid[1:]
        if len(fields) != (5 if self.legacy else 4):
            raise UnsafeSourceError(f"pickle refused: malformed storage id {str(pid)[:60]!r}")
        stype, key, _location, numel = fields[:4]
        if not isinstance(stype, _StorageType) or type(numel) is not int or numel < 0:
            raise UnsafeSourceError(f"pickle refused: malformed storage id {str(pid)[:60]!r}")
        key = key.decode(errors="replace") if isinstance(key, bytes) else str(key)
        if not _PLAIN_KEY.fullmatch(key):  # torch writes str(int); a key names a zip entry
            raise UnsafeSourceError(f"pickle refused: storage key {key[:60]!r} is not a plain "
                                    "name")
        st = self.storages.get(key)
        if st is None:
            st = self.storages[key] = _Storage(key, stype.dtype, numel)
        if self.legacy and fields[4] is not None:  # a view into a bigger legacy storage
            view_key, offset, view_numel = fields[4]
            self.views[str(view_key)] = (key, int(offset), int(view_numel))
            return _Storage(f"{key}@{offset}", stype.dtype, int(view_numel))
        return st


def _unpickle(fh: Any, what: str, legacy: bool) -> tuple[Any, _CheckpointUnpickler]:
    up = _CheckpointUnpickler(fh, legacy)
    try:
        obj = up.load()
    except UnsafeSourceError as exc:
        raise UnsafeSourceError(f"{what}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
            AttributeError, MemoryError, OverflowError, RecursionError) as exc:
        raise FormatError(f"{what}: not a readable checkpoint pickle ({type(exc).__name__}: "
                          f"{exc})") from exc
    obj = _finish(obj)  # numpy placeholders become checked arrays; torch records stay
    return obj, up


# ---------------------------------------------------------------------------------------------
# Storage readers
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _whole_file_cached(path: Path, size: int, mtime: int) -> np.ndarray:
    return np.memmap(path, dtype=np.uint8, mode="r")


def _whole_file(path: Path) -> np.ndarray:
    """One read-only map of the whole file, shared by its tensors (re-mapped if it changed)."""
    st = path.stat()
    return _whole_file_cached(path, st.st_size, st.st_mtime_ns)


#: Storage keys as torch writes them (``"0"``, ``"17"``; some tools use names): no paths.
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")

#: Most a compressed zip entry may inflate (torch stores storages uncompressed; deflated float
#: weights shrink a little, zeros ~1000x); ``PORTER_MAX_ZIP_RATIO`` raises it.
MAX_ZIP_RATIO = float(os.environ.get("PORTER_MAX_ZIP_RATIO", 100))


def _zip_entry_reader(path: Path, zf: zipfile.ZipFile, name: str) -> Callable[[], np.ndarray]:
    """Bytes of one zip entry: memory-mapped when stored, decompressed otherwise."""
    info = zf.getinfo(name)
    if (info.compress_type != zipfile.ZIP_STORED and info.file_size > (1 << 20)
            and info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1)):
        raise FormatError(f"{path}: zip entry {name} inflates {info.compress_size} bytes to "
                          f"{info.file_size}, over porter's limit of {MAX_ZIP_RATIO:g}x "
                          "(raise PORTER_MAX_ZIP_RATIO)")
    if info.compress_type == zipfile.ZIP_STORED:
        with open(path, "rb") as fh:
            fh.seek(info.header_offset)
            local = fh.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise FormatError(f"{path}: zip entry {name} has a broken local header")
        n_name, n_extra = struct.unpack("<HH", local[26:30])
        start = info.header_offset + 30 + n_name + n_extra
        size = info.file_size
        if start + size > path.stat().st_size:
            raise FormatError(f"{path}: zip entry {name} runs past the end of the file")

        def mapped() -> np.ndarray:
            if size == 0:
                return np.zeros(0, np.uint8)
            return _whole_file(path)[start:start + size]

        return mapped

    def inflated() -> np.ndarray:
        try:
            with zipfile.ZipFile(path) as z:
                return np.frombuffer(z.read(name), np.uint8)
        except _ZIP_ERRORS as exc:
            raise FormatError(f"{path}: zip entry {name} is corrupt "
                              f"({type(exc).__name__}: {exc})") from exc

    return inflated


#: What the zip reader raises on a damaged archive (bad headers, bad deflate streams, CRCs).
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError,
               NotImplementedError)


def _read_zip(path: Path) -> tuple[Any, dict[str, Callable[[], np.ndarray]], dict[str, _Storage]]:
    try:
        return _read_zip_entries(path)
    except _ZIP_ERRORS as exc:
        raise FormatError(f"{path}: not a readable torch zip checkpoint "
                          f"({type(exc).__name__}: {exc})") from exc


def _read_zip_entries(path: Path
                      ) -> tuple[Any, dict[str, Callable[[], np.ndarray]], dict[str, _Storage]]:
    zf = zipfile.ZipFile(path)
    with zf:
        names = zf.namelist()
        pkls = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkls) != 1:
            raise FormatError(f"{path}: a torch zip checkpoint has one data.pkl, found "
                              f"{len(pkls)}")
        root = pkls[0][: -len("data.pkl")]
        if f"{root}constants.pkl" in names or any(n.startswith(f"{root}code/") for n in names):
            raise UnsafeSourceError(f"{path}: a TorchScript archive (code inside), not a "
                                    "weights checkpoint")
        bo = f"{root}byteorder"
        if bo in names and zf.read(bo).strip() not in (b"little", b""):
            raise FormatError(f"{path}: big-endian checkpoints are not supported")
        try:
            data = zf.read(pkls[0])
        except (zipfile.BadZipFile, OSError) as exc:
            raise FormatError(f"{path}: data.pkl is corrupt ({exc})") from exc
        obj, up = _unpickle(io.BytesIO(data), str(path), legacy=False)
        readers = {}
        for key in up.storages:
            entry = f"{root}data/{key}"
            if entry not in names:
                raise FormatError(f"{path}: storage {key} named by data.pkl is missing")
            readers[key] = _zip_entry_reader(path, zf, entry)
    return obj, readers, up.storages


def _read_legacy(path: Path) -> tuple[Any, dict[str, Callable[[], np.ndarray]], dict[str, _Storage]]:
    with open(path, "rb") as fh:
        raw = fh.read()
    buf = io.BytesIO(raw)
    what = str(path)
    magic = _unpickle(buf, what, legacy=True)[0]
    if magic != _LEGACY_MAGIC:
        raise FormatError(f"{path}: not a torch checkpoint (bad magic number)")
    _unpickle(buf, what, legacy=True)  # protocol version
    sys_info = _unpickle(buf, what, legacy=True)[0]
    if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
        raise FormatError(f"{path}: big-endian checkpoints are not supported")
    obj, up = _unpickle(buf, what, legacy=True)
    keys = _unpickle(buf, what, legacy=True)[0]
    if not isinstance(keys, list):
        raise FormatError(f"{path}: legacy checkpoint has no storage key list")
    readers: dict[str, Callable[[], np.ndarray]] = {}
    pos = buf.tell()
    for key in keys:
        key = str(key)
        st = up.storages.get(key)
        if st is None or st.dtype is None:
            raise FormatError(f"{path}: storage {key} is listed but never used")
        itemsize = _np_dtype(st.dtype, path).itemsize
        if pos + 8 > len(raw):
            raise FormatError(f"{path}: storage {key} is truncated")
        (numel,) = struct.unpack("<q", raw[pos:pos + 8])
        nbytes = numel * itemsize
        start = pos + 8
        if numel != st.numel or start + nbytes > len(raw):
            raise FormatError(f"{path}: storage {key} is truncated or mis-sized")
        readers[key] = (lambda s=start, n=nbytes: _whole_file(path)[s:s + n]
                        if n else np.zeros(0, np.uint8))
        pos = start + nbytes
    for key, (root, offset, numel) in up.views.items():
        base = up.storages[root]
        itemsize = _np_dtype(base.dtype, path).itemsize
        if offset + numel > base.numel:
            raise FormatError(f"{path}: storage view {key} lies outside storage {root}")
        readers[f"{root}@{offset}"] = (lambda r=readers[root], o=offset * itemsize,
                                       n=numel * itemsize: r()[o:o + n])
        up.storages[f"{root}@{offset}"] = _Storage(f"{root}@{offset}", base.dtype, numel)
    return obj, readers, up.storages


def _np_dtype(name: str, path: Path) -> np.dtype:
    dt = _DTYPES.get(name)
    if dt is None:
        raise FormatError(f"{path}: tensors of dtype {name} are not supported"
                          + (" (needs the ml_dtypes package)" if name in _DTYPES else ""))
    return dt


def _tensor_loader(path: Path, spec: _TensorSpec, reader: Callable[[], np.ndarray]):
    dtype = _np_dtype(spec.dtype, path)
    count = int(np.prod(spec.size, dtype=np.int64))
    extent = spec.offset + (sum((d - 1) * s for d, s in zip(spec.size, spec.stride)) + 1
                            if count else 0)
    if extent > spec.storage.numel:
        raise FormatError(f"{path}: a tensor of size {list(spec.size)} (stride "
                          f"{list(spec.stride)}, offset {spec.offset}) overruns its storage of "
                          f"{spec.storage.numel} elements")

    def load() -> np.ndarray:
        raw = reader()
        if raw.size != spec.storage.numel * dtype.itemsize:
            raise FormatError(f"{path}: storage {spec.storage.key} holds {raw.size} bytes, "
                              f"expected {spec.storage.numel * dtype.itemsize}")
        if count == 0:
            return np.zeros(spec.size, dtype)
        # stride in a plain integer type of the same width (numpy's as_strided cannot take
        # extension dtypes such as ml_dtypes' bfloat16), then reinterpret the bytes
        carrier = np.dtype(f"<u{dtype.itemsize}") if dtype.itemsize in (1, 2, 4, 8) else dtype
        flat = raw.view(carrier)
        arr = np.lib.stride_tricks.as_strided(
            flat[spec.offset:], shape=spec.size,
            strides=tuple(s * dtype.itemsize for s in spec.stride), writeable=False)
        contiguous = tuple(spec.stride) == tuple(
            int(np.prod(spec.size[i + 1:], dtype=np.int64)) for i in range(len(spec.size)))
        arr = arr if contiguous else np.ascontiguousarray(arr)
        return arr.view(dtype)

    return load


# ---------------------------------------------------------------------------------------------
# State-dict resolution
# ---------------------------------------------------------------------------------------------
#: Branches that hold a model's weights, most specific first.
STATE_DICT_KEYS = ("model_state_dict", "state_dict", "model", "module", "net", "network",
                   "weights", "params", "generator")
#: Branches holding EMA copies, used only when no plain branch exists.
EMA_KEYS = ("state_dict_ema", "model_ema", "ema", "ema_state_dict", "ema_model")
_PREFIXES = ("module.", "_orig_mod.", "model.module.")


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and \
        all(isinstance(k, str) for k in obj) and \
        sum(isinstance(v, (_TensorSpec, np.ndarray)) for v in obj.values()) > 0 and \
        all(isinstance(v, (_TensorSpec, np.ndarray)) or not isinstance(v, (dict, list, tuple))
            for v in obj.values())


def _count_tensors(obj: Any, depth: int = 0) -> int:
    if isinstance(obj, (_TensorSpec, np.ndarray)):
        return 1
    if depth > 50:
        return 0
    if isinstance(obj, dict):
        return sum(_count_tensors(v, depth + 1) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_count_tensors(v, depth + 1) for v in obj)
    return 0


def _describe(obj: Any) -> str:
    n = _count_tensors(obj)
    return f"{n} tensor{'s' * (n != 1)}" if n else type(obj).__name__


def resolve_state_dict(obj: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The state dict inside a checkpoint object, and a report of how it was found.

    The report has ``branch`` (dotted path used, "" for the top level), ``dropped`` (sibling
    entries not used, each with what it held), ``non_tensor`` (non-tensor entries of the state
    dict itself) and ``prefix_stripped``.
    """
    path: list[str] = []
    dropped: dict[str, str] = {}
    for _ in range(8):
        if _is_tensor_dict(obj):
            break
        if not isinstance(obj, dict):
            raise FormatError(f"checkpoint holds a {type(obj).__name__} at "
                              f"{'.'.join(path) or 'the top level'}, not a state dict")
        keys = [k for k in STATE_DICT_KEYS if k in obj and _count_tensors(obj[k])]
        keys += [k for k in EMA_KEYS if k in obj and _count_tensors(obj[k])]
        if not keys:
            holders = [k for k, v in obj.items() if _count_tensors(v)]
            if len(holders) != 1:
                raise FormatError("checkpoint: no state dict found (branches with tensors: "
                                  f"{', '.join(map(str, holders)) or 'none'})")
            keys = holders
        chosen = keys[0]
        for k, v in obj.items():
            if k != chosen:
                dropped[".".join([*path, str(k)])] = _describe(v)
        path.append(str(chosen))
        obj = obj[chosen]
    else:
        raise FormatError("checkpoint: state dict nested deeper than 8 levels")
    state = {k: v for k, v in obj.items() if isinstance(v, (_TensorSpec, np.ndarray))}
    non_tensor = sorted(k for k in obj if k not in state)
    stripped = ""
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
            stripped = prefix
            break
    report = {"branch": ".".join(path), "dropped": dropped, "non_tensor": non_tensor,
              "prefix_stripped": stripped}
    return state, report


def read_checkpoint(path: Path) -> tuple[Any, Callable[[_TensorSpec], Callable[[], np.ndarray]],
                                         str]:
    """(object tree with tensor specs, loader factory, container kind) for a checkpoint."""
    magic = read_magic(path, 4)
    if magic[:4] == b"PK\x03\x04":
        obj, readers, _ = _read_zip(path)
        kind = "zip"
    elif magic[:1] == _PICKLE_PROTO:
        obj, readers, _ = _read_legacy(path)
        kind = "legacy"
    else:
        raise FormatError(f"{path}: not a PyTorch checkpoint (neither a zip nor a pickle)")

    def loader(spec: _TensorSpec) -> Callable[[], np.ndarray]:
        return _tensor_loader(path, spec, readers[spec.storage.key])

    return obj, loader, kind


def _sniff(path: Path) -> bool:
    if not path.is_file() or path.suffix.lower() not in SUFFIXES:
        return False
    magic = read_magic(path, 4)
    return magic[:4] == b"PK\x03\x04" or magic[:1] == _PICKLE_PROTO


@importer("torch-checkpoint", sniff=_sniff)
def load_torch_checkpoint(path: Path) -> Source:
    """A ``torch.save`` checkpoint as a Source over its (resolved) state dict; nothing runs."""
    if not path.is_file():
        raise FormatError(f"{path}: not a file")
    obj, loader, kind = read_checkpoint(path)
    state, report = resolve_state_dict(obj)
    refs: dict[str, TensorRef] = {}
    for name, value in state.items():
        if isinstance(value, np.ndarray):
            arr = value
            refs[name] = TensorRef(name, tuple(arr.shape), arr.dtype, lambda a=arr: a, "variable")
            continue
        dtype = _np_dtype(value.dtype, path)
        refs[name] = TensorRef(name, value.size, dtype, loader(value),
                               "parameter" if value.parameter else "variable")
    meta = {"container": kind, "files": [path], **report}
    return Source(path=path, format="torch-checkpoint", tensors=refs, meta=meta)
