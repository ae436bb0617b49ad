"""The generic port: a source with no clean graph becomes a converted module, verified against
its *own* runtime.

ONNX is the hub: ONNX sources convert directly; TF1 frozen graphs go through tf2onnx and Paddle
inference models through paddle2onnx first. Verification always runs the original source
(onnxruntime for ONNX, a TensorFlow session, Paddle Inference), never the intermediate ONNX.
The output carries a generated, readable ``model.py`` that the manifest names as its graph.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from porter.errors import PorterError
from porter.mapping.report import MappingReport
from porter.source import Source
from porter.verify.parity import Case, Tolerance

__all__ = ["generic_port", "onnx_io", "default_cases", "parse_shape"]

CLASS_NAME = "Model"
# 1e-4 absolute, widened by 1e-6 of the output's largest magnitude (about 8 float32 ulps), so
# outputs in pixels (detector boxes) get the same relative strictness as those in [0, 1].
GENERIC_TOLERANCE = Tolerance(max_abs=1e-4, rel_to_peak=1e-6)
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


def default_cases(inputs: Sequence[dict[str, Any]],
                  shapes: Mapping[str | None, tuple[int, ...]] | None = None) -> list[Case]:
    """Two seeded cases: batch 1 and batch 2 (where the batch is free), unknown sizes filled."""
    shapes = dict(shapes or {})
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
                   "paddle-inference": "paddle-inference"}


def _reference(source: Source, input_names: list[str], output_names: list[str]):
    """A runner over the source's own runtime (named in REFERENCE_NAMES)."""
    fmt = source.format
    if fmt == "onnx":
        from porter.verify.runtimes.onnxruntime import OrtRunner

        return OrtRunner(source.path)
    if fmt == "tf1-frozen":
        from porter.importers.tf1 import check_frozen_ops
        from porter.verify.runtimes.child import ChildRuntime

        check_frozen_ops(source, output_names + input_names)
        payload = {"graph_bytes": source.native, "graph": str(source.path), "layout": "none",
                   "inputs": {n: n for n in input_names}, "outputs": {n: n for n in output_names}}
        return ChildRuntime("porter.verify.runtimes.tf1:frozen", payload,
                            name="tensorflow")
    if fmt == "paddle-inference":
        from porter.verify.runtimes.paddle import paddle_inference_runtime

        return paddle_inference_runtime(source.path)
    raise PorterError(f"no reference runtime for {fmt} sources")


def _to_onnx(source: Source) -> Any:
    fmt = source.format
    if fmt == "onnx":
        return source.native
    if fmt == "tf1-frozen":
        from porter.importers.tf1 import to_onnx

        return to_onnx(source)
    if fmt == "paddle-inference":
        from porter.importers.paddle import to_onnx

        return to_onnx(source)
    from porter.graphs import PORTS, _load

    _load()
    known = sorted({p.name for p in PORTS.values() if fmt in p.formats})
    hint = f"; graphs that port {fmt}: {', '.join(known)} (use --graph NAME)" if known else ""
    raise PorterError(f"no clean graph matches this {fmt} source, and a {fmt} source has no "
                      f"op graph to convert generically{hint}")


