"""Audit an nn.Module for Ascend NPUs: export it, then decide every ATen op it uses.

``audit_module`` exports with ``torch.export.export`` (static shapes), groups the graph's ATen op
calls by overload, and asks :func:`porter.verify.npu.dispatch.decide` how each call would run on
an NPU (torch_npu kernel, composite kernel judged by its parts, or CPU fallback). Each op names
the modules that produced it (``node.meta["nn_module_stack"]``; ``""`` is the root module). When
an NPU is present (:func:`npu_available`) the module is also run there and compared with the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch._guards import detect_fake_mode
from torch.fx.node import map_arg

from porter.errors import AuditError
from porter.verify.metrics import compare_arrays
from porter.verify.npu.device import npu_available, run_on_npu
from porter.verify.npu.dispatch import Decision, decide
from porter.verify.npu.registry import NpuRegistry, load_registry

__all__ = ["audit_module", "graph_ops", "raise_if_missing"]


def _module_path(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return str(list(stack.values())[-1][0]) if stack else ""


def graph_ops(ep: torch.export.ExportedProgram) -> list[torch.fx.Node]:
    """The graph's call_function nodes whose target is an ATen/prims OpOverload, in order."""
    return [n for n in ep.graph.nodes
            if n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload)]


def _fake_args(node: torch.fx.Node) -> tuple[tuple, dict]:
    def val(arg: torch.fx.Node) -> Any:
        return arg.meta["val"]
    return map_arg(node.args, val), map_arg(node.kwargs, val)


def _add_unique(items: list[str], new: list[str]) -> None:
    items.extend(x for x in new if x not in items)


def _op_records(ep: torch.export.ExportedProgram,
                registry: NpuRegistry) -> tuple[list[dict], list[dict]]:
    nodes = graph_ops(ep)
    fake_mode = detect_fake_mode([n.meta.get("val") for n in ep.graph.nodes
                                  if n.op == "placeholder"])
    records: dict[str, dict[str, Any]] = {}
    missing: dict[tuple[str, ...], dict[str, Any]] = {}
    rank = {"npu": 0, "decomposed": 1, "missing": 2}
    for node in nodes:
        args, kwargs = _fake_args(node)
        decision: Decision = decide(node.target, args, kwargs, registry, fake_mode)
        path = _module_path(node)
        rec = records.setdefault(decision.op, {
            "op": decision.op, "count": 0, "status": decision.status,
            "kernel": decision.kernel, "via": [], "modules": []})
        rec["count"] += 1
        if rank[decision.status] > rank[rec["status"]]:
            rec["status"] = decision.status
        if decision.parts:
            _add_unique(rec["via"], [leaf.op for leaf in decision.leaves()])
        _add_unique(rec["modules"], [path])
        for chain in decision.missing_chains():
            entry = missing.setdefault(tuple(chain), {
                "op": chain[-1], "chain": chain, "modules": [],
                "note": decision.note or "no torch_npu kernel and no composite kernel"})
            _add_unique(entry["modules"], [path])
    return list(records.values()), list(missing.values())


def _to_numpy(out: Any) -> list[np.ndarray]:
    flat, _ = torch.utils._pytree.tree_flatten(out)
    return [t.detach().float().cpu().numpy() for t in flat if isinstance(t, torch.Tensor)]


def audit_module(module: nn.Module, example_inputs: tuple, *,
                 registry: NpuRegistry | str | None = None,
                 compare: Callable[[np.ndarray, np.ndarray], dict] | None = compare_arrays,
                 dynamic_shapes: Any = None) -> dict[str, Any]:
    """Export ``module`` and decide each ATen op it uses on an NPU; a JSON-able report.

    ``registry`` is a loaded :class:`NpuRegistry`, a path for :func:`load_registry`, or ``None``
    for the committed torch_npu list. The report::

        {"device": "audit" | "npu", "registry": {source, version, sha256, date},
         "ops": [{"op", "count", "status": "npu"|"decomposed"|"missing", "kernel", "via",
                  "modules"}],
         "missing": [{"op", "chain", "modules", "note"}], "passed": bool}

    ``via`` lists the ops a composite op ends up calling; ``chain`` the path from the graph's op
    down to the one without a kernel. With an NPU present, ``"outputs"`` holds ``compare(cpu,
    npu)`` per output (or the raw arrays when ``compare`` is None).
    """
    reg = registry if isinstance(registry, NpuRegistry) else load_registry(registry)
    module = module.eval()
    with torch.no_grad():
        ep = torch.export.export(module, tuple(example_inputs), dynamic_shapes=dynamic_shapes)
    ops, missing = _op_records(ep, reg)
    report: dict[str, Any] = {
        "device": "audit",
        "registry": reg.header(),
        "torch": torch.__version__,
        "ops": ops,
        "missing": missing,
        "passed": not missing,
    }
    if npu_available():
        with torch.no_grad():
            cpu_out = _to_numpy(module(*example_inputs))
        npu_out = _to_numpy(run_on_npu(module, example_inputs))
        report["device"] = "npu"
        report["outputs"] = ([compare(c, n) for c, n in zip(cpu_out, npu_out)] if compare
                             else [{"cpu": c, "npu": n} for c, n in zip(cpu_out, npu_out)])
    return report


def raise_if_missing(report: dict[str, Any]) -> None:
    """Raise AuditError naming each op without an NPU kernel and the modules that use it."""
    if report["passed"]:
        return
    lines = [f"{m['op']} (via {' -> '.join(m['chain'])}) in {', '.join(m['modules']) or '<root>'}"
             for m in report["missing"]]
    raise AuditError("ops with no NPU kernel: " + "; ".join(lines))

