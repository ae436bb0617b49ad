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
from typing import TYPE_CHECKING, Any

import torch

from porter.errors import AuditError, FormatError, ParityError, PorterError
from porter.source import Source, sha256_file

if TYPE_CHECKING:
    from porter.zoo.publish import Published

__all__ = ["convert", "export_module", "ConvertResult", "write_output", "VERIFY_CHOICES",
           "AUDIT_CAPTURES", "DEFAULT_OUT"]

VERIFY_CHOICES = ("cpu", "npu", "none")
#: How the NPU audit captures the module's ATen ops: "parity" records them during the parity
#: forward of the smallest case (one capture, no extra run); "export" runs ``torch.export``
#: (symbolic sizes where the port declares dynamic dims), falling back to a forward of the
#: port's example inputs when export cannot trace the module.
AUDIT_CAPTURES = ("parity", "export")
#: Pass as ``out`` to write to ``out/NAME`` under the current directory (the CLI's default).
DEFAULT_OUT = "out/{name}"
Progress = Callable[[str], None]


@dataclass
class ConvertResult:
    """What a conversion produced: the output folder, its manifest, the module, timings."""

    out: Path | None
    manifest: dict[str, Any]
    module: torch.nn.Module
    timings: dict[str, float] = field(default_factory=dict)
    published: Published | None = None  # porter.zoo.publish.Published: name@version, zoo


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
            force: bool = False, report: str | Path | None = None, trust_code: bool = False,
            inputs: Sequence[str] = (), outputs: Sequence[str] = (), upstream: str | None = None,
            options: dict[str, Any] | None = None, audit_capture: str = "parity",
            progress: Progress = _quiet) -> ConvertResult:
    """Convert ``path`` to a verified torch module and write ``out`` (and the zoo on publish).

    ``verify``: "cpu" (parity against the source runtime), "npu" (that, plus NPU-safe
    substitutes and the NPU audit or a real NPU run), "none". ``target="npu"`` applies the
    substitutes without verifying. ``images`` adds real pictures to the parity cases.
    ``cross_check`` names other ONNX exports of the same model (matched to the module's inputs
    and outputs by position) that the module must also agree with. ``tolerance`` replaces the
    parity bound: max |Δ| <= tolerance for every output, nothing added. ``to`` names an output
    kind in ``porter.targets`` (which writes and verifies the output); ``options`` go to it.

    ``out`` (``DEFAULT_OUT`` for ``out/NAME``; None writes nothing unless ``publish``) must be
    missing, empty, or a folder porter wrote, unless ``force``. ``report`` also writes the
    parity report (Markdown, HTML, PNGs for ``images``) to that folder. Everything that can be
    checked before the work starts is checked first. ``trust_code`` lets a SRC that is a porter
    output with generated source (``model.py``) load: importing it runs its code.
    ``inputs`` (``NAME[:SHAPE]``) and ``outputs`` (``NAME``) name a TF1 graph's interface for the
    generic path (inner tensors become inputs); giving them picks the generic path.
    ``upstream`` (``FILE.py:NAME``) is the upstream PyTorch network a PyTorch checkpoint or
    safetensors file is verified against. ``audit_capture`` (one of ``AUDIT_CAPTURES``) says
    how the NPU audit captures the module's ops.
    """
    if verify not in VERIFY_CHOICES:
        raise PorterError(f"--verify must be one of {', '.join(VERIFY_CHOICES)}, not {verify!r}")
    if audit_capture not in AUDIT_CAPTURES:
        raise PorterError(f"--npu-capture must be one of {', '.join(AUDIT_CAPTURES)}, "
                          f"not {audit_capture!r}")
    from porter.targets import get_target

    kind = get_target(to, target)
    options = {"target": target, **(options or {})}
    if tolerance is not None:
        options.setdefault("tolerance", tolerance)
    if publish and kind.name not in ("torch", "torch-source"):
        raise PorterError(f"--publish stores torch weights in the zoo; not available for --to {to}")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if kind.from_module:
        from porter.module_sources import open_module_source

        msrc = open_module_source(path, shapes, zoo, trust_code)
        if msrc is not None:
            return _convert_module(msrc, kind, out=out, name=name, options=options,
                                   progress=progress, t0=t0, force=force)
    src_path = _resolve_source(path)
    if not kind.from_module and src_path.is_dir():
        from porter.module_sources import is_hf_folder

        if is_hf_folder(src_path):
            raise PorterError(f"{src_path}: a Hugging Face transformers folder is a torch model "
                              "already (load it with transformers); porter exports it with "
                              "--to onnx [--target atc], verified against it")
    if name is None and src_path != Path(path):  # a catalog name: keep it as the model's name
        name = str(path)
    name = name or _default_name(src_path)
    out, report = _preflight(name, out, publish, zoo, cross_check, images, tolerance, force,
                             report)
    progress(f"import   {src_path}")
    from porter.importers import open_source

    source = open_source(src_path)
    if upstream:
        source.meta["upstream"] = str(upstream)
    timings["import"] = time.perf_counter() - t0

    t = time.perf_counter()
    io_given = bool(inputs or outputs)
    port = None if io_given and graph == "auto" else _select_port(source, kind.graph or graph)
    if port is not None:
        progress(f"map      {source.format} -> {port.graph} (port {port.name})")
        ported = port.port(source)
    else:
        progress(f"convert  {source.format} -> generic torch module (no clean graph matches)")
        from porter.generic import generic_port, parse_shape
        from porter.importers.tf1 import parse_io_spec

        port, ported = generic_port(
            source, dict(parse_shape(s) for s in shapes),
            inputs=dict(parse_io_spec(i) for i in inputs) or None,
            outputs=[parse_io_spec(o)[0] for o in outputs] or None)
    timings["map"] = time.perf_counter() - t
    if tolerance is not None:
        from dataclasses import replace

        from porter.verification.parity import Tolerance

        port = replace(port, tolerance=Tolerance(max_abs=tolerance))
    progress(f"         {ported.mapping.summary()}")
    for note in ported.mapping.notes:
        if note.startswith("check: "):
            progress(f"note     {note.removeprefix('check: ')}")

    module = ported.module.eval()
    substitutes: list[dict[str, Any]] = []
    if verify == "npu" or target == "npu":
        from porter.substitutes import apply_substitutes

        module, substitutes = apply_substitutes(module)
        progress(f"substitute {len(substitutes)} NPU-safe rewrites")

    parity = audit = None
    checks: list[dict[str, Any]] = []
    cases: list = []
    shots: list[Any] = []
    if verify != "none":
        t = time.perf_counter()
        cases = port.cases(source, ported)
        # one source runtime for every check below, each case run through it once
        reference = _Memo(port.reference(source, ported))
        try:
            image_cases = [_image_case(p, ported, cases[0]) for p in images]
            # --verify npu without a device: the parity forward of the smallest case also
            # records the ATen ops it dispatches, the capture the audit judges (no export)
            record = (_smallest(cases) if verify == "npu" and audit_capture == "parity"
                      and not _npu_present() else None)
            parity, captured = _verify_parity(source, port, ported, module, reference,
                                              cases + image_cases, progress, record=record)
            if out is not None or report is not None:
                shots = _shots(reference, module, ported, image_cases)
            checks = [_cross_check(Path(p), port, ported, module, cases, progress)
                      for p in cross_check]
            timings["verify"] = time.perf_counter() - t
            if verify == "npu":
                t = time.perf_counter()
                audit = _npu_check(port, ported, module, reference, cases, progress, captured)
                timings["npu"] = time.perf_counter() - t
        finally:
            close = getattr(reference, "close", None)
            if close is not None:
                close()

    manifest = build_manifest(source, port, ported, module, substitutes, parity, audit,
                              name=name)
    if checks:
        manifest["cross_checks"] = checks
    from porter.targets import Job

    if not cases and kind.from_module:  # the target verifies its own output on these
        cases = port.cases(source, ported)
    files: dict[str, str | bytes] = {}
    if out is not None:
        t = time.perf_counter()
        files.update(ported_files(ported))  # generic: model.py, checked by running it once
        if files:
            timings["source"] = time.perf_counter() - t
    if out is not None or report is not None:
        from porter.verification.report import render_report

        files.update(render_report(manifest, shots))
    job = Job(module, manifest, list(ported.input_names), list(ported.output_names), cases,
              files, options, progress, source, port, ported)
    writer = kind.prepare(job)  # builds and verifies the output; nothing is written yet
    result = ConvertResult(None, manifest, module, timings)
    if report is not None:
        from porter.zoo.atomic import staged_folder

        with staged_folder(report, force=force) as stage:
            _write_files(stage, files, only=lambda rel: rel.startswith("report/"), strip="report/")
        progress(f"report   {report}")
    if out is not None:
        t = time.perf_counter()
        out_dir = out
        _write_staged(out_dir, writer, manifest, force=force)
        result.out = out_dir
        progress(f"write    {out_dir}")
        timings["write"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    result.manifest["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    if result.out is not None:  # timings are known only now; rewrite the manifest in place
        _write_json_atomic(result.out / "manifest.json", result.manifest)
        if publish:  # after the last rewrite: a published version never changes
            from porter.zoo.publish import publish as publish_entry

            result.published = publish_entry(result.out, manifest["name"], zoo)
            progress(f"publish  {result.published}")
    return result


def export_module(module: torch.nn.Module, cases: list, *, input_names: Sequence[str],
                  output_names: Sequence[str], to: str = "onnx", target: str | None = None,
                  out: str | Path | None = None, name: str = "model",
                  options: dict[str, Any] | None = None,
                  progress: Progress = _quiet) -> ConvertResult:
    """A torch module already in hand (with parity ``cases``) to an output kind that starts
    from modules (``onnx``): the Python-API twin of ``porter convert SRC --to onnx``."""
    from porter.module_sources import ModuleSource
    from porter.targets import get_target

    kind = get_target(to, target)
    if not kind.from_module:
        raise PorterError(f"--to {to} needs a source model, not a torch module")
    msrc = ModuleSource(module, list(input_names), list(output_names), list(cases),
                        {"path": f"<{type(module).__name__}>", "format": "torch-module"},
                        {"class": f"{type(module).__module__}:{type(module).__qualname__}",
                         "kwargs": {}}, name)
    return _convert_module(msrc, kind, out=out, name=name,
                           options={"target": target, **(options or {})}, progress=progress,
                           t0=time.perf_counter())


def _convert_module(msrc: Any, kind: Any, *, out: str | Path | None, name: str | None,
                    options: dict[str, Any], progress: Progress, t0: float,
                    force: bool = False) -> ConvertResult:
    """A module source (porter output, zoo entry, HF folder) straight to the target's output."""
    import porter
    from porter.targets import Job
    from porter.verification.parity import runtime_versions

    if out is not None:
        out = _checked_out(out, name or msrc.name, force)
    progress(f"load     {msrc.source['path']} ({msrc.source['format']})")
    manifest: dict[str, Any] = {
        "porter": porter.__version__, "name": name or msrc.name,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": msrc.source, "graph": msrc.graph,
        "io": {"inputs": msrc.input_names, "outputs": msrc.output_names},
    }
    timings = {"load": time.perf_counter() - t0}
    t = time.perf_counter()
    job = Job(msrc.module.eval(), manifest, msrc.input_names, msrc.output_names, msrc.cases, {},
              options, progress)
    writer = kind.prepare(job)
    timings["export"] = time.perf_counter() - t
    manifest["versions"] = runtime_versions()
    result = ConvertResult(None, manifest, msrc.module, timings)
    if out is not None:
        t = time.perf_counter()
        _write_staged(Path(out), writer, manifest, force=force)
        result.out = Path(out)
        progress(f"write    {out}")
        timings["write"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    manifest["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
    if result.out is not None:
        _write_json_atomic(result.out / "manifest.json", manifest)
    return result


class _Memo:
    """A runner that remembers its outputs per inputs dict (the fp16 rerun reuses a case)."""

    def __init__(self, runner: Any) -> None:
        self.runner, self._seen = runner, {}
        self.close = getattr(runner, "close", None)

    def __call__(self, inputs: Any) -> Any:
        key = id(inputs)  # the inputs dict is kept alive below, so its id is not reused
        if key not in self._seen:
            self._seen[key] = (inputs, self.runner(inputs))
        return self._seen[key][1]


def _default_name(src_path: Path) -> str:
    stem = src_path.resolve().name
    for suffix in (".onnx", ".pb", ".pdparams", ".pdmodel", ".meta", ".index", ".pth", ".pt",
                   ".bin", ".safetensors"):
        stem = stem.removesuffix(suffix)
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in stem).lstrip(".") or "model"


def _preflight(name: str, out: str | Path | None, publish: bool, zoo: str | Path | None,
               cross_check: Sequence[str | Path], images: Sequence[str | Path],
               tolerance: float | None, force: bool, report: str | Path | None
               ) -> tuple[Path | None, Path | None]:
    """Every check that needs no conversion, before any work: returns (out, report) folders."""
    import math

    from porter.zoo.atomic import check_destination
    from porter.zoo.load import check_name

    check_name(name)
    if tolerance is not None and not (math.isfinite(tolerance) and tolerance > 0):
        raise PorterError(f"--tol must be a positive number, not {tolerance}")
    if out is None and publish:
        out = DEFAULT_OUT
    if out is not None:
        out = Path(str(out).format(name=name) if out == DEFAULT_OUT else out)
        check_destination(out, force=force)
    if report is not None:
        report = check_destination(report, force=force, what="--report")
        if out is not None:
            r, o = report.resolve(), out.resolve()
            if r == o or r.is_relative_to(o) or o.is_relative_to(r):
                raise PorterError("--report and --out must not contain each other (the report "
                                  "is also written into OUT/report/)")
    if publish:
        from porter.zoo.publish import prepare_zoo

        prepare_zoo(zoo)
    for p in cross_check:
        from porter.importers import open_source

        twin = open_source(Path(p))
        if twin.format != "onnx":
            raise PorterError(f"--cross-check {p}: a {twin.format} file, not an ONNX export")
    for p in images:
        _read_image(p)
    return out, report


def _checked_out(out: str | Path, name: str, force: bool) -> Path:
    """``out`` with ``DEFAULT_OUT`` filled in, refused if writing there could destroy anything."""
    from porter.zoo.atomic import check_destination

    out = Path(str(out).format(name=name) if out == DEFAULT_OUT else out)
    check_destination(out, force=force)
    return out


def _read_image(path: str | Path):
    import numpy as np

    try:
        from PIL import Image
    except ImportError as exc:
        raise PorterError("--input IMAGE needs Pillow (pip install pillow)") from exc
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError as exc:
        raise FormatError(f"--input {path}: no such file") from exc
    except (OSError, ValueError) as exc:
        raise FormatError(f"--input {path}: not a readable image ({exc})") from exc


def ported_files(ported: Any) -> dict[str, str]:
    """Extra files a port ships beside the weights (generated source for generic ports)."""
    files = dict(getattr(ported, "files", None) or {})
    render = getattr(ported, "render_files", None)
    return {**files, **render()} if render is not None else files


def _smallest(cases: list) -> Any:
    """The case with the fewest input elements (the fp16 rerun's and the audit's)."""
    return min(cases, key=lambda c: sum(v.size for v in c.inputs.values()))


def _npu_present() -> bool:
    from porter.verification.npu.device import npu_available

    return npu_available()


class _Recording:
    """A parity candidate that, on one case, records the ATen ops the module dispatches.

    The forward is the parity forward itself (its outputs are the ones compared), so the NPU
    audit judges exactly what ran, from one capture. Should recording fail (an argument the
    recorder cannot describe), the case runs again plainly and the audit captures by itself.
    """

    def __init__(self, runner: Any, module: torch.nn.Module, case: Any) -> None:
        self.runner, self.module, self.case = runner, module, case
        self.name = runner.name
        self.captured: Any = None

    def __call__(self, inputs: Any) -> Any:
        if inputs is not self.case.inputs or self.captured is not None:
            return self.runner(inputs)
        from porter.verification.npu.audit import recording

        note = (f"dispatch: the ATen ops the parity forward of case {self.case.name} dispatched "
                "(inference mode)")
        try:
            with recording(self.module, note) as captured:
                out = self.runner(inputs)
        except Exception:  # noqa: BLE001 - the plain run below raises the module's own error
            return self.runner(inputs)
        self.captured = captured
        return out


def _verify_parity(source: Source, port: Any, ported: Any, module: torch.nn.Module,
                   reference: Any, cases: list, progress: Progress, record: Any = None
                   ) -> tuple[Any, Any]:
    """The parity report, and the dispatch capture of case ``record`` (None when not asked)."""
    from porter.verification.parity import run_parity
    from porter.verification.runtimes.torch_ import TorchRunner

    if not ported.graph.startswith("model.py:"):  # a clean graph: check it as users load it
        from porter.inference import optimize_for_inference

        module = optimize_for_inference(copy.copy(module))  # shallow: same weights, own forward
    candidate: Any = TorchRunner(module, ported.input_names, ported.output_names)
    if record is not None:  # the recorded case runs as written (no CPU fast path while recording)
        candidate = _Recording(candidate, module, record)
    progress(f"verify   {len(cases)} cases against {port.reference_name} on the CPU")
    report = run_parity(reference, candidate, cases, tolerance=port.tolerance,
                        reference_name=port.reference_name, candidate_name=candidate.name,
                        progress=progress)
    for line in report.lines():
        progress(f"         {line}")
    notes = [getattr(getattr(reference, "runner", reference), "note", "")]
    weak = _weak_outputs(report)
    if weak:
        notes.append(f"weak check: on these inputs the reference's {', '.join(weak)} never "
                     "reaches 10x the tolerance, so a near-zero output would pass too; verify "
                     "with real data (--input IMAGE)")
    for note in filter(None, notes):
        progress(f"note     {note}")
    report.note = "; ".join(filter(None, notes))
    if not report.passed:
        detail = (_locate_hint(source, ported, cases[0], port.tolerance)
                  if source.format == "onnx" else "")
        raise ParityError(f"parity failed: worst max|Δ| {report.worst():.3e} > "
                          f"{port.tolerance.describe()} against {port.reference_name}{detail}")
    return report, getattr(candidate, "captured", None)


def _shots(reference: Any, module: torch.nn.Module, ported: Any, image_cases: list) -> list:
    """Both runtimes' first output for each picture, for the report's PNGs."""
    from porter.verification.report import Shot
    from porter.verification.runtimes.torch_ import TorchRunner

    runner = TorchRunner(module, ported.input_names, ported.output_names)
    first = ported.output_names[0]
    return [Shot(case.name, first, reference(case.inputs)[first], runner(case.inputs)[first])
            for case in image_cases]


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
    from porter.importers import open_source
    from porter.verification.parity import run_parity
    from porter.verification.runtimes.onnxruntime import source_runner
    from porter.verification.runtimes.torch_ import TorchRunner

    # through porter's importer: external data checked inside the folder, the bytes read once
    # (onnxruntime gets them, the digest is of them)
    twin_source = open_source(path, "onnx")
    twin = source_runner(twin_source)
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
    return {"path": path.name, "sha256": twin_source.sha256(), **report.to_dict()}


def _locate_hint(source: Source, ported: Any, case: Any, tolerance: Any) -> str:
    """On a failing ONNX verify, name the first diverging node (best effort)."""
    try:
        from porter.verification.locate import locate_divergence

        found = locate_divergence(source.native, case.inputs, module=ported.module,
                                  tol=tolerance.max_abs, rel_to_peak=tolerance.rel_to_peak)
    except Exception:  # localisation is a hint; the parity failure is the error
        return ""
    node = found.get("node") if isinstance(found, dict) else None
    return f"; first divergence at node {node}" if node else ""


def _image_case(path: str | Path, ported: Any, first: Any = None):
    from porter.verification.parity import Case

    img = _read_image(path)
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
               progress: Progress, captured: Any = None) -> dict[str, Any]:
    """A real NPU run, or the static audit of ``captured`` (the parity forward's recording;
    None: the audit captures by itself) plus an fp16 rerun of the smallest case."""
    from porter.verification.parity import Tolerance, run_parity
    from porter.verification.runtimes.torch_ import TorchRunner

    if _npu_present():
        progress("npu      running on the Ascend device")
        cand = TorchRunner(copy.deepcopy(module), ported.input_names, ported.output_names,
                           device="npu")
        rep = run_parity(reference, cand, cases, tolerance=port.tolerance,
                         reference_name=port.reference_name, candidate_name=cand.name,
                         device="npu")
        if not rep.passed:
            raise AuditError(f"NPU parity failed: worst max|Δ| {rep.worst():.3e}")
        return {"device": "npu", "parity": rep.to_dict(), "passed": rep.passed}
    from porter.verification.npu.audit import audit_module

    progress("npu      no Ascend device: static audit against the torch_npu registry")
    if captured is not None:
        result = audit_module(module, (), captured=captured)
    else:
        dynamic = port.dynamic_shapes(ported) if port.dynamic_shapes is not None else None
        result = audit_module(module, port.example_inputs(ported), dynamic_shapes=dynamic)
    half_runner = TorchRunner(copy.deepcopy(module), ported.input_names, ported.output_names,
                              dtype=torch.float16)
    half = _Memo(half_runner)  # its one forward serves the report and the seed criteria
    smallest = _smallest(cases)
    note = "the NPU may compute convolutions in float16; informational"
    try:
        fp16 = run_parity(reference, half, [smallest], tolerance=Tolerance(max_abs=float("inf")),
                          reference_name=port.reference_name, candidate_name=half_runner.name)
        from porter.verification.seed_criteria import seed_criteria

        seed = seed_criteria(reference(smallest.inputs), half(smallest.inputs))
        result["fp16"] = {"note": note, **fp16.to_dict(), **fp16_verdict(fp16.to_dict()),
                          "seed_criteria": seed}
        fp16_line = f"fp16 {result['fp16']['verdict']}: {result['fp16']['verdict_reason']}"
        worst = max(seed["outputs"].values(), key=lambda o: o["rel_err"], default=None)
    except Exception as exc:  # noqa: BLE001 - informational: a CPU without a half kernel
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        result["fp16"] = {"note": note, "error": f"{type(exc).__name__}: {first}"}
        fp16_line = f"fp16 rerun not possible on the CPU ({type(exc).__name__})"
        worst = None
    progress(f"         {result.get('capture')} capture: {len(result.get('ops', []))} ATen ops, "
             f"{len(result.get('missing', []))} without an NPU kernel; {fp16_line}")
    if worst is not None:
        progress(f"         fp16 seed criteria: MAE {worst['mae']:.3e}, cosine "
                 f"{worst['cosine']:.6f}, relative error {100 * worst['rel_err']:.3f} % -> "
                 f"{'PASS' if seed['passed'] else 'FAIL'} (cosine > 0.99, rel err < 1 %)")
    if result.get("missing"):
        raise AuditError("NPU audit: no NPU kernel for " + ", ".join(
            f"{m['op'] if isinstance(m, dict) else m}" for m in result["missing"]))
    return result


#: What an fp16 rerun must meet to be called "fp16-safe": on outputs scaled like probabilities or
#: normalised images, 1e-2 is about 2.5 levels of an 8-bit picture, and a cosine of 0.999 rules
#: out a structural break that a small max |Δ| on a near-zero output would hide.
FP16_MAX_ABS = 1e-2
FP16_MIN_COSINE = 0.999


def fp16_verdict(report: dict[str, Any]) -> dict[str, Any]:
    """An explicit verdict on a float16 rerun, against the stated thresholds."""
    worst = report.get("worst_max_abs")
    cosines = [m.get("cosine") for c in report.get("cases", []) for m in c["outputs"].values()
               if isinstance(m.get("cosine"), float)]
    cos = min(cosines) if cosines else float("nan")
    ok = isinstance(worst, float) and worst <= FP16_MAX_ABS and cos >= FP16_MIN_COSINE
    reason = (f"worst max|Δ| {worst:.2e} {'<=' if ok else 'vs'} {FP16_MAX_ABS:g}, min cosine "
              f"{cos:.6f} vs {FP16_MIN_COSINE}" if isinstance(worst, float) else
              f"worst max|Δ| {worst}")
    return {"verdict": "fp16-safe" if ok else "fp16-degraded", "verdict_reason": reason,
            "thresholds": {"max_abs": FP16_MAX_ABS, "min_cosine": FP16_MIN_COSINE}}


def build_manifest(source: Source, port: Any, ported: Any, module: torch.nn.Module,
                   substitutes: list, parity: Any, audit: dict | None, *, name: str
                   ) -> dict[str, Any]:
    """Everything needed to trust and reload the output, JSON-ready (weights digest added later)."""
    import porter
    from porter.verification.parity import runtime_versions
    from porter.zoo.card import catalog_card

    source_digest = source.sha256()
    return {
        "porter": porter.__version__,
        "name": name,
        "card": catalog_card(source_digest, name),
        "preprocessing": _preprocessing(ported.graph),
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "source": {"path": source.path.name, "sha256": source_digest, "format": source.format,
                   "files": _relative_files(source),
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


def _preprocessing(graph: str) -> dict[str, Any] | None:
    """The clean graph's preprocessing contract (its module's ``PREPROCESSING``), if any."""
    mod = graph.partition(":")[0]
    if mod.endswith(".py"):
        return None
    import importlib

    try:
        contract = getattr(importlib.import_module(mod), "PREPROCESSING", None)
    except ImportError:
        return None
    return dict(contract) if contract else None


def _relative_files(source: Source) -> list[str]:
    """The source's files relative to the folder holding it: no machine's paths in a manifest."""
    base = source.path.parent if source.path.is_file() else source.path
    rel = []
    for p in source.files():
        p = Path(p)
        try:
            rel.append(p.relative_to(base).as_posix())
        except ValueError:
            rel.append(p.name)
    return rel


def _write_files(folder: Path, files: dict[str, str | bytes], only: Callable[[str], bool] =
                 lambda rel: True, strip: str = "") -> None:
    for rel, data in files.items():
        if not only(rel):
            continue
        target = folder / rel.removeprefix(strip)
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            target.write_bytes(data)
        else:
            target.write_text(data)


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _write_staged(out: Path, writer: Callable[[Path], dict[str, Any]],
                  manifest: dict[str, Any], force: bool = False) -> None:
    """Let a target's writer fill a staged folder, add its manifest entries, rename into place.

    Outputs that carry torch weights also get ``config.json`` and a ``README.md`` model card."""
    from porter.zoo.atomic import staged_folder

    with staged_folder(Path(out), force=force) as stage:
        manifest.update(writer(stage))
        if "weights" in manifest:
            from porter.zoo.card import config_json, model_card

            _write_json_atomic(stage / "config.json", config_json(manifest))
            (stage / "README.md").write_text(model_card(manifest))
        _write_json_atomic(stage / "manifest.json", manifest)


def write_weights(stage: Path, module: torch.nn.Module, manifest: dict[str, Any],
                  extra_files: dict[str, str | bytes] | None = None) -> dict[str, Any]:
    """Write model.safetensors (+ extra files) into ``stage``; returns the manifest's weights entry."""
    from porter.zoo.st_write import write_safetensors

    weights = stage / "model.safetensors"
    # one pass: the digest is taken from the bytes as they are written, not by reading back
    written = write_safetensors(weights, module.state_dict(),
                                {"format": "pt", "porter_graph": manifest["graph"]["class"]})
    _write_files(stage, extra_files or {})
    code = manifest["graph"]["class"].partition(":")[0]
    if code.endswith(".py") and (stage / code).is_file():
        manifest["graph"]["code_sha256"] = sha256_file(stage / code)
    return {"file": weights.name, **written}


def write_output(out: Path, module: torch.nn.Module, manifest: dict[str, Any],
                 extra_files: dict[str, str | bytes] | None = None, force: bool = False) -> Path:
    """Write model.safetensors, manifest.json, config.json, README.md (the model card) and any
    extra files to ``out``, atomically (see ``porter.zoo.atomic.staged_folder``)."""
    out = Path(out)

    def writer(stage: Path) -> dict[str, Any]:
        return {"weights": write_weights(stage, module, manifest, extra_files)}

    _write_staged(out, writer, manifest, force=force)
    return out
