"""Audit an nn.Module for Ascend NPUs: capture the ATen ops it uses, then decide each one.

Three ways to capture, one kind of op list:

- a recording made while the module ran anyway (:func:`recording` around a parity forward, as
  ``porter convert --verify npu`` does): every ATen op actually dispatched, as fake tensors,
  with the module (or, for porter's ONNX modules, the graph step) running; passed in as
  ``captured``, so nothing runs twice. The calls are kept as meta tensors; a composite op is
  judged by running its kernel on zeros of the recorded shapes (``REAL_ELEMENTS``), else on the
  meta tensors, else on fake tensors;
- ``torch.export``: the exported graph's ATen op calls (symbolic sizes when ``dynamic_shapes``
  is given, else static); each node names the modules that produced it
  (``node.meta["nn_module_stack"]``; ``""`` is the root module);
- ``dispatch``: when export cannot capture the module (data-dependent shapes, untraceable
  constructs), one real forward of the example inputs runs under that same recording.

Either way the calls are grouped by overload and :func:`porter.verification.npu.dispatch.decide` judges
each as the NPU dispatcher would (torch_npu kernel, composite kernel judged by its parts, or CPU
fallback). The report says which method was used (``"capture"``). When an NPU is present
(:func:`npu_available`) the module is also run there and compared with the CPU.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch._guards import detect_fake_mode
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.node import map_arg

from porter.errors import AuditError
from porter.verification.dispatch_mode import PlainDispatchMode
from porter.verification.metrics import compare_arrays
from porter.verification.npu.device import npu_available, run_on_npu
from porter.verification.npu.dispatch import Decision, decide, is_metadata_op, op_label
from porter.verification.npu.registry import NpuRegistry, load_registry

__all__ = ["audit_module", "graph_ops", "dispatched_ops", "recording", "Captured",
           "raise_if_missing"]

CAPTURES = ("torch.export", "dispatch")


def _module_path(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    path = str(list(stack.values())[-1][0]) if stack else ""
    return "" if path.startswith("_empty_nn_module_stack") else path  # export's placeholder


def graph_ops(ep: torch.export.ExportedProgram) -> list[torch.fx.Node]:
    """The graph's call_function nodes whose target is an ATen/prims OpOverload, in order
    (symbolic-size queries left out)."""
    return [n for n in ep.graph.nodes
            if n.op == "call_function" and isinstance(n.target, torch._ops.OpOverload)
            and not is_metadata_op(n.target)]


def _fake_args(node: torch.fx.Node) -> tuple[tuple, dict]:
    def val(arg: torch.fx.Node) -> Any:
        return arg.meta["val"]
    return map_arg(node.args, val), map_arg(node.kwargs, val)


def _add_unique(items: list[str], new: list[str]) -> None:
    items.extend(x for x in new if x not in items)


Call = tuple[Any, tuple, dict, str]  # (OpOverload, fake args, fake kwargs, module path)


def _export_calls(ep: torch.export.ExportedProgram) -> tuple[list[Call], Any]:
    nodes = graph_ops(ep)
    fake_mode = detect_fake_mode([n.meta.get("val") for n in ep.graph.nodes
                                  if n.op == "placeholder"])
    return [(n.target, *_fake_args(n), _module_path(n)) for n in nodes], fake_mode


def _signature(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return ("T", str(x.dtype), str(tuple(x.shape)), str(x.layout))  # SymInts: by name
    if isinstance(x, (list, tuple)):
        return tuple(_signature(v) for v in x)
    if isinstance(x, dict):
        return tuple((k, _signature(v)) for k, v in sorted(x.items()))
    return repr(x)


#: A recorded call whose tensors hold at most this many elements in all has its composite
#: kernel judged on real zero tensors (torch's C++ kernels, as the CPU ran them); a larger one
#: on meta tensors, whose Python meta kernels import all of torch._dynamo (about a second).
REAL_ELEMENTS = 1 << 24


def _tensors(tree: Any) -> list[torch.Tensor]:
    flat, _ = torch.utils._pytree.tree_flatten(tree)
    return [x for x in flat if isinstance(x, torch.Tensor)]


def _materialize(tree: Any) -> Any:
    """Real zero tensors, with the recorded shapes, strides, dtypes and devices, for meta ones."""
    def real(x: Any) -> Any:
        if isinstance(x, torch.Tensor) and x.device.type == "meta":
            t = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype,
                                    device=getattr(x, "porter_device", "cpu"))
            return t.zero_()
        return x
    return torch.utils._pytree.tree_map(real, tree)


def _decide(op: Any, args: tuple, kwargs: dict, registry: NpuRegistry, fake_mode: Any
            ) -> Decision:
    try:
        return decide(op, args, kwargs, registry, fake_mode)
    except Exception as exc:  # noqa: BLE001 - an op that cannot be judged is flagged
        return Decision(op_label(op), "missing", "unknown",
                        note=f"could not judge: {_first_line(exc)}")


def _judge(op: Any, args: tuple, kwargs: dict, registry: NpuRegistry, fake_mode: Any
           ) -> Decision:
    """One decision; a recorded (meta) call that needs its composite kernel run is tried on
    real zeros first when small (see ``REAL_ELEMENTS``), then on the meta tensors."""
    if fake_mode is None and not (op.namespace == "aten" and registry.has_kernel(op)):
        tensors = _tensors((args, kwargs))
        if tensors and all(t.device.type == "meta" for t in tensors) and \
                sum(t.numel() for t in tensors) <= REAL_ELEMENTS:
            with torch.inference_mode():
                decision = _decide(op, *_materialize((args, kwargs)), registry, None)
            if _traced(decision):
                return decision
    return _decide(op, args, kwargs, registry, fake_mode)


def _traced(decision: Decision) -> bool:
    """False when some composite kernel in the decision could not be run on its arguments."""
    if decision.note.startswith(("could not trace", "could not judge")):
        return False
    return all(_traced(p) for p in decision.parts)


def _op_records(calls: list[Call], fake_mode: Any,
                registry: NpuRegistry) -> tuple[list[dict], list[dict]]:
    records: dict[str, dict[str, Any]] = {}
    missing: dict[tuple[str, ...], dict[str, Any]] = {}
    rank = {"npu": 0, "decomposed": 1, "missing": 2}
    seen: dict[tuple, Decision] = {}  # one decision per (op, argument signature)
    fakes: FakeTensorMode | None = None  # made only if a meta-tensor capture needs one
    for op, args, kwargs, path in calls:
        key = (op, _signature(args), _signature(kwargs))
        decision = seen.get(key)
        if decision is None:
            decision = _judge(op, args, kwargs, registry, fake_mode)
            if fake_mode is None and not _traced(decision):
                # a composite kernel that meta tensors cannot run: judge it on fake tensors
                fakes = fakes or FakeTensorMode(allow_non_fake_inputs=True)
                decision = _decide(op, *_as_fakes((args, kwargs), fakes), registry, fakes)
            seen[key] = decision
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


class _RecordDispatched(PlainDispatchMode):
    """Record each ATen op a real forward dispatches, its tensors as meta tensors (shape,
    strides, dtype; no data), with its module path.

    Only ops inside the module's forward count (``where`` is empty outside it): a caller's own
    conversions around the call (``from_numpy``, ``detach``) are not the module's ops."""

    def __init__(self, where: list[str]) -> None:
        super().__init__()
        self.where = where  # stack of module paths, innermost last; "" is the root
        self.calls: list[Call] = []

    @staticmethod
    def _meta(x: Any) -> Any:
        if isinstance(x, torch.Tensor) and x.layout == torch.strided:
            m = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device="meta")
            m.porter_device = x.device  # where it ran: a fake twin is made there if needed
            return m
        return x

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.where and isinstance(func, torch._ops.OpOverload) and \
                func.namespace not in ("prim",):
            margs, mkwargs = torch.utils._pytree.tree_map(self._meta, (args, kwargs))
            self.calls.append((func, margs, mkwargs, self.where[-1]))
        return out


