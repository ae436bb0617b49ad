"""The generic port: a source with no clean graph becomes a converted module, verified against
its *own* runtime.

ONNX is the hub: ONNX sources convert directly; TF1 frozen graphs go through tf2onnx and Paddle
inference models through paddle2onnx first. Verification always runs the original source
(onnxruntime for ONNX, a TensorFlow session, Paddle Inference), never the intermediate ONNX.
The output carries a generated, readable ``model.py`` that the manifest names as its graph.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from porter.errors import PorterError
from porter.mapping.folds import layout_permutations
from porter.mapping.report import MappingReport
from porter.source import Source
from porter.verification.parity import Case, Tolerance

__all__ = ["generic_port", "onnx_io", "default_cases", "parse_shape"]

CLASS_NAME = "Model"
# 1e-4 absolute, widened by 1e-6 of the output's largest magnitude (about 8 float32 ulps), so
# outputs in pixels (detector boxes) get the same relative strictness as those in [0, 1].
GENERIC_TOLERANCE = Tolerance(max_abs=1e-4, rel_to_peak=1e-6)
UNREACHED = "unused: not reached from the graph's outputs"
UPSTREAM_FORMATS = ("torch-checkpoint", "safetensors")  # traced from --upstream
DEFAULT_SPATIAL = (64, 96)  # stand-ins for unknown spatial sizes, distinct to catch transposes


def onnx_io(model: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Graph inputs (name, dims with None for unknown, numpy dtype) and output names."""
    from onnx import helper

    inits = {t.name for t in model.graph.initializer}
    inputs = []
    for v in model.graph.input:
        if v.name in inits:
            continue
        tt = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in tt.shape.dim]
        inputs.append({"name": v.name, "dims": dims,
                       "dtype": np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))})
    return inputs, [o.name for o in model.graph.output]


def parse_shape(text: str) -> tuple[str | None, tuple[int, ...]]:
    """``"x=1x3x48x192"`` or ``"1x3x48x192"`` -> (name or None, dims)."""
    name, _, dims = text.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.lower().replace(",", "x").split("x"))
    except ValueError as exc:
        raise PorterError(f"--shape {text!r}: expected NAME=1x3x224x224") from exc
    if not shape or any(d <= 0 for d in shape):
        raise PorterError(f"--shape {text!r}: dimensions must be positive")
    return (name or None), shape


#: Most elements one generated test input may have (a declared [1, 2**40] input must not be
#: allocated); ``PORTER_MAX_CASE_ELEMENTS`` raises it.
MAX_CASE_ELEMENTS = int(os.environ.get("PORTER_MAX_CASE_ELEMENTS", 1 << 28))


