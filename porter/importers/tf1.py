"""TensorFlow 1.x importers: checkpoints, MetaGraphs and frozen GraphDefs, without TensorFlow.

- ``tf1-checkpoint``: a tensor-bundle prefix (``model.ckpt-18``, which is not itself a file),
  its ``.index``/``.data-*`` file, or a folder (its ``checkpoint`` file's
  ``model_checkpoint_path``, else its single prefix). Tensors are checkpoint variables (kind
  ``"variable"``); the op graph comes from a sibling ``prefix.meta`` when there is one.
- ``tf1-metagraph``: a ``.meta`` MetaGraphDef; tensors from the sibling checkpoint if present.
- ``tf1-frozen``: a GraphDef ``.pb`` whose weights are Const nodes (kind ``"constant"``; floating
  Consts of rank >= 1, the rest stay attributes of the graph).

The op graph is a networkx DiGraph keyed by node name with ``op_type``, ``inputs`` (``"x:0"``
form, control inputs as ``"^x"``), ``outputs``, ``attrs``, ``device``, ``index``; edges carry
``tensor`` (and ``control=True`` for control dependencies). Training state is recognised by
:func:`classify_variable` and dropped by recipes that include :data:`TRAINING_STATE_RULES`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from porter.errors import FormatError, PorterError
from porter.importers import importer, read_magic
from porter.importers.tf_bundle import BundleReader, checkpoint_prefix
from porter.importers.tf_proto import (
    GraphDef,
    dtype_name,
    np_dtype,
    parse_graph_def,
    parse_meta_graph,
)
from porter.source import Source, TensorRef

__all__ = ["CheckpointSource", "load_checkpoint", "load_metagraph", "load_frozen", "classify_variable",
           "TRAINING_STATE_RULES", "tf_graph", "read_graph_def", "to_onnx", "graph_inputs",
           "dequantize", "inference_io", "prepare_graph", "PreparedGraph", "parse_io_spec"]

_OPTIMIZER_SLOT = re.compile(
    r"/(Momentum|Adam|RMSProp|Adagrad|AdagradDA|Adadelta|Ftrl|ProximalAdagrad|"
    r"ProximalGradientDescent|Adamax|Nadam|LARS|AdamW|LazyAdam)(_\d+)?$"
    r"|(^|/)(beta1_power|beta2_power)(_\d+)?$|\.OPTIMIZER_SLOT/|^optimizer/")
_EMA = re.compile(r"/ExponentialMovingAverage(_\d+)?$|ExponentialMovingAverage/")
_STEP = re.compile(r"(^|/)global_step(/\.ATTRIBUTES/VARIABLE_VALUE)?$|^save_counter/|"
                   r"^optimizer/iter/")

# Drop rules for recipes (rules as data): optimizer slots, EMA shadows, step counters.
TRAINING_STATE_RULES: tuple[tuple[str, None, str], ...] = (
    (_OPTIMIZER_SLOT.pattern, None, "optimizer state (slot or accumulator)"),
    (_EMA.pattern, None, "exponential-moving-average shadow copy"),
    (_STEP.pattern, None, "training step counter"),
)


def classify_variable(name: str, shape: tuple[int, ...] | None = None,
                      dtype: Any = None) -> str:
    """``"weight"``, ``"optimizer"``, ``"ema"`` or ``"step"`` for a checkpoint variable.

    Names decide; with ``shape`` and ``dtype`` an unnamed integer scalar (TF1's bare
    ``tf.Variable(0, trainable=False)`` saved as ``Variable``) also counts as a step counter.
    """
    if _STEP.search(name):
        return "step"
    if _OPTIMIZER_SLOT.search(name):
        return "optimizer"
    if _EMA.search(name):
        return "ema"
    if (shape is not None and tuple(shape) == () and dtype is not None
            and np.dtype(dtype).kind in "iu" and re.fullmatch(r"Variable(_\d+)?", name)):
        return "step"
    return "weight"


# ------------------------------------------------------------------------------------ graphs

def _tensor_name(inp: str) -> str:
    if inp.startswith("^"):
        return inp
    return inp if ":" in inp else f"{inp}:0"


def _producer(tensor: str) -> str:
    return tensor[1:] if tensor.startswith("^") else tensor.rsplit(":", 1)[0]


_INLINE_CONST = 1024


def tf_graph(graph_def: GraphDef) -> nx.DiGraph:
    """A GraphDef as a DiGraph in file order (same convention as the ONNX importer).

    A Const's ``value`` attribute is decoded when it holds at most 1024 elements; larger ones
    are described by a string (the Source's tensors hold them lazily).
    """
    g = nx.DiGraph()
    outputs: dict[str, set[str]] = {}
    for node in graph_def.nodes:
        for inp in node.inputs:
            t = _tensor_name(inp)
            if not t.startswith("^"):
                outputs.setdefault(_producer(t), set()).add(t)
    for i, node in enumerate(graph_def.nodes):
        outs = sorted(outputs.get(node.name, {f"{node.name}:0"}),
                      key=lambda t: int(t.rsplit(":", 1)[1]))
        attrs = node.attrs()
        if "value" in node.raw_attrs:  # small constants inline (shapes, eps); weights stay lazy
            code, shape, load = node.const()
            small = int(np.prod(shape, dtype=np.int64)) <= _INLINE_CONST
            attrs["value"] = load() if small else f"<tensor {dtype_name(code)} {list(shape)}>"
        g.add_node(node.name, op_type=node.op, inputs=[_tensor_name(x) for x in node.inputs],
                   outputs=outs, attrs=attrs, device=node.device, index=i)
    for node in graph_def.nodes:
        for inp in node.inputs:
            t = _tensor_name(inp)
            src = _producer(t)
            if src in g:
                g.add_edge(src, node.name, tensor=t, control=t.startswith("^"))
    return g


def graph_inputs(graph: nx.DiGraph) -> list[dict[str, Any]]:
    """Placeholders (not those with a default) with dtype and shape (-1 / None unknown)."""
    out = []
    for name, data in graph.nodes(data=True):
        if data["op_type"] in ("Placeholder", "PlaceholderV2"):
            shape = data["attrs"].get("shape")
            out.append({"name": f"{name}:0", "dtype": data["attrs"].get("dtype"),
                        "shape": None if shape is None else list(shape)})
    return out


def read_graph_def(path: str | Path, data: bytes | None = None) -> GraphDef:
    """Parse a frozen GraphDef file (or its bytes, already read), FormatError if it is not one."""
    path = Path(path)
    try:
        gd = parse_graph_def(path.read_bytes() if data is None else data)
    except FormatError as exc:
        raise FormatError(f"{path}: not a readable GraphDef ({exc})") from exc
    if not gd.nodes:
        raise FormatError(f"{path}: not a readable GraphDef (no nodes)")
    return gd


def _read_meta(path: Path, held: dict[str, bytes] | None = None):
    """Parse a MetaGraphDef file; its bytes go into ``held`` (name -> bytes) when given."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FormatError(f"{path}: cannot read ({exc.strerror})") from exc
    if held is not None:
        held[path.name] = data
    try:
        meta = parse_meta_graph(data)
    except FormatError as exc:
        raise FormatError(f"{path}: not a readable MetaGraphDef ({exc})") from exc
    if not meta.graph.nodes:
        raise FormatError(f"{path}: not a readable MetaGraphDef (no graph)")
    return meta


_VARIABLE_OPS = ("VariableV2", "Variable", "VarHandleOp")
#: Most names a Saver's restore op may list (its tensor_names / shape_and_slices Consts).
_MAX_SAVED_NAMES = 1 << 20


def saved_variables(graph_def: GraphDef, graph: nx.DiGraph) -> dict[str, list[str]]:
    """Variable node -> [checkpoint key, slice spec] as the MetaGraph's Saver restores it.

    Read from the restore ops: output ``k`` of a ``RestoreV2`` is the tensor saved under its
    ``tensor_names[k]`` (``shape_and_slices[k]`` non-empty for one part of a partitioned
    variable), assigned (through Identity) to a variable. A variable the Saver does not name
    is absent; TF's own default key for it is its node name.
    """
    nodes = {n.name: n for n in graph_def.nodes}
    readers: dict[str, list[str]] = {}
    for name, data in graph.nodes(data=True):
        for inp in data["inputs"]:
            readers.setdefault(inp, []).append(name)

    def strings(tensor: str) -> list[str] | None:
        node = nodes.get(_producer(_tensor_name(tensor)))
        if node is None or node.op != "Const" or "value" not in node.raw_attrs:
            return None
        code, shape, load = node.const()
        if dtype_name(code) != "string" or int(np.prod(shape, dtype=np.int64)) > (
                _MAX_SAVED_NAMES):
            return None
        return [bytes(x).decode("utf-8", errors="replace") for x in np.ravel(load())]

    out: dict[str, list[str]] = {}
    for name, data in graph.nodes(data=True):
        if data["op_type"] != "RestoreV2" or len(data["inputs"]) < 3:
            continue
        keys, slices = strings(data["inputs"][1]), strings(data["inputs"][2])
        if keys is None or slices is None or len(keys) != len(slices):
            continue
        for k, (key, spec) in enumerate(zip(keys, slices)):
            todo, seen = [f"{name}:{k}"], 0
            while todo and seen < 16:
                tensor = todo.pop()
                seen += 1
                for r in readers.get(tensor, ()):
                    op = graph.nodes[r]["op_type"]
                    if op == "Identity":
                        todo.append(f"{r}:0")
                    elif op in ("Assign", "AssignVariableOp"):
                        var = _producer(graph.nodes[r]["inputs"][0])
                        if var in graph and graph.nodes[var]["op_type"] in _VARIABLE_OPS:
                            out[var] = [key, spec]
    return out


# -------------------------------------------------------------------------------- checkpoint

class CheckpointSource(Source):
    """A Source whose path may be a bundle prefix (not a file): its digest covers its files.

    The index and MetaGraph are held as the bytes porter read (``held``); the data shards are
    held open by the bundle reader (``native``) and read through those descriptors only, so a
    file renamed over one is never seen and one written in place is refused (as for ONNX
    external data) before a digest is recorded or a reference gets the bytes.
    """

    def hold(self, files: dict[str, bytes]) -> None:
        """Record the small files' bytes porter read and parsed (file name -> bytes)."""
        self.__dict__["_held"] = dict(files)

    def held(self, name: str) -> bytes:
        """The bytes porter read of one small file (the MetaGraph, the index), by name."""
        return self.__dict__["_held"][name]

    def _files_in_order(self) -> list[str]:
        names = set(self.__dict__.get("_held", {}))
        if isinstance(self.native, BundleReader):
            names.update(self.native.file_names())
        return sorted(names)

    def sha256(self) -> str:
        """sha256 over the index, data shards (and MetaGraph) by name and content, in order,
        of the bytes porter holds (shards through their open descriptors, checked unchanged)."""
        reader = self.native if isinstance(self.native, BundleReader) else None
        if reader is not None:
            reader.check_unchanged()
        digest = self.__dict__.get("_digest")
        if digest:
            return digest
        held = self.__dict__.get("_held")
        if held is None:  # built without an importer: the files as the paths hold them now
            h = hashlib.sha256()
            for f in sorted(Path(p) for p in self.files()):
                h.update(f.name.encode() + b"\0")
                with open(f, "rb") as fh:
                    while block := fh.read(1 << 20):
                        h.update(block)
            return h.hexdigest()
        h = hashlib.sha256()
        for name in self._files_in_order():
            h.update(name.encode() + b"\0")
            if name in held:
                h.update(held[name])
            else:
                reader.feed(h, name)
        self.__dict__["_digest"] = h.hexdigest()
        return self.__dict__["_digest"]

    def snapshot(self) -> dict[str, bytes]:
        """Each file's bytes by name, as porter holds them, for a reference to run: the same
        bytes the digest is of (refused if a shard changed since porter opened it)."""
        from porter.errors import UnsafeSourceError

        if "_held" not in self.__dict__:
            self.hold({Path(p).name: Path(p).read_bytes() for p in self.files()})
            files = dict(self.__dict__["_held"])
        else:
            held, reader = self.__dict__["_held"], self.native
            files = {name: held[name] if name in held else reader.read_file(name)
                     for name in self._files_in_order()}
        h = hashlib.sha256()
        for name in sorted(files):
            h.update(name.encode() + b"\0" + files[name])
        digest = self.__dict__.setdefault("_digest", h.hexdigest())
        if digest != h.hexdigest():
            raise UnsafeSourceError(f"{self.path}: the checkpoint's files changed while porter "
                                    "was reading them; run again on a quiet copy")
        return files


def _checkpoint_refs(reader: BundleReader) -> dict[str, TensorRef]:
    refs = {}
    for name, entry in reader.entries.items():
        try:
            dt = np_dtype(entry.dtype)
        except FormatError:
            continue  # resource/variant entries hold no array
        refs[name] = TensorRef(name, tuple(entry.shape), dt,
                               lambda n=name: reader.read(n), "variable")
    return refs


def _checkpoint_meta(reader: BundleReader) -> dict[str, Any]:
    kinds = {n: classify_variable(n, e.shape, np_dtype(e.dtype) if e.dtype != 7 else None)
             for n, e in reader.entries.items()}
    return {"prefix": str(reader.prefix), "header": reader.header, "files": reader.files(),
            "dtypes": {n: dtype_name(e.dtype) for n, e in reader.entries.items()},
            "partitioned": [n for n, e in reader.entries.items() if e.slices],
            "variable_kinds": kinds}


def _sniff_checkpoint(path: Path) -> bool:
    if path.is_dir():
        return checkpoint_prefix(path) is not None
    if path.is_file() and not (path.name.endswith(".index") or ".data-" in path.name):
        return False
    prefix = checkpoint_prefix(path)
    return prefix is not None and read_magic(Path(f"{prefix}.index"), 1) != b""


@importer("tf1-checkpoint", sniff=_sniff_checkpoint)
def load_checkpoint(path: Path) -> Source:
    """A tensor-bundle checkpoint (prefix, index/data file or folder) as lazy variables."""
    prefix = checkpoint_prefix(path)
    if prefix is None:
        raise FormatError(f"{path}: no TensorFlow checkpoint found (no .index beside it)")
    reader = BundleReader(prefix)
    meta = _checkpoint_meta(reader)
    graph = None
    meta_path = Path(f"{prefix}.meta")
    held = dict(reader.blobs)
    if meta_path.is_file():
        mg = _read_meta(meta_path, held)
        graph = tf_graph(mg.graph)
        meta.update(metagraph=str(meta_path), inputs=graph_inputs(graph),
                    tensorflow_version=mg.tensorflow_version,
                    saved_as=saved_variables(mg.graph, graph))
        meta["files"] = [*meta["files"], meta_path]
    source = CheckpointSource(path=Path(path), format="tf1-checkpoint",
                              tensors=_checkpoint_refs(reader), graph=graph, meta=meta,
                              native=reader)
    source.hold(held)
    return source


# --------------------------------------------------------------------------------- metagraph

def _sniff_metagraph(path: Path) -> bool:
    return path.is_file() and path.suffix == ".meta" and read_magic(path, 1) == b"\x0a"


@importer("tf1-metagraph", sniff=_sniff_metagraph)
def load_metagraph(path: Path) -> Source:
    """A MetaGraphDef; its variables come from the sibling checkpoint when there is one."""
    held: dict[str, bytes] = {}
    mg = _read_meta(path, held)
    graph = tf_graph(mg.graph)
    prefix = Path(str(path)[:-len(".meta")])
    refs: dict[str, TensorRef] = {}
    meta: dict[str, Any] = {"files": [path]}
    reader = None
    if Path(f"{prefix}.index").is_file():
        reader = BundleReader(prefix)
        held.update(reader.blobs)
        refs = _checkpoint_refs(reader)
        meta.update(_checkpoint_meta(reader))
        meta["files"] = [path, *reader.files()]
    meta.update(metagraph=str(path), inputs=graph_inputs(graph), tags=mg.tags,
                tensorflow_version=mg.tensorflow_version, saver=mg.saver,
                collections=mg.collections, checkpoint=str(prefix) if reader else None,
                saved_as=saved_variables(mg.graph, graph))
    source = CheckpointSource(path=path, format="tf1-metagraph", tensors=refs, graph=graph,
                              meta=meta, native=reader)
    source.hold(held)
    return source


# ------------------------------------------------------------------------------------ frozen

QUANTIZED_DTYPES = ("qint8", "quint8", "qint16", "quint16", "qint32")

def _sniff_frozen(path: Path) -> bool:
    # GraphDef field 1 (node, length-delimited) opens with 0x0a; a SavedModel opens with 0x08.
    return path.is_file() and path.suffix == ".pb" and read_magic(path, 1) == b"\x0a"


@importer("tf1-frozen", sniff=_sniff_frozen)
def load_frozen(path: Path) -> Source:
    """A frozen GraphDef: floating Const nodes of rank >= 1 become lazy ``constant`` tensors.

    The file's bytes stay in ``native``: the TF reference and tf2onnx get those bytes (the
    ones parsed, checked and hashed), never the path again.
    """
    data = path.read_bytes()
    gd = read_graph_def(path, data)
    refs: dict[str, TensorRef] = {}
    dtypes: dict[str, str] = {}
    for node in gd.nodes:
        if node.op != "Const" or "value" not in node.raw_attrs:
            continue
        code, shape, load = node.const()
        if dtype_name(code) not in ("float32", "float64", "float16", "bfloat16",
                                    *QUANTIZED_DTYPES) or not shape:
            continue  # quantized Consts are weights too (folded through Dequantize later)
        refs[node.name] = TensorRef(node.name, shape, np_dtype(code), load, "constant")
        dtypes[node.name] = dtype_name(code)
    graph = tf_graph(gd)
    sinks = [n for n in graph if graph.out_degree(n) == 0 and graph.nodes[n]["op_type"]
             not in ("Const", "NoOp", "Assert")]
    meta = {"files": [path], "producer": gd.producer, "functions": gd.functions, "dtypes": dtypes,
            "inputs": graph_inputs(graph), "outputs": [f"{n}:0" for n in sinks]}
    return Source(path=path, format="tf1-frozen", tensors=refs, graph=graph, meta=meta,
                  native=data)


def check_frozen_ops(source: Source, outputs: list[str], feeds: list[str] = ()) -> None:
    """Refuse a TF1 graph whose ``outputs`` reach (not through the fed tensors ``feeds``) an op
    outside the TF allow-list."""
    from types import SimpleNamespace

    from porter.importers.tf_ops import INFERENCE_OPS, check_graph_ops

    nodes = [SimpleNamespace(name=n, op=d["op_type"], input=d["inputs"])
             for n, d in source.graph.nodes(data=True)]
    allowed = INFERENCE_OPS  # a MetaGraph's outputs also read its (restored) variables
    if source.format != "tf1-frozen":
        allowed = allowed | {"VariableV2", "Variable", "VarHandleOp", "ReadVariableOp"}
    check_graph_ops(nodes, str(source.path), roots=outputs, allowed=allowed, feeds=feeds)


# ------------------------------------------------------------------------ quantized weights

_QRANGE = {"qint8": (-128, 127), "quint8": (0, 255), "qint16": (-32768, 32767),
           "quint16": (0, 65535), "qint32": (-(2 ** 31), 2 ** 31 - 1)}


def dequantize(values: np.ndarray, qtype: str, min_range: Any, max_range: Any,
               mode: str = "MIN_COMBINED", axis: int = -1, narrow_range: bool = False
               ) -> np.ndarray:
    """TF's ``Dequantize`` in numpy (float32), for folding quantized Consts before tf2onnx.

    ``MIN_COMBINED``: ``min + (q + half) * (max - min) / (hi - lo)`` (half of the range for
    signed types); ``MIN_FIRST``: ``round(min / step) * step + (q - lo) * step`` with
    ``step = (max - min) * 2^b / (2^b - 1) / 2^b``;
    ``SCALED``: ``q * s`` with ``s`` from whichever of min/max reaches the type's end first
    (``narrow_range`` drops the lowest code). ``axis`` >= 0: per-slice min/max along it.
    """
    if qtype not in _QRANGE:
        raise FormatError(f"Dequantize of {qtype} is not supported")
    lo, hi = _QRANGE[qtype]
    q = np.asarray(values).astype(np.float64)
    mn = np.asarray(min_range, np.float32).astype(np.float64)
    mx = np.asarray(max_range, np.float32).astype(np.float64)
    if axis >= 0 and mn.ndim == 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        mn, mx = mn.reshape(shape), mx.reshape(shape)
    if mode == "MIN_COMBINED":
        half = (hi - lo + 1) / 2.0 if lo < 0 else 0.0
        out = (q + half) * ((mx - mn) / (hi - lo)) + mn
    elif mode == "MIN_FIRST":
        steps = float(1 << (8 * np.dtype(np_dtype_of(qtype)).itemsize))
        scale = (mx - mn) * (steps / (steps - 1.0)) / steps
        # TF snaps min to the quantization grid first (float32 step), then adds codes above it
        step32 = scale.astype(np.float32).astype(np.float64)
        out = np.round(mn / step32) * step32 + (q - lo) * scale
    elif mode == "SCALED":
        low = lo + (1 if narrow_range else 0)
        scale = mx / hi if lo == 0 else np.maximum(mn / low, mx / hi)
        out = q * scale
    else:
        raise FormatError(f"Dequantize mode {mode!r} is not supported")
    return out.astype(np.float32)


def np_dtype_of(qtype: str) -> np.dtype:
    """The numpy storage type of a TF quantized type name."""
    return {"qint8": np.dtype(np.int8), "quint8": np.dtype(np.uint8),
            "qint16": np.dtype(np.int16), "quint16": np.dtype(np.uint16),
            "qint32": np.dtype(np.int32)}[qtype]


# ---------------------------------------------------------------- inference inputs / outputs

_WEIGHTED = {"Conv2D", "Conv3D", "DepthwiseConv2dNative", "MatMul", "BatchMatMul",
             "BatchMatMulV2", "Conv2DBackpropInput", "FusedBatchNorm", "FusedBatchNormV3"}
# what an inference output holds: scores, boxes, class indices (ArgMax), masks (bool)
_NUMERIC = re.compile(r"float|half|bfloat|int|bool")
# Identity is judged apart (_stray_alias): tf.identity is how TF1 graphs name their outputs
_NOT_OUTPUTS = {"Shape", "ShapeN", "Size", "Rank", "NoOp", "Assert"}


def _is_training_op(name: str, op: str) -> bool:
    return (name.startswith(("gradients/", "save/")) or op.startswith(("Apply", "ResourceApply",
            "Assign", "Queue", "Reader")) or op.endswith("Summary") or op in ("SaveV2",
            "RestoreV2", "VariableV2", "VarHandleOp", "NoOp"))


def _stray_alias(node: str, data: nx.DiGraph, keep: set[str]) -> bool:
    """An unnamed ``Identity`` sink of a tensor that other live ops read: what
    ``tf.custom_gradient`` (``tf.nn.swish``) leaves behind, not an output. ``tf.identity(y,
    name="seg")``, the usual way to name an output, is one."""
    if re.fullmatch(r"Identity(_\d+)?", node.rsplit("/", 1)[-1]) is None:
        return False
    return any(v != node and v in keep for u in data.predecessors(node)
               for v in data.successors(u))


def inference_io(graph: nx.DiGraph) -> tuple[list[str], list[str]]:
    """The inference inputs and outputs of a (training) op graph, as tensor names.

    Inputs: the Placeholders that reach a weighted op (labels and targets do not). Outputs: the
    numeric sinks (float; integer like an ArgMax head or bool where nothing reads them: read
    on the label side they are metrics) of ops porter runs, among what depends on those
    inputs alone, once training machinery (gradients, optimizer updates,
    savers, summaries) is set aside. Pass ``--inputs``/``--outputs`` where this reads a graph
    wrongly.
    """
    from porter.importers.tf_ops import INFERENCE_OPS

    live = [n for n, d in graph.nodes(data=True) if not _is_training_op(n, d["op_type"])]
    data = nx.DiGraph((u, v) for u, v, d in graph.subgraph(live).edges(data=True)
                      if not d.get("control"))
    data.add_nodes_from(live)
    placeholders = [n for n, d in graph.nodes(data=True)
                    if d["op_type"] in ("Placeholder", "PlaceholderV2")]
    inputs = [p for p in placeholders
              if any(graph.nodes[n]["op_type"] in _WEIGHTED for n in nx.descendants(data, p))]
    inputs = inputs or placeholders
    others = set(placeholders) - set(inputs)
    tainted = set(others).union(*(nx.descendants(data, p) for p in others)) if others else set()
    keep = set().union(*(nx.descendants(data, p) for p in inputs)) - tainted if inputs else set()
    outputs = []
    for n in sorted(keep, key=lambda n: graph.nodes[n]["index"]):
        if any(v in keep for v in data.successors(n)):
            continue
        attrs = graph.nodes[n]["attrs"]
        dtype = (attrs.get("output_type") or attrs.get("out_type") or attrs.get("T")
                 or attrs.get("dtype") or "float32")
        op = graph.nodes[n]["op_type"]
        # an op porter does not run (strings, I/O) is no output it could give
        if op in _NOT_OUTPUTS or op not in INFERENCE_OPS or not _NUMERIC.search(str(dtype)):
            continue
        if op == "Identity" and _stray_alias(n, data, keep):
            continue
        if "float" not in str(dtype) and "half" not in str(dtype) and (
                op == "Exit" or any(True for _ in data.successors(n))):
            continue  # integers read on the label side (an accuracy's ArgMax) are a metric,
            # an integer leaving a while loop unread is its step counter
        outputs.append(f"{n}:0")
    return [f"{p}:0" for p in inputs], outputs


def parse_io_spec(text: str) -> tuple[str, list[int] | None]:
    """``"pre/scaled:0:1x14x14x3"`` or ``"images:0"`` -> (tensor name, shape or None).

    ``-1`` or ``?`` marks a free dimension; a name without ``:index`` means output 0.
    """
    parts = text.split(":")
    shape = None
    if len(parts) >= 2 and re.fullmatch(r"(-1|\?|\d+)([x,](-1|\?|\d+))*", parts[-1]) and (
            len(parts) == 3 or not parts[-1].isdigit() or "x" in parts[-1]):
        shape = [-1 if d in ("?", "-1") else int(d) for d in re.split(r"[x,]", parts[-1])]
        parts = parts[:-1]
    name = ":".join(parts)
    if not name or name.startswith(":"):
        raise FormatError(f"--inputs/--outputs {text!r}: expected NAME[:INDEX][:1x3x224x224]")
    return (name if ":" in name else f"{name}:0"), shape


# -------------------------------------------------------------------------- generic via ONNX

@dataclass
class PreparedGraph:
    """A GraphDef ready for tf2onnx, with what was done to get it."""

    path: Path
    inputs: list[dict[str, Any]]  # name, dtype, shape (None for free dims) of its Placeholders
    outputs: list[str]
    folds: list[dict[str, Any]]  # Dequantize folds, each checked against TensorFlow
    frozen_from: str | None  # the MetaGraph frozen with its checkpoint, if any
    feeds: dict[str, list[int]]  # inner tensors turned into inputs
    consts: list[str]  # the source tensors (Consts, variables) the prepared graph still reads
    #: Placeholder tensor ("fc/w:0") -> checkpoint key, for variables kept out of the graph:
    #: tf2onnx converts the graph without their values, porter binds them afterwards
    variables: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def tf2onnx_inputs(self, source: Source) -> list[str]:
        """tf2onnx's inputs: the graph's, then each variable with its checkpoint's shape (the
        prepared graph declares none, see :mod:`porter.importers.tf1_child`)."""
        return [i["name"] for i in self.inputs] + [
            f"{t}[{','.join(str(d) for d in source.tensors[k].shape)}]"
            for t, k in self.variables.items()]


#: Variables of these dtypes (rank >= 1, not partitioned) stay out of the prepared graph.
STREAMED_DTYPES = ("float16", "float32", "float64")
#: Inputs that must be constants (porter folds ``Dequantize`` of Consts before tf2onnx, which
#: converts a fake quantization with constant ranges only): a variable read there is inlined.
CONST_INPUTS = {"Dequantize": (0, 1, 2), "FakeQuantWithMinMaxVars": (1, 2)}


class NotStreamable(FormatError):
    """The graph reads a variable in a way a Placeholder cannot stand in for."""


def _reached(graph: nx.DiGraph, outputs: list[str], feeds: list[str]) -> set[str]:
    """Nodes the outputs depend on (data and control inputs), not looking past fed tensors."""
    fed = {f.rsplit(":", 1)[0] for f in feeds}
    seen: set[str] = set()
    todo = [o.rsplit(":", 1)[0] for o in outputs]
    while todo:
        node = todo.pop()
        if node in seen or node not in graph:
            continue
        seen.add(node)
        if node not in fed:
            todo.extend(_producer(i) for i in graph.nodes[node]["inputs"])
    return seen


def _variable_behind(graph: nx.DiGraph, tensor: str) -> str | None:
    """The variable a tensor reads through Identity / ReadVariableOp (``w/read``), if any."""
    node = _producer(_tensor_name(tensor))
    for _ in range(8):
        if node not in graph:
            return None
        data = graph.nodes[node]
        if data["op_type"] in _VARIABLE_OPS:
            return node
        if data["op_type"] not in ("Identity", "ReadVariableOp") or not data["inputs"]:
            return None
        node = _producer(data["inputs"][0])
    return None


def _slice_of(value: np.ndarray, spec: str) -> np.ndarray:
    """The part of a partitioned variable a Saver slice spec (``"10 4 4,3:0,4"``) names."""
    *full, extents = spec.split(" ")
    if [int(d) for d in full] != list(value.shape):
        raise FormatError(f"slice spec {spec!r} does not fit a tensor of shape "
                          f"{list(value.shape)}")
    index = []
    for part in extents.split(":"):
        if part == "-":
            index.append(slice(None))
        else:
            start, length = (int(x) for x in part.split(","))
            index.append(slice(start, start + length))
    return value[tuple(index)]


def variable_plan(source: Source, outputs: list[str],
                  feeds: list[str] = ()) -> dict[str, dict[str, Any]]:
    """Each variable the outputs read -> how the prepared graph gets it without TF restoring
    the checkpoint: ``{"how": "stream", "key"}`` (a Placeholder, bound to porter's
    read of the checkpoint after tf2onnx: float tensors of rank >= 1) or ``{"how": "inline",
    "key", "value"}`` (a Const of the value porter read: scalars, other dtypes, partitioned
    parts, and inputs tf2onnx needs constant, :data:`CONST_INPUTS`). The checkpoint key is
    the one the MetaGraph's Saver restores the variable from."""
    reader, graph = source.native, source.graph
    saved = source.meta.get("saved_as") or {}
    reached = _reached(graph, outputs, feeds)
    constant = {_variable_behind(graph, graph.nodes[n]["inputs"][i])
                for n in reached for i in CONST_INPUTS.get(graph.nodes[n]["op_type"], ())
                if i < len(graph.nodes[n]["inputs"])}
    plan: dict[str, dict[str, Any]] = {}
    for node in sorted(reached):
        data = graph.nodes[node]
        if data["op_type"] not in _VARIABLE_OPS:
            continue
        key, spec = saved.get(node, (node, ""))
        entry = reader.entries.get(key)
        if entry is None:
            raise FormatError(f"{source.path}: variable {node!r}, which the outputs read, is not "
                              f"in the checkpoint (no tensor {key!r})")
        dtype = str(data["attrs"].get("dtype", ""))
        if dtype != dtype_name(entry.dtype):
            raise FormatError(f"{source.path}: variable {node!r} is {dtype}; the checkpoint "
                              f"holds {key!r} as {dtype_name(entry.dtype)}")
        declared = data["attrs"].get("shape")
        fits = declared is None or (len(declared) == len(entry.shape) and all(
            d in (-1, None, s) for d, s in zip(declared, entry.shape)))
        if (not spec and not entry.slices and dtype in STREAMED_DTYPES and entry.shape and fits
                and node not in constant):
            plan[node] = {"how": "stream", "key": key}
            continue
        if key not in source.tensors:
            raise FormatError(f"{source.path}: variable {node!r} ({dtype}) cannot be read "
                              "from the checkpoint")
        value = source.tensors[key].numpy()
        plan[node] = {"how": "inline", "key": key,
                      "value": np.ascontiguousarray(_slice_of(value, spec) if spec else value)}
    return plan


def prepare_graph(source: Source, out: Path, inputs: dict[str, list[int] | None] | None = None,
                  outputs: list[str] | None = None, stream: bool = True) -> PreparedGraph:
    """The source's op graph as a Dequantize-folded GraphDef at ``out``, by TF in a child.

    With ``stream``, a checkpoint/MetaGraph's variables are kept out of it
    (:func:`variable_plan`): TensorFlow never restores the checkpoint, and tf2onnx converts a
    graph that holds no weight (:class:`NotStreamable` where the graph reads a variable in a
    way a Placeholder cannot stand in for). Without, the MetaGraph is restored and frozen.
    ``inputs`` naming non-Placeholder tensors (with their shapes) turn those into Placeholders.
    """
    if source.graph is None:
        raise FormatError(f"{source.path}: a {source.format} source without a MetaGraph has no "
                          "op graph to convert (put the .meta beside the checkpoint)")
    auto_in, auto_out = inference_io(source.graph) if source.format != "tf1-frozen" else (
        [i["name"] for i in source.meta.get("inputs", [])], list(source.meta.get("outputs", [])))
    outputs = list(outputs or auto_out)
    if not outputs:
        raise FormatError(f"{source.path}: no inference output found in the graph; name them "
                          "with --outputs NAME ...")
    placeholders = {i["name"] for i in graph_inputs(source.graph)}
    feeds: dict[str, list[int]] = {}
    for name, shape in (inputs or {}).items():
        node = name.rsplit(":", 1)[0]
        if node not in source.graph:
            raise FormatError(f"--inputs {name}: no node {node!r} in {source.path}")
        if name not in placeholders:
            if shape is None:
                raise FormatError(f"--inputs {name}: an inner tensor needs a shape "
                                  f"(NAME:1x224x224x3)")
            feeds[name] = shape
    check_frozen_ops(source, outputs, list(feeds))  # TF runs the graph to freeze and fold it
    request: dict[str, Any] = {"outputs": outputs, "feeds": feeds, "out": str(out)}
    frozen_from, plan = None, None
    if source.format == "tf1-frozen":
        request["graph"] = str(source.path)
        if isinstance(source.native, bytes):  # the bytes parsed and checked, not the path
            request["graph_bytes"] = source.native
    else:
        meta = source.meta.get("metagraph") or str(source.path)
        checkpoint = source.meta.get("prefix") or source.meta.get("checkpoint")
        if not checkpoint:
            raise FormatError(f"{meta}: no checkpoint beside the MetaGraph to restore")
        if stream and isinstance(source.native, BundleReader):
            plan = variable_plan(source, outputs, list(feeds))
            name = Path(meta).name  # the MetaGraph alone, its bytes as porter read them
            request.update(meta=name, pinned={name: source.held(name)}, variables={
                n: {k: v for k, v in p.items() if k != "key"} for n, p in plan.items()})
        else:
            from porter.verification.runtimes.tf1 import pinned_files

            request.update(meta=meta, checkpoint=str(checkpoint))
            request.update(pinned_files(source, meta, checkpoint))
            frozen_from = meta
    from porter.importers.tf1_child import NOT_STREAMABLE
    from porter.verification.runtimes.child import ChildRuntime

    try:
        with ChildRuntime("porter.importers.tf1_child:prepared", request, name="tensorflow",
                          write=[str(Path(out).parent)]) as child:
            ok = child.info
    except PorterError as exc:
        if plan is not None and NOT_STREAMABLE in str(exc):
            raise NotStreamable(str(exc).split(NOT_STREAMABLE, 1)[1].lstrip(": ")) from exc
        raise FormatError(f"{source.path}: {exc}") from exc
    wanted = set(inputs or auto_in) | set(feeds)
    ins = [i for i in ok["inputs"] if not wanted or i["name"] in wanted] or ok["inputs"]
    variables = {v["name"]: plan[v["name"][:-2]]["key"] for v in ok.get("variables", [])} \
        if plan else {}
    consts = list(ok["consts"])
    if plan:  # the source tensors behind the variables the kept graph reads
        consts = sorted({plan[c]["key"] if c in plan else c for c in consts}
                        | set(variables.values()))
    return PreparedGraph(Path(out), ins, outputs, ok["folds"], frozen_from, feeds, consts,
                         variables)


def bind_variables(model: Any, source: Source, prepared: PreparedGraph, path: Path) -> Source:
    """tf2onnx's model of a prepared graph as an ONNX Source whose variable inputs are
    initializers valued by the checkpoint's own tensors (porter's bundle reader: views of its
    private map), so the generic converter uses them as it uses ONNX external data."""
    from porter.importers.onnx import source_from_model

    reader = source.native
    refs = {}
    for tensor, key in prepared.variables.items():
        entry = reader.entries[key]
        refs[tensor] = TensorRef(tensor, tuple(entry.shape), np_dtype(entry.dtype),
                                 lambda k=key: reader.read(k), "variable")
    return source_from_model(model, path, bound=refs)


def to_onnx(source: Source | Path, inputs: list[str] | None = None,
            outputs: list[str] | None = None, opset: int = 17) -> Any:
    """A frozen TF1 graph as an ``onnx.ModelProto`` through tf2onnx, run in a child process.

    ``source`` is a ``tf1-frozen`` Source or the path of a prepared GraphDef. ``inputs`` may
    give a shape to a Placeholder that declares none (``"fc/w:0[512,10]"``). TensorFlow is
    imported only in the child (it must never share a process with Paddle).
    """
    import os
    import subprocess
    import sys
    import tempfile

    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        if isinstance(source, Source):
            if source.format != "tf1-frozen":
                raise FormatError(f"to_onnx needs a frozen GraphDef, got {source.format}")
            inputs = inputs or [i["name"] for i in source.meta["inputs"]]
            outputs = outputs or list(source.meta["outputs"])
            check_frozen_ops(source, outputs)  # tf2onnx runs subgraphs while folding constants
            path = Path(tmp) / "graph.pb"  # the bytes porter parsed and checked, not the path again
            path.write_bytes(source.native if isinstance(source.native, bytes)
                             else source.path.read_bytes())
        else:
            path = Path(source)
        out = Path(tmp) / "model.onnx"
        cmd = [sys.executable, "-m", "tf2onnx.convert", "--graphdef", str(path),
               "--inputs", ",".join(inputs or []), "--outputs", ",".join(outputs or []),
               "--opset", str(opset), "--output", str(out)]
        from porter.verification.sandbox import wrap

        # tf2onnx executes subgraphs while folding constants: confined like the references
        proc = subprocess.run(wrap(cmd, read=[path.parent], write=[tmp]), capture_output=True,
                              text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
                                              "TMPDIR": tmp, "HOME": tmp,
                                              # tf2onnx walks sets: with string hashing
                                              # randomised, a Loop body's inputs came out in
                                              # either order, so one graph gave two modules
                                              "PYTHONHASHSEED": "0"})
        if proc.returncode != 0 or not out.is_file():
            tail = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            raise FormatError(f"{path}: tf2onnx failed ({tail})")
        return onnx.load(str(out))
