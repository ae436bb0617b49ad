"""Mixed int32/int64 operands of one node -> int64 throughout: ATC rejects a node whose integer
inputs mix the two (an index in int32 beside a shape in int64, say), while ONNX allows it where
the inputs belong to different type constraints (Slice's starts vs steps come from one, Gather's
data and indices from two)."""

from __future__ import annotations

from typing import Any

import onnx
from onnx import TensorProto, helper

from porter.export.passes import PassResult, onnx_pass

_INTS = (TensorProto.INT32, TensorProto.INT64)


def _elem_types(model: Any) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    g = inferred.graph
    types = {t.name: t.data_type for t in g.initializer}
    for v in [*g.input, *g.output, *g.value_info]:
        if v.type.HasField("tensor_type"):
            types[v.name] = v.type.tensor_type.elem_type
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    types[node.output[0]] = a.t.data_type
    return types


def _output_bound(node: Any, opset: int, index: int) -> bool:
    """Whether input ``index`` shares its type constraint with an output (a cast would change
    the node's output type, so it cannot be done locally)."""
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
    except onnx.defs.SchemaError:
        return True
    formals = schema.inputs
    if not formals:
        return True
    formal = formals[min(index, len(formals) - 1)]
    return formal.type_str in {o.type_str for o in schema.outputs}


@onnx_pass("int64-operands", order=20,
           matches="a node whose integer inputs mix int32 and int64",
           writes="Cast(to=int64) on each int32 input whose type is not tied to an output")
def int64_operands(model: Any) -> PassResult:
    """Cast int32 operands to int64 where a node mixes both; details name any left unresolved."""
    res = PassResult("int64-operands")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    types = _elem_types(model)
    new_nodes = []
    for node in model.graph.node:
        kinds = {types.get(i) for i in node.input if i} & set(_INTS)
        if len(kinds) == 2:
            for k, name in enumerate(node.input):
                if not name or types.get(name) != TensorProto.INT32:
                    continue
                if _output_bound(node, opset, k):
                    res.details.append(f"unresolved: {node.op_type} {node.name} input {k} "
                                       "is tied to its output type")
                    continue
                cast_out = f"{name}__int64_for_{node.name or node.op_type}_{k}"
                new_nodes.append(helper.make_node("Cast", [name], [cast_out], to=TensorProto.INT64,
                                                  name=f"{node.name}/cast_in{k}_int64"))
                node.input[k] = cast_out
                res.changed += 1
                res.details.append(f"{node.op_type} {node.name}: input {k} int32 -> int64")
        new_nodes.append(node)
    if res.changed:
        del model.graph.node[:]
        model.graph.node.extend(new_nodes)
    return res


def mixed_int_nodes(model: Any) -> list[str]:
    """Names of nodes that still mix int32 and int64 inputs (for the audit)."""
    types = _elem_types(model)
    return [f"{n.op_type} {n.name}" for n in model.graph.node
            if len({types.get(i) for i in n.input if i} & set(_INTS)) == 2]
