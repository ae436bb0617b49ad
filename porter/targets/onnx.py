"""``--to onnx``: the verified torch module exported to one ONNX file, for onnxruntime or for the
Ascend ATC compiler (``--target atc``).

Steps, each refusing before anything is written: trace at the lowest opset every op needs (for
ATC, the lowest whose every op the ATC parser table holds); rewrite passes (float64, mixed
int32/int64), each followed by a parity run; simplify (onnxslim); ``onnx.checker`` full check;
parity of the file in onnxruntime against the torch module on several shapes; dynamic H/W kept
only where parity proves it at sizes other than the traced one (else a static export, said so);
for ATC, the audit of every node against the table and the exact ``atc`` command.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from porter.errors import AuditError, ParityError, PorterError
from porter.targets import Job, Target, register_target

DYNAMIC_CHOICES = ("auto", "hw", "none")
KEEP_DTYPE_FILE = "atc_keep_dtype.cfg"


def _pick(output_names: list[str]):
    def pick(out: Any) -> tuple:
        if isinstance(out, torch.Tensor):
            return (out,)
        if isinstance(out, Mapping):
            return tuple(out[k] for k in output_names)
        return tuple(out)

    return pick


def _tolerance(options: dict[str, Any]):
    from porter.verification.parity import Tolerance

    # relative to each output's magnitude: logits and mask scores are not in [0, 1]
    return Tolerance(max_abs=options.get("tolerance") or 1e-6, rel_to_peak=1e-4)


def _resized(case: Any, h: int, w: int, seed: int):
    from porter.verification.parity import Case

    rng = np.random.default_rng(seed)
    inputs = {}
    for k, v in case.inputs.items():
        if v.ndim == 4 and v.dtype.kind == "f":
            lo, hi = float(v.min()), float(v.max())
            inputs[k] = rng.uniform(lo, hi, size=(v.shape[0], v.shape[1], h, w)).astype(v.dtype)
        else:
            inputs[k] = v
    return Case(f"{h}x{w} (gear)", inputs, seed)


def _gear_sizes(first: Any, cases: list, shapes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(H, W) sizes other than the traced one: from --shape where given, else +32/+64 steps
    (multiples of 32 keep stride-32 backbones valid)."""
    x = next(v for v in first.inputs.values() if v.ndim == 4)
    h, w = x.shape[2], x.shape[3]
    seen = {(h, w)}
    sizes = []
    for hw in [*(tuple(c.inputs[k].shape[2:]) for c in cases for k in c.inputs
                 if c.inputs[k].ndim == 4), *shapes]:
        if tuple(hw) not in seen:
            seen.add(tuple(hw))
            sizes.append(tuple(int(d) for d in hw))
    return sizes or [(h + 32, w + 64), (h + 64, w + 32)]


def _same_but_hw(case: Any, first: Any) -> bool:
    """Same input shapes as ``first`` except possibly H and W of NCHW inputs."""
    for k, v in first.inputs.items():
        other = case.inputs.get(k)
        if other is None or other.ndim != v.ndim:
            return False
        fixed = range(2) if v.ndim == 4 else range(v.ndim)
        if any(other.shape[i] != v.shape[i] for i in fixed):
            return False
    return True


class _Memo:
    """A runner that computes each distinct input once: the torch side of every parity run in
    one export (after each pass, the gears, the final report, a static retry) sees the same
    cases, and on a large model each forward costs seconds."""

    def __init__(self, runner: Any) -> None:
        self.runner, self.name, self.seen = runner, runner.name, {}

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        h = hashlib.sha256()
        for k in sorted(inputs):
            v = np.ascontiguousarray(inputs[k])
            h.update(f"{k}:{v.dtype}:{v.shape};".encode())
            h.update(v.tobytes())
        key = h.hexdigest()
        if key not in self.seen:
            self.seen[key] = self.runner(inputs)
        return self.seen[key]


