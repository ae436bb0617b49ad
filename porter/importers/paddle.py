"""Paddle importers: ``.pdparams``/``.pdopt`` pickles and inference models, without Paddle.

* ``paddle-params``: a state dict written by ``paddle.save`` (a pickled dict of numpy arrays,
  or, for nested structures, ``(param_name, ndarray)`` tuples). Read only through the allow-list
  unpickler in :mod:`porter.importers.safe_pickle`. Nested dicts flatten to ``outer/inner``
  names; ``StructuredToParameterName@@`` goes to ``meta["structured_names"]``, the inner names of
  tuple-form tensors to ``meta["param_names"]``, non-array leaves to ``meta["extra"]``;
  ``UnpackBigParamInfor@@`` slices (protocol 2/3 files over 4 GB) are joined back.
* ``paddle-inference``: ``.pdmodel`` (legacy ProgramDesc) or ``.json`` (PIR) + ``.pdiparams``,
  or a folder holding one such pair; see :mod:`porter.importers.paddle_program`.

:func:`to_onnx` turns an inference model into an ``onnx.ModelProto`` through paddle2onnx, run
in a child process (see :mod:`porter.importers.paddle_onnx` for why).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from porter.errors import FormatError
from porter.importers import importer, read_magic
from porter.source import Source, TensorRef

__all__ = ["load_pdparams", "load_paddle_inference", "flatten_state", "to_onnx"]

_STRUCTURED = "StructuredToParameterName@@"
_BIG = "UnpackBigParamInfor@@"


def _sniff_params(path: Path) -> bool:
    return (path.is_file() and path.suffix.lower() in (".pdparams", ".pdopt")
            and read_magic(path, 1) == b"\x80")


def _const(arr: np.ndarray):
    return lambda: arr


def _join_big(state: dict[str, Any]) -> dict[str, Any]:
    """Undo Paddle's splitting of >1 GiB arrays into ``name@@.i`` slices (protocol 2/3)."""
    info = state.pop(_BIG, None)
    if not isinstance(info, dict):
        return state
    for key, spec in info.items():
        try:
            parts = [state.pop(p) for p in spec["slices"]]
            state[key] = np.concatenate(parts).reshape(spec["OriginShape"])
        except (KeyError, ValueError, TypeError) as exc:
            raise FormatError(f"{_BIG} entry for {key!r} is inconsistent ({exc})") from exc
    return state


def flatten_state(obj: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(name -> array, meta) from an unpickled Paddle save; see the module docstring."""
    if not isinstance(obj, dict):
        raise FormatError(f"not a Paddle state dict (top level is {type(obj).__name__})")
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"structured_names": {}, "param_names": {}, "extra": {}}
    seen: set[int] = set()

    def visit(prefix: str, value: Any) -> None:
        if isinstance(value, np.ndarray):
            arrays[prefix] = value
        elif (isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str)
              and isinstance(value[1], np.ndarray)):
            arrays[prefix] = value[1]
            meta["param_names"][prefix] = value[0]
        elif isinstance(value, dict):
            if id(value) in seen:  # a state dict is a tree; a shared dict would repeat work
                raise FormatError(f"not a Paddle state dict ({prefix!r} repeats a nested dict "
                                  "shared through the pickle memo)")
            seen.add(id(value))
            value = _join_big(dict(value))
            for k, v in value.items():
                if k == _STRUCTURED and isinstance(v, dict):
                    scope = f"{prefix}/" if prefix else ""
                    meta["structured_names"].update({f"{scope}{a}": b for a, b in v.items()})
                    continue
                visit(f"{prefix}/{k}" if prefix else str(k), v)
        else:
            meta["extra"][prefix] = value

    visit("", obj)
    return arrays, meta


@importer("paddle-params", sniff=_sniff_params)
def load_pdparams(path: Path) -> Source:
    """Read a ``.pdparams``/``.pdopt`` pickle safely (never imports paddle) into a Source."""
    from porter.importers.safe_pickle import MAX_PICKLE_BYTES, safe_load_file

    if not path.is_file():
        raise FormatError(f"{path}: not a file")
    size = path.stat().st_size
    if size == 0:
        raise FormatError(f"{path}: empty file")
    if size > MAX_PICKLE_BYTES:
        raise FormatError(f"{path}: {size} bytes is over porter's pickle limit of "
                          f"{MAX_PICKLE_BYTES} (raise PORTER_MAX_PICKLE_BYTES to read it)")
    obj, digest = safe_load_file(path)  # streamed: the file's bytes are never held whole
    arrays, meta = flatten_state(obj)
    meta["sha256"] = digest  # of the bytes read, not the path later
    refs = {name: TensorRef(name, tuple(int(d) for d in a.shape), a.dtype, _const(a), "variable")
            for name, a in arrays.items()}
    meta["files"] = [path]
    return Source(path=path, format="paddle-params", tensors=refs, meta=meta)


def _sniff_inference(path: Path) -> bool:
    from porter.importers.paddle_program import find_model_files

    try:
        return find_model_files(path) is not None
    except FormatError:
        return False


@importer("paddle-inference", sniff=_sniff_inference)
def load_paddle_inference(path: Path) -> Source:
    """A Paddle inference model (file pair or folder) as a Source with its op graph."""
    from porter.importers.paddle_program import load_inference

    return load_inference(path)


def to_onnx(source: Source | str | Path, opset: int = 11) -> Any:
    """Convert a Paddle inference model to an ``onnx.ModelProto`` through paddle2onnx."""
    from porter.importers.paddle_onnx import paddle_to_onnx

    return paddle_to_onnx(source, opset=opset)
