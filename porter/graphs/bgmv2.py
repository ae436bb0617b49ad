"""BackgroundMattingV2: real-time high-resolution background matting (Lin, Ryabtsev, Sengupta,
Curless, Seitz, Kemelmacher-Shlizerman, "Real-Time High-Resolution Background Matting",
CVPR 2021).

Origin: the original PyTorch release (PeterL1n/BackgroundMattingV2, MIT licence) and its Paddle
reproduction (zackzhao1/BackgroundMattingV2-paddle), whose ``.pdparams`` use the same names
except BatchNorm statistics (``._mean``/``._variance``). This file is porter's own clean
re-implementation of the inference network:

- ``MattingBase``: a ResNet-50/101 (dilated layer4) or MobileNetV2 (dilated tail) encoder fed
  ``cat(src, bgr)`` (6 channels), ASPP (rates 3, 6, 9) and a 4-stage decoder to 37 channels:
  pha (1), foreground residual (3), error (1), hidden features (32), all at full size.
- ``MattingRefine``: the base network at ``backbone_scale``, then a refiner that recomputes
  4x4-pixel patches of the full-size output where the predicted error is high ("sampling": the
  top ``sample_pixels // 16`` cells of the quarter-size error map; "thresholding": error >
  threshold; "full": every patch, as one dense convolution).

Parameter names follow the original PyTorch release, so its state dict loads with the identity
recipe :data:`BGMV2_FROM_TORCH`; the Paddle reproduction loads with :data:`BGMV2_FROM_PADDLE`.
The maths are the original's, not the Paddle reproduction's defects (its ``prevent_oversampling``
is a no-op and its patch replacement writes through a transposed view). One deliberate change: a
``sample_pixels`` budget larger than the image refines every cell instead of failing in topk.

Input: ``src``, ``bgr`` float32 [B, 3, H, W], RGB in [0, 1] (no mean/std); MattingRefine needs H
and W divisible by 4. Outputs: see :class:`MattingBase` and :class:`MattingRefine`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from porter import graphs
from porter.errors import MappingError
from porter.mapping.layouts_paddle import BATCHNORM_FILL, BATCHNORM_RULES
from porter.mapping.recipe import Recipe, load_strict
from porter.verification.parity import Case, Runner, Tolerance
from porter.zoo.load import ZooModel

__all__ = ["MattingBase", "MattingRefine", "Refiner", "ResNetEncoder", "MobileNetV2Encoder",
           "ASPP", "Decoder", "BGMV2_FROM_PADDLE", "BGMV2_FROM_TORCH", "RECIPES",
           "REFINE_DEFAULTS", "infer_kwargs", "build", "port_tensors", "make_inputs",
           "paddle_reference"]

BACKBONES = ("resnet50", "resnet101", "mobilenetv2")
REFINE_MODES = ("full", "sampling", "thresholding")
_RESNET_BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
# MobileNetV2 inverted-residual settings: expansion t, out channels c, repeats n, first stride s.
_MOBILENETV2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))
BASE_OUTPUTS = ("pha", "fgr", "err", "hid")
REFINE_OUTPUTS = ("pha", "fgr", "pha_sm", "fgr_sm", "err_sm", "ref_sm")


# ---------------------------------------------------------------------------------------------
# Blocks: encoders
# ---------------------------------------------------------------------------------------------
class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3 conv), expansion 4."""

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        cout = planes * 4
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNetEncoder(nn.Module):
    """ResNet-50/101 with a 6-channel stem and a dilated layer4 (output stride 16).

    Returns (x4 2048@1/16, x3 512@1/8, x2 256@1/4, x1 64@1/2, x0 input).
    """

    def __init__(self, in_channels: int, variant: str = "resnet50") -> None:
        super().__init__()
        blocks = _RESNET_BLOCKS[variant]
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self._cin, self._dilation = 64, 1
        self.layer1 = self._layer(64, blocks[0], 1)
        self.layer2 = self._layer(128, blocks[1], 2)
        self.layer3 = self._layer(256, blocks[2], 2)
        self.layer4 = self._layer(512, blocks[3], 2, dilate=True)

    def _layer(self, planes: int, n: int, stride: int, dilate: bool = False) -> nn.Sequential:
        first_dilation = self._dilation
        if dilate:  # torchvision's replace_stride_with_dilation: the stride becomes dilation
            self._dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self._cin != planes * 4:
            downsample = nn.Sequential(nn.Conv2d(self._cin, planes * 4, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * 4))
        layers = [Bottleneck(self._cin, planes, stride, first_dilation, downsample)]
        self._cin = planes * 4
        layers += [Bottleneck(self._cin, planes, 1, self._dilation) for _ in range(1, n)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x0 = x
        x1 = self.relu(self.bn1(self.conv1(x)))
        x2 = self.layer1(self.maxpool(x1))
        x3 = self.layer2(x2)
        x4 = self.layer4(self.layer3(x3))
        return x4, x3, x2, x1, x0


def _conv_bn_relu6(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                   dilation: int = 1) -> nn.Sequential:
    pad = (kernel - 1) // 2 * dilation
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, pad, dilation, groups=groups, bias=False),
        nn.BatchNorm2d(cout), nn.ReLU6())


