"""porter: bring third-party vision models onto PyTorch and Ascend NPUs with weights you can trust.

The public API mirrors the CLI: ``open`` a foreign model, ``convert`` it to a clean module,
``verify`` it against its source runtime, ``publish`` an output to the zoo, ``load`` an output or
zoo entry back. The clean model classes live under ``porter.graphs``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from porter.errors import PorterError

if TYPE_CHECKING:
    import torch

    from porter.pipeline import ConvertResult
    from porter.source import Source, TensorRef
    from porter.zoo.publish import Published

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``Source`` and ``TensorRef`` on first use: they need numpy, which ``porter --help``
    and the CLI's start-up do not."""
    if name in ("Source", "TensorRef"):
        from porter import source

        return getattr(source, name)
    raise AttributeError(f"module 'porter' has no attribute {name!r}")

__all__ = ["open", "convert", "verify", "publish", "load", "convert_onnx", "Source", "TensorRef",
           "PorterError", "__version__"]


def open(path: str | Path, format: str | None = None) -> Source:  # noqa: A001 - mirrors the builtin
    """Open a model file or folder read-only; the format is sniffed unless ``format`` names it.

    Tensors are read lazily: ``src.tensors[name].numpy()`` loads one.
    """
    from porter.importers import open_source

    return open_source(path, format)


def convert(path: str | Path, *, to: str = "torch", graph: str = "auto", verify: str = "cpu",
            out: str | Path | None = None, publish: bool = False, name: str | None = None,
            target: str | None = None, images: Sequence[str | Path] = (),
            zoo: str | Path | None = None, shapes: Sequence[str] = (),
            cross_check: Sequence[str | Path] = (), tolerance: float | None = None,
            force: bool = False, report: str | Path | None = None,
            progress: Callable[[str], None] | None = None) -> ConvertResult:
    """Convert a model file (or fetched catalog name) to a verified torch module.

    ``to``: "torch" (clean graph if one matches, else generic) or "torch-source" (readable
    model.py). ``graph``: a clean graph name, "auto" or "generic". ``verify``: "cpu" (parity
    against the source runtime), "npu" (also NPU-safe substitutes and the NPU audit) or "none".
    ``out``: folder to write (``"out/{name}"`` for the CLI's default; None writes nothing unless
    ``publish``); it must be missing, empty or porter's own unless ``force``. ``images`` adds real
    pictures to parity, ``shapes`` (``"NAME=1x3xHxW"``) fixes open input sizes, ``tolerance``
    replaces the max |Δ| bound, ``report`` also writes the report to a folder.

    Returns a ``ConvertResult`` (``.module``, ``.manifest``, ``.out``, ``.published``). Raises
    ``ParityError`` / ``AuditError`` when a check fails and other ``PorterError`` on bad input.
    """
    from porter.pipeline import _quiet
    from porter.pipeline import convert as _convert

    return _convert(path, to=to, graph=graph, verify=verify, out=out, publish=publish, name=name,
                    target=target, images=images, zoo=zoo, shapes=shapes,
                    cross_check=cross_check, tolerance=tolerance, force=force, report=report,
                    progress=progress or _quiet)


def verify(path: str | Path, *, graph: str = "auto", tolerance: float | None = None,
           shapes: Sequence[str] = (), images: Sequence[str | Path] = (),
           npu: bool = False) -> dict[str, Any]:
    """Check parity of ``path``'s conversion against its source runtime; writes nothing.

    Returns the parity report (per case and output: max |Δ|, mean |Δ|, cosine, PSNR; the
    tolerance; versions), with the NPU audit under ``"npu"`` when ``npu``. Raises
    ``ParityError`` when parity fails.
    """
    from porter.pipeline import convert as _convert

    result = _convert(path, graph=graph, verify="npu" if npu else "cpu", tolerance=tolerance,
                      shapes=shapes, images=images)
    report = dict(result.manifest["parity"])
    if npu:
        report["npu"] = result.manifest.get("npu")
    return report


def publish(out_dir: str | Path, name: str | None = None, *,
            zoo: str | Path | None = None) -> Published:
    """Publish a porter output folder as the next version of ``name`` (default: the manifest's).

    ``zoo`` is a folder or a URL such as ``s3://bucket/prefix`` (default ``$PORTER_ZOO``, else
    ``~/.cache/porter/zoo``). The weights are re-hashed first; the version appears whole or not
    at all. Returns ``Published`` (``.name``, ``.version``, ``.ref`` = ``name@version``).
    """
    from porter.zoo.load import read_manifest
    from porter.zoo.publish import publish as _publish

    name = name or read_manifest(out_dir).get("name")
    return _publish(out_dir, name, zoo)


def load(name_or_dir: str | Path, *, zoo: str | Path | None = None, map_location: str = "cpu",
         trust_code: bool = False, code_sha256: str | None = None, fast: bool = True,
         keep_memory: bool = False) -> torch.nn.Module:
    """Load a porter output folder, or a zoo entry ``name[@version]`` from any backend, as an
    eval-mode module.

    A zoo entry is pulled into the local cache first (every file's digest checked); the
    weights' sha256 is checked against the manifest. A generic conversion's generated
    ``model.py`` runs only with ``trust_code=True`` or a matching ``code_sha256``. ``fast`` and
    ``keep_memory`` (the CPU inference fast path; glibc keeping freed memory, logged): see
    ``porter.zoo.load.load_output``.
    """
    from porter.zoo.atomic import is_porter_output
    from porter.zoo.load import entry_dir, load_output

    path = Path(name_or_dir)
    folder = path if path.is_dir() and is_porter_output(path) else entry_dir(str(name_or_dir), zoo)
    return load_output(folder, map_location, trust_code=trust_code, code_sha256=code_sha256,
                       fast=fast, keep_memory=keep_memory)


def convert_onnx(model_or_path: Any, **kwargs: Any) -> torch.nn.Module:
    """Generic ONNX graph -> torch.nn.Module, for models with no clean definition."""
    from porter.converters import convert_onnx as _convert_onnx

    return _convert_onnx(model_or_path, **kwargs)
