"""Importers: path -> :class:`~porter.source.Source`, chosen by sniffing the file.

Each importer module registers itself with :func:`importer`; ``open_source`` asks every sniffer
in registration order and uses the first that claims the path. Sniffers look at names and magic
bytes only: they never parse a whole file, and they never import a heavy framework.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from porter.errors import FOREIGN_ERRORS, FormatError, PorterError, foreign_error
from porter.source import Source

__all__ = ["importer", "open_source", "IMPORTERS", "sniff", "check_beside"]


@dataclass(frozen=True)
class Importer:
    name: str
    sniff: Callable[[Path], bool]
    load: Callable[[Path], Source]


IMPORTERS: dict[str, Importer] = {}

# Modules that register importers; imported on first use so `import porter` stays light.
_IMPORTER_MODULES = (
    "porter.importers.onnx",
    "porter.importers.tf1",
    "porter.importers.paddle",
    "porter.importers.safetensors_",
    "porter.importers.torch_ckpt",
)


def importer(name: str, sniff: Callable[[Path], bool]) -> Callable:
    """Register ``load(path) -> Source`` under ``name``; a duplicate name fails at import."""

    def register(load: Callable[[Path], Source]) -> Callable[[Path], Source]:
        if name in IMPORTERS:
            raise RuntimeError(f"importer {name!r} registered twice")
        IMPORTERS[name] = Importer(name, sniff, load)
        return load

    return register


def _load_registry() -> None:
    for mod in _IMPORTER_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:  # a real missing dependency inside the importer
                raise


def sniff(path: Path) -> str | None:
    """Name of the importer that claims ``path``, or None."""
    _load_registry()
    for imp in IMPORTERS.values():
        if imp.sniff(path):
            return imp.name
    return None


def open_source(path: str | Path, format: str | None = None) -> Source:
    """Open ``path`` read-only as a Source; ``format`` forces an importer by name."""
    path = _paddle_prefix(Path(path))
    # a TF checkpoint prefix ("model.ckpt-18") names files beside it, not a file of its own
    try:
        exists = path.exists() or Path(f"{path}.index").is_file()
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte
        raise FormatError(f"{path}: cannot open ({exc})") from exc
    if not exists:
        raise FormatError(f"{path}: no such file or directory")
    _load_registry()
    if format is None:
        try:
            format = sniff(path)
        except FOREIGN_ERRORS as exc:
            raise foreign_error(str(path), exc) from exc
        if format is None:
            known = ", ".join(sorted(IMPORTERS))
            raise FormatError(f"{path}: unknown format (porter reads: {known})")
    elif format not in IMPORTERS:
        raise FormatError(f"unknown format {format!r} (known: {', '.join(sorted(IMPORTERS))})")
    try:
        return IMPORTERS[format].load(path)
    except PorterError:
        raise
    except FOREIGN_ERRORS as exc:  # the importer's boundary: malformed input is a FormatError
        raise foreign_error(f"{path} ({format})", exc) from exc


def _paddle_prefix(path: Path) -> Path:
    """The program file of a Paddle inference model named by its ``paddle.jit.save`` prefix
    (``inference`` for ``inference.json`` or ``inference.pdmodel`` beside
    ``inference.pdiparams``), else ``path`` as given."""
    try:
        if path.exists() or not Path(f"{path}.pdiparams").is_file():
            return path
    except (OSError, ValueError):  # a name too long, a NUL byte: the caller says so
        return path
    for suffix in (".json", ".pdmodel"):
        program = Path(f"{path}{suffix}")
        if program.is_file():
            return program
    return path


def check_beside(path: Path, anchor: Path, what: str) -> Path:
    """``path``, a file porter found beside ``anchor`` (a params file, a data shard), refused
    when a symlink or hard link makes it another file than one in ``anchor``'s folder."""
    from porter.errors import UnsafeSourceError

    folder = anchor.parent.resolve()
    target = path.resolve()
    if target.parent != folder:
        raise UnsafeSourceError(f"{path}: the {what} links outside the model's folder")
    if target.is_file() and target.stat().st_nlink > 1:
        raise UnsafeSourceError(f"{path}: the {what} is a hard link (refused like a symlink: "
                                "it may be any file on the filesystem)")
    return path


def read_magic(path: Path, n: int = 16) -> bytes:
    """First ``n`` bytes of a regular file, b'' for a folder or an unreadable file."""
    if not path.is_file():
        return b""
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError:
        return b""