def default_cases(inputs: Sequence[dict[str, Any]],
                  shapes: Mapping[str | None, tuple[int, ...]] | None = None) -> list[Case]:
    """Two seeded cases: batch 1 and batch 2 (where the batch is free), unknown sizes filled."""
    shapes = dict(shapes or {})
    known = [spec["name"] for spec in inputs]
    unknown = [n for n in shapes if n is not None and n not in known]
    if unknown:
        raise PorterError(f"--shape names {', '.join(map(repr, unknown))}, but the model's "
                          f"inputs are {', '.join(map(repr, known))}")
    for spec in inputs:
        given = shapes.get(spec["name"]) or (shapes.get(None) if spec is inputs[0] else None)
        if given is not None and len(given) == len(spec["dims"]):
            clash = [f"dim {k}: {g} (model: {d})" for k, (g, d) in
                     enumerate(zip(given, spec["dims"])) if d is not None and g != d and k > 0]
            if clash:
                raise PorterError(f"--shape for {spec['name']} contradicts the model's fixed "
                                  f"sizes: {'; '.join(clash)}")
    cases = []
    for i, batch in enumerate((1, 2)):
        feeds = {}
        for j, spec in enumerate(inputs):
            given = shapes.get(spec["name"]) or (shapes.get(None) if j == 0 else None)
            if given is not None:
                if len(given) != len(spec["dims"]):
                    raise PorterError(f"--shape for {spec['name']}: rank {len(given)}, the model "
                                      f"wants rank {len(spec['dims'])}")
                dims = list(given)
                if spec["dims"] and spec["dims"][0] is None:
                    dims[0] = dims[0] * batch
            else:
                dims = []
                spatial = iter(DEFAULT_SPATIAL * 4)
                for k, d in enumerate(spec["dims"]):
                    dims.append(d if d is not None else (batch if k == 0 else next(spatial)))
            elements = int(np.prod(dims, dtype=np.float64)) if dims else 1
            if elements > MAX_CASE_ELEMENTS:
                raise PorterError(f"input {spec['name']!r} would be {'x'.join(map(str, dims))} "
                                  f"({elements} elements), over porter's limit of "
                                  f"{MAX_CASE_ELEMENTS} for a test case (set sizes with --shape "
                                  "NAME=DIMS, or raise PORTER_MAX_CASE_ELEMENTS)")
            rng = np.random.default_rng(1000 * i + j)
            dtype = spec["dtype"]
            if dtype.kind == "f":
                x = rng.uniform(-1, 1, dims).astype(dtype)
            elif dtype.kind == "b":
                x = rng.integers(0, 2, dims).astype(bool)
            else:
                x = rng.integers(0, 4, dims).astype(dtype)
            feeds[spec["name"]] = x
        name = " ".join("x".join(map(str, v.shape)) for v in feeds.values())
        cases.append(Case(name, feeds, 1000 * i))
        if not any(spec["dims"] and spec["dims"][0] is None for spec in inputs):
            break  # a fixed batch: one case is all the model accepts
    return cases


# The runtime each convertible format is verified against (never the intermediate ONNX).
REFERENCE_NAMES = {"onnx": "onnxruntime", "tf1-frozen": "tensorflow",
                   "tf1-checkpoint": "tensorflow", "tf1-metagraph": "tensorflow",
                   "paddle-inference": "paddle-inference",
                   **{fmt: "torch-upstream" for fmt in UPSTREAM_FORMATS}}
TF1_FORMATS = ("tf1-frozen", "tf1-checkpoint", "tf1-metagraph")


def _reference(source: Source, input_names: list[str], output_names: list[str]):
    """A runner over the source's own runtime (named in REFERENCE_NAMES)."""
    fmt = source.format
    if fmt == "onnx":
        from porter.verification.runtimes.onnxruntime import source_runner

        return source_runner(source)
    if fmt in TF1_FORMATS:
        from porter.importers.tf1 import check_frozen_ops
        from porter.verification.runtimes.child import ChildRuntime

        # TF feeds inner tensors directly, so the reference runs the graph as published (the
        # restored MetaGraph for checkpoints), never the cut or frozen copy given to tf2onnx.
        # Nothing runs before every op the outputs depend on passed the allow-list.
        check_frozen_ops(source, list(output_names), list(input_names))
        payload: dict[str, Any] = {"layout": "none", "inputs": {n: n for n in input_names},
                                   "outputs": {n: n for n in output_names}}
        if fmt == "tf1-frozen":
            return ChildRuntime("porter.verification.runtimes.tf1:frozen",
                                {**payload, "graph_bytes": source.native,
                                 "graph": str(source.path)}, name="tensorflow")
        meta = source.meta.get("metagraph") or str(source.path)
        checkpoint = source.meta.get("prefix") or source.meta.get("checkpoint")
        from porter.verification.runtimes.tf1 import pinned_files

        return ChildRuntime("porter.verification.runtimes.tf1:metagraph",
                            {**payload, "meta": meta, "checkpoint": str(checkpoint),
                             **pinned_files(source, meta, checkpoint)}, name="tensorflow")
    if fmt == "paddle-inference":
        from porter.verification.runtimes.paddle import paddle_inference_runtime

        pinned = source.native if isinstance(source.native, dict) else None
        files = source.meta.get("model_file"), source.meta.get("params_file")
        if pinned and all(files):
            return paddle_inference_runtime(files[0], files[1], pinned=pinned)
        return paddle_inference_runtime(source.path)
    if fmt in UPSTREAM_FORMATS and source.meta.get("upstream"):
        from porter.upstream_graph import traced_runner
        from porter.verification.runtimes.torch_upstream import UpstreamRunner

        return traced_runner(source) or UpstreamRunner(source.meta["upstream"], source.tensors,
                                                       input_names, output_names)
    raise PorterError(f"no reference runtime for {fmt} sources")


