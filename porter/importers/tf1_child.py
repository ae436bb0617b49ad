"""TF-side GraphDef preparation before tf2onnx, for ``ChildRuntime("...tf1_child:prepared")``.

TensorFlow is imported only here, in a child process (it must never share one with Paddle):
:func:`prepared` runs in :class:`porter.verification.runtimes.child.ChildRuntime`, writes the
prepared frozen GraphDef to ``request["out"]`` and reports what it did as the runner's ``info``:

1. ``meta`` + ``variables``: import the MetaGraph *without* its checkpoint: each variable the
   plan names becomes a Placeholder of its dtype (``"stream"``: porter binds the
   checkpoint's tensor to it after tf2onnx, read from its own map of the bundle) or a Const of
   the value porter read and sent (``"inline"``: non-float, scalar or partitioned variables);
   resource reads (``ReadVariableOp``) become Identity. No weight enters this process, so its
   memory does not grow with the model. A graph that reads a variable any other way (a
   ``ResourceGather``, a ref op) says so (:data:`NOT_STREAMABLE`) and porter freezes instead;
   ``meta`` + ``checkpoint``: import the MetaGraph, restore the variables and freeze them into
   Consts (``convert_variables_to_constants``); else ``graph``: a frozen GraphDef as it is.
   Only what ``outputs`` need is kept.
2. ``feeds``: each named inner tensor (``"pre/scaled:0"``) becomes a Placeholder of the given
   shape, so a graph without Placeholders has inputs (its producer is cut away).
3. every ``Dequantize`` of a quantized Const (with Const min/max) is folded to a float Const by
   :func:`porter.importers.tf1.dequantize`, and each fold is checked against TF's own Dequantize.
"""

from __future__ import annotations

import os

import numpy as np

#: imported by the ChildRuntime before it confines itself (see porter.verification.sandbox)
PRELOAD = ("tensorflow", "porter.importers.tf1")

_QUANTIZED = ("qint8", "quint8", "qint16", "quint16", "qint32")
_VARIABLE_OPS = ("VariableV2", "Variable", "VarHandleOp")
#: opens the error a graph gets when its variables cannot be replaced (porter then freezes it)
NOT_STREAMABLE = "variables cannot stream"


def _freeze(tf, meta: str, checkpoint: str, outputs: list[str]):
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        saver = v1.train.import_meta_graph(meta, clear_devices=True)
        with v1.Session(graph=graph) as sess:
            saver.restore(sess, checkpoint)
            return v1.graph_util.convert_variables_to_constants(
                sess, graph.as_graph_def(), [o.split(":")[0] for o in outputs])


def _weightless(tf, meta: str, variables: dict[str, dict]):
    """The MetaGraph's GraphDef with each planned variable a Placeholder or a Const, and
    resource reads as Identity (see the module docstring)."""
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.train.import_meta_graph(meta, clear_devices=True)
    graph_def = graph.as_graph_def()
    resources = {n.name for n in graph_def.node if n.op == "VarHandleOp"}
    for n in graph_def.node:
        if n.op in _VARIABLE_OPS and n.name in variables:
            plan = variables[n.name]
            dtype = n.attr["dtype"].type
            del n.input[:]
            for key in list(n.attr):
                del n.attr[key]
            n.attr["dtype"].type = dtype
            if plan["how"] == "stream":
                # no declared shape: grappler (which tf2onnx runs first) allocates and fills a
                # fake input for every Placeholder of fully known shape, a copy of each weight;
                # tf2onnx is given the checkpoint's shapes (--inputs NAME[dims]) instead
                n.op = "Placeholder"
                n.attr["shape"].shape.unknown_rank = True
            else:
                n.op = "Const"
                value = np.asarray(plan["value"])
                n.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(
                    value, tf.dtypes.as_dtype(dtype), list(value.shape)))
        elif n.op == "ReadVariableOp" and n.input and n.input[0].split(":")[0] in resources:
            dtype = n.attr["dtype"].type
            n.op = "Identity"
            for key in list(n.attr):
                del n.attr[key]
            n.attr["T"].type = dtype
    return graph_def


def _check_weightless(tf, graph_def) -> None:
    """Refuse (with :data:`NOT_STREAMABLE`) a kept graph that still holds a variable or reads a
    replaced one in a way only a restored variable supports."""
    left = [n.name for n in graph_def.node if n.op in _VARIABLE_OPS]
    if left:
        raise ValueError(f"{NOT_STREAMABLE}: variables {', '.join(left[:5])} are not planned")
    resource_ops = [f"{n.op} {n.name}" for n in graph_def.node
                    if n.op.startswith("Resource") or n.op in (
                        "VarIsInitializedOp", "VariableShape", "AssignVariableOp")]
    if resource_ops:
        raise ValueError(f"{NOT_STREAMABLE}: read by {', '.join(resource_ops[:3])}")
    try:
        _import(tf, graph_def)
    except (ValueError, TypeError) as exc:  # e.g. a ref op fed by what is now a Placeholder
        raise ValueError(f"{NOT_STREAMABLE}: {exc}") from exc


def _import(tf, graph_def):
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    return graph


