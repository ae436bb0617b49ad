"""Paddle -> torch layout facts, as named transforms and recipe rules.

What differs between a ``paddle.nn`` state dict and the matching ``torch.nn`` one:

* ``nn.Linear`` weight is ``[in, out]`` in Paddle, ``[out, in]`` in torch: :func:`linear_weight`.
* ``nn.BatchNorm*`` statistics are ``_mean``/``_variance`` (torch: ``running_mean``/``running_var``)
  and Paddle has no ``num_batches_tracked``: :data:`BATCHNORM_RULES`, :data:`BATCHNORM_FILL`.
  Paddle's BN ``momentum`` weighs the *old* statistic (default 0.9), torch's the new one
  (default 0.1): :func:`bn_momentum_to_torch`. ``epsilon`` means the same (default 1e-5).

What is the same (an explicit :func:`conv_transpose_weight` identity keeps reports honest):
``Conv2D`` ``[out, in/groups, kH, kW]``; ``Conv2DTranspose`` ``[in, out/groups, kH, kW]``, exactly
torch's ``ConvTranspose2d``; ``LayerNorm``/``GroupNorm``/``InstanceNorm`` ``weight``/``bias``;
``PReLU`` ``_weight`` is ``[C]`` (named ``weight`` in torch); ``Embedding`` ``[num, dim]``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch

from porter.mapping.layouts import identity, transpose_2d
from porter.mapping.recipe import Recipe

__all__ = [
    "linear_weight", "conv_transpose_weight", "fill_num_batches_tracked",
    "bn_momentum_to_torch", "linear_rule", "BATCHNORM_RULES", "BATCHNORM_FILL",
    "PRELU_RULES", "recipe_for_module",
]


def linear_weight(a: np.ndarray) -> np.ndarray:
    """Paddle ``nn.Linear`` weight ``[in, out]`` -> torch ``[out, in]`` (a 2-D transpose)."""
    return transpose_2d(a)


def conv_transpose_weight(a: np.ndarray) -> np.ndarray:
    """Paddle ``Conv2DTranspose`` weight ``[in, out/groups, kH, kW]`` is torch's layout already."""
    if a.ndim < 3:
        raise ValueError(f"conv_transpose_weight expects >= 3-D, got shape {a.shape}")
    return identity(a)


def fill_num_batches_tracked(shape: tuple[int, ...]) -> np.ndarray:
    """torch BatchNorm's ``num_batches_tracked`` (int64, 0-d); Paddle never stores it.

    Zero is right for eval: the counter only matters when ``momentum=None`` during training.
    """
    return np.zeros(shape, dtype=np.int64)


def bn_momentum_to_torch(paddle_momentum: float) -> float:
    """Paddle ``new = m*old + (1-m)*batch``; torch ``new = (1-m)*old + m*batch``."""
    return 1.0 - float(paddle_momentum)


def linear_rule(module_pattern: str) -> tuple:
    """A recipe rule transposing the weight of the Linear layer(s) whose name matches."""
    return (rf"^({module_pattern})\.weight$", r"\1.weight", linear_weight)


BATCHNORM_RULES: list[tuple] = [
    (r"^(.*)\._mean$", r"\1.running_mean"),
    (r"^(.*)\._variance$", r"\1.running_var"),
]
BATCHNORM_FILL = {r"(^|\.)num_batches_tracked$": fill_num_batches_tracked}
PRELU_RULES: list[tuple] = [(r"^(.*)\._weight$", r"\1.weight")]


def recipe_for_module(name: str, module: torch.nn.Module,
                      extra_rules: Sequence[tuple] = ()) -> Recipe:
    """A strict recipe for a torch module whose names mirror the Paddle model's.

    Every ``nn.Linear`` weight is transposed, BatchNorm statistics renamed and
    ``num_batches_tracked`` filled; ``extra_rules`` come first (renames, drops).
    ``ConvTranspose`` weights are marked with :func:`conv_transpose_weight`; the rest map as is.
    """
    rules: list[tuple] = list(extra_rules)
    for mod_name, mod in module.named_modules():
        if not mod_name:
            continue
        if isinstance(mod, torch.nn.Linear):
            rules.append(linear_rule(re.escape(mod_name)))
        elif isinstance(mod, (torch.nn.ConvTranspose1d, torch.nn.ConvTranspose2d,
                              torch.nn.ConvTranspose3d)):
            rules.append((rf"^({re.escape(mod_name)})\.weight$", r"\1.weight",
                          conv_transpose_weight))
    rules += BATCHNORM_RULES + PRELU_RULES + [(r"^(.*)$", r"\1")]
    return Recipe(name=name, rules=rules, fill=dict(BATCHNORM_FILL))
