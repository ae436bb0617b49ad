"""What a converter sees (Node, Context) and what it returns (Op, In)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from porter.errors import FormatError

__all__ = ["Node", "Context", "Op", "In", "const_attr_value"]


@dataclass(frozen=True)
class In:
    """A reference to the node's ``index``-th input, resolved to a runtime tensor."""

    index: int


@dataclass
class Op:
    """A converter's result: call ``fn(*args, **kwargs)``; ``In`` markers become tensors.

    ``fn`` is a torch-only function (copied verbatim into exported source) or an ``nn.Module``
    that owns the node's weights. ``template`` is an optional expression for exported source,
    formatted with the rendered positional args (``"{0} + {1}"``). ``n_out`` counts outputs.
    """

    fn: Callable
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    template: str | None = None
    n_out: int = 1


def const_attr_value(attr: Any) -> Any:
    """Decode one AttributeProto to python / numpy (subgraphs are refused by the caller)."""
    from onnx import helper, numpy_helper

    if attr.type == attr.TENSOR:
        return numpy_helper.to_array(attr.t)
    if attr.type == attr.SPARSE_TENSOR:

        values = numpy_helper.to_array(attr.sparse_tensor.values)
        idx = numpy_helper.to_array(attr.sparse_tensor.indices)
        dense = np.zeros(tuple(attr.sparse_tensor.dims), dtype=values.dtype)
        if idx.ndim == 1:
            dense.reshape(-1)[idx] = values
        else:
            dense[tuple(idx.T)] = values
        return dense
    if attr.type == attr.TENSORS:
        return [numpy_helper.to_array(t) for t in attr.tensors]
    v = helper.get_attribute_value(attr)
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, list) and v and isinstance(v[0], bytes):
        return [s.decode() for s in v]
    return v


@dataclass
class Node:
    """One ONNX node with decoded attributes."""

    op_type: str
    domain: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]
    opset: int
    index: int
    opsets: dict[str, int] = field(default_factory=dict)  # the model's imports (for subgraphs)

    def attr(self, name: str, default: Any = None) -> Any:
        """Attribute ``name``; it must have the kind of ``default`` (a number where a number is
        expected: a string ``epsilon`` is a corrupt model, not text to pass along)."""
        value = self.attrs.get(name, default)
        if value is default or default is None:
            return value
        number = (int, float, np.integer, np.floating)
        if isinstance(default, number) and not isinstance(default, bool):
            ok = isinstance(value, number)
        elif isinstance(default, str):
            ok = isinstance(value, str)
        else:
            return value
        if not ok:
            raise FormatError(f"node {self.name or self.op_type!r} ({self.op_type}): attribute "
                              f"{name!r} must be a {type(default).__name__}, got "
                              f"{type(value).__name__} {str(value)[:40]!r}")
        return value


class Context:
    """Conversion-time knowledge about a node's inputs: constant values, inferred shapes."""

    def __init__(self, node: Node, consts: dict[str, np.ndarray],
                 shapes: dict[str, tuple[list[int | None] | None, int | None]]) -> None:
        self.node = node
        self._consts = consts
        self._shapes = shapes

    def has(self, i: int) -> bool:
        """Whether optional input ``i`` is present."""
        return i < len(self.node.inputs) and bool(self.node.inputs[i])

    def const(self, i: int) -> np.ndarray | None:
        """The value of input ``i`` when it is known at conversion time, else None."""
        if not self.has(i):
            return None
        return self._consts.get(self.node.inputs[i])

    def is_const(self, i: int) -> bool:
        return self.has(i) and self.node.inputs[i] in self._consts

    def ints(self, i: int) -> list[int] | None:
        """A constant integer input as a python list (e.g. a shape or axes), else None."""
        v = self.const(i)
        return None if v is None else [int(x) for x in np.asarray(v).reshape(-1)]

    def shape(self, i: int) -> list[int | None] | None:
        """The inferred shape of input ``i`` (None entries are dynamic), or None if unknown."""
        if self.is_const(i):
            return list(self.const(i).shape)
        if not self.has(i):
            return None
        return self._shapes.get(self.node.inputs[i], (None, None))[0]

    def rank(self, i: int) -> int | None:
        s = self.shape(i)
        return None if s is None else len(s)

    def elem_type(self, i: int) -> int | None:
        """The ONNX element type of input ``i`` if known."""
        if self.is_const(i):
            from onnx import helper

            return helper.np_dtype_to_tensor_dtype(self.const(i).dtype)
        if not self.has(i):
            return None
        return self._shapes.get(self.node.inputs[i], (None, None))[1]