class InvertedResidual(nn.Module):
    """MobileNetV2 block: (expand 1x1) -> depthwise 3x3 -> project 1x1 (+ input if shapes match)."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int,
                 dilation: int = 1) -> None:
        super().__init__()
        hidden = cin * expansion
        self.use_residual = stride == 1 and cin == cout
        layers = [] if expansion == 1 else [_conv_bn_relu6(cin, hidden, 1)]
        layers += [_conv_bn_relu6(hidden, hidden, 3, stride, hidden, dilation),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2Encoder(nn.Module):
    """MobileNetV2 ``features[0:18]`` with a 6-channel stem, output stride 16.

    As in the original: block 14 loses its stride and blocks 15-17 use dilation 2.
    Returns (x4 320@1/16, x3 32@1/8, x2 24@1/4, x1 16@1/2, x0 input).
    """

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        features: list[nn.Module] = [_conv_bn_relu6(in_channels, 32, 3, 2)]
        cin = 32
        for t, c, n, s in _MOBILENETV2:
            for i in range(n):
                index = len(features)
                stride = s if i == 0 and index != 14 else 1
                features.append(InvertedResidual(cin, c, stride, t, 2 if index >= 15 else 1))
                cin = c
        self.features = nn.Sequential(*features)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        taps = {1: 1, 3: 2, 6: 3, 17: 4}  # feature index -> output level
        out: list[torch.Tensor] = [x]
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in taps:
                out.append(x)
        return tuple(reversed(out))


# ---------------------------------------------------------------------------------------------
# Blocks: ASPP, decoder, refiner
# ---------------------------------------------------------------------------------------------
def _conv_bn_relu(cin: int, cout: int, kernel: int, dilation: int = 1) -> list[nn.Module]:
    pad = (kernel - 1) // 2 * dilation
    return [nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU()]


class ASPPPooling(nn.Sequential):
    """Image-level branch: global average, 1x1 conv-BN-ReLU, broadcast back to the input size."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(cin, cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return F.interpolate(super().forward(x), size=size, mode="bilinear",
                             align_corners=False)


