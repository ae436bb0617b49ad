"""Which TensorFlow ops porter lets run: stateless compute only, checked before anything runs.

A TF graph is a program: ``WriteFile``, ``PrintV2`` (to a file), ``DebugIdentity`` (dumps),
``ReadFile``/``MatchingFiles``, ``Save``/``Restore`` with attacker paths and ``PyFunc`` all run
when any fetched tensor depends on them, control dependencies included, and tf2onnx executes
subgraphs while folding constants. porter therefore checks every node a run can reach against
:data:`INFERENCE_OPS` (plus :data:`VARIABLE_OPS` when a checkpoint is restored) *before* the
graph is handed to TensorFlow or tf2onnx; the refusal names the node. TensorFlow is never
imported here: nodes are anything with ``name``, ``op`` and ``input`` (porter's own parser or
TF's protobufs).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from porter.errors import UnsafeSourceError

__all__ = ["INFERENCE_OPS", "VARIABLE_OPS", "check_graph_ops", "check_restore"]

#: Stateless compute ops of inference graphs (no file, network, process or global state).
INFERENCE_OPS = frozenset("""
Placeholder PlaceholderV2 PlaceholderWithDefault Const Identity IdentityN NoOp StopGradient
Snapshot PreventGradient CheckNumerics CheckNumericsV2 EnsureShape
Add AddV2 AddN Sub Mul MulNoNan Div DivNoNan RealDiv FloorDiv FloorMod Mod TruncateDiv
TruncateMod Maximum Minimum Pow SquaredDifference Neg Abs Sign Square Sqrt Rsqrt Exp Expm1
Log Log1p Reciprocal Inv Floor Ceil Round Rint Sin Cos Tan Asin Acos Atan Atan2 Sinh Cosh
Tanh Asinh Acosh Atanh Erf Erfc Sigmoid Softplus Softsign Relu Relu6 Elu Selu LeakyRelu Gelu
Softmax LogSoftmax IsNan IsInf IsFinite ClipByValue L2Loss BiasAdd BiasAddV1
MatMul BatchMatMul BatchMatMulV2 BatchMatMulV3 Einsum
Conv2D Conv3D DepthwiseConv2dNative Conv2DBackpropInput Conv3DBackpropInputV2
MaxPool MaxPoolV2 MaxPool3D AvgPool AvgPool3D FusedBatchNorm FusedBatchNormV2
FusedBatchNormV3 LRN
Mean Sum Prod Max Min All Any ArgMax ArgMin Cumsum Cumprod
Cast Equal NotEqual Less LessEqual Greater GreaterEqual LogicalAnd LogicalOr LogicalNot
Select SelectV2 Where
Reshape Shape ShapeN Size Rank Squeeze ExpandDims Transpose ConjugateTranspose Concat
ConcatV2 ConcatOffset Split SplitV Slice StridedSlice Pack Unpack Tile Pad PadV2 MirrorPad
Fill ZerosLike OnesLike Range LinSpace Gather GatherV2 GatherNd ScatterNd OneHot Reverse
ReverseV2 BroadcastTo BroadcastArgs BroadcastGradientArgs InvertPermutation TopKV2
MatrixBandPart MatrixDiag MatrixDiagV2 MatrixDiagV3 MatrixDiagPart MatrixDiagPartV2
MatrixDiagPartV3 MatrixSetDiag MatrixSetDiagV2 MatrixSetDiagV3
ResizeBilinear ResizeNearestNeighbor ResizeBicubic ResizeArea CropAndResize SpaceToDepth
DepthToSpace SpaceToBatchND BatchToSpaceND ExtractImagePatches NonMaxSuppressionV2
NonMaxSuppressionV3 NonMaxSuppressionV4 NonMaxSuppressionV5
FakeQuantWithMinMaxVars FakeQuantWithMinMaxArgs FakeQuantWithMinMaxVarsPerChannel Dequantize
Switch Merge Enter Exit NextIteration LoopCond ControlTrigger
TensorArrayV3 TensorArrayReadV3 TensorArrayWriteV3 TensorArrayGatherV3 TensorArrayScatterV3
TensorArraySizeV3 TensorArraySplitV3 TensorArrayConcatV3
""".split())

#: What restoring a checkpoint into a MetaGraph adds (RestoreV2 is checked by check_restore).
VARIABLE_OPS = frozenset("""
VariableV2 Variable VarHandleOp ReadVariableOp Assign AssignVariableOp VarIsInitializedOp
IsVariableInitialized RestoreV2 RandomUniform RandomStandardNormal TruncatedNormal
""".split())


#: Ops known to touch files, processes or python: named first when a graph holds several.
KNOWN_IO = frozenset("""
WriteFile ReadFile MatchingFiles PrintV2 Print DebugIdentity DebugIdentityV2 DebugIdentityV3
DebugNanCount DebugNumericSummary DebugNumericSummaryV2 Save SaveV2 SaveSlices Restore RestoreV2
RestoreSlice MergeV2Checkpoints PyFunc PyFuncStateless EagerPyFunc ImmutableConst
""".split())


def _inputs(node: Any) -> list[str]:
    return list(node.inputs if hasattr(node, "inputs") else node.input)


def _producer(inp: str) -> str:
    return inp.lstrip("^").split(":")[0]


def _tensor(inp: str) -> str:
    name = inp.lstrip("^")
    return name if ":" in name else f"{name}:0"


def _reachable(nodes: dict[str, Any], roots: Iterable[str], feeds: Iterable[str] = ()) -> list[str]:
    """Names of the nodes ``roots`` depend on (data and control inputs), roots included.

    A data edge from a fed tensor (``NAME:K`` in ``feeds``) is not followed: TensorFlow never
    runs what only computes a tensor that is fed."""
    fed = {_tensor(f) for f in feeds}
    seen: set[str] = set()
    stack = [_producer(r) for r in roots if _tensor(r) not in fed]
    order = []
    while stack:
        name = stack.pop()
        if name in seen or name not in nodes:
            continue
        seen.add(name)
        order.append(name)
        stack.extend(_producer(i) for i in _inputs(nodes[name])
                     if i.startswith("^") or _tensor(i) not in fed)
    return order


def check_graph_ops(graph_nodes: Iterable[Any], where: str, roots: Iterable[str] | None = None,
                    allowed: frozenset[str] = INFERENCE_OPS, feeds: Iterable[str] = ()) -> None:
    """Refuse (UnsafeSourceError naming the node) any op outside ``allowed`` among the nodes
    ``roots`` reach (not through the tensors in ``feeds``), or among all nodes when ``roots``
    is None."""
    nodes = {n.name: n for n in graph_nodes}
    names = list(nodes) if roots is None else _reachable(nodes, roots, feeds)
    bad = [(name, nodes[name].op) for name in names if nodes[name].op not in allowed]
    if bad:
        bad.sort(key=lambda nb: nb[1] not in KNOWN_IO)  # name the file / code ops first
        shown = ", ".join(f"{op} (node {name!r})" for name, op in bad[:3])
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise UnsafeSourceError(
            f"{where}: TensorFlow op {shown}{more} not on porter's allow-list of stateless "
            "compute ops; porter never runs file, debug, print, save or python ops from a model")


def check_restore(graph_nodes: Iterable[Any], restore_op: str, filename_tensor: str,
                  where: str) -> None:
    """The restore op may only reach variable ops, and every RestoreV2 must read the prefix
    the saver feeds (``filename_tensor``), never a path written into the graph."""
    nodes = {n.name: n for n in graph_nodes}
    check_graph_ops(nodes.values(), where, [restore_op], INFERENCE_OPS | VARIABLE_OPS)
    want = _producer(filename_tensor)
    for name in _reachable(nodes, [restore_op]):
        n = nodes[name]
        if n.op == "RestoreV2" and (not _inputs(n) or _producer(_inputs(n)[0]) != want):
            raise UnsafeSourceError(f"{where}: RestoreV2 node {name!r} reads a prefix other than "
                                    f"the saver's {filename_tensor!r}")
