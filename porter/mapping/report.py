"""The mapping report: every source tensor and every target parameter/buffer, accounted for."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["MappingEntry", "MappingReport"]

# What happened to a source tensor (or, for "filled", to a target slot with no source tensor).
ACTIONS = ("mapped", "dropped", "structure", "filled", "folded", "rewritten")


@dataclass
class MappingEntry:
    """One row: ``source`` -> ``target`` with the action, the layout transform and the shapes.

    ``mapped``: the tensor fills ``target`` (after ``transform``). ``dropped``: deliberately unused
    (optimizer slot, EMA copy, training-only head), ``note`` says why. ``structure``: a constant of
    the graph (resize scales, a reshape target) checked against the module, not a weight.
    ``filled``: a target slot with no source tensor, filled by rule (``note`` says with what).
    ``folded``: an exporter combined it into ``target`` (a BatchNorm into its convolution, a
    quantized Const through Dequantize); the fold was recomputed from the source tensors and
    matched against ``target``, ``note`` gives how and the max |Δ|.
    ``rewritten``: consumed by a generic conversion but not found verbatim in the module (an
    intermediate exporter folded or re-laid it out); parity is what vouches for it.
    """

    source: str | None
    target: str | None
    action: str
    transform: str | None = None
    source_shape: list[int] | None = None
    target_shape: list[int] | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown mapping action {self.action!r}")


@dataclass
class MappingReport:
    """All entries of one port, with the method used and free-form notes."""

    method: str
    entries: list[MappingEntry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    source_kinds: dict[str, str] = field(default_factory=dict)  # tensor name -> TensorRef.kind

    def add(self, *args: Any, **kwargs: Any) -> MappingEntry:
        entry = MappingEntry(*args, **kwargs)
        self.entries.append(entry)
        return entry

    def counts(self) -> dict[str, int]:
        c = Counter(e.action for e in self.entries)
        sources = sum(1 for e in self.entries if e.source is not None)
        return {
            "source_tensors": sources,
            "mapped": c["mapped"],
            "dropped": c["dropped"],
            "structure": c["structure"],
            "filled": c["filled"],
            "folded": c["folded"],
            "rewritten": c["rewritten"],
            "accounted": sources,
        }

    def by_kind(self) -> dict[str, dict[str, int]]:
        """Counts per source tensor kind (initializer, constant, variable …)."""
        out: dict[str, Counter] = {}
        for e in self.entries:
            if e.source is None:
                continue
            c = out.setdefault(self.source_kinds.get(e.source, "tensor"), Counter())
            c["total"] += 1
            c[e.action] += 1
        return {k: dict(v) for k, v in out.items()}

    def summary(self) -> str:
        """One line such as ``215/215 source tensors mapped (204 -> weights, 11 -> structure)``."""
        c = self.counts()
        parts = [f"{c['mapped']} -> parameters/buffers"]
        if c["structure"]:
            parts.append(f"{c['structure']} -> graph constants, checked")
        if c["dropped"]:
            parts.append(f"{c['dropped']} dropped")
        if c["folded"]:
            parts.append(f"{c['folded']} traced through exporter folds, checked")
        if c["rewritten"]:
            parts.append(f"{c['rewritten']} folded or rewritten in conversion, covered by parity")
        if c["filled"]:
            parts.append(f"{c['filled']} target slots filled by rule")
        line = (f"{c['accounted']}/{c['source_tensors']} source tensors accounted for "
                f"({', '.join(parts)})")
        kinds = self.by_kind()
        if len(kinds) > 1:
            line += "; " + ", ".join(f"{k}s {v['total']}/{v['total']}" for k, v in kinds.items())
        return line

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "counts": self.counts(), "by_kind": self.by_kind(),
                "notes": list(self.notes),
                "entries": [asdict(e) for e in self.entries]}