def _cut(tf, graph_def, feeds: dict[str, list[int]]):
    graph = _import(tf, graph_def)
    by_name = {n.name: n for n in graph_def.node}
    for tensor, shape in feeds.items():
        node, _, index = tensor.partition(":")
        if node not in by_name:
            raise ValueError(f"--inputs {tensor}: no node {node!r} in the graph")
        if index not in ("", "0"):
            raise ValueError(f"--inputs {tensor}: only a node's first output (:0) can be fed")
        dtype = graph.get_tensor_by_name(f"{node}:0").dtype
        nd = by_name[node]
        nd.op = "Placeholder"
        del nd.input[:]
        for key in list(nd.attr):
            del nd.attr[key]
        nd.attr["dtype"].type = dtype.as_datatype_enum
        nd.attr["shape"].shape.CopyFrom(
            tf.TensorShape([None if d < 0 else d for d in shape]).as_proto())
    return graph_def


def _fold_dequantize(tf, graph_def) -> list[dict]:
    from porter.importers.tf1 import dequantize

    by_name = {n.name: n for n in graph_def.node}
    todo = []
    for n in graph_def.node:
        if n.op != "Dequantize":
            continue
        srcs = [by_name.get(i.split(":")[0]) for i in n.input[:3]]
        if any(s is None or s.op != "Const" for s in srcs):
            continue
        todo.append((n, srcs))
    if not todo:
        return []
    graph = _import(tf, graph_def)
    with tf.compat.v1.Session(graph=graph) as sess:
        want = sess.run([f"{n.name}:0" for n, _ in todo])
    folds = []
    for (n, (q, lo, hi)), ref in zip(todo, want):
        qtype = tf.dtypes.as_dtype(q.attr["dtype"].type).name
        if qtype not in _QUANTIZED:
            continue
        mode = n.attr["mode"].s.decode() or "MIN_COMBINED"
        axis = int(n.attr["axis"].i) if "axis" in n.attr else -1
        narrow = bool(n.attr["narrow_range"].b) if "narrow_range" in n.attr else False
        qv = tf.make_ndarray(q.attr["value"].tensor)
        ours = dequantize(qv, qtype, tf.make_ndarray(lo.attr["value"].tensor),
                          tf.make_ndarray(hi.attr["value"].tensor), mode, axis, narrow)
        delta = float(np.abs(ours.astype(np.float64) - ref).max()) if ref.size else 0.0
        peak = float(np.abs(ref).max()) if ref.size else 0.0
        if not delta <= 1e-6 * max(1.0, peak):
            raise ValueError(f"folding {n.name} ({qtype} {mode}) disagrees with TensorFlow's "
                             f"Dequantize: max|Δ| {delta:.3e}")
        out_dtype = tf.dtypes.as_dtype(n.attr["dtype"].type) if "dtype" in n.attr else tf.float32
        n.op = "Const"
        del n.input[:]
        for key in list(n.attr):
            del n.attr[key]
        n.attr["dtype"].type = out_dtype.as_datatype_enum
        n.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(ours.astype(out_dtype.as_numpy_dtype)))
        folds.append({"node": n.name, "quantized": q.name, "min": lo.name, "max": hi.name,
                      "dtype": qtype, "mode": mode, "axis": axis, "narrow_range": narrow,
                      "shape": list(qv.shape), "max_abs_vs_tensorflow": delta})
    return folds


def prepare(request: dict) -> dict:
    """Freeze / cut / fold as the request says; write ``request["out"]``; report what changed."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    from porter.verification.runtimes.tf1 import unpin

    request = unpin(request)
    outputs = list(request["outputs"])
    variables = request.get("variables")
    if request.get("meta") and variables is not None:
        graph_def = tf.compat.v1.graph_util.extract_sub_graph(  # before any import: training
            _weightless(tf, request["meta"], variables),  # ops would not take a Placeholder
            [o.split(":")[0] for o in outputs])
    elif request.get("meta"):
        graph_def = _freeze(tf, request["meta"], request["checkpoint"], outputs)
    else:
        graph_def = tf.compat.v1.GraphDef()
        data = request.get("graph_bytes")
        if not isinstance(data, bytes):
            with open(request["graph"], "rb") as fh:
                data = fh.read()
        graph_def.ParseFromString(data)
    feeds = {k: list(v) for k, v in (request.get("feeds") or {}).items()}
    if feeds:
        graph_def = _cut(tf, graph_def, feeds)
    folds = _fold_dequantize(tf, graph_def)
    graph_def = tf.compat.v1.graph_util.extract_sub_graph(
        graph_def, [o.split(":")[0] for o in outputs])
    if variables is not None:
        _check_weightless(tf, graph_def)
    graph = _import(tf, graph_def)
    placeholders = [{"name": f"{op.name}:0", "dtype": op.outputs[0].dtype.name,
                     "shape": op.outputs[0].shape.as_list()
                     if op.outputs[0].shape.rank is not None else None}
                    for op in graph.get_operations()
                    if op.type in ("Placeholder", "PlaceholderV2")]
    streamed = {n for n, plan in (variables or {}).items() if plan["how"] == "stream"}
    with open(request["out"], "wb") as fh:
        fh.write(graph_def.SerializeToString())
    return {"inputs": [p for p in placeholders if p["name"][:-2] not in streamed],
            "variables": [p for p in placeholders if p["name"][:-2] in streamed],
            "folds": folds, "tensorflow": tf.__version__,
            "consts": [n.name for n in graph_def.node if n.op == "Const"]}


class _Done:
    """The ChildRuntime runner: preparation happens at init; ``info`` carries the result."""

    def __init__(self, info: dict) -> None:
        self.info = info

    def __call__(self, inputs: dict) -> dict:
        return {}


def prepared(request: dict) -> _Done:
    """ChildRuntime factory: :func:`prepare` the request, report it as ``info``."""
    return _Done(prepare(request))
