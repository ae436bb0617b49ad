"""Per-op converters, one module per op family; importing this package fills the registry."""

from porter.converters.ops import (  # noqa: F401
    attention,
    control,
    elementwise,
    indexing,
    linalg,
    losses,
    nn_ops,
    quantization,
    recurrent,
    reduce,
    resize,
    shape,
    signal,
    vision_extra,
)
