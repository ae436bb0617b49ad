"""Readable module and parameter names derived from an ONNX graph.

``/backbone/conv1/Conv`` -> ``backbone.conv1``; an anonymous node (``Conv_12``, ``Reshape@3``,
empty) takes its name from a readable weight input (``conv1_weights`` -> ``conv1``,
``encoder.fc.weight`` -> ``encoder.fc``) or else from its op kind and order (``conv_12``).
"""

from __future__ import annotations

import keyword
import re

__all__ = ["Namer", "node_scope", "weight_scope", "snake"]

_ANON = re.compile(r"^(?:[A-Za-z]+[_@:]?\d*|node_?\d+|\d+)$")
_READABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_./]*$")
_WEIGHT_SUFFIX = re.compile(
    r"(?:[._](?:weights?|bias|kernel|scale|offset|mean|variance|var|running_mean|running_var"
    r"|gamma|beta|moving_mean|moving_variance|w_\d+|b_\d+|w|b))$", re.IGNORECASE)


def snake(name: str) -> str:
    """``BatchNormalization`` -> ``batch_normalization``."""
    s = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name)
    s = re.sub(r"(?<=[A-Z])([A-Z][a-z])", r"_\1", s)
    return s.lower()


def _ident(part: str, parent: str | None) -> str:
    part = re.sub(r"[^0-9A-Za-z_]+", "_", part).strip("_")  # ASCII: no NFKC look-alikes
    if not part:
        return ""
    if part[0].isdigit():
        part = f"{parent}_{part}" if parent else f"m{part}"
    if keyword.iskeyword(part):
        part += "_"
    return part


def _to_path(parts: list[str]) -> str:
    out: list[str] = []
    for p in parts:
        # `/layer1/layer1.0/conv1` -> drop the repeated parent prefix
        if out and p.startswith(out[-1] + "."):
            p = p[len(out[-1]) + 1:]
        for sub in p.split("."):
            ident = _ident(sub, out[-1] if out else None)
            if ident:
                out.append(ident)
    return ".".join(out)


def node_scope(name: str, op_type: str) -> str | None:
    """A dotted path from a structured node name, or None when the name carries no meaning."""
    if not name or _ANON.match(name) or (op_type.lower() in name.lower() and "/" not in name
                                         and "." not in name):
        return None
    parts = [p for p in name.split("/") if p]
    if len(parts) > 1 and re.sub(r"[_:]\d+$", "", parts[-1]) == op_type:
        parts = parts[:-1]
    elif len(parts) == 1 and re.sub(r"[_:]\d+$", "", parts[0]) == op_type:
        return None
    path = _to_path(parts)
    return path or None


def weight_scope(names: list[str]) -> str | None:
    """A dotted path from readable weight tensor names (``conv1_bn_scale`` -> ``conv1_bn``)."""
    names = [n for n in names if n and _READABLE.match(n) and not n.startswith("onnx")]
    if not names:
        return None
    if len(names) > 1:
        prefix = names[0]
        for n in names[1:]:
            while not n.startswith(prefix):
                prefix = prefix[:-1]
        prefix = prefix.rstrip("._/")
        if len(prefix) >= 2:
            return _to_path(re.split(r"/", prefix)) or None
    stem = _WEIGHT_SUFFIX.sub("", names[0])
    if stem == names[0] or not stem:
        return None
    return _to_path(stem.split("/")) or None


class Namer:
    """Hands out unique dotted module paths; a leaf is never also used as a container."""

    def __init__(self) -> None:
        self.taken: set[str] = set()
        self.containers: set[str] = set()
        self.counters: dict[str, int] = {}

    def ordinal(self, op_type: str) -> str:
        key = snake(op_type)
        n = self.counters.get(key, 0)
        self.counters[key] = n + 1
        return f"{key}_{n}"

    def _free(self, path: str) -> bool:
        if path in self.taken or path in self.containers:
            return False
        parts = path.split(".")
        return not any(".".join(parts[:k]) in self.taken for k in range(1, len(parts)))

    def claim(self, path: str) -> str:
        parts = path.split(".")
        if any(".".join(parts[:k]) in self.taken for k in range(1, len(parts))):
            path = path.replace(".", "_")  # a parent path is already a leaf module
        base, k = path, 1
        while not self._free(path):
            path = f"{base}_{k}"
            k += 1
        self.taken.add(path)
        parts = path.split(".")
        for k in range(1, len(parts)):
            self.containers.add(".".join(parts[:k]))
        return path