def _as_fakes(args: Any, fake_mode: FakeTensorMode) -> Any:
    """Fake tensors on the recorded device for meta-tensor arguments."""
    def fake(x: Any) -> Any:
        if isinstance(x, torch.Tensor) and x.device.type == "meta":
            with fake_mode:
                return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype,
                                           device=getattr(x, "porter_device", "cpu"))
        return x
    return torch.utils._pytree.tree_map(fake, args)


def _track_modules(module: nn.Module, where: list[str]) -> list[Any]:
    """Hooks that keep ``where`` at the path of the module (or ONNX graph step) now running
    (``""`` for the root module's own ops; empty outside its forward)."""
    handles = []
    for path, sub in module.named_modules():

        def push(_m, _a, path=path):
            where.append(path)

        def pop(_m, _a, _o):
            where.pop()

        handles.append(sub.register_forward_pre_hook(push))
        handles.append(sub.register_forward_hook(pop))
    return handles


@dataclass
class Captured:
    """The ATen op calls one capture recorded: how (``method``), the calls with their
    arguments (meta tensors for a recording; fake tensors of ``fake_mode`` for an export), and
    notes for the report."""

    method: str
    calls: list[Call] = field(default_factory=list)
    fake_mode: Any = None
    notes: list[str] = field(default_factory=list)


