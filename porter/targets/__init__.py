"""Output kinds (``--to``): a registry the pipeline looks up, one entry per kind of output.

The pipeline takes any source to a verified torch module once; a *target* then owns what
follows: which port it wants (``torch-source`` always renders generic code), how it turns the
module into files, how it verifies them, and what it adds to the manifest. Adding an output
kind is one module here with one ``@target`` entry; ``pipeline.convert`` has no branch on ``to``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from porter.errors import PorterError

__all__ = ["Target", "Job", "register_target", "get_target", "target_names"]


@dataclass
class Job:
    """What a target is handed: the verified module and everything known about it.

    ``source`` is None when the module came from a porter output or a Hugging Face folder
    rather than a foreign file; ``cases`` are parity inputs in the module's convention.
    """

    module: Any
    manifest: dict[str, Any]
    input_names: list[str]
    output_names: list[str]
    cases: list[Any]
    files: dict[str, str | bytes]
    options: dict[str, Any]
    progress: Callable[[str], None]
    source: Any = None
    port: Any = None
    ported: Any = None


@dataclass(frozen=True)
class Target:
    """One output kind.

    ``prepare(job)`` builds and verifies everything the output needs (raising on any failure,
    before anything is written) and returns a writer; ``writer(stage)`` fills the staged output
    folder and returns the manifest entries it adds. ``graph`` overrides ``--graph`` (None keeps
    it); ``flavours`` are the ``--target`` values it accepts; ``from_module`` says whether a porter
    output or a Hugging Face folder is an acceptable SRC (the module then needs no porting).
    """

    name: str
    help: str
    prepare: Callable[[Job], Callable[[Any], dict[str, Any]]]
    flavours: tuple[str | None, ...] = (None,)
    graph: str | None = None
    from_module: bool = False


_TARGETS: dict[str, Target] = {}
_MODULES = ("porter.targets.torch_", "porter.targets.onnx")


def register_target(t: Target) -> Target:
    """Add ``t`` to the registry; a second target with one name is a bug and fails at import."""
    if t.name in _TARGETS:
        raise RuntimeError(f"output kind {t.name!r} registered twice")
    _TARGETS[t.name] = t
    return t


def _load() -> None:
    if not _TARGETS:
        for mod in _MODULES:
            importlib.import_module(mod)


def target_names() -> tuple[str, ...]:
    """Every registered output kind, in registration order."""
    _load()
    return tuple(_TARGETS)


def get_target(name: str, flavour: str | None = None) -> Target:
    """The output kind ``name``; PorterError naming the known ones (or flavours) otherwise."""
    _load()
    t = _TARGETS.get(name)
    if t is None:
        raise PorterError(f"--to must be one of {', '.join(_TARGETS)}, not {name!r}")
    if flavour not in t.flavours:
        known = ", ".join(f for f in t.flavours if f) or "none"
        raise PorterError(f"--to {name} takes --target {known}, not {flavour!r}")
    return t
