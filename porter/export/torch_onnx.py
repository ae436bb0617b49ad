"""Trace a torch module to ONNX at the lowest opset that every op needs (and that an optional
``accept`` check, the ATC table, takes), then simplify it.

Uses the TorchScript exporter (``dynamo=False``): the dynamo exporter fails inside Swin-style
attention reshapes ("Cannot view a tensor ...") on the models this was written for. The
exporter names each node after the module scope it came from (``/backbone/layers.0/.../Op``),
which is how a refused node is traced back to its torch module.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from porter.errors import PorterError

__all__ = ["ExportError", "Exported", "ModuleStack", "export_lowest_opset", "module_of_node",
           "simplify"]

OPSET_FLOOR = 11
OPSET_CEILING = 18
_NEEDS = re.compile(r"(?:added in (?:opset |version )?|try opset version )(\d+)")


class ExportError(PorterError):
    """torch.onnx cannot export the module at any opset tried."""


@dataclass
class Exported:
    """An exported model, the opset it landed on, and why lower opsets were passed over."""

    model: Any
    opset: int
    attempts: list[dict[str, Any]] = field(default_factory=list)


class _Tupled(torch.nn.Module):
    """Calls the module and returns its outputs as a flat tuple in ``pick``'s order."""

    def __init__(self, module: torch.nn.Module, pick: Callable[[Any], tuple]) -> None:
        super().__init__()
        self.m = module
        self.pick = pick

    def forward(self, *args: torch.Tensor) -> tuple:
        return self.pick(self.m(*args))


@contextlib.contextmanager
def _quiet_native_output():
    """Swallow what the exporter's C++ side writes to stdout/stderr (on a failure it dumps the
    whole TorchScript graph, whatever the verbosity): errors reach the user as one line."""
    saved = []
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    try:
        for fd in (1, 2):
            saved.append((fd, os.dup(fd)))
        with tempfile.TemporaryFile() as sink:
            for fd, _ in saved:
                os.dup2(sink.fileno(), fd)
            try:
                yield
            finally:
                for stream in (sys.stdout, sys.stderr):
                    stream.flush()
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)


def _export_once(module: torch.nn.Module, example: tuple, opset: int, input_names: list[str],
                 output_names: list[str], dynamic_axes: dict | None,
                 keep_weights: bool = False) -> Any:
    import onnx

    from porter.export.io_names import rename_values, stand_ins

    # names TorchScript refuses ("35", what older exports call their outputs) are exported
    # under stand-ins and given back to the graph afterwards
    stand = stand_ins([*input_names, *output_names])
    if dynamic_axes is not None:
        dynamic_axes = {stand.get(k, k): v for k, v in dynamic_axes.items()}
    buf = io.BytesIO()
    with warnings.catch_warnings(), _quiet_native_output():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, buf, opset_version=opset, dynamo=False,
                          input_names=[stand.get(n, n) for n in input_names],
                          output_names=[stand.get(n, n) for n in output_names],
                          # keep_weights: every parameter stays an initializer as it is (no
                          # constant folding of weight expressions; PRESERVE exports an
                          # eval-mode module as it is, where EVAL's peephole folds BatchNorm
                          # into the convolution before it)
                          dynamic_axes=dynamic_axes, do_constant_folding=not keep_weights,
                          training=(torch.onnx.TrainingMode.PRESERVE if keep_weights
                                    else torch.onnx.TrainingMode.EVAL))
    model = onnx.load_from_string(buf.getvalue())
    rename_values(model.graph, {s: n for n, s in stand.items()})
    return model