def generic_port(source: Source, shapes: Mapping[str | None, tuple[int, ...]] | None = None):
    """(GraphPort, Ported) for ``source`` through porter's generic ONNX converter."""
    from porter.converters import convert_onnx
    from porter.graphs import GraphPort, Ported
    model = _to_onnx(source)
    if source.format == "onnx" and any(
            t.data_location == 1 for t in model.graph.initializer):  # external data on disk
        model_arg: Any = source.path
    else:
        model_arg = model
    module = convert_onnx(model_arg).eval()
    inputs, outputs = onnx_io(model)
    names = [i["name"] for i in inputs]
    params = dict(module.state_dict())
    report = account_verbatim(source, params)
    via = "ONNX" if source.format == "onnx" else f"{source.format} -> ONNX"
    report.notes.append(f"generic conversion via {via}; {len(params)} parameters/buffers in "
                        "the generated module")
    cases = default_cases(inputs, shapes)
    ported = Ported(module, f"model.py:{CLASS_NAME}", {}, report, names, outputs,
                    render_files=lambda: {"model.py": checked_source(module, cases[0])})
    port = GraphPort(
        name="generic", formats=(source.format,), graph=ported.graph,
        matches=lambda s: True, port=lambda s, **_: ported,
        cases=lambda s, p: list(cases),
        reference=lambda s, p: _reference(s, names, outputs),
        example_inputs=lambda p: tuple(_torch(cases[0].inputs[n]) for n in names),
        reference_name=REFERENCE_NAMES[source.format],
        tolerance=GENERIC_TOLERANCE, description="generic ONNX conversion")
    return port, ported


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


def checked_source(module: Any, case: Case) -> str:
    """The generated ``model.py`` of ``module``, after running it once against the module.

    Parity vouches for the in-memory module; this vouches for the file that ships: the source
    is executed, given the module's weights and run on ``case``, and must agree with the plan
    (run without its CPU inference kernels, so both sides use the same torch ops).
    """
    import types

    import torch

    from porter.converters.codegen import render_source
    from porter.verify.metrics import compare_arrays

    text = render_source(module, class_name=CLASS_NAME)
    namespace = types.ModuleType("porter_generated_model")
    try:
        exec(compile(text, "model.py", "exec"), namespace.__dict__)  # porter's own output
        generated = getattr(namespace, CLASS_NAME)()
        generated.load_state_dict(module.state_dict())
        args = [_torch(case.inputs[n]) for n in module.input_names]
        with torch.no_grad():
            got = generated.eval()(*args)
            want = module.run_with_intermediates(*args)
    except Exception as exc:  # a generated file that cannot run must never ship
        raise PorterError(f"generated model.py does not run ({type(exc).__name__}: {exc}); "
                          "this is a porter bug, please report it") from exc
    got = [got] if not isinstance(got, (tuple, list)) else list(got)
    for name, g in zip(module.output_names, got):
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


def account_verbatim(source: Source, params: Mapping[str, Any]) -> MappingReport:
    """Report, for every source tensor, the module tensor holding exactly its bytes.

    A generic conversion names its own parameters, so the pairing is by content: identical
    dtype, shape and bytes. Tensors an intermediate exporter changed (folded, transposed) are
    reported as ``rewritten``; the parity run is what vouches for those.
    """
    import hashlib

    def key(arr: np.ndarray) -> tuple:
        # Shape is left out on purpose: exporters reshape biases ([C] -> [1, C, 1, 1]).
        arr = np.ascontiguousarray(arr)
        return arr.dtype.str, arr.size, hashlib.sha256(arr.tobytes()).hexdigest()

    by_content: dict[tuple, list[str]] = {}
    for name, t in params.items():
        by_content.setdefault(key(t.detach().cpu().numpy()), []).append(name)
    report = MappingReport(method="generic",
                           source_kinds={n: r.kind for n, r in source.tensors.items()})
    for name, ref in source.tensors.items():
        arr = ref.numpy()
        hits, how = by_content.get(key(arr)) or by_content.get(key(arr.astype(np.float32))), None
        if not hits and arr.ndim == 2:
            hits, how = by_content.get(key(arr.T)), "transpose_2d"
        if hits:
            shape = list(params[hits[0]].shape)
            report.add(name, hits[0], "mapped", how, list(ref.shape), shape,
                       "bit-exact" + (f"; also {', '.join(hits[1:3])}" if len(hits) > 1 else ""))
        else:
            report.add(name, None, "rewritten", None, list(ref.shape), None,
                       "not found verbatim in the module; covered by parity")
    return report


def _torch(x: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(x))