def _tf1_to_onnx(source: Source, inputs: Mapping[str, list[int] | None] | None,
                 outputs: Sequence[str] | None, stream: bool = True
                 ) -> tuple[Any, Any, Source | None]:
    """(ONNX model, PreparedGraph, bound ONNX Source or None): the graph prepared by TF (its
    variables kept out with ``stream``, else frozen), cut at ``inputs``, Dequantize folded,
    then tf2onnx. Where the variables were kept out, the bound Source gives the converter the
    checkpoint's tensors in their place (read by porter, never through TF or tf2onnx)."""
    import tempfile
    from pathlib import Path

    from porter.errors import FormatError
    from porter.importers.tf1 import NotStreamable, bind_variables, prepare_graph, to_onnx

    with tempfile.TemporaryDirectory() as tmp:
        prepared = prepare_graph(source, Path(tmp) / "prepared.pb", dict(inputs or {}),
                                 list(outputs or []), stream=stream)
        try:
            model = to_onnx(prepared.path, prepared.tf2onnx_inputs(source), prepared.outputs)
        except FormatError as exc:
            if prepared.variables:
                raise NotStreamable(str(exc)) from exc
            raise
    bound = (bind_variables(model, source, prepared, Path(tmp) / "model.onnx")
             if prepared.variables else None)
    return model, prepared, bound


def _tf1_convert(source: Source, inputs: Mapping[str, list[int] | None] | None,
                 outputs: Sequence[str] | None) -> tuple[Any, Any, Any]:
    """(module, ONNX model, PreparedGraph) for a TF1 graph, its variables streamed.

    Where the graph without its weights' values cannot be converted (a variable read in a
    way a Placeholder cannot stand in for, or an op tf2onnx or porter converts only with a
    constant there), TensorFlow restores and freezes it instead, as before streaming: it
    converts, at the memory cost of holding the weights several times, and the report says
    why."""
    from porter.converters import convert_onnx
    from porter.errors import FormatError, UnsupportedOpError
    from porter.importers.tf1 import NotStreamable

    try:
        model, prepared, bound = _tf1_to_onnx(source, inputs, outputs)
    except NotStreamable as exc:
        why = str(exc)
    else:
        try:
            return convert_onnx(bound or model).eval(), model, prepared
        except (UnsupportedOpError, FormatError) as exc:
            if not prepared.variables:
                raise
            why = str(exc)
    model, prepared, _ = _tf1_to_onnx(source, inputs, outputs, stream=False)
    prepared.notes.append(f"variables frozen into the graph by TensorFlow, not streamed: "
                          f"without their values, {why}")
    return convert_onnx(model).eval(), model, prepared


def _to_onnx(source: Source) -> Any:
    fmt = source.format
    if fmt == "onnx":
        return source.native
    if fmt == "paddle-inference":
        from porter.importers.paddle import to_onnx

        return to_onnx(source)
    from porter.graphs import PORTS, _load

    _load()
    known = sorted({p.name for p in PORTS.values() if fmt in p.formats})
    hint = f"; graphs that port {fmt}: {', '.join(known)} (use --graph NAME)" if known else ""
    if fmt in TF1_FORMATS:
        why = f"this {fmt} has no MetaGraph (.meta beside it) to convert generically"
    elif fmt in UPSTREAM_FORMATS:
        why = (f"a {fmt} source holds no op graph: name the network it belongs to with "
               "--upstream FILE.py:NAME (and its input sizes with --shape) to trace one")
    else:
        why = f"a {fmt} source has no op graph to convert generically"
    raise PorterError(f"no clean graph matches this {fmt} source, and {why}{hint}")