def export_lowest_opset(module: torch.nn.Module, example: Sequence[torch.Tensor],
                        input_names: list[str], output_names: list[str], *,
                        pick: Callable[[Any], tuple], opset: int | None = None,
                        dynamic_axes: dict | None = None,
                        accept: Callable[[Any, int], tuple[str, bool] | None] | None = None,
                        ceiling: int = OPSET_CEILING, keep_weights: bool = False) -> Exported:
    """Export at ``opset``, or at the lowest opset in [11, ceiling] that works.

    A failed export that says which opset an op was "added in" (or to "try") jumps straight
    there; one whose message names no opset is raised at once (no other opset would help).
    ``accept(model, opset)`` returns None to accept, else (reason, whether a higher opset could
    help); when none helps, the lowest exported model is returned (the caller reports it).
    """
    wrapped = _Tupled(module.eval(), pick).eval()
    tries = [opset] if opset is not None else list(range(OPSET_FLOOR, ceiling + 1))
    attempts: list[dict[str, Any]] = []
    first: Exported | None = None
    v = tries[0]
    while v <= tries[-1]:
        stack = ModuleStack(module)
        try:
            with torch.no_grad(), stack:
                model = _export_once(wrapped, tuple(example), v, input_names, output_names,
                                     dynamic_axes, keep_weights)
        except Exception as exc:  # torch.onnx raises many kinds; the message is what matters
            text = str(exc).strip().split(" [Caused by")[0]
            msg = text.splitlines()[0][:300] if text else type(exc).__name__
            attempts.append({"opset": v, "result": msg})
            m = _NEEDS.search(str(exc))
            nxt = int(m.group(1)) if m and int(m.group(1)) > v else v + 1
            # an error that names no opset (Python arithmetic on traced sizes, an exporter
            # assertion) fails the same way at every opset: trying them all costs minutes
            if opset is not None or nxt > tries[-1] or "opset" not in msg.lower():
                where = stack.failed or _scope_module(str(exc), module)
                span = v if opset is not None or v == tries[0] else f"{tries[0]}..{v}"
                raise ExportError(f"torch.onnx cannot export this module at opset {span}"
                                  f"{f' (in torch module {where})' if where else ''}: "
                                  f"{msg}") from exc
            v = nxt
            continue
        verdict = accept(model, v) if accept is not None else None
        if verdict is None:
            attempts.append({"opset": v, "result": "exported"})
            return Exported(model, v, attempts)
        reason, higher_helps = verdict
        attempts.append({"opset": v, "result": reason})
        if first is None:
            first = Exported(model, v, attempts)
        if opset is not None or v == tries[-1] or not higher_helps:
            return first
        v += 1
    raise ExportError("no opset tried")  # unreachable: the loop returns or raises


class ModuleStack:
    """While active, tracks which of ``root``'s modules are running; after an exception,
    ``failed`` names the innermost one (``path (Class)``) so an error can say where it happened."""

    def __init__(self, root: torch.nn.Module) -> None:
        self.names = {id(m): n for n, m in root.named_modules()}
        self.stack: list[torch.nn.Module] = []
        self.failed: str | None = None

    def _pre(self, mod: torch.nn.Module, _args: Any) -> None:
        if id(mod) in self.names:
            self.stack.append(mod)

    def _post(self, mod: torch.nn.Module, _args: Any, _out: Any) -> None:
        if self.stack and self.stack[-1] is mod:
            self.stack.pop()

    def __enter__(self) -> ModuleStack:
        from torch.nn.modules import module as m

        self.stack, self.failed = [], None
        self._hooks = [m.register_module_forward_pre_hook(self._pre),
                       m.register_module_forward_hook(self._post)]
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        for h in self._hooks:
            h.remove()
        if exc_type is not None and self.stack:
            mod = self.stack[-1]
            self.failed = f"{self.names[id(mod)] or '(root)'} ({type(mod).__name__})"


def _scope_module(message: str, module: torch.nn.Module) -> str | None:
    """The module named by the last TorchScript ``scope: a.B::/c.D::m/e.F::attr`` in an
    exporter message (symbolic-conversion errors, raised after tracing has finished)."""
    scopes = re.findall(r"scope: (\S+)", message)
    if not scopes:
        return None
    attrs = [seg.rpartition("::")[2] for seg in scopes[-1].split("/")]
    attrs = [a for a in attrs if a]
    if attrs and attrs[0] == "m":  # _Tupled's attribute
        attrs = attrs[1:]
    return module_of_node("/m/" + "/".join(attrs) + "/op", module) if attrs else None


def module_of_node(node_name: str, module: torch.nn.Module) -> str | None:
    """The torch module a TorchScript-exported node came from: ``/m/a/b.0/Conv`` -> ``a.b.0``
    (and its class), or None when the name carries no scope."""
    parts = [p for p in node_name.split("/") if p]
    if len(parts) < 2 or parts[0] != "m":  # "m" is _Tupled's attribute
        return None
    path = ".".join(parts[1:-1])
    mods = dict(module.named_modules())
    while path and path not in mods:
        path = path.rpartition(".")[0]
    target = mods.get(path, module)
    return f"{path or '(root)'} ({type(target).__name__})"


def simplify(model: Any) -> tuple[Any, str]:
    """Constant folding, shape inference and dead-code removal with onnxslim (chosen over onnxsim
    after measuring both, see BENCHMARKS.md). Returns the model and the tool's version."""
    try:
        import onnxslim
    except ImportError as exc:
        raise PorterError("--to onnx needs onnxslim (pip install 'porter[onnx]')") from exc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            slim = onnxslim.slim(model)
        except Exception as exc:  # onnxslim raises whatever its passes hit
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise ExportError(f"onnxslim {onnxslim.__version__} failed to simplify the exported "
                              f"graph ({type(exc).__name__}: {first}); export with a different "
                              "--opset, or report the model") from exc
    if slim is None or not len(slim.graph.node):
        raise ExportError(f"onnxslim {onnxslim.__version__} returned an empty graph")
    return slim, f"onnxslim {onnxslim.__version__}"
