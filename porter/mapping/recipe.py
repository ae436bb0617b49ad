"""Recipes: ordered rename rules (regex -> target name, optional layout transform, None to drop).

Loading is strict: every source tensor must be mapped or deliberately dropped, every target
parameter and buffer filled; anything else raises MappingError listing both leftover sets.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from porter.errors import MappingError
from porter.mapping.report import MappingReport

__all__ = ["Recipe", "load_strict", "leftover_message"]

Transform = Callable[[np.ndarray], np.ndarray]
Rule = tuple  # (pattern, replacement | None) or (pattern, replacement, transform) or (…, None, why)


def _transform_name(fn: Transform | None) -> str | None:
    return None if fn is None else getattr(fn, "__name__", repr(fn))


@dataclass(frozen=True)
class Recipe:
    """Rules are tried in order; the first whose pattern matches (``re.search``) decides.

    A rule is ``(pattern, replacement)``, ``(pattern, replacement, transform)``, or
    ``(pattern, None, "why it is dropped")``. ``fill`` maps a target-name regex to a function
    ``shape -> array`` for slots the source cannot have (``num_batches_tracked``).
    """

    name: str
    rules: Sequence[Rule]
    fill: Mapping[str, Callable[[tuple[int, ...]], np.ndarray]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for rule in self.rules:
            re.compile(rule[0])

    def target_of(self, source_name: str) -> tuple[str | None, Transform | None, str, bool]:
        """(target name or None, transform, note, matched?) for one source name."""
        for rule in self.rules:
            pattern, repl = rule[0], rule[1]
            if re.search(pattern, source_name):
                if repl is None:
                    why = rule[2] if len(rule) > 2 and isinstance(rule[2], str) else "dropped by rule"
                    return None, None, why, True
                transform = rule[2] if len(rule) > 2 and callable(rule[2]) else None
                return re.sub(pattern, repl, source_name), transform, "", True
        return None, None, "", False

    def fits(self, tensors: Mapping[str, Any], module: torch.nn.Module) -> bool:
        """Would :meth:`apply` succeed? Decided from names and shapes alone, reading no data.

        Each transform runs on an uninitialised array of the source's shape, so any layout
        transform is judged by what it really does. ``module`` may live on the meta device.
        """
        targets = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        filled: set[str] = set()
        for name, ref in tensors.items():
            target, transform, _, matched = self.target_of(name)
            if not matched:
                return False
            if target is None:
                continue
            shape = tuple(getattr(ref, "shape", np.shape(ref)))
            if transform is not None:
                dtype = getattr(ref, "dtype", np.float32)
                try:
                    shape = tuple(transform(np.empty(shape, dtype)).shape)
                except (ValueError, TypeError):
                    return False
            if targets.get(target) != shape or target in filled:
                return False
            filled.add(target)
        return all(t in filled or any(re.search(p, t) for p in self.fill) for t in targets)

    def apply(self, tensors: Mapping[str, Any], module: torch.nn.Module,
              keep: Sequence[str] = ()) -> tuple[dict[str, torch.Tensor], MappingReport]:
        """Map ``tensors`` (name -> TensorRef or array) onto ``module``'s state dict, strictly.

        ``keep`` lists regexes of tensors that a drop rule would drop but the caller wants
        reported as leftovers instead (for "keep optimizer slots on request").
        """
        report = MappingReport(method=f"recipe:{self.name}")
        targets = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        state: dict[str, torch.Tensor] = {}
        unmatched: list[str] = []
        for name, ref in tensors.items():
            target, transform, note, matched = self.target_of(name)
            src_shape = list(getattr(ref, "shape", np.shape(ref)))
            if not matched or (target is None and any(re.search(k, name) for k in keep)):
                unmatched.append(name)
                continue
            if target is None:
                report.add(name, None, "dropped", None, src_shape, None, note)
                continue
            if target not in targets:
                unmatched.append(name)
                continue
            if target in state:
                raise MappingError(f"recipe {self.name}: two source tensors map to {target!r}")
            arr = ref.numpy() if hasattr(ref, "numpy") else np.asarray(ref)
            if transform is not None:
                arr = transform(arr)
            if tuple(arr.shape) != targets[target]:
                raise MappingError(
                    f"recipe {self.name}: {name} {list(arr.shape)} does not fit {target} "
                    f"{list(targets[target])}")
            state[target] = torch.from_numpy(np.array(arr, copy=True))
            report.add(name, target, "mapped", _transform_name(transform), src_shape,
                       list(targets[target]))
        for target, shape in targets.items():
            if target in state:
                continue
            for pattern, make in self.fill.items():
                if re.search(pattern, target):
                    state[target] = torch.from_numpy(np.asarray(make(shape)))
                    report.add(None, target, "filled", None, None, list(shape),
                               f"filled by {_transform_name(make)}")
                    break
        missing = [t for t in targets if t not in state]
        if unmatched or missing:
            raise MappingError(leftover_message(self.name, unmatched, missing))
        return state, report


def leftover_message(what: str, sources: Sequence[str], targets: Sequence[str],
                     limit: int = 12) -> str:
    """One message naming both leftover sets (truncated to ``limit`` names each)."""

    def names(xs: Sequence[str]) -> str:
        shown = ", ".join(list(xs)[:limit])
        return shown + (f", … (+{len(xs) - limit} more)" if len(xs) > limit else "")

    parts = []
    if sources:
        parts.append(f"{len(sources)} source tensor(s) left unmapped: {names(sources)}")
    if targets:
        parts.append(f"{len(targets)} target slot(s) left unfilled: {names(targets)}")
    return f"{what}: " + "; ".join(parts)


def load_strict(module: torch.nn.Module, state: Mapping[str, torch.Tensor],
                assign: bool = False) -> torch.nn.Module:
    """Load ``state`` into ``module`` requiring an exact key match.

    ``assign`` makes the module adopt the given tensors instead of copying into its own (for a
    module built on the meta device, and to avoid a second copy of every weight).
    """
    result = module.load_state_dict(dict(state), strict=False, assign=assign)
    if result.missing_keys or result.unexpected_keys:
        raise MappingError(leftover_message("load", result.unexpected_keys, result.missing_keys))
    return module