@contextlib.contextmanager
def recording(module: nn.Module, note: str = "") -> Iterator[Captured]:
    """Record every ATen op ``module``'s forwards dispatch inside the ``with`` block.

    The block runs the module as it would anyway (a parity forward, say); its outputs are the
    real ones, since each op still runs its own kernel. Under ``torch.no_grad`` composite-implicit
    ops arrive decomposed; under ``torch.inference_mode`` they arrive whole (autograd's key is
    skipped) and :func:`decide` judges them by their parts, as the NPU dispatcher would. Porter's
    ONNX modules report the graph step running (``step_observer``), other modules their
    submodule. ``note`` goes into the report's ``capture_notes``.
    """
    where: list[str] = []
    recorder = _RecordDispatched(where)
    captured = Captured("dispatch", recorder.calls, None, [note] if note else [])
    handles = _track_modules(module, where)
    observed = [(p, m) for p, m in module.named_modules() if hasattr(m, "step_observer")]

    def observer(prefix: str) -> Callable[[str], None]:
        def on_step(label: str) -> None:
            where[-1] = f"{prefix}.{label}" if prefix else label
        return on_step

    for path, m in observed:
        m.step_observer = observer(path)
    from porter.converters.reuse import plain_ops

    try:
        with plain_ops(), recorder:  # the ops a device runs, not porter's CPU kernels
            yield captured
    finally:
        for h in handles:
            h.remove()
        for _, m in observed:
            m.step_observer = None


def dispatched_ops(module: nn.Module, example_inputs: tuple) -> tuple[list[Call], Any]:
    """The ATen ops one real ``module(*example_inputs)`` dispatches (below autograd), in order.

    Composite-implicit ops arrive already decomposed, as in an exported graph.
    """
    with torch.no_grad(), recording(module) as captured:
        module(*example_inputs)
    return captured.calls, captured.fake_mode


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


@contextlib.contextmanager
def _torch_logs_quiet() -> Iterator[None]:
    """Keep torch's own warnings off stderr, unless verbose: a failed export logs warnings and
    prints its partial graph to ``sys.stderr``, though the audit goes on with another method."""
    from porter.verification.runtimes.onnxruntime import ort_verbose

    if ort_verbose():
        yield
        return
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
               if name == "torch" or name.startswith("torch.")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _for_signature(module: nn.Module, dynamic_shapes: Any) -> Any:
    """Per-input dynamic_shapes, nested as torch.export wants for ``forward(*args)``."""
    import inspect

    if dynamic_shapes is None or isinstance(dynamic_shapes, dict):
        return dynamic_shapes
    params = list(inspect.signature(module.forward).parameters.values())
    if len(params) == 1 and params[0].kind is inspect.Parameter.VAR_POSITIONAL:
        return (tuple(dynamic_shapes),)
    return dynamic_shapes


def _symbolic_dims(ep: torch.export.ExportedProgram) -> list[str]:
    """A note naming the input dims exported as symbolic sizes (none: the export is static)."""
    user = set(ep.graph_signature.user_inputs)
    dims = [f"{n.name}[{k}]" for n in ep.graph.nodes if n.op == "placeholder" and n.name in user
            for k, d in enumerate(getattr(n.meta.get("val"), "shape", ()))
            if isinstance(d, torch.SymInt)]
    return [f"torch.export: dynamic dims {', '.join(dims)}"] if dims else []


