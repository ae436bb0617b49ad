"""float64 -> float32 everywhere: ATC has no float64 kernels for most ops, and onnxruntime has no
float64 GridSample. The TorchScript exporter writes float64 where torch code builds grids with
``linspace``/``arange`` without a dtype (deformable attention's reference points)."""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import TensorProto, numpy_helper

from porter.export.passes import PassResult, onnx_pass

_DTYPE_ATTRS = ("to", "dtype")  # Cast(to), RandomNormal/EyeLike/...(dtype)
_TENSOR_ATTRS = ("value",)      # Constant(value), ConstantOfShape(value)


def _fix_tensor(t: TensorProto) -> bool:
    if t.data_type != TensorProto.DOUBLE:
        return False
    t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))
    return True


def _fix_value_infos(values: Any) -> int:
    n = 0
    for v in values:
        tt = v.type.tensor_type
        if v.type.HasField("tensor_type") and tt.elem_type == TensorProto.DOUBLE:
            tt.elem_type = TensorProto.FLOAT
            n += 1
    return n


def _fix_graph(graph: Any, res: PassResult) -> None:
    for init in graph.initializer:
        if _fix_tensor(init):
            res.changed += 1
            res.details.append(f"initializer {init.name}")
    for node in graph.node:
        for attr in node.attribute:
            if attr.name in _DTYPE_ATTRS and attr.type == attr.INT and attr.i == TensorProto.DOUBLE:
                attr.i = TensorProto.FLOAT
                res.changed += 1
                res.details.append(f"{node.op_type} {node.name}: {attr.name}=float32")
            elif attr.name in _TENSOR_ATTRS and attr.type == attr.TENSOR and _fix_tensor(attr.t):
                res.changed += 1
                res.details.append(f"{node.op_type} {node.name}: float32 {attr.name}")
            elif attr.type == attr.GRAPH:
                _fix_graph(attr.g, res)
            elif attr.type == attr.GRAPHS:
                for g in attr.graphs:
                    _fix_graph(g, res)
    for values in (graph.input, graph.output, graph.value_info):
        res.changed += _fix_value_infos(values)


@onnx_pass("float64-to-float32", order=10,
           matches="any float64 tensor: initializers, Constant values, Cast/dtype attributes, "
                   "declared value types",
           writes="the same values as float32")
def float64_to_float32(model: Any) -> PassResult:
    """Rewrite every float64 in ``model`` (subgraphs included) as float32, in place."""
    res = PassResult("float64-to-float32")
    _fix_graph(model.graph, res)
    return res
