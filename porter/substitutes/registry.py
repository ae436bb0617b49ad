"""Registry of NPU-safe substitutes: one rule per file, each declaring what it replaces."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from porter.errors import PorterError

__all__ = ["Substitute", "SUBSTITUTES", "substitute", "get_substitute", "replace_submodule"]

Rewrite = Callable[[nn.Module], list[dict]]


@dataclass(frozen=True)
class Substitute:
    """A rule: ``rewrite`` changes a module tree in place and returns one record per change."""

    name: str
    replaces: str
    replacement: str
    applies_when: str
    rewrite: Rewrite


SUBSTITUTES: dict[str, Substitute] = {}


def substitute(name: str, *, replaces: str, replacement: str,
               applies_when: str) -> Callable[[Rewrite], Rewrite]:
    """Register ``fn(module) -> records`` as the rule ``name``; a duplicate name fails."""
    def register(fn: Rewrite) -> Rewrite:
        if name in SUBSTITUTES:
            raise PorterError(f"substitute {name!r} registered twice")
        SUBSTITUTES[name] = Substitute(name, replaces, replacement, applies_when, fn)
        return fn
    return register


def get_substitute(name: str) -> Substitute:
    try:
        return SUBSTITUTES[name]
    except KeyError:
        known = ", ".join(sorted(SUBSTITUTES))
        raise PorterError(f"unknown substitute {name!r} (known: {known})") from None


def replace_submodule(root: nn.Module, path: str, new: nn.Module) -> None:
    """Put ``new`` at dotted ``path`` under ``root`` (``path`` must not be the root)."""
    parent_path, _, child = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, child, new)
