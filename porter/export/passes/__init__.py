"""ONNX rewrite passes: each one matches a pattern some deployment compiler rejects and writes
an equivalent graph; each returns a PassResult saying what it changed.

A pass is proven twice: its own unit test (tests/export/test_passes.py) against onnxruntime on
the original graph, and, in an export, a parity run of the rewritten file against the torch
module after every pass that changed something.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["OnnxPass", "PassResult", "onnx_pass", "get_passes", "run_passes"]


@dataclass
class PassResult:
    """What one pass did: how many rewrites, and a line per rewrite (node or tensor name)."""

    name: str
    changed: int = 0
    details: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"pass": self.name, "changed": self.changed, "details": self.details[:50]}


@dataclass(frozen=True)
class OnnxPass:
    """A rewrite ``run(model) -> PassResult`` (in place), with what it matches and writes."""

    name: str
    matches: str
    writes: str
    run: Callable[[Any], PassResult]
    order: int = 100


_PASSES: dict[str, OnnxPass] = {}
_MODULES = ("porter.export.passes.float64_to_float32", "porter.export.passes.int64_operands")


def onnx_pass(name: str, *, matches: str, writes: str, order: int = 100) -> Callable:
    """Register the decorated ``run(model) -> PassResult`` as a pass; duplicate names fail."""

    def register(fn: Callable[[Any], PassResult]) -> Callable[[Any], PassResult]:
        if name in _PASSES:
            raise RuntimeError(f"ONNX pass {name!r} registered twice")
        _PASSES[name] = OnnxPass(name, matches, writes, fn, order)
        return fn

    return register


def get_passes() -> list[OnnxPass]:
    """Every registered pass in the order they run."""
    if not _PASSES:
        for mod in _MODULES:
            importlib.import_module(mod)
    return sorted(_PASSES.values(), key=lambda p: (p.order, p.name))


def run_passes(model: Any, after: Callable[[OnnxPass, PassResult], None] | None = None
               ) -> list[PassResult]:
    """Run every pass in order on ``model`` (in place); ``after`` is called on each change."""
    results = []
    for p in get_passes():
        res = p.run(model)
        results.append(res)
        if res.changed and after is not None:
            after(p, res)
    return results
