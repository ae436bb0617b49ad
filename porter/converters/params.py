"""Params: a plain holder for the weights a functional op takes as graph inputs."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Params"]


class Params(nn.Module):
    """Holds named parameters and buffers of one graph op (e.g. the bias an ``Add`` adds)."""

    def __init__(self, params: dict[str, torch.Tensor] | None = None,
                 buffers: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        for k, v in (params or {}).items():
            self.register_parameter(k, nn.Parameter(v))
        for k, v in (buffers or {}).items():
            self.register_buffer(k, v)
