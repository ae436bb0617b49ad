"""The upstream BEN2 network (../shared/reference/ben2_upstream) as the parity oracle.

Never copied into the project: imported from ../shared through porter's upstream runtime, with
stand-ins for the preprocessing-only packages it imports (timm.layers, torchvision, cv2).
``build_upstream(**config)`` builds upstream's ``BEN_Base`` and, for a configuration other than
the released one, swaps in upstream's own building blocks at that size (SwinTransformer, MCLM,
MCRM, make_cbr), so a reduced network is still upstream's code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

UPSTREAM_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference" / "ben2_upstream"
UPSTREAM_FILE = UPSTREAM_DIR / "BEN2.py"
PACKAGED_FILE = UPSTREAM_DIR / "modeling_ben2.py"
SPEC = f"{UPSTREAM_FILE}:BEN_Base"
BUILDER_SPEC = f"{Path(__file__).resolve()}:build_upstream"


def require_upstream() -> None:
    if not UPSTREAM_FILE.is_file():
        pytest.skip(f"upstream BEN2 not available ({UPSTREAM_DIR} is missing; CI has it)")
    pytest.importorskip("einops", reason="the upstream BEN2 network needs einops")


def upstream_module():
    from porter.verification.runtimes.torch_upstream import import_upstream

    return import_upstream(f"{UPSTREAM_FILE}:BEN_Base").__module__


def build_upstream(embed_dim: int = 128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32),
                   window_size: int = 12, mlp_ratio: float = 4.0, dec_dim: int = 128,
                   mask_dim: int = 384) -> nn.Module:
    """Upstream BEN_Base; other sizes are assembled from upstream's blocks."""
    import sys

    from porter.verification.runtimes.torch_upstream import import_upstream

    cls = import_upstream(f"{UPSTREAM_FILE}:BEN_Base")
    up = sys.modules[cls.__module__]
    released = (embed_dim, tuple(depths), tuple(num_heads), window_size, mlp_ratio, dec_dim,
                mask_dim) == (128, (2, 2, 18, 2), (4, 8, 16, 32), 12, 4.0, 128, 384)
    if released:
        return cls()
    net = cls.__new__(cls)  # upstream's forward only uses the children set below
    nn.Module.__init__(net)
    d = dec_dim
    net.backbone = up.SwinTransformer(embed_dim=embed_dim, depths=list(depths),
                                      num_heads=list(num_heads), window_size=window_size,
                                      mlp_ratio=mlp_ratio)
    feats = [embed_dim, embed_dim, 2 * embed_dim, 4 * embed_dim, 8 * embed_dim]
    for i in range(1, 6):
        setattr(net, f"sideout{i}", nn.Sequential(nn.Conv2d(d, 1, kernel_size=3, padding=1)))
        setattr(net, f"output{i}", up.make_cbr(feats[i - 1], d))
    net.multifieldcrossatt = up.MCLM(d, 1, [1, 4, 8])
    for i in range(1, 5):
        setattr(net, f"conv{i}", up.make_cbr(d, d))
        setattr(net, f"dec_blk{i}", up.MCRM(d, 1, [2, 4, 8]))
    net.insmask_head = nn.Sequential(
        nn.Conv2d(d, mask_dim, kernel_size=3, padding=1), nn.InstanceNorm2d(mask_dim), nn.GELU(),
        nn.Conv2d(mask_dim, mask_dim, kernel_size=3, padding=1), nn.InstanceNorm2d(mask_dim),
        nn.GELU(), nn.Conv2d(mask_dim, d, kernel_size=3, padding=1))
    net.shallow = nn.Sequential(nn.Conv2d(3, d, kernel_size=3, padding=1))
    net.upsample1 = up.make_cbg(d, d)
    net.upsample2 = up.make_cbg(d, d)
    net.output = nn.Sequential(nn.Conv2d(d, 1, kernel_size=3, padding=1))
    return net.eval()


def seeded_state(module: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Random weights (float tensors only; index buffers kept) with enough spread that every
    block matters: N(0, 0.5/sqrt(fan_in)) for weights, N(0, 0.1) for biases and tables."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, Any] = {}
    for name, t in module.state_dict().items():
        if not t.is_floating_point():
            state[name] = t.clone()
            continue
        if name.endswith("weight") and t.dim() >= 2:
            fan_in = t[0].numel()
            state[name] = torch.randn(t.shape, generator=gen) * (1.0 / fan_in ** 0.5)
        elif name.endswith("weight"):  # LayerNorm gains around 1
            state[name] = 1.0 + 0.1 * torch.randn(t.shape, generator=gen)
        else:
            state[name] = 0.1 * torch.randn(t.shape, generator=gen)
    return state