def _capture(module: nn.Module, example_inputs: tuple, dynamic_shapes: Any,
             capture: str | None) -> tuple[str, list[Call], Any, list[str]]:
    """(method, calls, fake_mode, why earlier methods failed); AuditError when none works."""
    if capture is not None and capture not in CAPTURES:
        raise AuditError(f"capture must be one of {', '.join(CAPTURES)}, not {capture!r}")
    failures: list[str] = []
    name = f"{type(module).__module__}.{type(module).__qualname__}"
    if capture in (None, "torch.export"):
        dynamic_shapes = _for_signature(module, dynamic_shapes)
        attempts = [dynamic_shapes] + ([None] if dynamic_shapes is not None else [])
        for dyn in attempts:
            try:
                with torch.no_grad(), _torch_logs_quiet():
                    ep = torch.export.export(module, tuple(example_inputs), dynamic_shapes=dyn)
                calls, fake_mode = _export_calls(ep)
                return "torch.export", calls, fake_mode, failures + _symbolic_dims(ep)
            except Exception as exc:  # noqa: BLE001 - any capture failure moves to the next one
                kind = "dynamic" if dyn is not None else "static"
                failures.append(f"torch.export ({kind}): {_first_line(exc)}")
    if capture in (None, "dispatch"):
        try:
            calls, fake_mode = dispatched_ops(module, tuple(example_inputs))
            return "dispatch", calls, fake_mode, failures
        except Exception as exc:  # noqa: BLE001 - reported as an AuditError naming the module
            failures.append(f"dispatch: {_first_line(exc)}")
    raise AuditError(f"NPU audit cannot capture {name}: " + "; ".join(failures))


def _to_numpy(out: Any) -> list[np.ndarray]:
    flat, _ = torch.utils._pytree.tree_flatten(out)
    return [t.detach().float().cpu().numpy() for t in flat if isinstance(t, torch.Tensor)]


def audit_module(module: nn.Module, example_inputs: tuple, *,
                 registry: NpuRegistry | str | None = None,
                 compare: Callable[[np.ndarray, np.ndarray], dict] | None = compare_arrays,
                 dynamic_shapes: Any = None, capture: str | None = None,
                 captured: Captured | None = None) -> dict[str, Any]:
    """Capture the ATen ops ``module`` uses and decide each one on an NPU; a JSON-able report.

    ``registry`` is a loaded :class:`NpuRegistry`, a path for :func:`load_registry`, or ``None``
    for the committed torch_npu list. The report::

        {"device": "audit" | "npu", "capture": "torch.export" | "dispatch",
         "registry": {source, version, sha256, date},
         "ops": [{"op", "count", "status": "npu"|"decomposed"|"missing", "kernel", "via",
                  "modules"}],
         "missing": [{"op", "chain", "modules", "note"}], "passed": bool}

    ``capture`` forces one method (default: ``torch.export`` with ``dynamic_shapes``, then
    static, then ``dispatch``); why earlier methods failed is kept in ``"capture_notes"``. When
    no method can capture the module, :class:`AuditError` names it and each failure.
    ``captured`` (from :func:`recording` around a forward that ran anyway) is judged instead of
    capturing again: one capture serves both the parity run and the audit.
    ``via`` lists the ops a composite op ends up calling; ``chain`` the path from the graph's op
    down to the one without a kernel. With an NPU present, ``"outputs"`` holds ``compare(cpu,
    npu)`` per output (or the raw arrays when ``compare`` is None).
    """
    reg = registry if isinstance(registry, NpuRegistry) else load_registry(registry)
    module = module.eval()
    if captured is not None:
        method, calls, fake_mode, failures = (captured.method, captured.calls,
                                              captured.fake_mode, list(captured.notes))
    else:
        method, calls, fake_mode, failures = _capture(module, example_inputs, dynamic_shapes,
                                                      capture)
    try:
        ops, missing = _op_records(calls, fake_mode, reg)
    except Exception as exc:  # noqa: BLE001 - judging must not end in an internal error
        raise AuditError(f"NPU audit of {type(module).__qualname__} ({method}) failed: "
                         f"{_first_line(exc)}") from exc
    report: dict[str, Any] = {
        "device": "audit",
        "capture": method,
        "registry": reg.header(),
        "torch": torch.__version__,
        "ops": ops,
        "missing": missing,
        "passed": not missing,
    }
    if failures:
        report["capture_notes"] = failures
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