def paddle_io(source: Source) -> list[dict[str, Any]]:
    """A Paddle program's feeds in the shape :func:`onnx_io` gives (None for -1 dims)."""
    out = []
    for spec in source.meta.get("inputs", []):
        dims = [d if isinstance(d, int) and d > 0 else None for d in (spec.get("shape") or [])]
        out.append({"name": spec["name"], "dims": dims,
                    "dtype": np.dtype(spec.get("dtype") or "float32")})
    return out


def _convert(source: Source, inputs: Mapping[str, list[int] | None] | None = None,
             outputs: Sequence[str] | None = None,
             shapes: Mapping[str | None, tuple[int, ...]] | None = None
             ) -> tuple[Any, list[dict[str, Any]], list[str], str, list[str], Any]:
    """(module, inputs, output names, how it was converted, notes, TF1 preparation) for ``source``.

    Paddle programs go through porter's direct Paddle-op converter first; where it refuses
    (ops or attributes it has no converter for), paddle2onnx is the fallback, and a failure
    of both reports both reasons. TF1 graphs are prepared (variables kept out, dequantized,
    fed at inner tensors named by ``inputs``/``outputs``) by TensorFlow, then go through
    tf2onnx (:func:`_tf1_convert`).
    """
    from porter.converters import convert_onnx

    notes: list[str] = []
    prepared = None
    if source.format in TF1_FORMATS and source.graph is None:
        _to_onnx(source)  # a bare checkpoint: the error names the graphs that port it
    if source.format in TF1_FORMATS:
        module, model, prepared = _tf1_convert(source, inputs, outputs)
        onnx_inputs, onnx_outputs = onnx_io(model)
        return module, onnx_inputs, onnx_outputs, f"{source.format} -> ONNX", notes, prepared
    if inputs or outputs:
        raise PorterError("--inputs/--outputs apply to TF1 graphs only")
    if source.format in UPSTREAM_FORMATS and source.meta.get("upstream"):
        from porter.upstream_graph import upstream_to_onnx

        model, onnx_inputs, onnx_outputs, how = upstream_to_onnx(source, dict(shapes or {}))
        return convert_onnx(model).eval(), onnx_inputs, onnx_outputs, how, notes, None
    if source.format == "paddle-inference":
        from porter.converters.paddle import convert_paddle
        from porter.errors import UnsupportedOpError

        try:
            module = convert_paddle(source).eval()
            return (module, paddle_io(source), list(module.output_names),
                    "Paddle ops (porter's direct converter)", notes, None)
        except UnsupportedOpError as exc:
            direct = str(exc)
        try:
            model = _to_onnx(source)
        except PorterError as exc:
            raise PorterError(f"cannot convert this Paddle model: the direct converter refused "
                              f"({direct}), and the paddle2onnx fallback failed ({exc})"
                              ) from exc
        notes.append(f"direct Paddle converter refused ({direct}); converted via paddle2onnx")
    else:
        model = _to_onnx(source)
    if source.format == "onnx" and any(
            t.data_location == 1 for t in model.graph.initializer):  # external data on disk
        model_arg: Any = source  # porter's checked refs, not a second import of the path
    else:
        model_arg = model
    module = convert_onnx(model_arg).eval()
    onnx_inputs, onnx_outputs = onnx_io(model)
    via = "ONNX" if source.format == "onnx" else f"{source.format} -> ONNX"
    return module, onnx_inputs, onnx_outputs, via, notes, prepared


