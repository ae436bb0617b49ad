"""What a Paddle converter sees: one op with positional inputs, and the constants known now."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from porter.converters.context import In, Op
from porter.errors import UnsupportedOpError

__all__ = ["PaddleOp", "Context", "In", "Op", "Unsupported", "torch_dtype"]

#: framework.proto VarType codes and PIR dtype names -> torch dtypes.
_DTYPES = {0: torch.bool, 1: torch.int16, 2: torch.int32, 3: torch.int64, 4: torch.float16,
           5: torch.float32, 6: torch.float64, 20: torch.uint8, 21: torch.int8,
           22: torch.bfloat16, "bool": torch.bool, "int16": torch.int16, "int32": torch.int32,
           "int64": torch.int64, "float16": torch.float16, "float32": torch.float32,
           "float64": torch.float64, "uint8": torch.uint8, "int8": torch.int8,
           "bfloat16": torch.bfloat16, "uint16": torch.bfloat16}


def torch_dtype(code: Any, default: torch.dtype | None = None) -> torch.dtype:
    """A Paddle dtype (VarType code or PIR name) as a torch dtype; -1/None -> ``default``."""
    if code in (None, -1, "undefined", "") and default is not None:
        return default
    try:
        return _DTYPES[code]
    except (KeyError, TypeError):
        raise Unsupported(f"data type {code!r}") from None


class Unsupported(UnsupportedOpError):
    """A converter met an attribute value or a dynamic input it cannot express."""

    def __init__(self, what: str) -> None:
        self.what = what
        Exception.__init__(self, what)

    def __str__(self) -> str:
        return self.what


@dataclass
class PaddleOp:
    """One op of a Paddle program; legacy slots already laid out in positional order.

    ``inputs``/``outputs`` hold value names (None for an absent optional value); for a legacy
    list slot the builder inserts a ``builtin.combine`` so the input is one list-valued name.
    A converter whose function returns its results in another order may rewrite ``outputs``
    in place to that order (None for a result nothing reads).
    """

    type: str
    inputs: list[str | None]
    outputs: list[str | None]
    attrs: dict[str, Any]
    index: int
    pir: bool
    scope: str | None = None
    params: list[str] = field(default_factory=list)  # parameter names read by the op

    def attr(self, name: str, default: Any = None) -> Any:
        v = self.attrs.get(name, default)
        return default if isinstance(v, str) and v.startswith("<attr type") else v

    @property
    def label(self) -> str:
        return f"{self.type}#{self.index}"


class Context:
    """Conversion-time values of an op's inputs (parameters, folded constants)."""

    def __init__(self, op: PaddleOp, consts: dict[str, Any],
                 shape_like: set[str] | None = None) -> None:
        self.op = op
        self._consts = consts
        self._shape_like = shape_like or set()

    def shape_like(self, i: int) -> bool:
        """Whether input ``i`` is a shape value (sizes as a python list, see ops.tensor)."""
        return self.has(i) and self.op.inputs[i] in self._shape_like

    def has(self, i: int) -> bool:
        return i < len(self.op.inputs) and self.op.inputs[i] is not None

    def is_const(self, i: int) -> bool:
        return self.has(i) and self.op.inputs[i] in self._consts

    def const(self, i: int) -> Any:
        """Input ``i``'s value when known now (a tensor or a list of them), else None."""
        return self._consts.get(self.op.inputs[i]) if self.has(i) else None

    def ints(self, i: int) -> list[int] | None:
        """A constant integer input (a tensor or a list of 1-element tensors) as ints."""
        v = self.const(i)
        if v is None:
            return None
        if isinstance(v, (list, tuple)):
            return [int(np.asarray(t).reshape(-1)[0]) for t in v]
        return [int(x) for x in np.asarray(v).reshape(-1)]

    def floats(self, i: int) -> list[float] | None:
        v = self.const(i)
        if v is None:
            return None
        if isinstance(v, (list, tuple)):
            return [float(np.asarray(t).reshape(-1)[0]) for t in v]
        return [float(x) for x in np.asarray(v).reshape(-1)]

    def scalar(self, i: int, attr: str | None = None, default: Any = None) -> Any:
        """Input ``i`` as a python number when constant, else attribute ``attr``; a runtime
        input is refused (the ops that use this take a scalar known at export time)."""
        if self.has(i):
            if not self.is_const(i):
                raise Unsupported(f"{self.op.type} with a computed {attr or f'input {i}'}")
            v = np.asarray(self.const(i)).reshape(-1)
            return v[0].item()
        return self.op.attr(attr, default) if attr else default

    def int_list(self, i: int, attr: str | None = None, default: Any = None) -> Any:
        """Input ``i`` as ints when constant, ``In(i)`` when computed at run time, else the
        attribute ``attr``."""
        if self.has(i):
            return self.ints(i) if self.is_const(i) else In(i)
        return self.op.attr(attr, default) if attr else default
