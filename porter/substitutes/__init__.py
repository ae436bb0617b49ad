"""NPU-safe rewrites of an nn.Module, one rule per file, each with an equivalence test.

    model, records = apply_substitutes(model)            # every rule, on a copy
    model, records = apply_substitutes(model, ["instance_norm"], inplace=True)

Each record: ``{"rule", "module" (dotted path), "replaced", "with", ...}``.
"""

from __future__ import annotations

import copy

from torch import nn

from porter.substitutes import (  # noqa: F401 - registers
    float32_only,
    gelu_erf,
    instance_norm,
    out_of_place_activation,
)
from porter.substitutes.float32_only import check_float32_forward
from porter.substitutes.instance_norm import (
    ManualInstanceNorm1d,
    ManualInstanceNorm2d,
    ManualInstanceNorm3d,
)
from porter.substitutes.registry import SUBSTITUTES, Substitute, get_substitute

__all__ = [
    "DEFAULT_RULES",
    "SUBSTITUTES",
    "Substitute",
    "apply_substitutes",
    "check_float32_forward",
    "ManualInstanceNorm1d",
    "ManualInstanceNorm2d",
    "ManualInstanceNorm3d",
]

# float32_only last, so modules created by earlier rules are converted too.
DEFAULT_RULES = ["out_of_place_activation", "instance_norm", "gelu_erf", "float32_only"]


def apply_substitutes(module: nn.Module, rules: list[str] | None = None, *,
                      inplace: bool = False,
                      example_inputs: tuple | None = None) -> tuple[nn.Module, list[dict]]:
    """Apply ``rules`` (all, in DEFAULT_RULES order, when None); return (module, records).

    Works on a deep copy unless ``inplace``. With ``example_inputs`` and the ``float32_only``
    rule, the rewritten module is run once and PorterError is raised if it still makes float64.
    """
    names = DEFAULT_RULES if rules is None else list(rules)
    chosen = [get_substitute(name) for name in names]
    target = module if inplace else copy.deepcopy(module)
    records: list[dict] = []
    for rule in chosen:
        records.extend(rule.rewrite(target))
    if example_inputs is not None and "float32_only" in names:
        check_float32_forward(target, example_inputs)
    return target, records
