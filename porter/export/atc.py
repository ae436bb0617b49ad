"""The Ascend ATC compiler's view of an ONNX file: which (op, opset) pairs its ONNX parser
accepts, the audit of a model against that table, and the exact ``atc`` command to run.

The table (``atc_onnx_ops.tsv``: repo, commit, file, op, opset, read from the
``REGISTER_CUSTOM_OP(...).OriginOpType("ai.onnx::<opset>::<Op>")`` registrations of CANN's open
operator repositories) is looked up, in order, as package data ``porter/export/data/`` (not
shipped: the table's licence is not stated, see README), ``$PORTER_ATC_OPS``, then
``../shared/reference/`` beside the checkout. ``Constant`` is parsed by the graph engine itself
and always accepted.
"""

from __future__ import annotations

import csv
import functools
import io
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from porter.errors import PorterError

__all__ = ["AtcTable", "load_atc_table", "atc_audit", "atc_command", "TABLE_NAME"]

TABLE_NAME = "atc_onnx_ops.tsv"
ALWAYS = frozenset({"Constant"})


@dataclass(frozen=True)
class AtcTable:
    """(op, opset) pairs the ATC ONNX parser registers, and where the table came from."""

    pairs: frozenset[tuple[str, int]]
    source: str
    commits: tuple[str, ...] = ()

    def accepts(self, op: str, opset: int) -> bool:
        return op in ALWAYS or (op, opset) in self.pairs

    def opsets(self, op: str) -> list[int]:
        return sorted(v for o, v in self.pairs if o == op)

    @property
    def max_opset(self) -> int:
        """The highest opset most ops are registered at (a few ops reach further)."""
        from collections import Counter

        counts = Counter(v for _, v in self.pairs)
        top = max(counts.values())
        return max(v for v, c in counts.items() if c >= top // 2)


def _parse(text: str, source: str) -> AtcTable:
    rows = list(csv.DictReader(io.StringIO(text), delimiter="\t"))
    if not rows or not {"op", "opset"} <= set(rows[0]):
        raise PorterError(f"{source}: not an ATC operator table (needs op and opset columns)")
    try:
        pairs = frozenset((r["op"], int(r["opset"])) for r in rows)
    except ValueError as exc:
        raise PorterError(f"{source}: malformed opset in the ATC operator table ({exc})") from exc
    commits = tuple(sorted({f"{r.get('repo', '?')}@{r.get('commit', '?')[:12]}" for r in rows}))
    return AtcTable(pairs, source, commits)


def _candidates() -> list[Path]:
    paths = []
    if os.environ.get("PORTER_ATC_OPS"):
        paths.append(Path(os.environ["PORTER_ATC_OPS"]))
    root = Path(__file__).resolve().parents[2]  # the checkout holding porter/
    paths.append(root.parent / "shared" / "reference" / TABLE_NAME)
    return paths


@functools.lru_cache(maxsize=4)
def load_atc_table(path: str | None = None) -> AtcTable:
    """The ATC operator table from ``path`` or the default locations; PorterError if none."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise PorterError(f"{p}: ATC operator table not found")
        return _parse(p.read_text(), str(p))
    try:
        data = resources.files("porter.export").joinpath("data", TABLE_NAME)
        if data.is_file():
            return _parse(data.read_text(), f"porter/export/data/{TABLE_NAME}")
    except (FileNotFoundError, ModuleNotFoundError):
        pass
    for p in _candidates():
        if p.is_file():
            return _parse(p.read_text(), str(p))
    raise PorterError(f"--target atc needs the ATC operator table {TABLE_NAME}; set "
                      "PORTER_ATC_OPS=FILE (see README: 'ATC operator table')")


@dataclass
class AtcAudit:
    """Every node judged against the table; ``refused`` lists what ATC cannot parse."""

    opset: int
    table: str
    ops: dict[str, dict[str, Any]] = field(default_factory=dict)
    refused: list[dict[str, str]] = field(default_factory=list)
    float64: list[str] = field(default_factory=list)
    mixed_int: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not (self.refused or self.float64 or self.mixed_int)

    def to_dict(self) -> dict[str, Any]:
        return {"opset": self.opset, "table": self.table, "passed": self.passed,
                "nodes": sum(o["count"] for o in self.ops.values()), "ops": self.ops,
                "refused": self.refused, "float64": self.float64, "mixed_int32_int64": self.mixed_int}

    def problems(self) -> list[str]:
        """One line per construct ATC would reject, all of them at once."""
        lines = [f"{r['op']} (opset {r['opset']}) at node {r['node']} from torch module "
                 f"{r['module']}: not in the ATC ONNX parser table" for r in self.refused]
        lines += [f"float64 left at {x}" for x in self.float64]
        lines += [f"mixed int32/int64 operands at {x}" for x in self.mixed_int]
        return lines


def model_opset(model: Any) -> int:
    """The default-domain opset a model imports."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def atc_audit(model: Any, table: AtcTable, module_of: Any = None) -> AtcAudit:
    """Judge every node's (op, opset) against ``table``; name each refused node's torch module.

    ``module_of(node_name) -> str`` names the torch module a node came from.
    """
    from porter.export.passes.int64_operands import mixed_int_nodes

    opset = model_opset(model)
    audit = AtcAudit(opset, table.source)
    for node in _all_nodes(model.graph):
        domain = node.domain or "ai.onnx"
        key = node.op_type if domain == "ai.onnx" else f"{domain}::{node.op_type}"
        ok = domain == "ai.onnx" and table.accepts(node.op_type, opset)
        entry = audit.ops.setdefault(key, {"count": 0, "accepted": ok,
                                           "table_opsets": table.opsets(node.op_type)})
        entry["count"] += 1
        if not ok:
            audit.refused.append({"op": key, "opset": str(opset), "node": node.name or "?",
                                  "module": (module_of(node.name) if module_of else None) or "?"})
    audit.float64 = _float64_sites(model)
    audit.mixed_int = mixed_int_nodes(model)
    return audit


def _all_nodes(graph: Any):
    for node in graph.node:
        yield node
        for a in node.attribute:
            if a.type == a.GRAPH:
                yield from _all_nodes(a.g)
            elif a.type == a.GRAPHS:
                for g in a.graphs:
                    yield from _all_nodes(g)


def _float64_sites(model: Any) -> list[str]:
    from onnx import TensorProto

    g = model.graph
    sites = [f"initializer {t.name}" for t in g.initializer if t.data_type == TensorProto.DOUBLE]
    sites += [f"value {v.name}" for v in [*g.input, *g.output, *g.value_info]
              if v.type.tensor_type.elem_type == TensorProto.DOUBLE]
    for n in _all_nodes(g):
        for a in n.attribute:
            if (a.name in ("to", "dtype") and a.type == a.INT and a.i == TensorProto.DOUBLE) or \
                    (a.type == a.TENSOR and a.t.data_type == TensorProto.DOUBLE):
                sites.append(f"{n.op_type} {n.name}")
    return sites


def atc_command(model_file: str, inputs: list[tuple[str, list[int | str]]], *,
                output: str, soc_version: str, gears: list[tuple[int, int]] | None,
                precision_mode: str, keep_dtype: str | None = None) -> str:
    """The ``atc`` command line that compiles ``model_file`` to ``output.om``.

    ``inputs``: (name, dims) with ``-1`` for dynamic H/W; ``gears``: the (H, W) sizes for
    ``--dynamic_image_size`` (ATC compiles one static graph per gear).
    """
    shape = ";".join(f"{n}:{','.join(str(d) for d in dims)}" for n, dims in inputs)
    parts = ["atc", "--framework=5", f"--model={model_file}", f"--output={output}",
             "--input_format=NCHW", f'--input_shape="{shape}"']
    if gears:
        parts.append('--dynamic_image_size="' + ";".join(f"{h},{w}" for h, w in gears) + '"')
    parts += [f"--soc_version={soc_version}", f"--precision_mode={precision_mode}"]
    if keep_dtype:
        parts.append(f"--keep_dtype={keep_dtype}")
    return " ".join(parts)


def atc_caveats(audit: AtcAudit, *, dynamic: bool, soc_version: str) -> list[str]:
    """The known ATC constraints that apply to this model."""
    out = ["the table proves ATC has a parser for each (op, opset), not an AI Core kernel for "
           "every dtype and chip; run atc and the .om on the device to confirm",
           "parity here is onnxruntime fp32 vs torch; --precision_mode allow_fp32_to_fp16 "
           "computes in fp16 on the device, which this parity does not cover"]
    if "GridSample" in audit.ops:
        out.append("GridSample: on Ascend 310P documented fp32-only and reported to run on AI CPU; "
                   "its nodes are listed in the --keep_dtype file so they stay fp32"
                   + (" (this command targets 310P)" if "310P" in soc_version else ""))
    if dynamic:
        out.append("--dynamic_image_size compiles one static graph per gear: only the listed "
                   "(H, W) gears (each proven by parity) can be fed, and no intermediate shape "
                   "may depend on data at run time; batch stays fixed (ATC does not combine "
                   "--dynamic_batch_size with --dynamic_image_size)")
    else:
        out.append("static export: the model accepts only the traced input shape")
    if "Einsum" in audit.ops:
        out.append("Einsum is parsed by ATC; equations it cannot map fall back to slower paths")
    return out
