"""Shape arithmetic on python ints: ``Shape -> Gather -> Concat -> Reshape`` without tensors.

ONNX exports rebuild sizes at run time from ``Shape`` outputs (int64 tensors). Done with tensors,
the sizes go tensor -> int again in ``Reshape``, which ``torch.export`` can only see as
data-dependent values, so a module with such chains cannot be exported. Here the builder finds
the nodes that compute only from ``Shape`` outputs and small integer constants and runs them on
:class:`ShapeValue` (a tuple of python ints, or of ``torch.SymInt`` under ``torch.export`` with
dynamic sizes): sizes stay symbolic end to end and eager numbers are the same integers. A
consumer that needs a tensor gets one (:func:`shape_tensor`); the shape arguments of Reshape,
Expand, Tile, ConstantOfShape, Slice, Squeeze, Unsqueeze, Pad, Split and Resize take the values
as they are.

Each op here mirrors the tensor converter of the same ONNX op for integer inputs; where ONNX
semantics would need a data-dependent branch (a negative Slice step, Div by a size), the node
stays a tensor op.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

__all__ = ["ShapeValue", "SHAPE_ARGS", "plan_symbolic", "shape_tensor"]

_INT_DTYPES = {6: torch.int32, 7: torch.int64}  # ONNX elem types that stay symbolic

# (op type, input index) whose value the tensor converter reads as a list of ints (as_ints)
SHAPE_ARGS = {("Reshape", 1), ("Expand", 1), ("Tile", 1), ("ConstantOfShape", 0),
              ("Slice", 1), ("Slice", 2), ("Slice", 3), ("Slice", 4), ("Squeeze", 1),
              ("Unsqueeze", 1), ("Pad", 1), ("Split", 1), ("Resize", 3)}


class ShapeValue(tuple):
    """Integers (python or ``torch.SymInt``) standing for a rank-0 or rank-1 int tensor."""

    scalar: bool
    dtype: torch.dtype

    def __new__(cls, values: Any, scalar: bool = False,
                dtype: torch.dtype = torch.int64) -> ShapeValue:
        self = super().__new__(cls, values)
        self.scalar, self.dtype = scalar, dtype
        return self

    def __repr__(self) -> str:
        return f"ShapeValue({list(self)}{', scalar' if self.scalar else ''})"


def shape_tensor(v: Any) -> Any:
    """The tensor a ShapeValue stands for; anything else unchanged."""
    if not isinstance(v, ShapeValue):
        return v
    t = torch.tensor(list(v), dtype=v.dtype)
    return t.reshape(()) if v.scalar else t


def _const(v: np.ndarray) -> ShapeValue | None:
    v = np.asarray(v)
    if v.dtype.kind not in "iu" or v.ndim > 1 or v.size > 64:
        return None
    return ShapeValue([int(x) for x in v.reshape(-1)], scalar=v.ndim == 0,
                      dtype=torch.int32 if v.dtype == np.int32 else torch.int64)


def _bin(op: Callable, a: ShapeValue, b: ShapeValue) -> ShapeValue:
    if len(a) != len(b):  # broadcasting of a rank-0 or length-1 operand
        if len(a) == 1:
            a = ShapeValue(list(a) * len(b), a.scalar, a.dtype)
        else:
            b = ShapeValue(list(b) * len(a), b.scalar, b.dtype)
    return ShapeValue([op(x, y) for x, y in zip(a, b)], a.scalar and b.scalar, a.dtype)


def _dims(x: Any) -> tuple:
    if isinstance(x, ShapeValue):  # the shape of shape arithmetic itself
        return () if x.scalar else (len(x),)
    return tuple(x.shape)


def sym_shape(x: Any, start: int = 0, end: int | None = None) -> ShapeValue:
    return ShapeValue(_dims(x)[start:end])


def sym_size(x: Any) -> ShapeValue:
    n = 1
    for d in _dims(x):
        n = n * d
    return ShapeValue([n], scalar=True)


def sym_gather(v: ShapeValue, idx: ShapeValue) -> ShapeValue:
    n = len(v)
    return ShapeValue([v[i + n if i < 0 else i] for i in idx], scalar=idx.scalar, dtype=v.dtype)


def sym_unsqueeze(v: ShapeValue, axes: tuple[int, ...]) -> ShapeValue:
    return ShapeValue(list(v), scalar=False, dtype=v.dtype)


def sym_squeeze(v: ShapeValue, axes: tuple[int, ...] | None = None) -> ShapeValue:
    return ShapeValue(list(v), scalar=True, dtype=v.dtype)


def sym_concat(*vs: ShapeValue) -> ShapeValue:
    return ShapeValue([x for v in vs for x in v], dtype=vs[0].dtype)


def sym_slice(v: ShapeValue, start: int, end: int) -> ShapeValue:
    n = len(v)
    s = min(max(start + n if start < 0 else start, 0), n)
    e = min(max(end + n if end < 0 else end, 0), n)
    return ShapeValue(list(v)[s:e], dtype=v.dtype)


def sym_identity(v: ShapeValue) -> ShapeValue:
    return v


def sym_cast(v: ShapeValue, dtype: torch.dtype) -> ShapeValue:
    return ShapeValue(list(v), v.scalar, dtype)


def sym_add(a: ShapeValue, b: ShapeValue) -> ShapeValue:
    return _bin(lambda x, y: x + y, a, b)


def sym_sub(a: ShapeValue, b: ShapeValue) -> ShapeValue:
    return _bin(lambda x, y: x - y, a, b)


def sym_mul(a: ShapeValue, b: ShapeValue) -> ShapeValue:
    return _bin(lambda x, y: x * y, a, b)


def _trunc_div(x: Any, y: int) -> Any:
    if isinstance(x, int):
        q = abs(x) // y
        return -q if x < 0 else q
    return x // y  # a size (SymInt >= 0): floor and truncation agree


def sym_div(a: ShapeValue, b: ShapeValue) -> ShapeValue:
    """ONNX integer Div truncates toward zero; planned only for positive constant divisors."""
    return _bin(_trunc_div, a, b)


def _positive(v: ShapeValue | None) -> bool:
    return v is not None and all(isinstance(x, int) and x > 0 for x in v)


Plan = tuple[Callable, tuple[tuple[bool, Any], ...], bool]  # (fn, args, result is rank 0)


def plan_symbolic(op_type: str, attrs: dict[str, Any], inputs: list[str],
                  sym: dict[str, bool], consts: dict[str, np.ndarray]) -> Plan | None:
    """``(fn, args, scalar)`` running this node on ShapeValues, or None to keep it a tensor op.

    ``sym`` maps each ShapeValue name planned so far to whether it is rank 0. ``args`` are
    ``(True, input name)`` for runtime inputs and ``(False, value)`` for constants.
    """
    if op_type == "Shape":
        return (functools.partial(sym_shape, start=attrs.get("start", 0), end=attrs.get("end")),
                ((True, inputs[0]),), False)
    if op_type == "Size":
        return sym_size, ((True, inputs[0]),), True
    if not inputs or not all(inputs) or not any(n in sym for n in inputs):
        return None
    args: list[tuple[bool, Any]] = []
    scalar: list[bool] = []
    values: list[ShapeValue | None] = []
    for n in inputs:
        if n in sym:
            args.append((True, n))
            values.append(None)
            scalar.append(sym[n])
        elif n in consts and (c := _const(consts[n])) is not None:
            args.append((False, c))
            values.append(c)
            scalar.append(c.scalar)
        else:
            return None
    first_sym = inputs[0] in sym
    if op_type == "Gather":
        if attrs.get("axis", 0) != 0 or not first_sym or scalar[0] or values[1] is None:
            return None
        return sym_gather, tuple(args), scalar[1]
    if op_type in ("Unsqueeze", "Squeeze") and first_sym:
        axes = attrs.get("axes") if len(inputs) == 1 else values[1]
        if axes is None or list(axes) not in ([0], [-1]) or scalar[0] != (op_type == "Unsqueeze"):
            return None
        fn = sym_unsqueeze if op_type == "Unsqueeze" else sym_squeeze
        return functools.partial(fn, axes=tuple(axes)), (args[0],), op_type == "Squeeze"
    if op_type == "Concat":
        if attrs.get("axis", 0) not in (0, -1) or any(scalar):
            return None
        return sym_concat, tuple(args), False
    if op_type == "Slice" and first_sym and not scalar[0] and len(inputs) >= 3:
        rest = values[1:]
        if any(v is None or len(v) != 1 for v in rest):
            return None
        if len(rest) >= 3 and rest[2][0] not in (0, -1):  # axes
            return None
        if len(rest) >= 4 and rest[3][0] != 1:  # steps
            return None
        return (functools.partial(sym_slice, start=rest[0][0], end=rest[1][0]), (args[0],),
                False)
    if op_type == "Identity":
        return sym_identity, tuple(args), scalar[0]
    if op_type == "Cast":
        dtype = _INT_DTYPES.get(attrs.get("to"))
        return (functools.partial(sym_cast, dtype=dtype), tuple(args), scalar[0]) if dtype \
            else None
    if op_type in ("Add", "Sub", "Mul") and len(inputs) == 2:
        fn = {"Add": sym_add, "Sub": sym_sub, "Mul": sym_mul}[op_type]
        return fn, tuple(args), scalar[0] and scalar[1]
    if op_type == "Div" and first_sym and len(inputs) == 2 and _positive(values[1]):
        return sym_div, tuple(args), scalar[0] and scalar[1]
    return None
