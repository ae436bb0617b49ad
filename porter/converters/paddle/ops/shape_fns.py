"""Which runtime functions produce shape values (python lists of sizes) and which pass them on.

Paddle computes shapes as tensors (``shape`` -> ``slice`` -> ``concat`` -> ``reshape``). Kept
as tensors, every size would be read back with ``int()``, which ``torch.export`` cannot trace;
kept as lists of (symbolic) ints they trace, so the NPU audit sees the real graph.
"""

from __future__ import annotations

from porter.converters.paddle.ops import creation, elementwise, tensor

SOURCE = tensor.shape_of
PASS = {tensor.slice_, tensor.concat, tensor.stack, tensor.gather, tensor.unpack, tensor.item,
        tensor.combine, creation.cast, elementwise.shape_binary, elementwise.shape_scale}
