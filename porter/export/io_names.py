"""Graph input and output names that TorchScript's exporter refuses, and renaming values in an
ONNX graph without colliding with the names already there.

TorchScript keeps purely numeric names for its own unnamed values, so ``torch.onnx.export``
rejects ``output_names=["35"]`` ("Invalid name: '35'"). Models exported by older torch without
``output_names`` carry exactly such names, and an output porter writes must keep them: the
exporter gets a stand-in, and the exported graph is renamed back afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

__all__ = ["rename_values", "stand_ins", "value_names"]


def _refused(name: str) -> bool:
    """What TorchScript's ``setDebugName`` refuses: an empty or all-digit name."""
    return not name or name.isdigit()


def stand_ins(names: Sequence[str]) -> dict[str, str]:
    """Each refused name in ``names`` mapped to a stand-in the exporter takes, unique among
    ``names`` (an empty mapping when every name is fine)."""
    taken = set(names)
    out: dict[str, str] = {}
    for name in names:
        if not _refused(name) or name in out:
            continue
        stand = f"porter_io_{name or 'unnamed'}"
        while stand in taken:
            stand += "_"
        taken.add(stand)
        out[name] = stand
    return out


def _graphs(graph: Any) -> Iterator[Any]:
    """``graph`` and every subgraph in its nodes' attributes, depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _graphs(attr.g)
            for sub in attr.graphs:
                yield from _graphs(sub)


def value_names(graph: Any) -> set[str]:
    """Every value name ``graph`` and its subgraphs define or use."""
    names: set[str] = set()
    for g in _graphs(graph):
        for seq in (g.input, g.output, g.value_info, g.initializer):
            names.update(v.name for v in seq)
        names.update(t.values.name for t in g.sparse_initializer)
        for node in g.node:
            names.update(node.input)
            names.update(node.output)
    names.discard("")  # an omitted optional input, not a value
    return names


def rename_values(graph: Any, mapping: Mapping[str, str]) -> None:
    """Rename values of ``graph`` (in place, subgraphs included) by ``mapping`` (old -> new).

    A value that already bears a new name, and is not itself renamed, first moves aside to a
    fresh name, so no two values ever merge.
    """
    mapping = {old: new for old, new in mapping.items() if old != new}
    if not mapping:
        return
    names = value_names(graph)
    full = dict(mapping)
    for new in mapping.values():
        if new in names and new not in mapping:
            k = 1
            while f"{new}__{k}" in names or f"{new}__{k}" in mapping.values():
                k += 1
            aside = f"{new}__{k}"
            full[new] = aside
            names.add(aside)
    for g in _graphs(graph):
        for seq in (g.input, g.output, g.value_info, g.initializer):
            for v in seq:
                v.name = full.get(v.name, v.name)
        for t in g.sparse_initializer:
            t.values.name = full.get(t.values.name, t.values.name)
        for node in g.node:
            for seq in (node.input, node.output):
                for k, name in enumerate(seq):
                    if name in full:
                        seq[k] = full[name]
