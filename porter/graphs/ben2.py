"""BEN2: background erasure (Meyer & Spruyt, "BEN: Using Confidence-Guided Matting for
Dichotomous Image Segmentation", arXiv 2501.06230, 2025).

Origin: the public BEN2 release (PramaLLC/BEN2, MIT licence): ``BEN2_Base.pth``
(``{"model_state_dict": …}``) and the packaged ``model.safetensors``. This file is porter's own
clean re-implementation of the inference network ``BEN_Base``, written from its architecture:

- a Swin-B backbone (patch 4, embed 128, depths 2/2/18/2, heads 4/8/16/32, window 12, shifted
  windows with relative position bias) that sees the 1024² input as 2x2 patches of 512² plus a
  0.5x global view, i.e. at batch 5 per image, and returns the patch embedding and four stages;
- five ``conv3x3 + InstanceNorm + GELU`` heads (``output1–5``) bringing every level to 128
  channels;
- MCLM (``multifieldcrossatt``): the global view attends to pooled, position-encoded local
  patches at three scales, then each local patch attends to its quarter of the refreshed
  global view;
- four MCRM refiners (``dec_blk1–4``): a saliency map from the global view gates the local
  patches, which then attend to multi-scale pools of the global view, each followed by a
  ``conv1–4`` head;
- the mask head (``insmask_head``), a shallow full-resolution branch (``shallow``), two
  upsampling heads and a final sigmoid alpha.

Parameter names are upstream's, so its state dict loads strictly (535 tensors). The 24
``relative_position_index`` buffers are graph constants: they are recomputed here, and a port
checks the source's copies equal them. The ``sideout1–5`` heads exist upstream (training-time
side outputs) but forward never calls them; they are kept so names stay identical and listed as
unused in every port's report. Attention is written out (matmul + softmax) instead of using
``nn.MultiheadAttention``, whose eval fast path is a fused kernel an NPU may lack; parameter
names are the same.

Input: ``x`` [B, 3, H, W] float32, RGB normalised with the ImageNet mean/std; upstream's
contract is H = W = 1024 (any multiple of 128 works). Output: alpha [B, 1, H, W] in [0, 1].
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from porter.errors import MappingError
from porter.zoo.load import ZooModel

__all__ = ["BEN2", "SwinTransformer", "MCLM", "MCRM", "CrossAttention", "BEN2_CONFIG",
           "REDUCED_CONFIG", "preprocess", "postprocess", "infer_config",
           "relative_position_index", "BEN2_FROM_TORCH", "IMAGENET_MEAN", "IMAGENET_STD"]

#: The released BEN2 Base configuration.
BEN2_CONFIG: dict[str, Any] = {"embed_dim": 128, "depths": (2, 2, 18, 2),
                               "num_heads": (4, 8, 16, 32), "window_size": 12,
                               "mlp_ratio": 4.0, "dec_dim": 128, "mask_dim": 384}
#: A small configuration with the same structure, for fast tests.
REDUCED_CONFIG: dict[str, Any] = {"embed_dim": 32, "depths": (2, 2, 2, 2),
                                  "num_heads": (1, 2, 4, 8), "window_size": 7,
                                  "mlp_ratio": 4.0, "dec_dim": 32, "mask_dim": 48}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 1024
MCLM_POOLS = (1, 4, 8)
MCRM_POOLS = (2, 4, 8)


# ---------------------------------------------------------------------------------------------
# Swin backbone
# ---------------------------------------------------------------------------------------------
def relative_position_index(window: int) -> torch.Tensor:
    """[w², w²] index into the (2w-1)² bias table for each pair of tokens of a window."""
    return _relative_position_index(window).clone()


@functools.lru_cache(maxsize=8)
def _relative_position_index(window: int) -> torch.Tensor:
    # computed on the CPU even inside a ``torch.device("meta")`` block: it is a constant
    r = torch.arange(window, device="cpu")
    coords = torch.stack(torch.meshgrid(r, r, indexing="ij")).flatten(1)   # 2, w²
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # w², w², 2
    return (rel[..., 0] + window - 1) * (2 * window - 1) + (rel[..., 1] + window - 1)


def window_partition(x: torch.Tensor, w: int) -> torch.Tensor:
    """[B, H, W, C] -> [B·(H/w)·(W/w), w, w, C]."""
    b, h, wd, c = x.shape
    x = x.view(b, h // w, w, wd // w, w, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, w, w, c)


def window_reverse(windows: torch.Tensor, w: int, h: int, wd: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`."""
    b = windows.shape[0] // ((h // w) * (wd // w))
    x = windows.view(b, h // w, wd // w, w, w, -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, h, wd, -1)


class Mlp(nn.Module):
    """Linear -> GELU -> Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside one window, with a learned relative position bias."""

    def __init__(self, dim: int, window: int, heads: int) -> None:
        super().__init__()
        self.window, self.heads = window, heads
        self.scale = (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(b // nw, nw, self.heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.heads, n, n)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class SwinBlock(nn.Module):
    """(Shifted-)window attention and an MLP, each pre-normed with a residual."""

    def __init__(self, dim: int, heads: int, window: int, shift: int, mlp_ratio: float) -> None:
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, h: int, w: int, mask: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        ws = self.window
        y = self.norm1(x).view(b, h, w, c)
        pad_r, pad_b = (ws - w % ws) % ws, (ws - h % ws) % ws
        y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))  # windows tile the padded map
        hp, wp = y.shape[1], y.shape[2]
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        win = window_partition(y, ws).reshape(-1, ws * ws, c)
        win = self.attn(win, mask if self.shift else None)
        y = window_reverse(win.reshape(-1, ws, ws, c), ws, hp, wp)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        y = y[:, :h, :w, :].reshape(b, h * w, c)
        x = x + y
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2x2 neighbourhood -> 4C channels -> LayerNorm -> Linear to 2C (halves H and W)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, _, c = x.shape
        x = x.view(b, h, w, c)
        if h % 2 or w % 2:
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


def shift_mask(h: int, w: int, window: int, shift: int, device: torch.device,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[nW, w², w²] additive mask (0 / -100) keeping shifted windows from mixing regions."""
    hp, wp = math.ceil(h / window) * window, math.ceil(w / window) * window
    # region labels in numpy: a constant of the size (an exported graph holds it as one), and
    # no in-place writes that torch.onnx cannot take when a region is empty (maps <= window)
    img = np.zeros((1, hp, wp, 1), dtype=np.float32)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for hs in cuts:
        for ws in cuts:
            img[:, hs, ws, :] = label
            label += 1
    win = window_partition(torch.from_numpy(img).to(device), window).reshape(-1, window * window)
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0).to(dtype)


class BasicLayer(nn.Module):
    """One Swin stage: alternating plain and shifted blocks, then patch merging."""

    def __init__(self, dim: int, depth: int, heads: int, window: int, mlp_ratio: float,
                 downsample: bool) -> None:
        super().__init__()
        self.window, self.shift = window, window // 2
        self.blocks = nn.ModuleList(
            SwinBlock(dim, heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio)
            for i in range(depth))
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        mask = shift_mask(h, w, self.window, self.shift, x.device, x.dtype)
        for blk in self.blocks:
            x = blk(x, h, w, mask)
        down = self.downsample(x, h, w) if self.downsample is not None else x
        return x, down


class PatchEmbed(nn.Module):
    """Stride-4 convolution to tokens, then LayerNorm."""

    def __init__(self, dim: int, patch: int = 4) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(3, dim, patch, patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        p = self.patch
        if w % p or h % p:
            x = F.pad(x, (0, (p - w % p) % p, 0, (p - h % p) % p))
        x = self.proj(x)
        b, c, hh, ww = x.shape
        return self.norm(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, c, hh, ww)


class SwinTransformer(nn.Module):
    """Swin backbone returning the patch embedding and the four normed stage outputs (NCHW)."""

    def __init__(self, embed_dim: int, depths: Sequence[int], num_heads: Sequence[int],
                 window_size: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(embed_dim)
        n = len(depths)
        self.num_features = [embed_dim * 2 ** i for i in range(n)]
        self.layers = nn.ModuleList(
            BasicLayer(self.num_features[i], depths[i], num_heads[i], window_size, mlp_ratio,
                       downsample=i < n - 1) for i in range(n))
        for i in range(n):
            self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i]))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        h, w = x.shape[2], x.shape[3]
        outs = [x]
        x = x.flatten(2).transpose(1, 2)
        for i, layer in enumerate(self.layers):
            out, x = layer(x, h, w)
            out = getattr(self, f"norm{i}")(out)
            outs.append(out.view(-1, h, w, self.num_features[i]).permute(0, 3, 1, 2))
            h, w = (h + 1) // 2, (w + 1) // 2
        return outs


# ---------------------------------------------------------------------------------------------
# Decoder blocks
# ---------------------------------------------------------------------------------------------
def image_to_patches(x: torch.Tensor) -> torch.Tensor:
    """[B, C, 2h, 2w] -> [4B, C, h, w], patches ordered (row, column, batch).

    Sizes as ints: traced as shape arithmetic, the exporter loses the static sizes that the
    adaptive pooling after it needs."""
    b, c, hh, ww = (int(d) for d in x.shape)
    x = x.view(b, c, 2, hh // 2, 2, ww // 2).permute(2, 4, 0, 1, 3, 5)
    return x.reshape(4 * b, c, hh // 2, ww // 2)


def patches_to_image(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`image_to_patches`."""
    n, c, h, w = (int(d) for d in x.shape)
    x = x.view(2, 2, n // 4, c, h, w).permute(2, 3, 0, 4, 1, 5)
    return x.reshape(n // 4, c, 2 * h, 2 * w)


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [H·W, B, C] (sequence first, as the attention blocks take it)."""
    return x.flatten(2).permute(2, 0, 1)


def sine_position(h: int, w: int, dim: int, device: torch.device,
                  dtype: torch.dtype = torch.float32, temperature: float = 10000.0
                  ) -> torch.Tensor:
    """DETR's normalised 2-D sine embedding, [H·W, 1, 2·dim] (y features, then x)."""
    ones = torch.ones((1, h, w), dtype=torch.float32, device=device)
    y, x = ones.cumsum(1), ones.cumsum(2)
    scale, eps = 2 * math.pi, 1e-6
    y = (y - 0.5) / (y[:, -1:, :] + eps) * scale
    x = (x - 0.5) / (x[:, :, -1:] + eps) * scale
    dim_t = torch.arange(dim, dtype=torch.float32, device=device)
    dim_t = temperature ** (2 * (dim_t // 2) / dim)
    px, py = x[..., None] / dim_t, y[..., None] / dim_t
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).flatten(3)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((py, px), dim=3).permute(0, 3, 1, 2).flatten(2).permute(2, 0, 1).to(dtype)


class CrossAttention(nn.Module):
    """Multi-head attention over [L, B, C] sequences with ``nn.MultiheadAttention``'s names
    (``in_proj_weight``/``in_proj_bias``/``out_proj``), written as plain matmul + softmax."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        lq, b, c = q.shape
        lk = k.shape[0]
        hd = c // self.heads
        wq, wk, wv = self.in_proj_weight.chunk(3)
        bq, bk, bv = self.in_proj_bias.chunk(3)
        q = F.linear(q, wq, bq).reshape(lq, b * self.heads, hd).transpose(0, 1)
        k = F.linear(k, wk, bk).reshape(lk, b * self.heads, hd).transpose(0, 1)
        v = F.linear(v, wv, bv).reshape(lk, b * self.heads, hd).transpose(0, 1)
        attn = ((q * hd ** -0.5) @ k.transpose(1, 2)).softmax(dim=-1)
        out = (attn @ v).transpose(0, 1).reshape(lq, b, c)
        return self.out_proj(out)


class _FeedForward(nn.Module):
    """Shared shape of MCLM/MCRM: residual attention output, norm, residual MLP, norm."""

    def _ffn(self, x: torch.Tensor, attended: torch.Tensor, fc_in: nn.Linear,
             fc_out: nn.Linear) -> torch.Tensor:
        x = self.norm1(x + attended)
        return self.norm2(x + fc_out(self.activation(fc_in(x))))


def _pooled(h: Any, w: Any, r: int) -> tuple[int, int]:
    """The pooled grid for ratio ``r``. ``int()``: under torch.onnx tracing sizes are 0-d
    tensors, which ``round()`` refuses; the grid is a constant of the input size either way
    (ONNX has no adaptive pooling, the exporter needs it static)."""
    return round(int(h) / r), round(int(w) / r)


class MCLM(_FeedForward):
    """Multi-field cross-attention: global view <-> pooled local patches, both directions."""

    def __init__(self, dim: int, heads: int = 1, pool_ratios: Sequence[int] = MCLM_POOLS) -> None:
        super().__init__()
        self.attention = nn.ModuleList(CrossAttention(dim, heads) for _ in range(5))
        self.linear1 = nn.Linear(dim, dim * 2)
        self.linear2 = nn.Linear(dim * 2, dim)
        self.linear3 = nn.Linear(dim, dim * 2)
        self.linear4 = nn.Linear(dim * 2, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.activation = nn.GELU()
        self.pool_ratios = tuple(pool_ratios)
        self.dim = dim

    def forward(self, loc: torch.Tensor, glb: torch.Tensor) -> torch.Tensor:
        """loc [4, C, h, w] (the patches), glb [1, C, h, w] -> [5, C, h, w]."""
        _, c, h, w = loc.shape
        whole = patches_to_image(loc)
        pools, poses = [], []
        for r in self.pool_ratios:
            pool = F.adaptive_avg_pool2d(whole, _pooled(h, w, r))
            pools.append(to_tokens(pool))
            poses.append(sine_position(pool.shape[2], pool.shape[3], self.dim // 2, loc.device,
                                       loc.dtype))
        pools_t, pos_t = torch.cat(pools, 0), torch.cat(poses, 0)
        g = to_tokens(glb)
        g_pos = sine_position(glb.shape[2], glb.shape[3], self.dim // 2, loc.device, loc.dtype)
        g = self._ffn(g, self.attention[0](g + g_pos, pools_t + pos_t, pools_t),
                      self.linear1, self.linear2)
        # each patch attends to its quarter of the refreshed global view
        quarters = g.view(2, h // 2, 2, w // 2, 1, c).permute(1, 3, 0, 2, 4, 5)
        quarters = quarters.reshape(h * w // 4, 4, c)
        l_seq = to_tokens(loc)
        out = torch.cat([self.attention[i + 1](l_seq[:, i:i + 1], quarters[:, i:i + 1],
                                               quarters[:, i:i + 1]) for i in range(4)], 1)
        l_seq = self._ffn(l_seq, out, self.linear3, self.linear4)
        both = torch.cat((l_seq, g), 1)  # [h·w, 5, C]
        return both.permute(1, 2, 0).reshape(5, c, h, w)


class MCRM(_FeedForward):
    """Multi-field cross-refinement: saliency-gated patches attend to pools of the global view."""

    def __init__(self, dim: int, heads: int = 1, pool_ratios: Sequence[int] = MCRM_POOLS) -> None:
        super().__init__()
        self.attention = nn.ModuleList(CrossAttention(dim, heads) for _ in range(4))
        self.linear3 = nn.Linear(dim, dim * 2)
        self.linear4 = nn.Linear(dim * 2, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.activation = nn.GELU()
        self.sal_conv = nn.Conv2d(dim, 1, 1)
        self.pool_ratios = tuple(pool_ratios)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [5, C, h, w] (4 patches + global) -> [5, C, h, w]."""
        _, c, h, w = x.shape
        loc, glb = x[:4], x[4:]
        glb_patches = image_to_patches(glb)
        saliency = torch.sigmoid(self.sal_conv(glb))
        saliency = F.interpolate(saliency, size=(2 * h, 2 * w), mode="nearest")
        loc = loc * image_to_patches(saliency)
        pools = torch.cat([F.adaptive_avg_pool2d(glb_patches, _pooled(h, w, r))
                           .flatten(2) for r in self.pool_ratios], 2)  # [4, C, N]
        pools = pools.permute(0, 2, 1).unsqueeze(2)            # [4, N, 1, C]
        queries = loc.flatten(2).permute(0, 2, 1).unsqueeze(2)  # [4, h·w, 1, C]
        out = torch.cat([self.attention[i](queries[i], pools[i], pools[i]) for i in range(4)], 1)
        src = self._ffn(loc.reshape(4, c, -1).permute(2, 0, 1), out, self.linear3, self.linear4)
        src = src.permute(1, 2, 0).reshape(4, c, h, w)
        glb = glb + F.interpolate(patches_to_image(src), size=(h, w), mode="nearest")
        return torch.cat((src, glb), 0)


def conv_in_gelu(cin: int, cout: int) -> nn.Sequential:
    """conv3x3 -> InstanceNorm (no affine) -> GELU (upstream's make_cbr / make_cbg)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.InstanceNorm2d(cout), nn.GELU())


def _bilinear_as(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear")


def _nearest_x2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------
class BEN2(nn.Module, ZooModel):
    """BEN2 Base inference network: ``forward(x) -> alpha``; see the module docstring."""

    def __init__(self, embed_dim: int = 128, depths: Sequence[int] = (2, 2, 18, 2),
                 num_heads: Sequence[int] = (4, 8, 16, 32), window_size: int = 12,
                 mlp_ratio: float = 4.0, dec_dim: int = 128, mask_dim: int = 384) -> None:
        super().__init__()
        self.config = {"embed_dim": embed_dim, "depths": tuple(depths),
                       "num_heads": tuple(num_heads), "window_size": window_size,
                       "mlp_ratio": mlp_ratio, "dec_dim": dec_dim, "mask_dim": mask_dim}
        self.backbone = SwinTransformer(embed_dim, depths, num_heads, window_size, mlp_ratio)
        feats = [embed_dim, *self.backbone.num_features]  # patch embedding, stages 1-4
        d = dec_dim
        for i in range(5, 0, -1):  # unused by forward; kept for upstream's names
            self.add_module(f"sideout{i}", nn.Sequential(nn.Conv2d(d, 1, 3, padding=1)))
        for i in range(5, 0, -1):
            self.add_module(f"output{i}", conv_in_gelu(feats[i - 1], d))
        self.multifieldcrossatt = MCLM(d, 1, MCLM_POOLS)
        for i in range(1, 5):
            self.add_module(f"conv{i}", conv_in_gelu(d, d))
        for i in range(1, 5):
            self.add_module(f"dec_blk{i}", MCRM(d, 1, MCRM_POOLS))
        self.insmask_head = nn.Sequential(
            nn.Conv2d(d, mask_dim, 3, padding=1), nn.InstanceNorm2d(mask_dim), nn.GELU(),
            nn.Conv2d(mask_dim, mask_dim, 3, padding=1), nn.InstanceNorm2d(mask_dim), nn.GELU(),
            nn.Conv2d(mask_dim, d, 3, padding=1))
        self.shallow = nn.Sequential(nn.Conv2d(3, d, 3, padding=1))
        self.upsample1 = conv_in_gelu(d, d)
        self.upsample2 = conv_in_gelu(d, d)
        self.output = nn.Sequential(nn.Conv2d(d, 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] normalised RGB -> [B, 1, H, W] alpha (H, W multiples of 128)."""
        b = x.shape[0]
        shallow = self.shallow(x)
        glb = F.interpolate(x, scale_factor=0.5, mode="bilinear")
        views = torch.cat([torch.cat((image_to_patches(x[i:i + 1]), glb[i:i + 1]), 0)
                           for i in range(b)], 0)  # per image: 4 patches, then the global view
        feats = self.backbone(views)
        return torch.cat([self._decode([f[5 * i:5 * i + 5] for f in feats], shallow[i:i + 1])
                          for i in range(b)], 0)

    def _decode(self, f: list[torch.Tensor], shallow: torch.Tensor) -> torch.Tensor:
        e1, e2, e3, e4, e5 = (getattr(self, f"output{i + 1}")(f[i]) for i in range(5))
        e = self.multifieldcrossatt(e5[:4], e5[4:])
        for i, skip in ((4, e4), (3, e3), (2, e2), (1, e1)):
            e = getattr(self, f"conv{i}")(getattr(self, f"dec_blk{i}")(skip + _bilinear_as(e, skip)))
        whole = patches_to_image(e[:4])
        whole = whole + _bilinear_as(e[4:], whole)
        y = self.insmask_head(whole)
        y = y + _bilinear_as(shallow, y)
        y = self.upsample1(_nearest_x2(y))
        y = _nearest_x2(y + _bilinear_as(shallow, y))
        y = self.output(self.upsample2(y))
        return torch.sigmoid(y)

    def constructor_kwargs(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.config.items()}


def preprocess(image: np.ndarray, size: int = INPUT_SIZE) -> torch.Tensor:
    """uint8 HxWx3 RGB -> [1, 3, size, size]: Lanczos resize, [0, 1], ImageNet mean/std
    (upstream's ``rgb_loader_refiner`` + ``img_transform32``)."""
    from PIL import Image

    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {image.shape}")
    img = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).resize(
        (size, size), resample=Image.LANCZOS)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((x - mean) / std)[None].contiguous()


def postprocess(alpha: torch.Tensor, height: int, width: int) -> np.ndarray:
    """[1, 1, h, w] alpha -> uint8 HxW mask at the original size, min-max stretched like
    upstream's ``postprocess_image``."""
    a = F.interpolate(alpha.float(), size=(height, width), mode="bilinear")[0, 0]
    lo, hi = a.min(), a.max()
    a = (a - lo) / (hi - lo) if float(hi - lo) > 0 else torch.zeros_like(a)
    return (a * 255).numpy().astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# Recipe and configuration inference
# ---------------------------------------------------------------------------------------------
def _recipe():
    from porter.mapping.recipe import Recipe

    return Recipe(name="ben2_from_torch", rules=[(r"^(.+)$", r"\1")])


BEN2_FROM_TORCH = _recipe()
_BLOCK = re.compile(r"^backbone\.layers\.(\d+)\.blocks\.(\d+)\.")


def infer_config(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
    """BEN2 constructor kwargs from tensor names -> shapes; MappingError if not a BEN2."""
    need = ("backbone.patch_embed.proj.weight", "multifieldcrossatt.attention.0.in_proj_weight",
            "insmask_head.0.weight", "output.0.weight", "dec_blk1.sal_conv.weight")
    missing = [n for n in need if n not in shapes]
    if missing:
        raise MappingError(f"ben2: not a BEN2 state dict (no {', '.join(missing)})")
    embed = int(shapes["backbone.patch_embed.proj.weight"][0])
    blocks: dict[int, int] = {}
    for name in shapes:
        if m := _BLOCK.match(name):
            i, j = int(m.group(1)), int(m.group(2))
            blocks[i] = max(blocks.get(i, 0), j + 1)
    if not blocks or sorted(blocks) != list(range(len(blocks))):
        raise MappingError("ben2: backbone stages are missing or out of order")
    depths = tuple(blocks[i] for i in range(len(blocks)))
    heads, window = [], None
    for i in range(len(depths)):
        rows, h = shapes[f"backbone.layers.{i}.blocks.0.attn.relative_position_bias_table"]
        side = math.isqrt(rows)
        if side * side != rows or side % 2 == 0:
            raise MappingError(f"ben2: stage {i} bias table has {rows} rows, not (2w-1)²")
        window = window or (side + 1) // 2
        heads.append(int(h))
    hidden = shapes["backbone.layers.0.blocks.0.mlp.fc1.weight"][0]
    return {"embed_dim": embed, "depths": depths, "num_heads": tuple(heads),
            "window_size": int(window), "mlp_ratio": float(hidden) / embed,
            "dec_dim": int(shapes["output.0.weight"][1]),
            "mask_dim": int(shapes["insmask_head.0.weight"][0])}


def check_position_indices(tensors: Mapping[str, Any], window: int) -> int:
    """Compare every ``relative_position_index`` of the source with the recomputed one."""
    want = relative_position_index(window).numpy()
    n = 0
    for name, ref in tensors.items():
        if name.endswith("attn.relative_position_index"):
            got = ref.numpy() if hasattr(ref, "numpy") else np.asarray(ref)
            if got.shape != want.shape or not np.array_equal(got.astype(np.int64), want):
                raise MappingError(f"ben2: {name} differs from the window-{window} relative "
                                   "position index (not a standard Swin window)")
            n += 1
    return n


def build(config: Mapping[str, Any], device: str | None = None) -> BEN2:
    """An untrained BEN2 with ``config`` (on ``device``; "meta" allocates nothing)."""
    with torch.device(device or "cpu"):
        return BEN2(**config)


# ---------------------------------------------------------------------------------------------
# Port registration: PyTorch checkpoints and safetensors of BEN_Base
# ---------------------------------------------------------------------------------------------
FORMATS = ("torch-checkpoint", "safetensors")
SIDEOUTS = tuple(f"sideout{i}" for i in range(1, 6))
#: Where a port looks for the upstream network when none is given: "file.py:callable".
UPSTREAM_ENV = "PORTER_UPSTREAM"


def _shapes(source: Any) -> dict[str, tuple[int, ...]]:
    return {n: tuple(t.shape) for n, t in source.tensors.items()}


@functools.lru_cache(maxsize=4)
def _expected_shapes(config_items: tuple) -> dict[str, tuple[int, ...]]:
    module = build(dict(config_items), "meta")
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _matches(source: Any) -> bool:
    """Exact match: a BEN2 configuration whose state dict has exactly these names and shapes."""
    shapes = _shapes(source)
    try:
        config = infer_config(shapes)
        want = _expected_shapes(tuple(sorted(config.items())))
    except (MappingError, KeyError, ValueError, TypeError):
        return False
    return want == shapes


def _float32_view(tensors: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, int]]:
    """Floating tensors stored in half/bfloat16 (a common way to publish) widened to float32,
    the module's dtype, lazily and exactly; others untouched. Returns (tensors, counts)."""
    from porter.source import TensorRef

    out: dict[str, Any] = {}
    widened: dict[str, int] = {}
    for name, ref in tensors.items():
        dt = np.dtype(ref.dtype)
        if dt != np.float32 and (dt.kind == "f" or dt.name in ("bfloat16",)) and \
                not name.endswith("relative_position_index"):
            widened[dt.name] = widened.get(dt.name, 0) + 1
            out[name] = TensorRef(name, tuple(ref.shape), np.dtype(np.float32),
                                  lambda r=ref: r.numpy().astype(np.float32), ref.kind)
        else:
            out[name] = ref
    return out, widened


def _port(source: Any, **options: Any):
    from porter.graphs import Ported
    from porter.mapping.recipe import load_strict

    if options:
        raise MappingError(f"ben2: unknown port options {sorted(options)}")
    config = infer_config(_shapes(source))
    module = build(config, "meta")
    n_index = check_position_indices(source.tensors, config["window_size"])
    tensors, widened = _float32_view(source.tensors)
    state, report = BEN2_FROM_TORCH.apply(tensors, module)
    if widened:
        report.notes.append(f"{sum(widened.values())} tensors widened exactly to float32 "
                            f"(stored as {', '.join(sorted(widened))})")
    load_strict(module, state, assign=True).eval()
    unused = sum(1 for n in source.tensors if n.split(".")[0] in SIDEOUTS)
    report.notes.append(f"BEN2({', '.join(f'{k}={v!r}' for k, v in config.items())})")
    report.notes.append(f"{n_index} relative_position_index buffers equal the recomputed "
                        f"window-{config['window_size']} index")
    report.notes.append(f"{unused} tensors of {', '.join(SIDEOUTS)} loaded but unused by "
                        "forward (upstream's training-time side outputs)")
    meta = getattr(source, "meta", {})
    if meta.get("branch") or meta.get("dropped") or meta.get("prefix_stripped"):
        report.notes.append(f"checkpoint branch {meta.get('branch') or '(top level)'!r}; "
                            f"dropped {meta.get('dropped') or {}}; prefix stripped "
                            f"{meta.get('prefix_stripped') or 'none'}")
    kwargs = module.constructor_kwargs()
    return Ported(module=module, graph="porter.graphs.ben2:BEN2", kwargs=kwargs,
                  mapping=report, input_names=["x"], output_names=["alpha"])


def _case_shapes(ported: Any) -> list[tuple[int, ...]]:
    if ported.kwargs.get("embed_dim") == BEN2_CONFIG["embed_dim"] and \
            tuple(ported.kwargs.get("depths", ())) == BEN2_CONFIG["depths"]:
        return [(1, 3, INPUT_SIZE, INPUT_SIZE)]  # upstream's contract; ~90 s a side on 2 cores
    return [(1, 3, 384, 384), (2, 3, 256, 384)]  # reduced configurations: quick shapes


def _cases(source: Any, ported: Any) -> list:
    """Normalised-image-like inputs (ImageNet statistics put pixels in about [-2.1, 2.6])."""
    from porter.verification.parity import random_cases

    return random_cases("x", _case_shapes(ported), seed=0, low=-2.0, high=2.5)


def upstream_spec(source: Any) -> str:
    """The upstream network to verify against: ``source.meta['upstream']`` or $PORTER_UPSTREAM."""
    import os

    from porter.errors import PorterError

    spec = (getattr(source, "meta", {}) or {}).get("upstream") or os.environ.get(UPSTREAM_ENV)
    if not spec:
        raise PorterError("ben2: parity for a PyTorch-native model runs the upstream network; "
                          "name it with --upstream FILE.py:CLASS (e.g. BEN2.py:BEN_Base) or "
                          f"${UPSTREAM_ENV}, or use --verify none")
    return str(spec)


def _reference(source: Any, ported: Any):
    from porter.verification.runtimes.torch_upstream import UpstreamRunner

    return UpstreamRunner(upstream_spec(source), source.tensors, ["x"], ["alpha"],
                          kwargs=ported.kwargs)


def _example_inputs(ported: Any) -> tuple:
    return (torch.zeros(_case_shapes(ported)[0]),)


def _register() -> None:
    from porter.graphs import GraphPort, register_port
    from porter.verification.parity import Tolerance

    register_port(GraphPort(
        name="ben2", formats=FORMATS, graph="porter.graphs.ben2:BEN2",
        matches=_matches, port=_port, cases=_cases, reference=_reference,
        example_inputs=_example_inputs, reference_name="torch-upstream",
        tolerance=Tolerance(max_abs=1e-4),
        description="BEN2 Base background erasure (Swin-B + MCLM/MCRM) from BEN2_Base.pth or "
                    "model.safetensors",
        aliases=("ben2_base", "ben_base")))


_register()
