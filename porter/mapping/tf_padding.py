"""TensorFlow "SAME" padding, reproduced exactly (TF pads the extra row/column at the end).

For input size ``n``, kernel ``k``, stride ``s`` and dilation ``d``, TF's output is
``ceil(n / s)`` and the total padding ``max((ceil(n/s) - 1) * s + (k - 1) * d + 1 - n, 0)``;
``total // 2`` goes before and the rest after. torch's ``padding="same"`` only exists for
stride 1 and pads symmetrically otherwise, so odd totals and strides need this module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["same_padding", "TFSamePad2d"]


def same_padding(size: int, kernel: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding TF uses along one spatial axis for ``padding="SAME"``.

    Integer arithmetic only: under torch.onnx tracing ``size`` is a traced value, and
    ``math.ceil(size / stride)`` would freeze it to the traced size (a graph that crops at
    any other size); ``(size + stride - 1) // stride`` stays in the graph."""
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class TFSamePad2d(nn.Module):
    """Pads an NCHW tensor as TF's SAME would for the op that follows (computed per input size).

    ``value`` is the fill: 0 for convolutions, ``-inf`` before a max-pool (TF's SAME max-pool
    never picks a padded cell).
    """

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] = 1,
                 dilation: int | tuple[int, int] = 1, value: float = 0.0) -> None:
        super().__init__()
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.dilation, self.value = _pair(dilation), float(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0],
                                   self.dilation[0])
        left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1],
                                   self.dilation[1])
        if top == bottom == left == right == 0:
            return x
        return F.pad(x, (left, right, top, bottom), value=self.value)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"dilation={self.dilation}, value={self.value}")