class ASPP(nn.Module):
    """DeepLabV3 atrous spatial pyramid pooling (1x1, three dilated 3x3, image pooling)."""

    def __init__(self, cin: int, rates: tuple[int, int, int] = (3, 6, 9),
                 cout: int = 256) -> None:
        super().__init__()
        branches = [nn.Sequential(*_conv_bn_relu(cin, cout, 1))]
        branches += [nn.Sequential(*_conv_bn_relu(cin, cout, 3, r)) for r in rates]
        branches.append(ASPPPooling(cin, cout))
        self.convs = nn.ModuleList(branches)
        # the original ends with Dropout(0.5): identity at inference, no parameters
        self.project = nn.Sequential(*_conv_bn_relu(len(branches) * cout, cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class Decoder(nn.Module):
    """Four upsample-concat-conv stages from 1/16 back to full size (last conv has a bias)."""

    def __init__(self, channels: tuple[int, ...], skips: tuple[int, ...]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(skips[0] + channels[0], channels[1], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[1])
        self.conv2 = nn.Conv2d(skips[1] + channels[1], channels[2], 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels[2])
        self.conv3 = nn.Conv2d(skips[2] + channels[2], channels[3], 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels[3])
        self.conv4 = nn.Conv2d(skips[3] + channels[3], channels[4], 3, padding=1, bias=True)
        self.relu = nn.ReLU()

    @staticmethod
    def _up_cat(x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[2:], mode="bilinear", align_corners=False)
        return torch.cat([x, skip], dim=1)

    def forward(self, x4: torch.Tensor, x3: torch.Tensor, x2: torch.Tensor, x1: torch.Tensor,
                x0: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(self._up_cat(x4, x3))))
        x = self.relu(self.bn2(self.conv2(self._up_cat(x, x2))))
        x = self.relu(self.bn3(self.conv3(self._up_cat(x, x1))))
        return self.conv4(self._up_cat(x, x0))


def crop_patches(x: torch.Tensor, idx: tuple[torch.Tensor, ...], size: int,
                 padding: int) -> torch.Tensor:
    """Patches [N, C, size+2p, size+2p] of ``x`` at grid cells ``idx`` = (batch, row, col).

    Cell (r, c) covers pixels [r*size, (r+1)*size) of ``x``, plus ``padding`` pixels of context
    on each side (zeros beyond the border).
    """
    if padding:
        x = F.pad(x, (padding,) * 4)
    k = size + 2 * padding
    windows = x.unfold(2, k, size).unfold(3, k, size)  # [B, C, rows, cols, k, k]
    return windows[idx[0], :, idx[1], idx[2]]


def replace_patches(x: torch.Tensor, patches: torch.Tensor,
                    idx: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """A copy of ``x`` [B, C, H, W] with its 4x4 cells at ``idx`` replaced by ``patches``."""
    b, c, h, w = x.shape
    out = x.clone().view(b, c, h // 4, 4, w // 4, 4)
    out[idx[0], :, idx[1], :, idx[2], :] = patches
    return out.view(b, c, h, w)


class Refiner(nn.Module):
    """Recomputes full-resolution pha/fgr on 4x4 patches selected from the error map."""

    def __init__(self, mode: str = "sampling", sample_pixels: int = 80_000,
                 threshold: float = 0.1, kernel_size: int = 3,
                 prevent_oversampling: bool = True) -> None:
        super().__init__()
        if mode not in REFINE_MODES:
            raise ValueError(f"refine mode {mode!r} not in {REFINE_MODES}")
        if kernel_size not in (1, 3):
            raise ValueError(f"refine kernel_size must be 1 or 3, got {kernel_size}")
        self.mode, self.sample_pixels, self.threshold = mode, sample_pixels, threshold
        self.kernel_size, self.prevent_oversampling = kernel_size, prevent_oversampling
        k = kernel_size
        self.conv1 = nn.Conv2d(32 + 4 + 6, 24, k, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.conv2 = nn.Conv2d(24, 16, k, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16 + 6, 12, k, bias=False)
        self.bn3 = nn.BatchNorm2d(12)
        self.conv4 = nn.Conv2d(12, 4, k, bias=True)
        self.relu = nn.ReLU()

    def select(self, err: torch.Tensor) -> torch.Tensor:
        """Refinement map [B, 1, h, w] (1 = refine) from the quarter-size error map."""
        if self.mode == "thresholding":
            return (err > self.threshold).to(err.dtype)
        b, _, h, w = err.shape
        flat = err.reshape(b, -1)
        k = min(self.sample_pixels // 16, flat.shape[1])
        ref = torch.zeros_like(flat).scatter_(1, flat.topk(k, dim=1, sorted=False).indices, 1.0)
        if self.prevent_oversampling:  # never refine where the error is exactly zero
            ref = ref * (flat > 0).to(flat.dtype)
        return ref.view(b, 1, h, w)

    def _stage1(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(x)))

    def _stage2(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv4(self.relu(self.bn3(self.conv3(x))))

    def forward(self, src: torch.Tensor, bgr: torch.Tensor, pha: torch.Tensor, fgr: torch.Tensor,
                err: torch.Tensor, hid: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h, w = src.shape[2:]
        half, quarter = (h // 2, w // 2), (h // 4, w // 4)
        src_bgr = torch.cat([src, bgr], dim=1)
        coarse = torch.cat([hid, pha, fgr], dim=1)
        three = self.kernel_size == 3
        if self.mode == "full":
            x = F.interpolate(coarse, half, mode="bilinear", align_corners=False)
            y = F.interpolate(src_bgr, half, mode="bilinear", align_corners=False)
            if three:
                x, y = F.pad(x, (3,) * 4), F.pad(y, (3,) * 4)
            x = self._stage1(torch.cat([x, y], dim=1))
            if three:
                x = F.interpolate(x, (h + 4, w + 4), mode="nearest")
                y = F.pad(src_bgr, (2,) * 4)
            else:
                x = F.interpolate(x, (h, w), mode="nearest")
                y = src_bgr
            out = self._stage2(torch.cat([x, y], dim=1))
            ref = src.new_ones((src.shape[0], 1, *quarter))
            return out[:, :1], out[:, 1:], ref

        err = F.interpolate(err, quarter, mode="bilinear", align_corners=False)
        ref = self.select(err)
        out = F.interpolate(torch.cat([pha, fgr], dim=1), (h, w), mode="bilinear",
                            align_corners=False)
        # No branch on the patch count: with none selected every step runs on an empty batch.
        idx = tuple(torch.nonzero(ref.squeeze(1), as_tuple=True))
        x = F.interpolate(coarse, half, mode="bilinear", align_corners=False)
        y = F.interpolate(src_bgr, half, mode="bilinear", align_corners=False)
        x = crop_patches(x, idx, 2, 3 if three else 0)
        y = crop_patches(y, idx, 2, 3 if three else 0)
        x = self._stage1(torch.cat([x, y], dim=1))
        x = F.interpolate(x, size=(8, 8) if three else (4, 4), mode="nearest")
        y = crop_patches(src_bgr, idx, 4, 2 if three else 0)
        out = replace_patches(out, self._stage2(torch.cat([x, y], dim=1)), idx)
        return out[:, :1], out[:, 1:], ref


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------
class MattingBase(nn.Module, ZooModel):
    """Base network: ``(src, bgr) -> (pha, fgr, err, hid)``, all at the input size.

    pha [B,1,H,W] in [0,1]; fgr [B,3,H,W] = clip(residual + src); err [B,1,H,W] in [0,1];
    hid [B,32,H,W] (ReLU) are the hidden features the refiner consumes.
    """

    output_names = BASE_OUTPUTS

    def __init__(self, backbone: str = "resnet50") -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone {backbone!r} not in {BACKBONES}")
        self.backbone_name = backbone
        if backbone == "mobilenetv2":
            self.backbone: nn.Module = MobileNetV2Encoder(6)
            self.aspp = ASPP(320)
            self.decoder = Decoder((256, 128, 64, 48, 37), (32, 24, 16, 6))
        else:
            self.backbone = ResNetEncoder(6, backbone)
            self.aspp = ASPP(2048)
            self.decoder = Decoder((256, 128, 64, 48, 37), (512, 256, 64, 6))

    def _coarse(self, src: torch.Tensor, bgr: torch.Tensor) -> torch.Tensor:
        x, *skips = self.backbone(torch.cat([src, bgr], dim=1))
        return self.decoder(self.aspp(x), *skips)

    def forward(self, src: torch.Tensor, bgr: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self._coarse(src, bgr)
        pha = x[:, 0:1].clamp(0.0, 1.0)
        fgr = (x[:, 1:4] + src).clamp(0.0, 1.0)
        err = x[:, 4:5].clamp(0.0, 1.0)
        hid = x[:, 5:].relu()
        return pha, fgr, err, hid


class MattingRefine(MattingBase):
    """Base network at ``backbone_scale`` plus the patch refiner.

    ``(src, bgr) -> (pha, fgr, pha_sm, fgr_sm, err_sm, ref_sm)``: pha/fgr at the input size,
    the coarse pha/fgr/err at ``backbone_scale``, and the refinement map at 1/4 size.
    """

    output_names = REFINE_OUTPUTS

    def __init__(self, backbone: str = "resnet50", backbone_scale: float = 0.25,
                 refine_mode: str = "sampling", refine_sample_pixels: int = 80_000,
                 refine_threshold: float = 0.1, refine_kernel_size: int = 3,
                 refine_prevent_oversampling: bool = True) -> None:
        if not 0 < backbone_scale <= 0.5:
            raise ValueError(f"backbone_scale must be in (0, 0.5], got {backbone_scale}")
        super().__init__(backbone)
        self.backbone_scale = backbone_scale
        self.refiner = Refiner(refine_mode, refine_sample_pixels, refine_threshold,
                               refine_kernel_size, refine_prevent_oversampling)

    def forward(self, src: torch.Tensor, bgr: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if src.shape != bgr.shape:
            raise ValueError(f"src {tuple(src.shape)} and bgr {tuple(bgr.shape)} differ")
        if src.shape[2] % 4 or src.shape[3] % 4:
            raise ValueError(f"H and W must be divisible by 4, got {tuple(src.shape[2:])}")
        src_sm, bgr_sm = (F.interpolate(t, scale_factor=self.backbone_scale, mode="bilinear",
                                        align_corners=False, recompute_scale_factor=True)
                          for t in (src, bgr))
        x = self._coarse(src_sm, bgr_sm)
        pha_sm = x[:, 0:1].clamp(0.0, 1.0)
        fgr_sm = x[:, 1:4]
        err_sm = x[:, 4:5].clamp(0.0, 1.0)
        hid_sm = x[:, 5:].relu()
        pha, fgr, ref_sm = self.refiner(src, bgr, pha_sm, fgr_sm, err_sm, hid_sm)
        return (pha.clamp(0.0, 1.0), (fgr + src).clamp(0.0, 1.0), pha_sm,
                (fgr_sm + src_sm).clamp(0.0, 1.0), err_sm, ref_sm)


# ---------------------------------------------------------------------------------------------
# Recipes
# ---------------------------------------------------------------------------------------------
BGMV2_FROM_PADDLE = Recipe(
    name="bgmv2_from_paddle",
    rules=[
        *BATCHNORM_RULES,  # ._mean -> .running_mean, ._variance -> .running_var
        # Every other Paddle name is the PyTorch name; torch-only BN names must not pass here.
        (r"^(?!.*\.(running_mean|running_var|num_batches_tracked)$)(.+)$", r"\2"),
    ],
    fill=dict(BATCHNORM_FILL),  # num_batches_tracked = 0 (Paddle keeps no counter)
)

BGMV2_FROM_TORCH = Recipe(
    name="bgmv2_from_torch",
    rules=[(r"^(.+)$", r"\1")],
)

RECIPES = {"paddle": BGMV2_FROM_PADDLE, "torch": BGMV2_FROM_TORCH}
_TORCH_ONLY = re.compile(r"\.(running_mean|running_var|num_batches_tracked)$")


def port_tensors(tensors: Mapping[str, Any], module: nn.Module,
                 recipe: Recipe = BGMV2_FROM_PADDLE) -> tuple[dict[str, torch.Tensor], Any]:
    """Apply ``recipe`` strictly; a Paddle-recipe failure on PyTorch names says which to use."""
    try:
        return recipe.apply(tensors, module)
    except MappingError as exc:
        if recipe is BGMV2_FROM_PADDLE and any(_TORCH_ONLY.search(n) for n in tensors):
            raise MappingError(
                f"{exc}. These tensors carry the original PyTorch names (running_mean/"
                "running_var/num_batches_tracked), not Paddle's (_mean/_variance): port them "
                "with BGMV2_FROM_TORCH (recipe='torch')") from exc
        raise


def infer_kwargs(shapes: Mapping[str, tuple[int, ...]]) -> tuple[str, dict[str, Any]]:
    """(class name, architecture kwargs) from tensor names -> shapes, Paddle or PyTorch names."""
    if "backbone.features.0.0.weight" in shapes:
        backbone = "mobilenetv2"
    elif "backbone.conv1.weight" in shapes:
        blocks = {int(m.group(1)) for n in shapes
                  if (m := re.match(r"backbone\.layer3\.(\d+)\.", n))}
        n3 = max(blocks) + 1 if blocks else 0
        found = [v for v, b in _RESNET_BLOCKS.items() if b[2] == n3]
        if not found:
            raise MappingError(f"bgmv2: layer3 has {n3} blocks, not a ResNet-50/101")
        backbone = found[0]
    else:
        raise MappingError("bgmv2: no backbone.conv1.weight nor backbone.features.0.0.weight")
    kwargs: dict[str, Any] = {"backbone": backbone}
    if "refiner.conv1.weight" not in shapes:
        return "MattingBase", kwargs
    kwargs["refine_kernel_size"] = int(shapes["refiner.conv1.weight"][-1])
    return "MattingRefine", kwargs


def build(cls_name: str, kwargs: Mapping[str, Any], device: str | None = None) -> nn.Module:
    """An untrained MattingBase/MattingRefine (on ``device``; "meta" builds no storage)."""
    cls = {"MattingBase": MattingBase, "MattingRefine": MattingRefine}[cls_name]
    with torch.device(device or "cpu"):
        return cls(**kwargs)


# ---------------------------------------------------------------------------------------------
# Port registration
# ---------------------------------------------------------------------------------------------
# Runtime options of MattingRefine (not in the weights), with the original's defaults.
REFINE_DEFAULTS: dict[str, Any] = {"backbone_scale": 0.25, "refine_mode": "sampling",
                                   "refine_sample_pixels": 80_000, "refine_threshold": 0.1,
                                   "refine_prevent_oversampling": True}
_REFINE_OPTIONS = tuple(REFINE_DEFAULTS)
_REPO = Path(__file__).resolve().parents[1]


def _shapes(source: Any) -> dict[str, tuple[int, ...]]:
    return {n: tuple(getattr(t, "shape", np.shape(t))) for n, t in source.tensors.items()}


def _matches(source: Any) -> bool:
    shapes = _shapes(source)
    try:
        cls_name, kwargs = infer_kwargs(shapes)
    except MappingError:
        return False
    module = build(cls_name, kwargs, "meta")
    want = {k: tuple(v.shape) for k, v in module.state_dict().items()
            if not k.endswith("num_batches_tracked")}
    got = {}
    for name, shape in shapes.items():
        target, _, _, matched = BGMV2_FROM_PADDLE.target_of(name)
        if not matched or target is None:
            return False
        got[target] = shape
    return got == want


def _port(source: Any, recipe: str | Recipe = "paddle", **options: Any) -> graphs.Ported:
    """Infer the variant from the tensors, build it, map strictly; ``options`` set the refine
    mode and budget (``refine_mode``, ``refine_sample_pixels`` …), recorded in ``kwargs``."""
    unknown = set(options) - set(_REFINE_OPTIONS)
    if unknown:
        raise MappingError(f"bgmv2: unknown port options {sorted(unknown)} "
                           f"(known: recipe, {', '.join(_REFINE_OPTIONS)})")
    cls_name, kwargs = infer_kwargs(_shapes(source))
    if cls_name == "MattingBase" and options:
        raise MappingError(f"bgmv2: {sorted(options)} apply to MattingRefine only "
                           "(this source has no refiner)")
    if cls_name == "MattingRefine":
        kwargs.update({**REFINE_DEFAULTS, **options})
    module = build(cls_name, kwargs)
    if isinstance(recipe, str) and recipe not in RECIPES:
        raise MappingError(f"bgmv2: unknown recipe {recipe!r} (known: {', '.join(RECIPES)})")
    rec = RECIPES[recipe] if isinstance(recipe, str) else recipe
    state, report = port_tensors(source.tensors, module, rec)
    load_strict(module, state).eval()
    report.notes.append(f"{cls_name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})")
    outputs = REFINE_OUTPUTS if cls_name == "MattingRefine" else BASE_OUTPUTS
    return graphs.Ported(module=module, graph=f"porter.graphs.bgmv2:{cls_name}", kwargs=kwargs,
                         mapping=report, input_names=["src", "bgr"],
                         output_names=list(outputs))


def make_inputs(shape: tuple[int, ...], seed: int) -> dict[str, np.ndarray]:
    """A background and a source that shows it with a random smooth-edged foreground blob."""
    rng = np.random.default_rng(seed)
    b, c, h, w = shape
    bgr = rng.uniform(0.0, 1.0, size=shape).astype(np.float32)
    fg = rng.uniform(0.0, 1.0, size=shape).astype(np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy, cx, r = h * rng.uniform(0.3, 0.7), w * rng.uniform(0.3, 0.7), min(h, w) * 0.3
    alpha = np.clip((r - np.hypot(yy - cy, xx - cx)) / (0.1 * r), 0.0, 1.0)[None, None]
    src = (alpha * fg + (1.0 - alpha) * bgr).astype(np.float32)
    return {"src": src, "bgr": bgr}


def _cases(source: Any, ported: graphs.Ported) -> list[Case]:
    if ported.graph.endswith("MattingRefine"):
        shapes = [(1, 3, 256, 256), (1, 3, 192, 320)]
    else:
        shapes = [(1, 3, 128, 128), (1, 3, 96, 160)]
    return [Case("x".join(map(str, s)), make_inputs(s, 100 + i), 100 + i)
            for i, s in enumerate(shapes)]


def paddle_reference(path: str | Path | None, cls_name: str, kwargs: Mapping[str, Any],
                     state: Mapping[str, np.ndarray] | None = None) -> Runner:
    """Paddle dygraph (``scripts/bgmv2_paddle_ref.py``) in a child process, its weights the
    arrays ``state`` porter already read (never a second, full-pickle load of the file), or
    for porter's own fixtures the ``.pdparams`` at ``path``."""
    from porter.verification.runtimes.paddle import dygraph_runtime

    outputs = REFINE_OUTPUTS if cls_name == "MattingRefine" else BASE_OUTPUTS
    path_env = os.pathsep.join(filter(None, [str(_REPO), os.environ.get("PYTHONPATH")]))
    return dygraph_runtime(f"scripts.bgmv2_paddle_ref:{cls_name}",
                           params=None if state is not None else path, state=state,
                           kwargs=dict(kwargs), inputs=["src", "bgr"], outputs=list(outputs),
                           extra_env={"PYTHONPATH": path_env})


def _reference(source: Any, ported: graphs.Ported) -> Runner:
    state = {name: ref.numpy() for name, ref in source.tensors.items()}
    return paddle_reference(None, ported.graph.rpartition(":")[2], ported.kwargs, state)


def _example_inputs(ported: graphs.Ported) -> tuple:
    inputs = make_inputs((1, 3, 256, 256), 0)
    return tuple(torch.from_numpy(inputs[n]) for n in ("src", "bgr"))


PORT = graphs.register_port(graphs.GraphPort(
    name="bgmv2",
    formats=("paddle-params",),
    graph="porter.graphs.bgmv2:MattingBase",
    matches=_matches,
    port=_port,
    cases=_cases,
    reference=_reference,
    example_inputs=_example_inputs,
    reference_name="paddle",
    tolerance=Tolerance(max_abs=1e-4),
    description="BackgroundMattingV2 (MattingBase / MattingRefine, ResNet-50/101, MobileNetV2) "
                "from the Paddle reproduction's .pdparams",
    aliases=("background_matting_v2",),
))
