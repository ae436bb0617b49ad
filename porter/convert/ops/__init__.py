"""Per-op converters, one module per op family; importing this package fills the registry."""

from porter.convert.ops import (  # noqa: F401
    elementwise,
    indexing,
    linalg,
    nn_ops,
    reduce,
    resize,
    shape,
)
