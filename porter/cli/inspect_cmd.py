"""``porter inspect``: what a model file holds, without converting it."""

from __future__ import annotations

import argparse
from collections import Counter

from porter.cli.output import emit_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect", help="show format, tensors, ops, opset, inputs and outputs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Show what a model holds: the sniffed format, a tensor table (name, shape, "
                    "dtype, kind),\nan op histogram, the opset and the graph inputs/outputs. "
                    "Reads lazily; no tensor data is loaded.\nOn a porter output folder (or "
                    "zoo:NAME), summarise it: graph, source, parity, NPU, files.\n\n"
                    "examples:\n  porter inspect model.onnx\n  porter inspect model.onnx "
                    "--limit 0 --json\n  porter inspect out/modnet/\n"
                    "  porter inspect zoo:modnet_photographic")
    p.add_argument("src", metavar="SRC")
    p.add_argument("--limit", type=int, default=30, help="tensor rows to show (default 30; 0 = all)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run)


def _io_rows(values: list) -> list[dict]:
    """Inputs/outputs as ``{"name", "shape"?}`` rows; importers give dicts or bare tensor names."""
    return [v if isinstance(v, dict) else {"name": str(v)} for v in values or []]


def op_histogram_lines(ops: dict[str, int], width: int = 96, indent: int = 13) -> list[str]:
    """The op histogram as aligned ``Op  count`` columns, most frequent first, wrapped."""
    if not ops:
        return []
    cell = max(len(k) + len(str(n)) for k, n in ops.items()) + 3
    per_line = max(1, (width - indent) // cell)
    items = [f"{k} {n:>{cell - 3 - len(k)}}" for k, n in ops.items()]
    return [" " * indent + "  ".join(f"{c:<{cell - 2}}" for c in items[i:i + per_line]).rstrip()
            for i in range(0, len(items), per_line)]


def describe(source) -> dict:
    ops = Counter()
    if source.graph is not None:
        ops = Counter(d.get("op_type", "?") for _, d in source.graph.nodes(data=True))
    dtypes = source.meta.get("dtypes") or {}  # TF's own names (quint8 is stored as uint8)
    tensors = [{"name": r.name, "shape": list(r.shape), "dtype": dtypes.get(r.name, str(r.dtype)),
                "kind": r.kind} for r in source.tensors.values()]
    return {"path": str(source.path), "format": source.format,
            "opset": source.meta.get("opset"), "producer": source.meta.get("producer"),
            "inputs": _io_rows(source.meta.get("inputs")),
            "outputs": _io_rows(source.meta.get("outputs")),
            "tensor_count": len(tensors),
            "parameters": sum(r.size for r in source.tensors.values()),
            "kinds": dict(Counter(t["kind"] for t in tensors)),
            "ops": dict(ops.most_common()), "tensors": tensors,
            **({"checkpoint": {k: source.meta[k] for k in
                               ("container", "branch", "dropped", "non_tensor", "prefix_stripped")
                               if k in source.meta}} if "branch" in source.meta else {})}


def _wrap(label: str, items: list[str], width: int = 100) -> list[str]:
    lines, cur = [], f"  {label:<10} "
    for i, item in enumerate(items):
        piece = item + (", " if i < len(items) - 1 else "")
        if len(cur) + len(piece) > width and cur.strip() != label:
            lines.append(cur.rstrip())
            cur = " " * 13
        cur += piece
    lines.append(cur.rstrip())
    return lines


def describe_output(folder) -> dict:
    """Summary of a porter output folder or zoo entry, from its manifest (weights re-hashed)."""
    from porter.errors import PorterError
    from porter.zoo.load import check_weights, read_manifest

    m = read_manifest(folder)
    try:
        check_weights(folder, m)
        weights_ok = True
    except PorterError as exc:
        weights_ok = str(exc)
    parity = m.get("parity") or {}
    npu = m.get("npu") or {}
    return {"path": str(folder), "kind": "porter output", "name": m.get("name"),
            "porter": m.get("porter"), "graph": m.get("graph"), "source": {
                k: m.get("source", {}).get(k) for k in ("path", "format", "sha256")},
            "licence": (m.get("card") or {}).get("license"),
            "preprocessing": m.get("preprocessing"),
            "parity": {"reference": parity.get("reference"), "passed": parity.get("passed"),
                       "worst_max_abs": parity.get("worst_max_abs")} if parity else None,
            "npu": {"device": npu.get("device"), "missing": len(npu.get("missing", [])),
                    "fp16": (npu.get("fp16") or {}).get("verdict")} if npu else None,
            "weights": {**m.get("weights", {}), "verified": weights_ok},
            "files": sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                            if p.is_file())}


def _print_output(info: dict) -> None:
    g = info["graph"] or {}
    print(f"{info['path']}\n  kind       porter {info['porter']} output: {info['name']}")
    print(f"  graph      {g.get('class')} {g.get('kwargs')}")
    if g.get("code_sha256"):
        print(f"  code       generated source, sha256 {g['code_sha256']} "
              "(pin it to load without trust_code)")
    s = info["source"]
    print(f"  source     {s['path']} ({s['format']}, sha256 {str(s['sha256'])[:16]}…)")
    print(f"  licence    {info['licence'] or 'unknown'}")
    if info["preprocessing"]:
        print("  preprocess " + ", ".join(f"{k}={v}" for k, v in info["preprocessing"].items()))
    p = info["parity"]
    print("  parity     " + (f"vs {p['reference']}: {'PASS' if p['passed'] else 'FAIL'}, worst "
                             f"max|Δ| {p['worst_max_abs']}" if p else "not verified"))
    if info["npu"]:
        n = info["npu"]
        print(f"  npu        {n['device']}, {n['missing']} ops without an NPU kernel"
              + (f", {n['fp16']}" if n["fp16"] else ""))
    w = info["weights"]
    ok = "sha256 ok" if w.get("verified") is True else f"NOT OK: {w.get('verified')}"
    print(f"  weights    {w.get('file')} {w.get('tensors')} tensors, {w.get('bytes'):,} bytes, {ok}")
    for line in _wrap("files", info["files"]):
        print(line)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import porter
    from porter.zoo.atomic import is_porter_output

    target = Path(args.src)
    if args.src.startswith("zoo:"):
        from porter.zoo.load import entry_dir

        target = entry_dir(args.src[4:])
    if target.is_dir() and is_porter_output(target):
        info = describe_output(target)
        if args.json:
            emit_json(info)
        else:
            _print_output(info)
        return 0
    info = describe(porter.open(args.src))
    if args.json:
        emit_json(info)
        return 0
    print(f"{info['path']}\n  format     {info['format']}"
          + (f" (opset {info['opset']})" if info["opset"] else "")
          + (f", produced by {info['producer']}" if info.get("producer") else ""))
    for io in ("inputs", "outputs"):
        for v in info[io]:
            shape = v.get("shape")
            dtype = v.get("dtype")
            print(f"  {io[:-1]:<10} {v.get('name')}"
                  + (f" {shape}" if shape is not None else "")
                  + (f" {dtype}" if dtype else ""))
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
        total = sum(info["ops"].values())
        print(f"  ops        {total} nodes, {len(info['ops'])} op types:")
        for line in op_histogram_lines(info["ops"]):
            print(line)
    rows = info["tensors"] if args.limit == 0 else info["tensors"][: args.limit]
    width = max((len(t["name"]) for t in rows), default=4)
    for t in rows:
        print(f"    {t['name']:<{width}}  {str(t['shape']):<20} {t['dtype']:<8} {t['kind']}")
    if len(rows) < len(info["tensors"]):
        print(f"    … {len(info['tensors']) - len(rows)} more (--limit 0 shows all)")
    return 0
