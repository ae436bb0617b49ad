"""``porter verify``: parity of a source against its conversion, with localisation."""

from __future__ import annotations

import argparse

from porter.cli.output import emit_json, progress_printer

HELP = """\
Convert SRC in memory and check parity against its source runtime; nothing is written. With
--locate (ONNX sources), report the first node in topological order whose output diverges
beyond tolerance, and the torch module it maps to.

--tol means what it means for `porter convert`: max |Δ| <= TOL for every output, nothing added.

exit codes: 0 parity holds (no divergence), 1 parity failed or a divergence was located,
2 bad input.

examples:
  porter verify model.onnx
  porter verify model.onnx --tol 1e-5
  porter verify model.onnx --locate --shape input=1x3x256x256
  porter verify model.onnx --locate --json > divergence.json"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify", help="check parity without writing anything; --locate finds divergence",
        description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", metavar="SRC")
    p.add_argument("--graph", default="auto", metavar="NAME|auto|generic")
    p.add_argument("--locate", action="store_true", help="localise the first divergence")
    p.add_argument("--tol", type=float, default=None, metavar="MAX_ABS",
                   help="max |Δ| bound (default: the graph's own; generic and --locate: "
                        "1e-4 + 1e-6 x max|ref|)")
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
                     tolerance=args.tol, progress=progress_printer(True))
    if args.json:
        emit_json(result.manifest["parity"])
    else:
        print(summary(result))
    return 0


def _locate(args: argparse.Namespace) -> int:
    import math

    import porter
    from porter.errors import PorterError
    from porter.generic import GENERIC_TOLERANCE, default_cases, onnx_io, parse_shape
    from porter.verification.locate import locate_divergence

    if args.tol is not None and not (math.isfinite(args.tol) and args.tol > 0):
        raise PorterError(f"--tol must be a positive number, not {args.tol}")
    source = porter.open(args.src)
    if source.format != "onnx":
        raise PorterError("--locate works on ONNX sources")
    inputs, _ = onnx_io(source.native)
    case = default_cases(inputs, dict(parse_shape(s) for s in args.shapes))[0]
    tol, rel = ((GENERIC_TOLERANCE.max_abs, GENERIC_TOLERANCE.rel_to_peak) if args.tol is None
                else (args.tol, 0.0))
    found = locate_divergence(source.native, case.inputs, tol=tol, rel_to_peak=rel)
    bound = f"max|Δ| {tol:g}" + (f" + {rel:g} x max|ref|" if rel else "")
    if args.json:
        emit_json(found)
    elif not found.get("diverged"):
        print(f"no divergence beyond {bound}: {found.get('checked')} node outputs "
              f"checked on input {case.name}")
    else:
        m = found.get("metrics") or {}
        print(f"first divergence beyond {bound}: node {found['node']} ({found['op_type']}) "
              f"output {found['output']} -> torch module {found.get('module')}")
        print(f"  max|Δ| {m.get('max_abs', float('nan')):.3e}  mean|Δ| "
              f"{m.get('mean_abs', float('nan')):.3e}  cos {m.get('cosine', float('nan')):.7f} "
              f"(node {found.get('index')} in topological order; input {case.name})")
    return 1 if found.get("diverged") else 0
