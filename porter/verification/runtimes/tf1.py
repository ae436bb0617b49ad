"""TensorFlow 1.x (``tf.compat.v1``) sessions as parity references, for ChildRuntime only.

Use through :class:`porter.verification.runtimes.child.ChildRuntime` so TensorFlow lives in its own
process (it must never share one with Paddle)::

    ChildRuntime("porter.verification.runtimes.tf1:metagraph", {
        "meta": ".../PNet-18.meta",                       # checkpoint: meta minus ".meta"
        "inputs": {"image": "input_image:0"},             # torch name -> TF tensor
        "outputs": {"prob": ["conv4_1/Softmax:0", "conv4_1/BiasAdd:0"],  # [tensor, like]
                    "bbox": "conv4_2/BiasAdd:0"},
    })

Factories: :func:`metagraph` (MetaGraph + checkpoint restored), :func:`frozen` (a frozen
GraphDef), :func:`rebuilt` (a graph built by a ``"module:function"`` builder, variables restored
from a checkpoint). Runners take and return dicts of numpy arrays in the torch module's
convention: 4-D inputs arrive NCHW and are fed NHWC, 4-D outputs come back NCHW. An output given
as ``[tensor, like]`` is first reshaped to the runtime shape of ``like`` (TF code often flattens
to ``[-1, C]`` for a softmax); ``"layout": "none"`` in the payload turns all transposes off.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["metagraph", "frozen", "rebuilt", "SessionRunner"]

#: imported by the ChildRuntime before it confines itself (see porter.verification.sandbox)
PRELOAD = ("tensorflow",)


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    return tf


def _name(t: str) -> str:
    return t if ":" in t else f"{t}:0"


class SessionRunner:
    """Feeds named inputs to a ``tf.compat.v1.Session`` and fetches named outputs."""

    def __init__(self, session: Any, inputs: Mapping[str, str], outputs: Mapping[str, Any],
                 layout: str = "NCHW") -> None:
        import tensorflow as tf

        self.session, self.layout = session, layout
        self.inputs = {k: _name(v) for k, v in inputs.items()}
        self.outputs = {k: [_name(v)] if isinstance(v, str) else [_name(x) for x in v]
                        for k, v in outputs.items()}
        self.info = {"tensorflow": tf.__version__, "inputs": self.inputs,
                     "outputs": {k: v[0] for k, v in self.outputs.items()}}

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        convert = self.layout.upper() == "NCHW"
        feed = {}
        for name, tensor in self.inputs.items():
            x = np.asarray(inputs[name])
            feed[tensor] = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if (
                convert and x.ndim == 4) else x
        fetches = sorted({t for ts in self.outputs.values() for t in ts})
        values = dict(zip(fetches, self.session.run(fetches, feed)))
        out = {}
        for name, ts in self.outputs.items():
            y = np.asarray(values[ts[0]])
            if len(ts) > 1:
                y = y.reshape(np.shape(values[ts[1]]))
            out[name] = np.ascontiguousarray(y.transpose(0, 3, 1, 2)) if (
                convert and y.ndim == 4) else y
        return out


def pinned_files(source: Any, meta: str | None, checkpoint: str | None) -> dict[str, Any]:
    """Payload keys that hand a reference the checkpoint's (and MetaGraph's) bytes porter read
    and hashed (``source.snapshot()``), so the child never opens a path that can be swapped."""
    snapshot = getattr(source, "snapshot", None)
    if snapshot is None:
        return {}
    files = snapshot()
    pinned = {"pinned": files}
    if meta:
        pinned["meta"] = Path(meta).name
    if checkpoint:
        pinned["checkpoint"] = Path(str(checkpoint)).name
    return pinned


def unpin(payload: Mapping[str, Any]) -> dict[str, Any]:
    """In the child: the pinned copies of the MetaGraph and checkpoint stand in for the paths."""
    from porter.verification.runtimes.child import unpin as unpin_keys

    return unpin_keys(payload, ("meta", "checkpoint"))


def _session(graph: Any) -> Any:
    tf = _tf()
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=2,
                                      inter_op_parallelism_threads=1)
    return tf.compat.v1.Session(graph=graph, config=config)


def metagraph(payload: Mapping[str, Any]) -> SessionRunner:
    """Import ``payload["meta"]``, restore ``payload["checkpoint"]`` (default: meta prefix)."""
    from porter.importers.tf_ops import INFERENCE_OPS, check_graph_ops, check_restore

    tf = _tf()
    payload = unpin(payload)
    meta = str(payload["meta"])
    checkpoint = str(payload.get("checkpoint") or meta[:-len(".meta")])
    mg = tf.compat.v1.MetaGraphDef()
    with open(meta, "rb") as fh:
        mg.ParseFromString(fh.read())
    nodes = mg.graph_def.node
    check_graph_ops(nodes, meta, _fetch_roots(payload),
                    INFERENCE_OPS | {"VariableV2", "Variable", "VarHandleOp", "ReadVariableOp"},
                    feeds=_fed(payload))
    check_restore(nodes, mg.saver_def.restore_op_name, mg.saver_def.filename_tensor_name, meta)
    graph = tf.Graph()
    with graph.as_default():
        saver = tf.compat.v1.train.import_meta_graph(mg, clear_devices=True)
    sess = _session(graph)
    saver.restore(sess, checkpoint)
    return SessionRunner(sess, payload["inputs"], payload["outputs"],
                         payload.get("layout", "NCHW"))


def _fetch_roots(payload: Mapping[str, Any]) -> list[str]:
    outs = [t for v in payload["outputs"].values() for t in ([v] if isinstance(v, str) else v)]
    return outs


def _fed(payload: Mapping[str, Any]) -> list[str]:
    return [t for v in payload["inputs"].values() for t in ([v] if isinstance(v, str) else v)]


def frozen(payload: Mapping[str, Any]) -> SessionRunner:
    """Load the frozen GraphDef ``payload["graph_bytes"]`` (the bytes porter read; else the
    file ``payload["graph"]``), refuse ops off the allow-list the fetches reach, and run it."""
    from porter.importers.tf_ops import check_graph_ops

    tf = _tf()
    graph_def = tf.compat.v1.GraphDef()
    data = payload.get("graph_bytes")
    if not isinstance(data, bytes):
        with open(payload["graph"], "rb") as fh:
            data = fh.read()
    graph_def.ParseFromString(data)
    check_graph_ops(graph_def.node, str(payload.get("graph", "graph")), _fetch_roots(payload),
                    feeds=_fed(payload))
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    return SessionRunner(_session(graph), payload["inputs"], payload["outputs"],
                         payload.get("layout", "NCHW"))


def rebuilt(payload: Mapping[str, Any]) -> SessionRunner:
    """Build a graph with ``payload["builder"]`` and restore its variables from a checkpoint.

    The builder, ``"module:function"``, is called as ``function(tf, **payload.get("kwargs",
    {}))`` inside a fresh default graph and returns ``(inputs, outputs)``: dicts of torch name
    to TF tensor. Every global variable it creates is restored from ``payload["checkpoint"]``.
    """
    tf = _tf()
    payload = unpin(payload)
    mod, _, attr = str(payload["builder"]).partition(":")
    build = getattr(importlib.import_module(mod), attr)
    graph = tf.Graph()
    with graph.as_default():
        inputs, outputs = build(tf, **payload.get("kwargs", {}))
        saver = tf.compat.v1.train.Saver(tf.compat.v1.global_variables())
    sess = _session(graph)
    saver.restore(sess, str(payload["checkpoint"]))
    return SessionRunner(sess, {k: v.name for k, v in inputs.items()},
                         {k: v.name if hasattr(v, "name") else [x.name for x in v]
                          for k, v in outputs.items()}, payload.get("layout", "NCHW"))
