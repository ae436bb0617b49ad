"""Paddle inference models without Paddle: program (ProgramDesc or PIR JSON) + ``.pdiparams``.

* ``.pdmodel``: a ``paddle.framework.proto.ProgramDesc`` protobuf (framework.proto). It is
  decoded by the small wire-format reader in :mod:`porter.importers.protowire` against the
  field numbers of framework.proto (Paddle's generated ``framework_pb2`` is not used: it would
  tie porter to Paddle's install and protobuf version).
* ``.json``: a PIR program (Paddle 3.x default). Only what porter needs is read: the
  ``builtin.parameter`` ops (names, persistable values) and the op list for the graph.
* ``.pdiparams``: the persistable variables, concatenated in sorted-name order (the order
  ``save_combine``/``load_combine`` use), each as a DenseTensor stream: u32 version, u64 LoD
  level (+ per level u64 byte size and data), u32 tensor version, i32 TensorDesc size +
  TensorDesc proto (data_type, dims), raw little-endian data. Tensors are memory-mapped.
"""

from __future__ import annotations

from pathlib import Path

from porter.errors import FormatError

__all__ = ["find_model_files"]

_MODEL_SUFFIXES = (".pdmodel", ".json")


def _pair(model: Path) -> tuple[Path, Path] | None:
    params = model.with_suffix(".pdiparams")
    return (model, params) if params.is_file() else None


def _is_pir_json(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return head.lstrip()[:1] == b"{" and b'"program"' in head


def find_model_files(path: Path) -> tuple[Path, Path] | None:
    """(program file, params file) for a model path, a params path or a folder; else None.

    A folder must hold exactly one program with a ``.pdiparams`` beside it (``inference.*`` or
    ``model.*`` first); two candidates are ambiguous and raise FormatError.
    """
    path = Path(path)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".pdmodel":
            return _pair(path)
        if suffix == ".json" and _is_pir_json(path):
            return _pair(path)
        if suffix == ".pdiparams":
            for s in _MODEL_SUFFIXES:
                cand = path.with_suffix(s)
                if cand.is_file() and (s == ".pdmodel" or _is_pir_json(cand)):
                    return cand, path
        return None
    if not path.is_dir():
        return None
    found = []
    for cand in sorted(path.iterdir()):
        if cand.suffix.lower() in _MODEL_SUFFIXES and cand.is_file():
            pair = find_model_files(cand)
            if pair is not None:
                found.append(pair)
    if len(found) > 1:
        preferred = [p for p in found if p[0].stem in ("inference", "model")]
        if len(preferred) == 1:
            return preferred[0]
        names = ", ".join(p[0].name for p in found)
        raise FormatError(f"{path}: several Paddle inference models ({names}); name one")
    return found[0] if found else None
