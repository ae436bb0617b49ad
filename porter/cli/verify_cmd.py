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
    p.add_argument("--tol", type=float, default=1e-4, help="tolerance for --locate")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.locate:
        return _locate(args)
    from porter.cli.convert_cmd import summary
    from porter.pipeline import convert

    result = convert(args.src, graph=args.graph, verify="cpu",
                     progress=progress_printer(not args.json))
    if args.json:
        emit_json(result.manifest["parity"])
    else:
        print(summary(result))
    return 0


def _locate(args: argparse.Namespace) -> int:
    import porter
    from porter.errors import PorterError
    from porter.verify.locate import locate_divergence

    source = porter.open(args.src)
    if source.format != "onnx":
        raise PorterError("--locate works on ONNX sources")
    from graphs import import_graph  # noqa: F401  (graphs registry import keeps paths uniform)
    from porter.verify.parity import random_cases

    shape = [d if isinstance(d, int) and d > 0 else 64 for d in source.meta["inputs"][0]["shape"]]
    shape[0] = 1
    cases = random_cases(source.meta["inputs"][0]["name"], [shape], seed=0)
    found = locate_divergence(source.native, cases[0].inputs, tol=args.tol)
    if args.json:
        emit_json(found)
    else:
        for k, v in found.items():
            print(f"{k:<12} {v}")
    return 0
