"""The op graph of a PyTorch checkpoint no clean graph ports: its upstream network, traced.

A ``.pth`` or ``.safetensors`` file holds tensors only. Given the network its authors wrote
(``--upstream FILE.py:NAME``, importing which runs that file: naming it is the consent) and the
input sizes (``--shape``; a torch module declares none), porter loads the checkpoint into the
network strictly, traces it to ONNX with torch.onnx (BatchNorm kept, so every weight reaches
the converter verbatim) and converts that ONNX like any other: the result is a generated
``model.py`` that needs neither the upstream code nor its imports, verified against the
upstream network itself on the parity cases.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from porter.errors import PorterError
from porter.source import Source

__all__ = ["flat_outputs", "forward_inputs", "traced_runner", "upstream_to_onnx"]


def forward_inputs(module: torch.nn.Module) -> list[str]:
    """Names of the positional parameters of ``module.forward`` that have no default."""
    try:
        params = inspect.signature(module.forward).parameters.values()
    except (TypeError, ValueError):
        return ["x"]
    names = [p.name for p in params if p.default is p.empty
             and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return names or ["x"]


def flat_outputs(out: Any) -> tuple[list[str] | None, tuple[torch.Tensor, ...]]:
    """(names or None, tensors) of a forward's result: a tensor, a flat tuple or list of
    tensors, or a dict of tensors (its keys name them)."""
    if isinstance(out, torch.Tensor):
        return None, (out,)
    if isinstance(out, Mapping) and all(isinstance(v, torch.Tensor) for v in out.values()):
        return [str(k) for k in out], tuple(out.values())
    if isinstance(out, (tuple, list)) and all(isinstance(v, torch.Tensor) for v in out):
        return None, tuple(out)
    raise PorterError(f"the upstream forward returns {type(out).__name__} of "
                      f"{', '.join(sorted({type(v).__name__ for v in _values(out)}))}; porter "
                      "converts a tensor, a flat tuple or list of tensors, or a dict of tensors")


def _values(out: Any) -> list[Any]:
    if isinstance(out, Mapping):
        return list(out.values())
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _example(names: Sequence[str], shapes: Mapping[str | None, tuple[int, ...]]
             ) -> list[torch.Tensor]:
    missing = [n for i, n in enumerate(names)
               if n not in shapes and not (i == 0 and None in shapes)]
    if missing:
        raise PorterError(f"a PyTorch network declares no input sizes: give them with --shape "
                          f"({' '.join(f'--shape {n}=1x3x224x224' for n in missing)} for "
                          f"forward({', '.join(names)}))")
    unknown = [n for n in shapes if n is not None and n not in names]
    if unknown:
        raise PorterError(f"--shape names {', '.join(map(repr, unknown))}, but the upstream "
                          f"forward takes {', '.join(map(repr, names))}")
    rng = np.random.default_rng(0)
    return [torch.from_numpy(rng.uniform(-1, 1, shapes.get(n) or shapes[None])
                             .astype(np.float32)) for n in names]


def _batch_two(model: Any, module: torch.nn.Module, names: Sequence[str],
               out_names: Sequence[str], example: Sequence[torch.Tensor], pick: Any
               ) -> str | None:
    """None when the graph traced with a free batch computes what the network does at batch 2
    (onnxruntime against the upstream forward); else why not. A trace turns Python ints taken
    from sizes (``B = int(x.shape[0] / n)``) into constants, which a free batch then breaks,
    silently where the shapes still fit."""
    from porter.generic import GENERIC_TOLERANCE
    from porter.verification.metrics import compare_arrays
    from porter.verification.runtimes.onnxruntime import OrtRunner

    rng = np.random.default_rng(1)
    twice = [rng.uniform(-1, 1, (2 * t.shape[0], *t.shape[1:])).astype(np.float32)
             for t in example]
    with torch.inference_mode():
        want = pick(module(*[torch.from_numpy(t) for t in twice]))
    try:
        got = OrtRunner(model)(dict(zip(names, twice)))
    except PorterError as exc:
        return f"the graph traced with a free batch fails at batch 2 ({exc})"
    for name, ref in zip(out_names, want):
        ref_np = ref.detach().numpy()
        if np.shape(got[name]) != ref_np.shape:
            return (f"traced with a free batch, {name} is {list(np.shape(got[name]))} at batch "
                    f"2, not {list(ref_np.shape)}")
        metrics = compare_arrays(ref_np, got[name])
        if not GENERIC_TOLERANCE.check(metrics):
            return (f"traced with a free batch, {name} differs from the network at batch 2 "
                    f"(max|Δ| {metrics['max_abs']:.2e}: the forward turns a size into a "
                    "constant)")
    return None


def _traced_reads(source: Source, model: Any) -> set[str]:
    """Source tensors the traced graph reads: its initializers carry the state-dict names
    (under the export wrapper's ``m.``), and torch.onnx keeps one of several identical
    tensors (two layers' equal index buffers), so a tensor equal to a kept one is read too. A
    tensor neither names nor equals (``num_batches_tracked``) is what the forward never uses."""
    import hashlib

    from onnx import numpy_helper

    def key(arr: np.ndarray) -> tuple:
        arr = np.ascontiguousarray(arr)
        return arr.dtype.str, arr.shape, hashlib.sha256(arr.view(np.uint8).data).hexdigest()

    names = {t.name.removeprefix("m.") for t in model.graph.initializer}
    others = {n: ref for n, ref in source.tensors.items() if n not in names}
    shapes = {tuple(ref.shape) for ref in others.values()}
    # hash only what could equal one of them: the rest of the weights are named already
    kept = {key(numpy_helper.to_array(t)) for t in model.graph.initializer
            if tuple(t.dims) in shapes}
    return names | {n for n, ref in others.items() if key(np.asarray(ref.numpy())) in kept}


_RUNNER = "_upstream_runner"  # a source.meta key; the manifest copies named keys only


def traced_runner(source: Source) -> Any:
    """The upstream runner :func:`upstream_to_onnx` loaded for ``source``, handed over once
    (the parity run owns it from then on), or None: the reference reuses it instead of
    importing the network and copying every weight a second time."""
    return source.meta.pop(_RUNNER, None)


def upstream_to_onnx(source: Source, shapes: Mapping[str | None, tuple[int, ...]]
                     ) -> tuple[Any, list[dict[str, Any]], list[str], str]:
    """(ONNX model, inputs as :func:`porter.generic.onnx_io` gives them, output names, how)
    for a PyTorch ``source`` whose upstream network ``source.meta['upstream']`` names.

    The batch dimension is exported dynamic (parity then checks batch 1 and 2), other sizes
    as given; an export that cannot keep the batch free is retried with it fixed.
    """
    from porter.export.torch_onnx import ExportError, export_lowest_opset
    from porter.verification.runtimes.torch_upstream import UpstreamRunner

    spec = source.meta["upstream"]
    runner = UpstreamRunner(spec, source.tensors, ["x"], ["y"])  # names fixed below
    module = runner.module
    names = forward_inputs(module)
    example = _example(names, shapes)
    with torch.inference_mode():
        keys, outs = flat_outputs(module(*example))
    out_names = keys or (["output"] if len(outs) == 1 else [f"output_{i}" for i in
                                                              range(len(outs))])
    # the same network, weights loaded once, is the parity reference afterwards
    runner.input_names, runner.output_names = list(names), list(out_names)
    source.meta[_RUNNER] = runner

    def pick(out: Any) -> tuple:
        return flat_outputs(out)[1]

    batch = {n: {0: "batch"} for n, t in zip(names, example) if t.ndim >= 1}
    how = "batch dynamic"
    try:
        exported = export_lowest_opset(module, example, names, out_names, pick=pick,
                                       dynamic_axes=batch, keep_weights=True)
        why = _batch_two(exported.model, module, names, out_names, example, pick)
    except ExportError as exc:
        why = f"torch.onnx could not keep it free ({exc})"
    if why:
        exported = export_lowest_opset(module, example, names, out_names, pick=pick,
                                       keep_weights=True)
        how = f"batch fixed: {why}"
    model = exported.model
    source.meta["traced_reads"] = sorted(_traced_reads(source, model))
    from porter.generic import onnx_io

    inputs, _ = onnx_io(model)
    return model, inputs, out_names, (f"upstream {spec} traced by torch.onnx at opset "
                                      f"{exported.opset} ({how})")
