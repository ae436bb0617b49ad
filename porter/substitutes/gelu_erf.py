"""``gelu_erf``: nn.GELU (exact) -> ``0.5 · x · (1 + erf(x / √2))`` written out.

Why: ``torch.export`` of nn.GELU gives the functional ``aten::gelu``. The torch_npu 2.13.0
registry porter audits against lists ``gelu.out`` and ``gelu_backward`` but not the functional
``gelu``, and torch's own kernel for it is structured (CompositeExplicitAutogradNonFunctional),
so the audit cannot prove where it lands. The replacement is the definition of the exact GELU
in ops the registry has (``mul``, ``add``, ``erf``); it is the formula torch's CPU kernel
evaluates, so results agree to float rounding (see tests/substitutes/test_gelu_erf.py). The
tanh approximation (``approximate="tanh"``) is left alone.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from porter.substitutes.registry import replace_submodule, substitute

__all__ = ["ErfGELU", "rewrite_gelu_erf"]


class ErfGELU(nn.Module):
    """Exact GELU from ``erf``: same function as ``nn.GELU()``, no parameters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0.5 * (1.0 + torch.erf(x * (1.0 / math.sqrt(2.0))))


@substitute(
    "gelu_erf",
    replaces="nn.GELU(approximate='none') (aten::gelu)",
    replacement="ErfGELU: x * 0.5 * (1 + erf(x / sqrt(2))) (aten::mul, add, erf)",
    applies_when="an nn.GELU module with approximate='none'",
)
def rewrite_gelu_erf(module: nn.Module) -> list[dict]:
    records = []
    targets = [(path, child) for path, child in module.named_modules()
               if type(child) is nn.GELU and child.approximate == "none" and path]
    for path, child in targets:
        replace_submodule(module, path, ErfGELU())
        records.append({"rule": "gelu_erf", "module": path, "replaced": repr(child),
                        "with": "ErfGELU()"})
    return records
