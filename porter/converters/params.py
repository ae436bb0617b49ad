"""Params: a plain holder for the weights a functional op takes as graph inputs, and the
helpers that turn a source's arrays into module weights without needless copies."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["Params", "weight_tensor", "new_module", "untie"]


class Params(nn.Module):
    """Holds named parameters and buffers of one graph op (e.g. the bias an ``Add`` adds)."""

    def __init__(self, params: dict[str, torch.Tensor] | None = None,
                 buffers: dict[str, torch.Tensor] | None = None) -> None:
        super().__init__()
        for k, v in (params or {}).items():
            self.register_parameter(k, nn.Parameter(v))
        for k, v in (buffers or {}).items():
            self.register_buffer(k, v)


def weight_tensor(arr: np.ndarray) -> torch.Tensor:
    """A torch tensor with ``arr``'s values, sharing its memory where that is safe.

    A C-contiguous array that lies in a private (copy-on-write) memory map of the source file,
    as the ONNX importer hands out external data, becomes a view: a model bigger than memory
    keeps its weights in the page cache instead of a second, anonymous copy, and writing to the
    tensor only copies the pages written (the file never changes). Anything else is copied, so
    the module never aliases an array someone else owns. ``_untie`` in the builder separates
    two parameters that view the same bytes.
    """
    from porter.mapped import contiguous_copy

    arr = np.asarray(arr) if not isinstance(arr, np.memmap) else arr
    if arr.ndim == 0:
        return torch.tensor(arr)
    if (getattr(arr, "_mmap", None) is not None and getattr(arr, "mode", None) == "c"
            and arr.flags.c_contiguous and arr.flags.aligned and arr.dtype.kind in "fiub"
            and arr.dtype.isnative):
        view = arr.view(np.ndarray)
        view.flags.writeable = True  # the mapping is private: writes never reach the file
        return torch.from_numpy(view)
    # one copy (a transposed view of a mapped kernel: the source's pages go as it is copied)
    return torch.from_numpy(contiguous_copy(arr))


def new_module(cls: type[nn.Module], *args: object, **kwargs: object) -> nn.Module:
    """``cls(*args, **kwargs)`` without initialising its parameters (they are overwritten next:
    a big layer's random init would cost time and a transient copy's worth of memory)."""
    from torch.nn.utils import skip_init

    return skip_init(cls, *args, **kwargs)


def untie(module: nn.Module) -> nn.Module:
    """Give every parameter/buffer that shares memory with an earlier one its own copy."""
    seen: set[int] = set()
    for sub in module.modules():
        for store in (sub._parameters, sub._buffers):
            for name, t in store.items():
                if t is None or t.numel() == 0:
                    continue
                ptr = t.untyped_storage().data_ptr()
                if ptr in seen:
                    with torch.no_grad():
                        copy = t.detach().clone()
                    store[name] = nn.Parameter(copy, t.requires_grad) \
                        if isinstance(t, nn.Parameter) else copy
                else:
                    seen.add(ptr)
    return module