def generic_port(source: Source, shapes: Mapping[str | None, tuple[int, ...]] | None = None,
                 inputs: Mapping[str, list[int] | None] | None = None,
                 outputs: Sequence[str] | None = None):
    """(GraphPort, Ported) for ``source`` through porter's generic converters.

    ``inputs`` (tensor name -> shape or None) and ``outputs`` name the graph's interface where
    the source does not (TF1 graphs without Placeholders, training MetaGraphs).
    """
    from porter.graphs import GraphPort, Ported

    module, io_inputs, io_outputs, via, notes, prepared = _convert(source, inputs, outputs,
                                                                   shapes)
    names = [i["name"] for i in io_inputs]
    params = dict(module.state_dict())
    report = account_verbatim(source, params, prepared)
    report.notes += notes
    if prepared is not None and prepared.frozen_from:
        report.notes.append(f"MetaGraph {prepared.frozen_from} restored and frozen by "
                            "TensorFlow before tf2onnx; parity runs the restored MetaGraph")
    if prepared is not None and prepared.variables:
        report.notes.append(f"{len(prepared.variables)} checkpoint variables kept out of the "
                            "graph given to TensorFlow and tf2onnx, and read by porter from the "
                            "checkpoint; parity runs the restored MetaGraph")
    if prepared is not None:
        report.notes += prepared.notes
    if prepared is not None and prepared.feeds:
        report.notes.append("inner tensors fed as inputs: " + ", ".join(
            f"{k} {v}" for k, v in prepared.feeds.items()))
    report.notes.append(f"generic conversion via {via}; {len(params)} parameters/buffers in "
                        "the generated module")
    unreached = [e.source for e in report.entries if e.note == UNREACHED]
    if unreached and outputs is None:  # outputs porter picked: one may have been missed
        shown = ", ".join(unreached[:4]) + (f" and {len(unreached) - 4} more"
                                            if len(unreached) > 4 else "")
        report.notes.append(f"check: {len(unreached)} weights ({shown}) are not reached from "
                            f"the outputs porter picked ({', '.join(io_outputs)}); if the "
                            "model has another output, name them all with --outputs")
    given = {n: tuple(d) for n, d in (inputs or {}).items()  # --inputs NAME:SHAPE sizes a case
             if d and all(x > 0 for x in d) and n in names}
    cases = default_cases(io_inputs, {**given, **dict(shapes or {})})
    smallest = min(cases, key=lambda c: sum(np.asarray(v).size for v in c.inputs.values()))
    origin = (f"the Paddle program {Path(str(source.path)).name}"
              if via.startswith("Paddle ops") else "ONNX")
    outputs = io_outputs
    ported = Ported(module, f"model.py:{CLASS_NAME}", {}, report, names, outputs,
                    render_files=lambda: {"model.py": checked_source(module, smallest, origin)})
    port = GraphPort(
        name="generic", formats=(source.format,), graph=ported.graph,
        matches=lambda s: True, port=lambda s, **_: ported,
        cases=lambda s, p: list(cases),
        reference=lambda s, p: _reference(s, names, outputs),
        example_inputs=lambda p: tuple(_torch(cases[0].inputs[n]) for n in names),
        dynamic_shapes=lambda p: declared_dynamic(io_inputs),
        reference_name=REFERENCE_NAMES[source.format],
        tolerance=GENERIC_TOLERANCE, description=f"generic conversion via {via}")
    return port, ported


def declared_dynamic(inputs: Sequence[dict[str, Any]]) -> tuple | None:
    """``torch.export`` dynamic_shapes with ``Dim.AUTO`` where an input dim is not fixed
    (symbolic or unknown in the source); None when every dim is fixed."""
    from torch.export import Dim

    spec = tuple({k: Dim.AUTO for k, d in enumerate(i["dims"]) if d is None} or None
                 for i in inputs)
    return spec if any(s is not None for s in spec) else None


def image_input(rgb: np.ndarray, like: np.ndarray) -> np.ndarray:
    """An RGB image as a generic model's first input, shaped and typed like ``like``.

    The model's own normalisation is unknown, so pixels are scaled to [0, 1] and resized
    (bilinear) to the input's size, NCHW or NHWC by where the 3 channels sit. Real image
    statistics still exercise a detector far better than uniform noise, whose outputs can
    vanish below the tolerance.
    """
    from PIL import Image

    if like.ndim != 4 or like.dtype.kind != "f" or 3 not in (like.shape[1], like.shape[3]):
        raise PorterError(f"--input IMAGE needs a float image input (N,3,H,W or N,H,W,3); the "
                          f"model's first input is {like.dtype} {'x'.join(map(str, like.shape))}")
    nchw = like.shape[1] == 3
    h, w = (like.shape[2], like.shape[3]) if nchw else (like.shape[1], like.shape[2])
    img = np.asarray(Image.fromarray(rgb).resize((w, h), Image.BILINEAR), dtype=np.float32) / 255
    x = np.ascontiguousarray(img.transpose(2, 0, 1) if nchw else img)[None]
    return np.repeat(x, like.shape[0], axis=0).astype(like.dtype)


