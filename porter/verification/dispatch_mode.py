"""A TorchDispatchMode that does not import torch._dynamo: the base of porter's op-level modes."""

from __future__ import annotations

from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["PlainDispatchMode"]


class PlainDispatchMode(TorchDispatchMode):
    """torch wraps a mode's ``__torch_dispatch__`` in ``dynamo.disable`` unless told not to,
    which imports all of torch._dynamo (about a second, 7 s under load) on the first op; porter's
    modes (the audit's recorder, the fp16 rerun's HalfStorage) compile nothing, so they skip it."""

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False
