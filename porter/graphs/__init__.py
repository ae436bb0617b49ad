"""Clean, hand-written model definitions and the ports that bring foreign weights onto them.

Each graph module (``porter/graphs/modnet.py`` …) defines its nn.Module and registers one
:class:`GraphPort` per source family with :func:`register_port`. The pipeline finds a port by
name (``--graph modnet``) or asks every port whether a source matches it exactly
(``--graph auto``).
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from porter.errors import PorterError
from porter.mapping.report import MappingReport
from porter.verification.parity import Case, Runner, Tolerance

__all__ = ["GraphPort", "Ported", "register_port", "get_port", "find_ports", "PORTS",
           "import_graph"]

# Modules that define graphs; imported on first lookup. A missing module is skipped.
GRAPH_MODULES = ("porter.graphs.modnet", "porter.graphs.mtcnn", "porter.graphs.bshm", "porter.graphs.bgmv2",
                 "porter.graphs.ben2")


@dataclass
class Ported:
    """A module with weights loaded, how to rebuild it (``graph`` + ``kwargs``) and the report."""

    module: torch.nn.Module
    graph: str                       # importable "module:Class"
    kwargs: dict[str, Any]
    mapping: MappingReport
    input_names: list[str]
    output_names: list[str]
    files: dict[str, str] = field(default_factory=dict)  # extra output files (generated source)
    # extra files produced only when an output is written (generated source is checked then)
    render_files: Callable[[], dict[str, str]] | None = None


@dataclass
class GraphPort:
    """How one family of sources ports onto one clean graph, and how to verify the result.

    - ``matches(source)``: True only when the source's structure fits this graph exactly.
    - ``port(source, **options)``: build the module, map every tensor, return :class:`Ported`.
    - ``cases(source, ported)``: parity inputs (several shapes, fixed seeds), torch convention.
    - ``reference(source, ported)``: a runner over the *source runtime*, same conventions.
    - ``example_inputs(ported)``: a tuple of tensors for torch.export in the NPU audit.
    - ``dynamic_shapes(ported)``: optional ``torch.export`` dynamic_shapes for those inputs,
      marking the dimensions the source declares dynamic (exported symbolic where possible).
    """

    name: str
    formats: tuple[str, ...]
    graph: str
    matches: Callable[[Any], bool]
    port: Callable[..., Ported]
    cases: Callable[[Any, Ported], list[Case]]
    reference: Callable[[Any, Ported], Runner]
    example_inputs: Callable[[Ported], tuple]
    reference_name: str = "onnxruntime"
    tolerance: Tolerance = field(default_factory=Tolerance)
    description: str = ""
    aliases: Sequence[str] = ()
    dynamic_shapes: Callable[[Ported], Any] | None = None


PORTS: dict[str, GraphPort] = {}


def register_port(port: GraphPort) -> GraphPort:
    """Add a port; a duplicate name is a bug and fails at import."""
    for key in (port.name, *port.aliases):
        if key in PORTS:
            raise RuntimeError(f"graph port {key!r} registered twice")
        PORTS[key] = port
    return port


def _load() -> None:
    for mod in GRAPH_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise


def get_port(name: str) -> GraphPort:
    """The port registered as ``name``; an unknown name is a PorterError listing the known ones."""
    _load()
    if name not in PORTS:
        raise PorterError(f"unknown graph {name!r} (known: {', '.join(sorted(set(PORTS)))})")
    return PORTS[name]


def find_ports(source: Any) -> list[GraphPort]:
    """Every port that claims ``source`` exactly (``--graph auto``)."""
    _load()
    seen, out = set(), []
    for port in PORTS.values():
        if id(port) in seen or source.format not in port.formats:
            continue
        seen.add(id(port))
        if port.matches(source):
            out.append(port)
    return out


def import_graph(spec: str, base: Any = None) -> type:
    """Import "module:Class" (or "file.py:Class" relative to ``base``) and return the class."""
    mod_name, _, cls_name = spec.partition(":")
    if mod_name.endswith(".py"):
        from pathlib import Path

        path = Path(base or ".") / mod_name
        spec_ = importlib.util.spec_from_file_location(f"porter_generated_{abs(hash(path))}", path)
        if spec_ is None or spec_.loader is None:
            raise PorterError(f"cannot import graph source {path}")
        module = importlib.util.module_from_spec(spec_)
        spec_.loader.exec_module(module)
    else:
        module = importlib.import_module(mod_name)
    try:
        return getattr(module, cls_name)
    except AttributeError as exc:
        raise PorterError(f"{mod_name} has no class {cls_name}") from exc