def checked_source(module: Any, case: Case, origin: str = "ONNX") -> str:
    """The generated ``model.py`` of ``module``, after running it once against the module.

    Parity vouches for the in-memory module; this vouches for the file that ships: the source
    is executed, given the module's weights and run on ``case``, and must agree with the plan
    (run without its CPU inference kernels, so both sides use the same torch ops). It costs two
    forward passes, so callers give it their smallest case.
    """
    import types

    import torch

    from porter.converters.codegen import render_source
    from porter.inference import optimize_for_inference
    from porter.verification.metrics import compare_arrays

    text = render_source(module, class_name=CLASS_NAME, origin=origin)
    namespace = types.ModuleType("porter_generated_model")
    try:
        exec(compile(text, "model.py", "exec"), namespace.__dict__)  # porter's own output
        with torch.device("meta"):  # no random init of weights about to be replaced
            generated = getattr(namespace, CLASS_NAME)()
        generated.load_state_dict(module.state_dict(), assign=True)  # shares, never copies
        args = [_torch(case.inputs[n]) for n in module.input_names]
        with torch.no_grad():
            got = generated.eval()(*args)
            want = dict(zip(module.output_names, module.run_plain(*args)))
            # and as load_output gives it to users: porter.inference's CPU fast path
            fast = optimize_for_inference(generated)(*args)
    except Exception as exc:  # a generated file that cannot run must never ship
        raise PorterError(f"generated model.py does not run ({type(exc).__name__}: {exc}); "
                          "this is a porter bug, please report it") from exc
    got = [got] if not isinstance(got, (tuple, list)) else list(got)
    fast = [fast] if not isinstance(fast, (tuple, list)) else list(fast)
    for name, g in [*zip(module.output_names, got), *zip(module.output_names, fast)]:
        w = want[name]
        if isinstance(w, torch.Tensor) and w.is_floating_point():
            m = compare_arrays(w.detach().float().numpy(), g.detach().float().numpy())
            ok = GENERIC_TOLERANCE.check(m)
        else:
            ok = isinstance(g, torch.Tensor) and torch.equal(torch.as_tensor(w), g)
        if not ok:
            raise PorterError(f"generated model.py disagrees with the converted module on output "
                              f"{name!r}; this is a porter bug, please report it")
    return text


