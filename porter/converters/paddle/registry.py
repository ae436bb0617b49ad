"""Converter registry keyed by Paddle op type (legacy ``conv2d`` and PIR ``pd_op.conv2d``).

Legacy ProgramDesc ops name their inputs by slot (``Input``, ``Filter``); PIR ops take them by
position. A registration states the legacy slots in PIR's positional order (``"X*"`` marks a
slot holding a list of values, like ``concat``'s ``X``), so one converter can serve both
dialects where their attributes agree; where they do not, each dialect registers its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from porter.errors import UnsupportedOpError

__all__ = ["paddle_op", "lookup", "REGISTRY", "Registration", "supported_ops",
           "UnsupportedPaddleOpsError"]


@dataclass(frozen=True)
class Registration:
    """A converter and how a legacy op's slots line up with its positional inputs/outputs."""

    fn: Callable
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ("Out",)
    names: tuple[str, ...] = ()  # attribute names for weights held on behalf of the op


REGISTRY: dict[str, Registration] = {}


class UnsupportedPaddleOpsError(UnsupportedOpError):
    """Every Paddle op type of a program that has no converter, listed at once."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = dict(counts)
        listed = ", ".join(f"{k} (x{v})" if v > 1 else k for k, v in sorted(counts.items()))
        super().__init__(listed, 0, "paddle")
        self.args = (f"no Paddle-to-torch converter for {len(counts)} op type"
                     f"{'s' if len(counts) != 1 else ''}: {listed}",)

    def __str__(self) -> str:
        return self.args[0]


def paddle_op(*op_types: str, inputs: tuple[str, ...] = (), outputs: tuple[str, ...] = ("Out",),
              names: tuple[str, ...] = ()) -> Callable:
    """Register ``fn(op, ctx) -> Op`` for each op type; a duplicate type fails at import."""

    def register(fn: Callable) -> Callable:
        for t in op_types:
            if t in REGISTRY:
                raise RuntimeError(f"duplicate Paddle converter for {t}: {REGISTRY[t].fn} "
                                   f"and {fn}")
            REGISTRY[t] = Registration(fn, tuple(inputs), tuple(outputs), tuple(names))
        return fn

    return register


def lookup(op_type: str) -> Registration | None:
    """The registration for ``op_type``, or None."""
    import porter.converters.paddle.ops  # noqa: F401 - fills the registry

    return REGISTRY.get(op_type)


def supported_ops() -> list[str]:
    """Every Paddle op type (legacy and PIR) with a converter, sorted."""
    import porter.converters.paddle.ops  # noqa: F401

    return sorted(REGISTRY)
