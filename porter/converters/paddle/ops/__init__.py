"""Paddle op converters, one module per op family; importing this package fills the registry."""

from porter.converters.paddle.ops import (  # noqa: F401
    activation,
    conv,
    creation,
    elementwise,
    linalg,
    norm,
    pool,
    recurrent,
    reduce,
    resize,
    shape_fns,
    tensor,
)