def account_verbatim(source: Source, params: Mapping[str, Any],
                     prepared: Any = None) -> MappingReport:
    """Report, for every source tensor, the module tensor holding exactly its bytes.

    A generic conversion names its own parameters, so the pairing is by content: identical
    dtype, shape and bytes. Tensors an intermediate exporter changed (folded, transposed) are
    reported as ``rewritten``; the parity run is what vouches for those. Tensors an exporter
    folded (BatchNorm into conv, Dequantize) are traced and recomputed (``folded``), layouts
    (HWIO, depthwise, dense) are tried, and training state or tensors the outputs never read
    are ``dropped`` with the reason.
    """
    import bisect
    import hashlib

    from porter.mapped import release, update_hash

    # [start, end) of the module's own storages: a source tensor's pages that the module does
    # not view are let go once hashed (one tensor's worth resident at a time); those it views
    # stay (it holds them anyway)
    held = sorted((t.untyped_storage().data_ptr(),
                   t.untyped_storage().data_ptr() + t.untyped_storage().nbytes())
                  for t in params.values() if t.device.type == "cpu")
    starts = [lo for lo, _ in held]

    def let_go(block: np.ndarray) -> None:
        lo = block.__array_interface__["data"][0]
        i = bisect.bisect_right(starts, lo) - 1
        if not (i >= 0 and lo < held[i][1]):
            release(block)

    def key(arr: np.ndarray, source_side: bool = True) -> tuple:
        # Shape is left out on purpose: exporters reshape biases ([C] -> [1, C, 1, 1]).
        # Hashed in C order block by block: no copy of a big weight, a layout view read a
        # stripe at a time.
        h = update_hash(hashlib.sha256(), arr, let_go if source_side else None)
        return arr.dtype.str, arr.size, h.hexdigest()

    def keys(arr: np.ndarray) -> list[tuple]:
        return [key(arr)] + ([key(arr.astype(np.float32))] if arr.dtype != np.float32 else [])

    kinds = source.meta.get("variable_kinds", {})
    kept = set(getattr(prepared, "consts", None) or source.tensors)
    # Source tensors are hashed (as stored) before the module's: where the module's weights
    # view the source file's pages, one source tensor's pages are resident at a time beside
    # none of the module's, rather than beside all of them.
    as_stored: dict[str, list[tuple]] = {}
    for name, ref in source.tensors.items():
        if kinds.get(name, "weight") == "weight" and name in kept and ref.dtype.kind == "f":
            arr = ref.numpy()
            as_stored[name] = keys(arr)
            del arr
    by_content: dict[tuple, list[str]] = {}
    by_size: dict[tuple, list[str]] = {}
    arrays = {name: t.detach().cpu().numpy() for name, t in params.items()}
    for name, arr in arrays.items():
        k = key(arr, source_side=False)
        by_content.setdefault(k, []).append(name)
        by_size.setdefault(k[:2], []).append(name)
    in_layouts: dict[tuple, tuple] = {}

    def in_layout(k: tuple, read_as: tuple[int, ...], perm: tuple[int, ...] | None
                  ) -> list[str] | None:
        """The module tensors whose bytes are the source's (key ``k``) in a layout: each
        candidate module tensor is read back into the source's layout (inverse permutation
        of the module's own, resident copy), never the source into the module's (which would
        read a mapped file column-wise, all its pages at once)."""
        if perm is None:
            return by_content.get(k)
        inverse = tuple(np.argsort(perm))
        found = []
        for n in by_size.get(k[:2], ()):
            cache = (n, read_as, perm)
            if cache not in in_layouts:
                view = arrays[n].reshape(tuple(read_as[p] for p in perm)).transpose(inverse)
                in_layouts[cache] = key(view, source_side=False)
            if in_layouts[cache] == k:
                found.append(n)
        return found or None
    report = MappingReport(method="generic",
                           source_kinds={n: r.kind for n, r in source.tensors.items()})
    folds_by_source = _traced_folds(source, arrays, prepared)
    read = _read_by_graph(source)
    for name, ref in source.tensors.items():
        kind = kinds.get(name, "weight")
        if kind == "weight" and name in folds_by_source:
            fold = folds_by_source[name]
            report.add(name, fold.target, "folded", None, list(ref.shape),
                       list(params[fold.target].shape),
                       f"{fold.how}; recomputed max|Δ| {fold.max_abs:.2e}")
            continue
        if kind != "weight" or name not in kept:
            why = {"optimizer": "optimizer state (slot or accumulator)",
                   "ema": "exponential-moving-average shadow copy",
                   "step": "training step counter"}.get(kind, UNREACHED)
            report.add(name, None, "dropped", None, list(ref.shape), None, why)
            continue
        hits, how = None, None
        if ref.dtype.kind == "f":
            stored = as_stored.get(name) or keys(ref.numpy())
            for read_as, perm, transform in layout_permutations(ref.shape):
                hits = next((found for k in stored if (found := in_layout(k, read_as, perm))),
                            None)
                if hits:
                    how = transform
                    break
        arr = ref.numpy() if not hits else None
        if hits:
            shape = list(params[hits[0]].shape)
            report.add(name, hits[0], "mapped", how, list(ref.shape), shape,
                       "bit-exact" + (f"; also {', '.join(hits[1:3])}" if len(hits) > 1 else ""))
        elif (fold := _scaled(source, name, arr, arrays)) is not None:
            report.add(name, fold.target, "folded", None, list(ref.shape),
                       list(params[fold.target].shape),
                       f"{fold.how}; recomputed max|Δ| {fold.max_abs:.2e}")
        elif name not in read:
            report.add(name, None, "dropped", None, list(ref.shape), None,
                       "unused: no node of the source graph reads it")
        else:
            report.add(name, None, "rewritten", None, list(ref.shape), None,
                       "not found verbatim in the module; covered by parity")
        del arr
    return report


