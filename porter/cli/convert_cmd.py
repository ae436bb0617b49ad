"""``porter convert``: import, map, substitute, verify, write, publish."""

from __future__ import annotations

import argparse

from porter.cli.output import emit_json, progress_printer

HELP = """\
Convert a foreign model to a verified PyTorch module.

SRC is a model file or folder (ONNX .onnx, TF1 checkpoint prefix/.meta/.pb, Paddle .pdparams,
inference model folder or jit.save prefix, PyTorch .pth/.pt/.bin checkpoint, .safetensors) or
the name of a fetched catalog model (see `porter fetch`).

The output folder (default out/NAME) holds model.safetensors, manifest.json (source digest,
graph class and kwargs, mapping table, parity report, NPU audit, versions), config.json, a model
card README.md and report/ (parity tables, PNGs for each --input picture). Nothing is written
unless every requested check passes; an existing folder porter did not write is never replaced
without --force.

exit codes: 0 ok, 1 a check failed (parity, NPU audit, digest), 2 bad input or environment.

examples:
  porter convert modnet.onnx --to torch --verify npu --out out/modnet
  porter convert modnet.onnx --input photo.jpg --report report/    # PNGs of both runtimes
  porter convert PNet-18 --to torch --graph mtcnn_pnet --verify cpu
  porter convert model.onnx --to torch-source --out out/model
  porter convert frozen.pb --inputs pre/scaled:0:1x224x224x3 --outputs scores
  porter convert out/modnet --to onnx --target atc --out out/modnet_atc
  porter convert out/modnet --to onnx --target atc --soc-version Ascend910B1 \
      --precision-mode force_fp32 --out out/modnet_910b
  porter convert hf_mask2former/ --to onnx --target atc --shape 1x3x384x384 --out out/m2f
  porter convert modnet_photographic --publish --zoo ~/zoo
  porter convert BEN2_Base.pth --to torch --verify npu --upstream BEN2.py:BEN_Base
  porter convert ckpt.pth --upstream net.py:Net --shape image=1x3x256x256 --verify npu"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a model to a verified torch module",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", metavar="SRC")
    p.add_argument("--to", choices=("torch", "torch-source", "onnx"), default="torch",
                   help="torch: weights for a clean graph (or generic module); torch-source: "
                        "a generated, readable model.py plus weights; onnx: one verified ONNX "
                        "file (SRC may also be a porter output, a zoo entry or a Hugging Face "
                        "folder) (default: torch)")
    p.add_argument("--graph", default="auto", metavar="NAME|auto|generic",
                   help="clean graph to port onto; auto picks one only when the structure "
                        "matches exactly, else converts generically (default: auto)")
    p.add_argument("--verify", choices=("cpu", "npu", "none"), default="cpu",
                   help="cpu: parity against the source runtime; npu: also NPU-safe substitutes "
                        "and the NPU audit (a real device when present); default: cpu")
    p.add_argument("--npu-capture", choices=("parity", "export"), default="parity",
                   help="--verify npu without a device: audit the ATen ops the parity forward "
                        "of the smallest case dispatched (parity), or those of a torch.export "
                        "of the module, symbolic sizes where declared dynamic (export); "
                        "default: parity")
    p.add_argument("--target", choices=("cpu", "npu", "onnxruntime", "atc"), default=None,
                   help="npu: apply the NPU-safe substitutes even without --verify npu; with "
                        "--to onnx: atc (audit for Ascend ATC, write the atc command) or "
                        "onnxruntime (default)")
    p.add_argument("--opset", type=int, default=None,
                   help="--to onnx: export at this opset (default: the lowest that works)")
    p.add_argument("--dynamic", choices=("auto", "hw", "none"), default="auto",
                   help="--to onnx: dynamic H/W; auto keeps it only where parity proves it at "
                        "other sizes, hw requires it, none exports static (default: auto)")
    from porter.export.atc import DEFAULT_SOC_VERSION, PRECISION_MODES, SOC_EXAMPLES

    p.add_argument("--soc-version", default=None, metavar="CHIP",
                   help="--target atc: the chip ATC compiles for, written into the atc command "
                        "(Ascend + the name `npu-smi info` shows, e.g. "
                        f"{', '.join(SOC_EXAMPLES)}; default: {DEFAULT_SOC_VERSION})")
    p.add_argument("--precision-mode", default=None, choices=PRECISION_MODES, metavar="MODE",
                   help="--target atc: ATC --precision_mode in the atc command, one of "
                        f"{', '.join(PRECISION_MODES)} (default: {PRECISION_MODES[0]}: fp32 ops "
                        "run in fp16 where the chip has no fp32 kernel; force_fp32 or "
                        "must_keep_origin_dtype keep fp32, which is what the parity here covers)")
    p.add_argument("--input", dest="images", action="append", default=[], metavar="IMAGE",
                   help="also verify on this image (repeatable)")
    p.add_argument("--shape", dest="shapes", action="append", default=[],
                   metavar="[NAME=]1x3xHxW", help="input shape for generic verification where "
                   "the model leaves sizes open (repeatable; batch is doubled for a 2nd case)")
    p.add_argument("--inputs", nargs="+", default=[], metavar="NAME[:SHAPE]",
                   help="TF1: tensors to feed, e.g. pre/scaled:0:1x224x224x3 (an inner tensor "
                        "needs its shape; it becomes an input); picks the generic path")
    p.add_argument("--outputs", nargs="+", default=[], metavar="NAME",
                   help="TF1: tensors to fetch (default: the graph's inference sinks)")
    p.add_argument("--cross-check", action="append", default=[], metavar="FILE.onnx",
                   help="also require agreement with another ONNX export of the same model "
                        "(inputs/outputs matched by position; repeatable)")
    p.add_argument("--tol", type=float, default=None, metavar="MAX_ABS",
                   help="parity passes when max |Δ| <= MAX_ABS for every output, nothing added "
                        "(default: the graph's own; generic: 1e-4 + 1e-6 x max|ref|)")
    p.add_argument("--upstream", metavar="FILE.py:NAME",
                   help="the upstream PyTorch network (a class or builder) that a PyTorch "
                        "checkpoint or safetensors file is verified against, e.g. "
                        "BEN2.py:BEN_Base (ben2's default: $PORTER_UPSTREAM); for a network "
                        "no clean graph ports, porter traces it to convert the checkpoint "
                        "generically (input sizes from --shape). Importing FILE.py runs it")
    p.add_argument("--out", metavar="DIR", help="output folder (default: out/NAME)")
    p.add_argument("--force", action="store_true",
                   help="replace --out / --report even if it is a non-empty folder porter "
                        "did not write (its content is lost)")
    p.add_argument("--trust-code", action="store_true",
                   help="SRC is a porter output whose graph is generated source (model.py): "
                        "allow importing it, which runs its code")
    p.add_argument("--report", metavar="DIR",
                   help="also write the report (report.md, report.html, PNGs) to DIR")
    p.add_argument("--name", help="model name in the manifest and the zoo")
    p.add_argument("--publish", action="store_true",
                   help="also publish into the zoo ($PORTER_ZOO, else ~/.cache/porter/zoo)")
    p.add_argument("--zoo", metavar="DIR|URL", help="zoo folder or URL (s3://bucket/prefix) for --publish")
    p.add_argument("--json", action="store_true",
                   help="print the manifest as JSON on stdout (progress stays on stderr)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from porter.pipeline import DEFAULT_OUT, convert

    if args.soc_version or args.precision_mode:  # checked before any conversion work starts
        from porter.errors import PorterError
        from porter.export.atc import check_atc_options

        if args.to != "onnx" or args.target != "atc":
            raise PorterError("--soc-version and --precision-mode are atc options: add "
                              "--to onnx --target atc")
        check_atc_options(args.soc_version, args.precision_mode)
    show = progress_printer(not args.quiet)
    result = convert(args.src, to=args.to, graph=args.graph, verify=args.verify,
                     out=DEFAULT_OUT if args.out is None else args.out, publish=args.publish, name=args.name,
                     target=args.target, images=args.images, zoo=args.zoo, shapes=args.shapes,
                     cross_check=args.cross_check, tolerance=args.tol, force=args.force,
                     report=args.report, trust_code=args.trust_code, progress=show,
                     inputs=args.inputs, outputs=args.outputs, upstream=args.upstream,
                     options={"opset": args.opset, "dynamic": args.dynamic,
                              "soc_version": args.soc_version,
                              "precision_mode": args.precision_mode},
                     audit_capture=args.npu_capture)
    if args.json:
        emit_json(result.manifest)
    else:
        print(summary(result))
    return 0


def _tolerance(tol: dict) -> str:
    from porter.verification.parity import Tolerance

    return Tolerance(tol["max_abs"], tol.get("mean_abs"), tol.get("rel_to_peak", 0.0)).describe()


def summary(result) -> str:
    """The readable end-of-run summary."""
    m = result.manifest
    lines = [f"porter: converted {m['source']['path']}",
             f"  graph     {m['graph'].get('class')} {m['graph'].get('kwargs', {})}"]
    if "mapping" in m:
        lines.append(f"  tensors   {_mapping_line(m['mapping'])}")
    if "onnx" in m:
        o = m["onnx"]
        lines.append(f"  onnx      opset {o['opset']}, {o['nodes']['exported']} -> "
                     f"{o['nodes']['final']} nodes ({o['simplifier']}), dynamic H/W "
                     f"{o['dynamic']['gears'] or 'no'}")
    if "atc" in m:
        lines.append(f"  atc       {len(m['atc']['ops'])} op types all in the ATC table; "
                     f"{m['atc']['command']}")
    parity = m.get("parity")
    if parity:
        lines.append(f"  parity    vs {parity['reference']}: "
                     f"{'PASS' if parity['passed'] else 'FAIL'}, worst max|Δ| "
                     f"{parity['worst_max_abs']:.2e} (tolerance {_tolerance(parity['tolerance'])})")
        for case in parity["cases"]:
            for out, met in case["outputs"].items():
                lines.append(f"            {case['name']:<26} {out:<16} max|Δ| "
                             f"{met['max_abs']:.2e}  mean|Δ| {met['mean_abs']:.2e}  "
                             f"cos {met['cosine']:.7f}")
    else:
        lines.append("  parity    not verified (--verify none)")
    for check in m.get("cross_checks", []):
        lines.append(f"  cross     vs {check['reference']}: "
                     f"{'PASS' if check['passed'] else 'FAIL'}, worst max|Δ| "
                     f"{check['worst_max_abs']:.2e}")
    npu = m.get("npu")
    if npu:
        if npu.get("device") == "npu":
            lines.append("  npu       ran on an Ascend device: "
                         f"{'PASS' if npu.get('passed') else 'FAIL'}")
        else:
            ops = npu.get("ops", [])
            lines.append(f"  npu       audit (no device, {npu.get('capture', 'torch.export')} capture): "
                         f"{len(ops)} ATen ops, "
                         f"{len(npu.get('missing', []))} without an NPU kernel; registry "
                         f"{npu.get('registry', {}).get('source', '?')}")
            fp16 = npu.get("fp16") or {}
            if fp16.get("verdict"):
                lines.append(f"            fp16 rerun: {fp16['verdict']} "
                             f"({fp16.get('verdict_reason', fp16.get('worst_max_abs'))})")
            elif fp16.get("error"):
                lines.append(f"            fp16 rerun not possible on the CPU: {fp16['error']}")
            seed = fp16.get("seed_criteria") or {}
            for out, c in seed.get("outputs", {}).items():
                lines.append(f"            fp16 {out}: MAE {c['mae']:.2e}, cosine "
                             f"{c['cosine']:.6f}, rel err {100 * c['rel_err']:.3f} % -> "
                             f"{'PASS' if c['passed'] else 'FAIL'} (seed thresholds: "
                             "cosine > 0.99, rel err < 1 %)")
    if m.get("substitutes"):
        lines.append(f"  substitutes {len(m['substitutes'])} NPU-safe rewrites")
    if result.out is not None:
        w = m.get("weights") or m.get("onnx")
        lines.append(f"  output    {result.out}/{w['file']} (sha256 {w['sha256'][:16]}…)")
        if (result.out / "report" / "report.md").is_file():
            lines.append(f"  report    {result.out}/report/report.md")
    if result.published is not None:
        lines.append(f"  zoo       published as {m['name']} -> {result.published}")
    t = m.get("timings_s", {})
    lines.append("  time      " + ", ".join(f"{k} {v:.2f}s" for k, v in t.items()))
    return "\n".join(lines)


def _mapping_line(mapping: dict) -> str:
    c = mapping["counts"]
    kinds = mapping.get("by_kind", {}) or {"tensor": {"total": c["source_tensors"], **c}}
    parts = []
    for kind, v in kinds.items():
        done = v.get("mapped", 0) + v.get("structure", 0)
        detail = [f"{v['mapped']} to weights"] if v.get("mapped") else []
        if v.get("structure"):
            detail.append(f"{v['structure']} graph constants checked")
        if v.get("dropped"):
            detail.append(f"{v['dropped']} deliberately dropped")
        if v.get("folded"):
            detail.append(f"{v['folded']} traced through exporter folds, checked")
        if v.get("rewritten"):
            detail.append(f"{v['rewritten']} folded or rewritten in conversion, covered by parity")
        verb = "mapped" if done == v["total"] else "accounted"
        parts.append(f"{kind}s {v['total']}/{v['total']} {verb} ({', '.join(detail)})")
    return "; ".join(parts)
