"""The conversion pipeline: import -> map -> substitute -> verify -> write (-> publish).

``convert`` is what ``porter convert`` runs. Nothing is written until every requested check has
passed; the output folder is assembled beside its destination and renamed into place, so a
failed or interrupted run never leaves a half-written output.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from porter.errors import AuditError, FormatError, ParityError, PorterError
from porter.source import Source, sha256_file

__all__ = ["convert", "ConvertResult", "write_output", "VERIFY_CHOICES"]

VERIFY_CHOICES = ("cpu", "npu", "none")
Progress = Callable[[str], None]


@dataclass
class ConvertResult:
    """What a conversion produced: the output folder, its manifest, the module, timings."""

    out: Path | None
    manifest: dict[str, Any]
    module: torch.nn.Module
    timings: dict[str, float] = field(default_factory=dict)
    published: Path | None = None


def _quiet(_: str) -> None:
    pass


def _resolve_source(path: str | Path) -> Path:
    """A path as given, or a catalog name already fetched into the cache."""
    p = Path(path)
    if p.exists() or os.sep in str(path) or p.suffix:
        return p
    from porter.zoo.catalog import cached_path, load_catalog

    catalog = load_catalog()
    if str(path) in catalog:
        cached = cached_path(str(path))
        if cached is None:
            raise FormatError(f"{path}: catalog model not fetched yet (run `porter fetch {path}`)")
        return cached
    return p


def _select_port(source: Source, graph: str):
    from porter.graphs import find_ports, get_port

    if graph == "generic":
        return None
    if graph != "auto":
        port = get_port(graph)
        if source.format not in port.formats:
            raise PorterError(f"graph {port.name!r} ports from {', '.join(port.formats)}, "
                              f"not from a {source.format} source")
        return port
    found = find_ports(source)
    if len(found) > 1:
        raise PorterError(f"several graphs match this source exactly: "
                          f"{', '.join(p.name for p in found)}; pick one with --graph")
    return found[0] if found else None


def convert(path: str | Path, *, to: str = "torch", graph: str = "auto", verify: str = "cpu",
            out: str | Path | None = None, publish: bool = False, name: str | None = None,
            target: str | None = None, images: Sequence[str | Path] = (),
            zoo: str | Path | None = None, shapes: Sequence[str] = (),
            cross_check: Sequence[str | Path] = (), tolerance: float | None = None,
            upstream: str | None = None, progress: Progress = _quiet) -> ConvertResult:
    """Convert ``path`` to a verified torch module and write ``out`` (and the zoo on publish).

    ``verify``: "cpu" (parity against the source runtime), "npu" (that, plus NPU-safe
    substitutes and the NPU audit or a real NPU run), "none". ``target="npu"`` applies the
    substitutes without verifying. ``images`` adds real pictures to the parity cases.
    ``cross_check`` names other ONNX exports of the same model (matched to the module's inputs
    and outputs by position) that the module must also agree with.
    """
    if verify not in VERIFY_CHOICES:
        raise PorterError(f"--verify must be one of {', '.join(VERIFY_CHOICES)}, not {verify!r}")
    if to not in ("torch", "torch-source"):
        raise PorterError(f"--to must be torch or torch-source, not {to!r}")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    src_path = _resolve_source(path)
    if name is None and src_path != Path(path):  # a catalog name: keep it as the model's name
        name = str(path)
    progress(f"import   {src_path}")
    from porter.importers import open_source

    source = open_source(src_path)
    if upstream:
        source.meta["upstream"] = str(upstream)
    timings["import"] = time.perf_counter() - t0

    t = time.perf_counter()
    port = None if to == "torch-source" else _select_port(source, graph)
    if port is not None:
        progress(f"map      {source.format} -> {port.graph} (port {port.name})")
        ported = port.port(source)
    else:
        progress(f"convert  {source.format} -> generic torch module (no clean graph matches)")
        from porter.generic import generic_port, parse_shape

        port, ported = generic_port(source, dict(parse_shape(s) for s in shapes))
    timings["map"] = time.perf_counter() - t
    if tolerance is not None:
        if not tolerance > 0:
            raise PorterError(f"--tol must be positive, not {tolerance}")
        from dataclasses import replace

        port = replace(port, tolerance=replace(port.tolerance, max_abs=tolerance))
    progress(f"         {ported.mapping.summary()}")

    module = ported.module.eval()
    substitutes: list[dict[str, Any]] = []
    if verify == "npu" or target == "npu":
        from porter.substitutes import apply_substitutes

        module, substitutes = apply_substitutes(module)
        progress(f"substitute {len(substitutes)} NPU-safe rewrites")

    parity = audit = None
    checks: list[dict[str, Any]] = []
    if verify != "none":
        t = time.perf_counter()
        cases = port.cases(source, ported)
        # one source runtime for every check below, each case run through it once
        reference = _Memo(port.reference(source, ported))
        try:
            parity = _verify_parity(source, port, ported, module, reference,
                                    cases + [_image_case(p, ported, cases[0]) for p in images], progress)
            checks = [_cross_check(Path(p), port, ported, module, cases, progress)
                      for p in cross_check]
            timings["verify"] = time.perf_counter() - t
            if verify == "npu":
                t = time.perf_counter()
                audit = _npu_check(port, ported, module, reference, cases, progress)
                timings["npu"] = time.perf_counter() - t
        finally:
            close = getattr(reference, "close", None)
            if close is not None:
                close()

    manifest = build_manifest(source, port, ported, module, substitutes, parity, audit,
                              name=name or _default_name(source, port))
    if checks:
        manifest["cross_checks"] = checks
    result = ConvertResult(None, manifest, module, timings)
    if out is not None or publish:
        t = time.perf_counter()
        out_dir = Path(out) if out is not None else Path("out") / manifest["name"]
        write_output(out_dir, module, manifest, extra_files=ported_files(ported))
        result.out = out_dir
        progress(f"write    {out_dir}")
        if publish:
            from porter.zoo.publish import publish as publish_entry

            result.published = publish_entry(out_dir, manifest["name"], zoo)
            progress(f"publish  {result.published}")
        timings["write"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    result.manifest["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    if result.out is not None:  # timings are known only now; rewrite the manifest in place
        _write_json_atomic(result.out / "manifest.json", result.manifest)
        if result.published is not None:
            _write_json_atomic(result.published / "manifest.json", result.manifest)
    return result


class _Memo:
    """A runner that remembers its outputs per inputs dict (the fp16 rerun reuses a case)."""

    def __init__(self, runner: Any) -> None:
        self.runner, self._seen = runner, {}
        self.close = getattr(runner, "close", None)

    def __call__(self, inputs: Any) -> Any:
        key = id(inputs)
        if key not in self._seen:
            self._seen[key] = (inputs, self.runner(inputs))
        return self._seen[key][1]


def _default_name(source: Source, port: Any) -> str:
    stem = source.path.name
    for suffix in (".onnx", ".pb", ".pdparams", ".pdmodel", ".meta", ".index", ".pth", ".pt",
                   ".bin", ".safetensors"):
        stem = stem.removesuffix(suffix)
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in stem) or port.name


def ported_files(ported: Any) -> dict[str, str]:
    """Extra files a port ships beside the weights (generated source for generic ports)."""
    files = dict(getattr(ported, "files", None) or {})
    render = getattr(ported, "render_files", None)
    return {**files, **render()} if render is not None else files


def _verify_parity(source: Source, port: Any, ported: Any, module: torch.nn.Module,
                   reference: Any, cases: list, progress: Progress):
    from porter.verify.parity import run_parity
    from porter.verify.runtimes.torch_ import TorchRunner

    candidate = TorchRunner(module, ported.input_names, ported.output_names)
    progress(f"verify   {len(cases)} cases against {port.reference_name} on the CPU")
    report = run_parity(reference, candidate, cases, tolerance=port.tolerance,
                        reference_name=port.reference_name, candidate_name=candidate.name)
    for line in report.lines():
        progress(f"         {line}")
    weak = _weak_outputs(report)
    if weak:
        report.note = (f"weak check: on these inputs the reference's {', '.join(weak)} never "
                       "reaches 10x the tolerance, so a near-zero output would pass too; verify "
                       "with real data (--input IMAGE)")
        progress(f"note     {report.note}")
    if not report.passed:
        detail = (_locate_hint(source, ported, cases[0], port.tolerance)
                  if source.format == "onnx" else "")
        raise ParityError(f"parity failed: worst max|Δ| {report.worst():.3e} > "
                          f"{port.tolerance.describe()} against {port.reference_name}{detail}")
    return report


def _weak_outputs(report: Any) -> list[str]:
    """Float outputs whose reference never exceeds 10x the max |Δ| bound in any case."""
    peaks: dict[str, float] = {}
    for case in report.cases:
        for name, m in case["outputs"].items():
            if "ref_peak" in m:
                peaks[name] = max(peaks.get(name, 0.0), m["ref_peak"])
    return [n for n, p in peaks.items() if 0 < p < 10 * report.tolerance.max_abs]


def _cross_check(path: Path, port: Any, ported: Any, module: torch.nn.Module, cases: list,
                 progress: Progress) -> dict[str, Any]:
    """Parity against another ONNX export of the same model, inputs/outputs by position."""
    from porter.verify.parity import run_parity
    from porter.verify.runtimes.onnxruntime import OrtRunner
    from porter.verify.runtimes.torch_ import TorchRunner

    twin = OrtRunner(path)
    if len(twin.input_names) != len(ported.input_names) or \
            len(twin.output_names) != len(ported.output_names):
        raise PorterError(f"{path}: {len(twin.input_names)} inputs / {len(twin.output_names)} "
                          f"outputs, the module has {len(ported.input_names)} / "
                          f"{len(ported.output_names)}; not a twin of this model")

    def reference(inputs):
        outs = twin({t: inputs[m] for t, m in zip(twin.input_names, ported.input_names)})
        return {m: outs[t] for t, m in zip(twin.output_names, ported.output_names)}

    progress(f"verify   {len(cases)} cases against {path.name} (onnxruntime)")
    report = run_parity(reference, TorchRunner(module, ported.input_names, ported.output_names),
                        cases, tolerance=port.tolerance, reference_name=f"onnxruntime:{path.name}",
                        candidate_name="torch-cpu")
    if not report.passed:
        raise ParityError(f"cross-check against {path} failed: worst max|Δ| "
                          f"{report.worst():.3e} > {port.tolerance.describe()}")
    return {"path": str(path), "sha256": sha256_file(path), **report.to_dict()}


def _locate_hint(source: Source, ported: Any, case: Any, tolerance: Any) -> str:
    """On a failing ONNX verify, name the first diverging node (best effort)."""
    try:
        from porter.verify.locate import locate_divergence

        found = locate_divergence(source.native, case.inputs, module=ported.module,
                                  tol=tolerance.max_abs, rel_to_peak=tolerance.rel_to_peak)
    except Exception:  # localisation is a hint; the parity failure is the error
        return ""
    node = found.get("node") if isinstance(found, dict) else None
    return f"; first divergence at node {node}" if node else ""


def _image_case(path: str | Path, ported: Any, first: Any = None):
    import numpy as np

    from porter.verify.parity import Case

    try:
        from PIL import Image
    except ImportError as exc:
        raise PorterError("--input IMAGE needs Pillow (pip install pillow)") from exc
    try:
        img = np.asarray(Image.open(path).convert("RGB"))
    except (OSError, ValueError) as exc:
        raise FormatError(f"{path}: not a readable image ({exc})") from exc
    if ported.graph.startswith("model.py:"):  # generic: no preprocess() to call
        from porter.generic import image_input

        name = ported.input_names[0]
        return Case(f"image:{Path(path).name}", {**first.inputs,
                                                 name: image_input(img, first.inputs[name])}, None)
    prep = getattr(type(ported.module), "preprocess", None)
    if prep is None:
        import importlib

        mod = importlib.import_module(ported.graph.partition(":")[0])
        prep = getattr(mod, "preprocess", None)
    if prep is None:
        raise PorterError(f"{ported.graph} has no preprocess(); --input IMAGE is not supported")
    x = prep(img).numpy()
    return Case(f"image:{Path(path).name}", {ported.input_names[0]: x}, None)


def _npu_check(port: Any, ported: Any, module: torch.nn.Module, reference: Any, cases: list,
               progress: Progress) -> dict[str, Any]:
    from porter.verify.npu.device import npu_available
    from porter.verify.parity import Tolerance, run_parity
    from porter.verify.runtimes.torch_ import TorchRunner

    if npu_available():
        progress("npu      running on the Ascend device")
        cand = TorchRunner(copy.deepcopy(module), ported.input_names, ported.output_names,
                           device="npu")
        rep = run_parity(reference, cand, cases, tolerance=port.tolerance,
                         reference_name=port.reference_name, candidate_name=cand.name,
                         device="npu")
        if not rep.passed:
            raise AuditError(f"NPU parity failed: worst max|Δ| {rep.worst():.3e}")
        return {"device": "npu", "parity": rep.to_dict(), "passed": rep.passed}
    from porter.verify.npu.audit import audit_module

    progress("npu      no Ascend device: static audit against the torch_npu registry")
    result = audit_module(module, port.example_inputs(ported))
    half = TorchRunner(copy.deepcopy(module), ported.input_names, ported.output_names,
                       dtype=torch.float16)
    smallest = min(cases, key=lambda c: sum(v.size for v in c.inputs.values()))
    fp16 = run_parity(reference, half, [smallest], tolerance=Tolerance(max_abs=float("inf")),
                      reference_name=port.reference_name, candidate_name=half.name)
    from porter.verify.seed_criteria import seed_criteria

    seed = seed_criteria(reference(smallest.inputs), half(smallest.inputs))
    result["fp16"] = {"note": "the NPU may compute convolutions in float16; informational",
                      **fp16.to_dict(), "seed_criteria": seed}
    worst = max(seed["outputs"].values(), key=lambda o: o["rel_err"], default=None)
    progress(f"         {len(result.get('ops', []))} ATen ops, "
             f"{len(result.get('missing', []))} without an NPU kernel; "
             f"fp16 max|Δ| {fp16.worst():.3e}")
    if worst is not None:
        progress(f"         fp16 seed criteria: MAE {worst['mae']:.3e}, cosine "
                 f"{worst['cosine']:.6f}, relative error {100 * worst['rel_err']:.3f} % -> "
                 f"{'PASS' if seed['passed'] else 'FAIL'} (cosine > 0.99, rel err < 1 %)")
    if result.get("missing"):
        raise AuditError("NPU audit: no NPU kernel for " + ", ".join(
            f"{m['op'] if isinstance(m, dict) else m}" for m in result["missing"]))
    return result


def build_manifest(source: Source, port: Any, ported: Any, module: torch.nn.Module,
                   substitutes: list, parity: Any, audit: dict | None, *, name: str
                   ) -> dict[str, Any]:
    """Everything needed to trust and reload the output, JSON-ready (weights digest added later)."""
    import porter
    from porter.verify.parity import runtime_versions

    return {
        "porter": porter.__version__,
        "name": name,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": {"path": str(source.path), "sha256": source.sha256(), "format": source.format,
                   "files": [str(p) for p in source.files()],
                   "meta": {k: v for k, v in source.meta.items() if k in
                            ("opset", "opsets", "producer", "inputs", "outputs", "ir_version")}},
        "graph": {"class": ported.graph, "kwargs": ported.kwargs, "port": port.name},
        "io": {"inputs": ported.input_names, "outputs": ported.output_names},
        "substitutes": substitutes,
        "mapping": ported.mapping.to_dict(),
        "parity": parity.to_dict() if parity is not None else None,
        "npu": audit,
        "versions": runtime_versions(),
    }


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def write_output(out: Path, module: torch.nn.Module, manifest: dict[str, Any],
                 extra_files: dict[str, str] | None = None) -> Path:
    """Write model.safetensors + manifest.json (+ extra files) to ``out``, atomically."""
    from safetensors.torch import save_file

    from porter.zoo.atomic import staged_folder

    out = Path(out)
    with staged_folder(out) as stage:
        state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
        weights = stage / "model.safetensors"
        save_file(state, str(weights), metadata={"porter_graph": manifest["graph"]["class"]})
        for rel, text in (extra_files or {}).items():
            (stage / rel).write_text(text)
        manifest["weights"] = {"file": weights.name, "sha256": sha256_file(weights),
                               "bytes": weights.stat().st_size, "tensors": len(state)}
        _write_json_atomic(stage / "manifest.json", manifest)
    return out
