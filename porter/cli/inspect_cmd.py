"""``porter inspect``: what a model file holds, without converting it."""

from __future__ import annotations

import argparse
from collections import Counter

from porter.cli.output import emit_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect", help="show format, tensors, ops, opset, inputs and outputs",
        description="Show what a model holds: the sniffed format, a tensor table (name, shape, "
                    "dtype, kind), an op histogram, the opset and the graph inputs/outputs. "
                    "Reads lazily; no tensor data is loaded.")
    p.add_argument("src", metavar="SRC")
    p.add_argument("--limit", type=int, default=30, help="tensor rows to show (default 30; 0 = all)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run)


def describe(source) -> dict:
    ops = Counter()
    if source.graph is not None:
        ops = Counter(d.get("op_type", "?") for _, d in source.graph.nodes(data=True))
    tensors = [{"name": r.name, "shape": list(r.shape), "dtype": str(r.dtype), "kind": r.kind}
               for r in source.tensors.values()]
    return {"path": str(source.path), "format": source.format,
            "opset": source.meta.get("opset"), "producer": source.meta.get("producer"),
            "inputs": source.meta.get("inputs", []), "outputs": source.meta.get("outputs", []),
            "tensor_count": len(tensors),
            "parameters": sum(r.size for r in source.tensors.values()),
            "kinds": dict(Counter(t["kind"] for t in tensors)),
            "ops": dict(ops.most_common()), "tensors": tensors,
            **({"checkpoint": {k: source.meta[k] for k in
                               ("container", "branch", "dropped", "non_tensor", "prefix_stripped")
                               if k in source.meta}} if "branch" in source.meta else {})}


def run(args: argparse.Namespace) -> int:
    import porter

    info = describe(porter.open(args.src))
    if args.json:
        emit_json(info)
        return 0
    print(f"{info['path']}\n  format     {info['format']}"
          + (f" (opset {info['opset']})" if info["opset"] else "")
          + (f", produced by {info['producer']}" if info.get("producer") else ""))
    for io in ("inputs", "outputs"):
        for v in info[io]:
            print(f"  {io[:-1]:<10} {v.get('name')} {v.get('shape', '')}")
    kinds = ", ".join(f"{n} {k}" for k, n in info["kinds"].items())
    print(f"  tensors    {info['tensor_count']} ({kinds}); {info['parameters']:,} values")
    if "checkpoint" in info:
        c = info["checkpoint"]
        dropped = ", ".join(f"{k} ({v})" for k, v in c.get("dropped", {}).items()) or "nothing"
        print(f"  checkpoint {c.get('container')} format; state dict at "
              f"{c.get('branch') or 'the top level'!r}"
              + (f", prefix {c['prefix_stripped']!r} stripped" if c.get("prefix_stripped") else "")
              + f"; dropped: {dropped}")
    if info["ops"]:
        print("  ops        " + ", ".join(f"{k} {n}" for k, n in info["ops"].items()))
    rows = info["tensors"] if args.limit == 0 else info["tensors"][: args.limit]
    width = max((len(t["name"]) for t in rows), default=4)
    for t in rows:
        print(f"    {t['name']:<{width}}  {str(t['shape']):<20} {t['dtype']:<8} {t['kind']}")
    if len(rows) < len(info["tensors"]):
        print(f"    … {len(info['tensors']) - len(rows)} more (--limit 0 shows all)")
    return 0
