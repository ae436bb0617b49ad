"""``out_of_place_activation``: activation modules with ``inplace=True`` -> ``inplace=False``.

In-place activations export to mutating ops (``relu_``, ``hardtanh_``) that overwrite their
input; graph compilers and NPU format casts handle out-of-place ops more simply, and a module
must not clobber a tensor another branch still reads. Same function, a fresh output tensor.
"""

from __future__ import annotations

from torch import nn

from porter.substitutes.registry import substitute

__all__ = ["INPLACE_ACTIVATIONS", "rewrite_out_of_place_activation"]

INPLACE_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardtanh, nn.ELU, nn.CELU, nn.SELU, nn.SiLU,
    nn.Hardswish, nn.Hardsigmoid, nn.Mish, nn.RReLU, nn.Threshold,
)


@substitute(
    "out_of_place_activation",
    replaces="activation modules with inplace=True (aten::relu_, hardtanh_ …)",
    replacement="the same module with inplace=False",
    applies_when="an instance of ReLU, ReLU6, LeakyReLU, Hardtanh, ELU, CELU, SELU, SiLU, "
                 "Hardswish, Hardsigmoid, Mish, RReLU or Threshold with inplace=True",
)
def rewrite_out_of_place_activation(module: nn.Module) -> list[dict]:
    records = []
    for path, child in module.named_modules():
        if isinstance(child, INPLACE_ACTIVATIONS) and getattr(child, "inplace", False):
            before = repr(child)
            child.inplace = False
            records.append({"rule": "out_of_place_activation", "module": path,
                            "replaced": before, "with": repr(child)})
    return records
