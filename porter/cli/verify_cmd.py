"""``porter verify``: parity of a source against its generic conversion, with localisation."""

from __future__ import annotations

import argparse

from porter.cli.output import emit_json, progress_printer


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify", help="check parity without writing anything; --locate finds divergence",
        description="Convert SRC in memory and check parity against its source runtime. With "
                    "--locate (ONNX sources), report the first node in topological order whose "
                    "output diverges beyond tolerance, and the torch module it maps to.")
    p.add_argument("src", metavar="SRC")
    p.add_argument("--graph", default="auto", metavar="NAME|auto|generic")
    p.add_argument("--locate", action="store_true", help="localise the first divergence")
    p.add_argument("--tol", type=float, default=1e-4,
                   help="max |Δ| tolerance for --locate, widened by 1e-6 x the tensor's largest "
                        "magnitude as in a generic verify (default 1e-4)")
    p.add_argument("--shape", dest="shapes", action="append", default=[],
                   metavar="[NAME=]1x3xHxW", help="input shape where the model leaves sizes open")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.locate:
        return _locate(args)
    from porter.cli.convert_cmd import summary
    from porter.pipeline import convert

    result = convert(args.src, graph=args.graph, verify="cpu", shapes=args.shapes,
                     progress=progress_printer(not args.json))
    if args.json:
        emit_json(result.manifest["parity"])
    else:
        print(summary(result))
    return 0


def _locate(args: argparse.Namespace) -> int:
    import porter
    from porter.errors import PorterError
    from porter.generic import GENERIC_TOLERANCE, default_cases, onnx_io, parse_shape
    from porter.verify.locate import locate_divergence

    source = porter.open(args.src)
    if source.format != "onnx":
        raise PorterError("--locate works on ONNX sources")
    inputs, _ = onnx_io(source.native)
    case = default_cases(inputs, dict(parse_shape(s) for s in args.shapes))[0]
    rel = GENERIC_TOLERANCE.rel_to_peak
    found = locate_divergence(source.native, case.inputs, tol=args.tol, rel_to_peak=rel)
    if args.json:
        emit_json(found)
    elif not found.get("diverged"):
        print(f"no divergence beyond max|Δ| {args.tol:g} + {rel:g} x max|ref|: "
              f"{found.get('checked')} node outputs "
              f"checked on input {case.name}")
    else:
        m = found.get("metrics") or {}
        print(f"first divergence: node {found['node']} ({found['op_type']}) output "
              f"{found['output']} -> torch module {found.get('module')}")
        print(f"  max|Δ| {m.get('max_abs', float('nan')):.3e}  mean|Δ| "
              f"{m.get('mean_abs', float('nan')):.3e}  cos {m.get('cosine', float('nan')):.7f} "
              f"(node {found.get('index')} in topological order; input {case.name})")
    return 0
