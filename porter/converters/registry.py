"""Converter registry keyed by (domain, op type, since_version).

A model's opset is resolved to the schema's ``since_version`` through ``onnx.defs.get_schema``,
so a newer opset whose schema did not change keeps using the same converter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cache

from porter.errors import UnsupportedOpError

__all__ = ["converter", "lookup", "REGISTRY", "supported_ops"]

REGISTRY: dict[tuple[str, str, int], Callable] = {}


def _norm_domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def converter(*op_types: str, since: Iterable[int], domain: str = "") -> Callable:
    """Register a converter for every (op type, since_version) pair; duplicates fail at import."""

    def register(fn: Callable) -> Callable:
        for op in op_types:
            for v in since:
                key = (_norm_domain(domain), op, int(v))
                if key in REGISTRY:
                    raise RuntimeError(f"duplicate converter for {key}: {REGISTRY[key]} and {fn}")
                REGISTRY[key] = fn
        return fn

    return register


@cache
def _since_version(op_type: str, opset: int, domain: str) -> int | None:
    import onnx.defs

    try:
        return int(onnx.defs.get_schema(op_type, max_inclusive_version=opset, domain=domain)
                   .since_version)
    except Exception:  # unknown op or no schema at that opset
        return None


def lookup(op_type: str, opset: int, domain: str = "") -> Callable:
    """The converter for ``op_type`` at the model's ``opset``, or UnsupportedOpError."""
    domain = _norm_domain(domain)
    since = _since_version(op_type, opset, domain)
    fn = REGISTRY.get((domain, op_type, since)) if since is not None else None
    if fn is None:
        raise UnsupportedOpError(op_type, opset, domain)
    return fn


def supported_ops() -> dict[str, list[int]]:
    """Op type -> sorted since_versions with a converter (default domain only)."""
    out: dict[str, list[int]] = {}
    for dom, op, v in REGISTRY:
        if not dom:
            out.setdefault(op, []).append(v)
    return {k: sorted(v) for k, v in sorted(out.items())}