def _scaled(source: Source, name: str, arr: np.ndarray, arrays: Mapping[str, np.ndarray]):
    """A TF1 tensor an exporter multiplied by a scalar constant of the graph, traced."""
    if source.graph is None or source.format not in TF1_FORMATS or arr.dtype.kind != "f":
        return None
    from porter.mapping.folds import trace_constant_scaling

    start = f"{name}/read" if f"{name}/read" in source.graph else name
    return trace_constant_scaling(source.graph, start, arr, arrays) if start in source.graph \
        else None


def _read_by_graph(source: Source) -> set[str]:
    """Names (tensor and producer) that some node of the source's op graph reads; with no
    op graph, every tensor counts as read."""
    if source.graph is None:  # or, for a traced upstream network, what its trace reads
        return set(source.meta.get("traced_reads") or source.tensors)
    read: set[str] = set()
    for _, data in source.graph.nodes(data=True):
        for inp in data.get("inputs", ()):
            inp = inp.lstrip("^")
            read.update((inp, inp.rsplit(":", 1)[0]))
    return read


def _traced_folds(source: Source, arrays: Mapping[str, np.ndarray], prepared: Any) -> dict:
    """Source tensor -> Fold for BatchNorm folds and porter's own Dequantize folds."""
    from porter.mapping.folds import Fold, find_close, trace_batchnorm_folds

    if source.graph is None or source.format not in TF1_FORMATS:
        return {}
    out: dict[str, Any] = {}
    load = lambda n: source.tensors[n].numpy()  # noqa: E731
    # where the variables were kept out of the graph, tf2onnx never saw a weight's value and
    # cannot have folded one (and looking would read every weight again)
    streamed = prepared is not None and bool(getattr(prepared, "variables", None))
    for fold in () if streamed else trace_batchnorm_folds(source.graph, source.tensors, arrays,
                                                          load):
        for s in fold.sources:
            out.setdefault(s, fold)
    if prepared is not None:
        from porter.importers.tf1 import dequantize
        from porter.mapping.folds import layout_candidates as layouts

        for f in prepared.folds:
            q = f["quantized"]
            if q not in source.tensors:
                continue
            value = dequantize(source.tensors[q].numpy(), f["dtype"],
                               _const(source, f["min"]), _const(source, f["max"]), f["mode"],
                               f["axis"], f["narrow_range"])
            for cand, transform in layouts(value):
                hit = find_close(cand.astype(np.float64), arrays)
                if hit:
                    how = (f"{f['dtype']} Dequantize {f['mode']} folded to float (TF agrees to "
                           f"{f['max_abs_vs_tensorflow']:.1e})" + (f", {transform}" if transform
                                                                   else ""))
                    fold = Fold((q, f["min"], f["max"]), hit[0], how, hit[1])
                    for s in fold.sources:
                        out.setdefault(s, fold)
                    break
    return out


def _const(source: Source, name: str) -> np.ndarray:
    """A Const's value: a source tensor, or a small constant inlined in the op graph."""
    if name in source.tensors:
        return source.tensors[name].numpy()
    value = source.graph.nodes[name]["attrs"].get("value")
    if not isinstance(value, np.ndarray):
        raise PorterError(f"quantization range {name} is not a readable constant")
    return value


def _torch(x: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(x))
