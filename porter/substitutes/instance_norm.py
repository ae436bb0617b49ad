"""``instance_norm``: nn.InstanceNorm1d/2d/3d -> explicit mean/variance arithmetic.

Why: ``torch.export`` of nn.InstanceNorm2d gives ``aten::instance_norm``. torch_npu 2.13.0 has no
kernel for that op itself, but it is CompositeImplicitAutograd: on the NPU it decomposes to
``view`` + ``batch_norm`` -> ``_batch_norm_impl_index`` -> ``native_batch_norm`` over one batch of
N*C channels, and torch_npu *does* have ``native_batch_norm``, so the porter audit passes the
plain module too. The substitute is applied because the published Ascend adaptation of MODNet
replaces InstanceNorm with a hand-written one, and because it keeps the computation to plain
reductions and elementwise ops (mean, sub, mul, rsqrt, all with torch_npu kernels) instead of a
training-mode BatchNorm over a (1, N*C, ...) view, so it does not depend on how that composite
is lowered. For fp16/bf16 inputs the statistics are taken in float32 and the result is cast
back once.
"""

from __future__ import annotations

import torch
from torch import nn

from porter.substitutes.registry import replace_submodule, substitute

__all__ = ["ManualInstanceNorm1d", "ManualInstanceNorm2d", "ManualInstanceNorm3d"]

_LOW_PRECISION = (torch.float16, torch.bfloat16)


class _ManualInstanceNorm(nn.Module):
    """(x - mean) / sqrt(var + eps) per sample and channel, then the optional affine.

    Same parameters (``weight``, ``bias`` when affine) and state_dict keys as nn.InstanceNorm.
    """

    spatial_dims = 0

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = False,
                 bias: bool = True) -> None:
        super().__init__()
        self.num_features, self.eps, self.affine = num_features, eps, affine
        self.weight = nn.Parameter(torch.ones(num_features)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_features)) if affine and bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(-self.spatial_dims, 0))
        xf = x.float() if x.dtype in _LOW_PRECISION else x
        mean = xf.mean(dim=dims, keepdim=True)
        centred = xf - mean
        var = (centred * centred).mean(dim=dims, keepdim=True)  # biased, as InstanceNorm
        y = centred * torch.rsqrt(var + self.eps)
        shape = (self.num_features,) + (1,) * self.spatial_dims
        if self.weight is not None:
            y = y * self.weight.reshape(shape)
        if self.bias is not None:
            y = y + self.bias.reshape(shape)
        return y if y.dtype == x.dtype else y.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, affine={self.affine}"


class ManualInstanceNorm1d(_ManualInstanceNorm):
    spatial_dims = 1


class ManualInstanceNorm2d(_ManualInstanceNorm):
    spatial_dims = 2


class ManualInstanceNorm3d(_ManualInstanceNorm):
    spatial_dims = 3


_REPLACEMENTS: dict[type[nn.Module], type[_ManualInstanceNorm]] = {
    nn.InstanceNorm1d: ManualInstanceNorm1d,
    nn.InstanceNorm2d: ManualInstanceNorm2d,
    nn.InstanceNorm3d: ManualInstanceNorm3d,
}


def manual_from(norm: nn.modules.instancenorm._InstanceNorm) -> _ManualInstanceNorm:
    """A ManualInstanceNorm with ``norm``'s settings, weights, device and dtype."""
    new = _REPLACEMENTS[type(norm)](norm.num_features, norm.eps, norm.affine,
                                    bias=getattr(norm, "bias", None) is not None)
    if norm.affine:
        new.load_state_dict(norm.state_dict())
    ref = next(norm.parameters(), None)
    return new.to(ref.device, ref.dtype) if ref is not None else new


@substitute(
    "instance_norm",
    replaces="nn.InstanceNorm1d/2d/3d (aten::instance_norm)",
    replacement="ManualInstanceNorm1d/2d/3d (mean, biased var, rsqrt, affine)",
    applies_when="exact type nn.InstanceNorm1d/2d/3d with track_running_stats=False",
)
def rewrite_instance_norm(module: nn.Module) -> list[dict]:
    records = []
    for path, child in list(module.named_modules()):
        if type(child) not in _REPLACEMENTS or child.track_running_stats:
            continue
        new = manual_from(child)
        replace_submodule(module, path, new)
        records.append({"rule": "instance_norm", "module": path, "replaced": repr(child),
                        "with": repr(new)})
    return records
