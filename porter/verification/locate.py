"""Find the first ONNX node where a converted module stops matching onnxruntime.

Every intermediate tensor of the ONNX graph is exposed as an extra graph output and computed by
onnxruntime; the converted module records its own value for each tensor
(:meth:`porter.converters.OnnxModule.run_with_intermediates`). Nodes are walked in topological
(file) order and the first whose output differs beyond ``tol`` is reported with its metrics and
the torch module it maps to.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from porter.verification.metrics import compare_arrays

__all__ = ["locate_divergence"]


def _with_all_outputs(model: Any) -> Any:
    import onnx
    from onnx import helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    try:
        typed = {vi.name: vi for vi in onnx.shape_inference.infer_shapes(model).graph.value_info}
    except Exception:
        typed = {}
    have = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for name in node.output:
            if name and name not in have:
                model.graph.output.append(typed.get(name) or helper.ValueInfoProto(name=name))
                have.add(name)
    return model


def locate_divergence(onnx_model: Any, inputs: dict[str, np.ndarray], module: Any = None,
                      tol: float = 1e-4, rel_to_peak: float = 0.0) -> dict[str, Any]:
    """Report the first node (topological order) whose output diverges beyond ``tol``.

    ``onnx_model``: a path, ``onnx.ModelProto`` or porter Source; ``inputs``: graph input name
    -> array; ``module``: the converted module (converted here when None). Returns a dict with
    ``diverged`` (bool), ``node``, ``op_type``, ``output`` (tensor name), ``module`` (the torch
    module path it maps to), ``index`` (node position), ``metrics`` (``compare_arrays``) and
    ``checked`` (how many tensors were compared). Float tensors diverge when max |Δ| exceeds
    ``tol + rel_to_peak * max|ref|`` (as :class:`porter.verification.parity.Tolerance`), others when
    they differ at all.
    """
    import onnxruntime as ort
    import torch

    from porter.converters import convert_onnx
    from porter.converters.builder import load_model
    from porter.verification.parity import Tolerance
    from porter.verification.runtimes.onnxruntime import session_options

    bound = Tolerance(max_abs=tol, rel_to_peak=rel_to_peak)
    model, _ = load_model(onnx_model)
    if module is None:
        module = convert_onnx(model)
    probe = _with_all_outputs(model)
    sess = ort.InferenceSession(probe.SerializeToString(), session_options(),
                                providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    ref = dict(zip(names, sess.run(names, inputs)))
    args = [torch.from_numpy(np.ascontiguousarray(inputs[n])) for n in module.input_names]
    with torch.no_grad():
        got = module.run_with_intermediates(*args)
    labels = module.node_labels()
    checked = 0
    for index, node in enumerate(model.graph.node):
        for name in node.output:
            if not name or name not in ref or name not in got:
                continue  # folded at conversion time, or an unused optional output
            r = np.asarray(ref[name])
            c = got[name]
            c = c.detach().float().numpy() if c.dtype == torch.bfloat16 else np.asarray(
                c.detach().numpy())
            checked += 1
            if r.shape != c.shape:
                bad, metrics = True, {"shape": list(r.shape), "candidate_shape": list(c.shape)}
            elif r.dtype.kind == "f":
                metrics = compare_arrays(r, c)
                bad = not bound.check(metrics)
            else:
                metrics = {"shape": list(r.shape), "mismatched": int((r != c).sum())}
                bad = metrics["mismatched"] > 0
            if bad:
                return {"diverged": True, "node": node.name or f"{node.op_type}_{index}",
                        "op_type": node.op_type, "output": name, "module": labels.get(name),
                        "index": index, "metrics": metrics, "tol": tol, "checked": checked}
    return {"diverged": False, "node": None, "op_type": None, "output": None, "module": None,
            "index": None, "metrics": None, "tol": tol, "checked": checked}