class _Export:
    """One export attempt's state: the model, what was done to it, its parity."""

    def __init__(self, job: Job, flavour: str, table: Any, dynamic: bool,
                 refs: dict[str, Any]) -> None:
        self.job, self.flavour, self.table, self.dynamic = job, flavour, table, dynamic
        self.passes: list[dict[str, Any]] = []
        self.refs = refs  # the torch runners, shared by every attempt of one export

    def _accept(self, model: Any, opset: int) -> tuple[str, bool] | None:
        if self.table is None:
            return None
        missing = sorted({n.op_type for n in model.graph.node
                          if not self.table.accepts(n.op_type, opset)})
        if not missing:
            return None
        higher = all(any(v > opset for v in self.table.opsets(op)) for op in missing)
        return f"not in the ATC table at opset {opset}: {', '.join(missing)}", higher

    def parity(self, model: Any, cases: list, label: str):
        """onnxruntime vs the torch module (float32). Where that fails, a float64 run of the
        module arbitrates: when the file agrees with it, torch's own float32 was the less
        accurate side (deep attention stacks drift by 1e-3), and the report says so."""
        from porter.verification.parity import run_parity
        from porter.verification.runtimes.onnxruntime import OrtRunner
        from porter.verification.runtimes.torch_ import TorchRunner

        job = self.job
        cand = OrtRunner(model)
        cand.name = f"onnxruntime ({label})"
        tol = _tolerance(job.options)
        if "float32" not in self.refs:
            self.refs["float32"] = _Memo(TorchRunner(job.module, job.input_names,
                                                     job.output_names))
        rep = run_parity(self.refs["float32"], cand, cases, tolerance=tol, reference_name="torch-cpu",
                         candidate_name=cand.name, outputs=job.output_names)
        if rep.passed:
            return rep
        import copy

        from porter.export.torch_onnx import ModuleStack

        stack = None
        try:
            if "float64" not in self.refs:
                wide = copy.deepcopy(job.module)
                self.refs["float64"] = _Memo(TorchRunner(wide, job.input_names,
                                                         job.output_names, dtype=torch.float64))
            stack = ModuleStack(self.refs["float64"].runner.module)
            with stack:
                arb = run_parity(self.refs["float64"], cand, cases, tolerance=tol,
                                 reference_name="torch-cpu-float64", candidate_name=cand.name,
                                 outputs=job.output_names)
        except Exception as exc:  # the module cannot run in float64 (a float32-only kernel ...)
            where = f" in torch module {stack.failed}" if stack and stack.failed else ""
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ParityError(
                f"exported ONNX ({label}) disagrees with the torch module: worst max|Δ| "
                f"{rep.worst():.3e} > {tol.describe()}, and the float64 run that would arbitrate "
                f"failed{where} ({type(exc).__name__}: {first})") from exc
        if arb.passed:
            arb.note = (f"against torch float32 the worst max|Δ| is {rep.worst():.3e} (over the "
                        f"bound); against torch float64 it is {arb.worst():.3e}: torch float32 "
                        "is the less accurate side, the file is faithful to the model")
            arb.float32 = rep.to_dict()
            job.progress(f"note     {arb.note}")
        return arb

    def run(self) -> Any:
        import onnx

        from porter.export.passes import run_passes
        from porter.export.torch_onnx import export_lowest_opset, simplify

        job = self.job
        first = job.cases[0]
        example = [torch.from_numpy(np.ascontiguousarray(first.inputs[n]))
                   for n in job.input_names]
        axes = None
        if self.dynamic:
            axes = {n: {2: f"{n}_height", 3: f"{n}_width"} for n, t in
                    zip(job.input_names, example) if t.ndim == 4}
        ceiling = self.table.max_opset if self.table is not None else 18
        self.exported = export_lowest_opset(
            job.module, example, job.input_names, job.output_names,
            pick=_pick(job.output_names), opset=job.options.get("opset"), dynamic_axes=axes,
            accept=self._accept, ceiling=ceiling)
        model = self.exported.model
        self.raw_nodes = len(model.graph.node)
        job.progress(f"export   opset {self.exported.opset}, {self.raw_nodes} nodes"
                     f"{' (dynamic H/W)' if self.dynamic else ''}")
        smallest = [min(job.cases, key=lambda c: sum(v.size for v in c.inputs.values()))]

        def reverify(p, res):
            rep = self.parity(model, smallest, f"after {p.name}")
            job.progress(f"pass     {p.name}: {res.changed} rewrites, parity max|Δ| "
                         f"{rep.worst():.2e}")
            if not rep.passed:
                raise ParityError(f"ONNX pass {p.name} broke parity: max|Δ| {rep.worst():.3e}")
            self.passes.append({**res.to_dict(), "parity_max_abs": rep.worst()})

        results = run_passes(model, after=reverify)
        self.passes += [r.to_dict() for r in results if not r.changed]
        model, self.simplifier = simplify(model)
        try:
            onnx.checker.check_model(model, full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
            raise PorterError(f"exported ONNX fails onnx.checker full check: "
                              f"{str(exc).splitlines()[0]}") from exc
        self.model = model
        job.progress(f"simplify {self.simplifier}: {self.raw_nodes} -> {len(model.graph.node)} "
                     "nodes; onnx.checker full check passed")
        return model


def _prepare(job: Job):
    from porter.export.atc import (
        atc_audit,
        atc_caveats,
        atc_command,
        check_atc_options,
        load_atc_table,
    )
    from porter.export.torch_onnx import module_of_node

    opts = job.options
    flavour = opts.get("target") or "onnxruntime"
    dynamic = opts.get("dynamic") or "auto"
    if dynamic not in DYNAMIC_CHOICES:
        raise PorterError(f"--dynamic must be one of {', '.join(DYNAMIC_CHOICES)}, not {dynamic!r}")
    if not job.cases:
        raise PorterError("--to onnx needs example inputs (give --shape NAME=1x3xHxW)")
    table = load_atc_table() if flavour == "atc" else None
    if flavour != "atc" and (opts.get("soc_version") or opts.get("precision_mode")):
        raise PorterError("--soc-version and --precision-mode are atc options: add --target atc")
    soc, precision = check_atc_options(opts.get("soc_version"), opts.get("precision_mode"))
    has_image = any(v.ndim == 4 for v in job.cases[0].inputs.values())
    want_dynamic = dynamic != "none" and has_image
    if dynamic == "hw" and not has_image:
        raise PorterError("--dynamic hw needs an NCHW input")

    # the export fixes batch (and every non-H/W dim) to the traced case's: parity on those
    job.cases = [c for c in job.cases if _same_but_hw(c, job.cases[0])]
    if not want_dynamic:
        job.cases = [c for c in job.cases if c.shapes() == job.cases[0].shapes()]
    from porter.export.torch_onnx import ExportError

    refs: dict[str, Any] = {}
    ex = _Export(job, flavour, table, want_dynamic, refs)
    dyn_note = None
    try:
        model = ex.run()
    except ExportError as exc:
        if not want_dynamic:
            raise
        if dynamic == "hw":
            raise ExportError(f"--dynamic hw: {exc}; export static with --dynamic none") from exc
        # torch.onnx cannot trace the module with symbolic H/W (Python arithmetic on sizes,
        # an op whose symbolic needs static sizes): a static export is the honest result
        dyn_note = (f"static export: torch.onnx could not export dynamic H/W ({str(exc)[:300]}), "
                    "so H/W were fixed to the traced size")
        job.progress(f"note     {dyn_note}")
        want_dynamic = False
        job.cases = [c for c in job.cases if c.shapes() == job.cases[0].shapes()]
        ex = _Export(job, flavour, table, False, refs)
        model = ex.run()
    cases = list(job.cases)
    gears: list[tuple[int, int]] = []
    if want_dynamic:
        sizes = _gear_sizes(cases[0], cases, opts.get("gear_sizes") or [])
        gear_cases = [_resized(cases[0], h, w, 100 + i) for i, (h, w) in enumerate(sizes)]
        try:
            rep = ex.parity(model, gear_cases, "dynamic H/W")
            failed = None if rep.passed else f"max|Δ| {rep.worst():.3e} at other sizes"
        except PorterError as exc:
            failed = str(exc)
        except Exception as exc:  # the torch module itself refuses a size: no proof either way
            sizes_s = ", ".join(f"{h}x{w}" for h, w in sizes)
            failed = (f"the torch module fails at {sizes_s} ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0][:200]}); give sizes it accepts with --shape")
        if failed is None:
            x = next(v for v in cases[0].inputs.values() if v.ndim == 4)
            gears = [tuple(int(d) for d in x.shape[2:]), *sizes]
            cases += gear_cases
        elif dynamic == "hw":
            raise ParityError(f"--dynamic hw: the exported graph declares H/W dynamic but fails "
                              f"at other sizes ({failed}); export static with --dynamic none")
        else:
            dyn_note = (f"static export: with dynamic H/W the graph failed at sizes other than "
                        f"the traced one ({failed[:300]}), so H/W were fixed to the traced size")
            job.progress(f"note     {dyn_note}")
            cases = job.cases = [c for c in cases if c.shapes() == cases[0].shapes()]
            ex = _Export(job, flavour, table, False, refs)
            model = ex.run()
    elif has_image and dyn_note is None:
        dyn_note = "static export (--dynamic none): the model accepts only the traced input shape"

    report = ex.parity(model, cases, "final")
    for line in report.lines():
        job.progress(f"         {line}")
    if not report.passed:
        raise ParityError(f"exported ONNX disagrees with the torch module: worst max|Δ| "
                          f"{report.worst():.3e} > {report.tolerance.describe()}")
    report.note = "; ".join(n for n in (report.note, dyn_note) if n)

    data = model.SerializeToString()
    name = job.manifest.get("name", "model")
    onnx_entry = {
        "file": "model.onnx", "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
        "target": flavour, "opset": ex.exported.opset, "opset_attempts": ex.exported.attempts,
        "exporter": f"torch.onnx (TorchScript) {torch.__version__}",
        "passes": ex.passes, "simplifier": ex.simplifier,
        "nodes": {"exported": ex.raw_nodes, "final": len(model.graph.node)},
        "checker": "onnx.checker.check_model(full_check=True) passed",
        "inputs": _io(model.graph.input), "outputs": _io(model.graph.output),
        "dynamic": {"hw": bool(gears), "gears": [list(g) for g in gears], "note": dyn_note},
    }
    extra: dict[str, Any] = {"onnx": onnx_entry, "parity": report.to_dict()}
    if getattr(report, "float32", None):
        extra["parity_float32"] = report.float32
    keep = None
    if table is not None:
        audit = atc_audit(model, table, lambda n: module_of_node(n, job.module))
        job.progress(f"atc      {sum(o['count'] for o in audit.ops.values())} nodes, "
                     f"{len(audit.ops)} op types at opset {audit.opset}: "
                     f"{len(audit.refused)} outside the ATC table")
        if not audit.passed:
            raise AuditError("ATC audit: " + "; ".join(audit.problems()))
        grid = [n.name for n in model.graph.node if n.op_type == "GridSample"]
        keep = "\n".join(grid) + "\n" if grid else None
        dims = []
        for v in model.graph.input:
            d = [x.dim_value if x.HasField("dim_value") else -1 for x in v.type.tensor_type.shape.dim]
            dims.append((v.name, d))
        cmd = atc_command("model.onnx", dims, output=name, soc_version=soc, gears=gears or None,
                          precision_mode=precision,
                          keep_dtype=KEEP_DTYPE_FILE if keep else None)
        extra["atc"] = {**audit.to_dict(), "command": cmd, "soc_version": soc,
                        "precision_mode": precision,
                        "keep_dtype": KEEP_DTYPE_FILE if keep else None,
                        "caveats": atc_caveats(audit, dynamic=bool(gears), soc_version=soc),
                        "table_commits": list(table.commits)}
        job.progress(f"atc      {cmd}")
    job.manifest.update(extra)

    def write(stage: Path) -> dict[str, Any]:
        (stage / "model.onnx").write_bytes(data)
        if keep:
            (stage / KEEP_DTYPE_FILE).write_text(keep)
        return extra

    return write


def _io(values: Any) -> list[dict[str, Any]]:
    from onnx import helper

    out = []
    for v in values:
        t = v.type.tensor_type
        out.append({"name": v.name, "dtype": helper.tensor_dtype_to_np_dtype(t.elem_type).name,
                    "shape": [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                              for d in t.shape.dim]})
    return out


register_target(Target("onnx", "one verified ONNX file (--target atc: checked for Ascend ATC)",
                       _prepare, flavours=(None, "onnxruntime", "atc"), from_module=True))
