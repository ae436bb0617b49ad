"""MODNet: trimap-free portrait matting (Ke et al., "MODNet: Real-Time Trimap-Free Portrait
Matting via Objective Decomposition", AAAI 2022).

Origin: the official implementation (ZHKKKe/MODNet, Apache-2.0) and its ONNX export
``modnet_photographic_portrait_matting.onnx`` (opset 11, PyTorch 1.7). This file is porter's own
clean re-implementation of the inference network, written to that file's topology:

- a MobileNetV2 backbone (width 1.0, expansion 6) giving features at 1/2, 1/4 and 1/32;
- a low-resolution branch (SE block on the 1/32 features, two 5x5 IBNorm convs at 1/16, 1/8);
- a high-resolution branch (image at 1/2 and 1/4 with encoder features, 3x3 IBNorm convs);
- a fusion branch producing the alpha matte at full resolution.

IBNorm normalises the first half of the channels with BatchNorm and the second half with
(non-affine) InstanceNorm. Parameter names follow the official release (``backbone.model.
features.*``, ``lr_branch.*``, ``hr_branch.*``, ``f_branch.*``) so its checkpoints stay readable.
The training-only heads (``lr_branch.conv_lr``, ``hr_branch.conv_hr``) are not built: the
published export does not contain them.

Input: ``img`` [N, 3, H, W], RGB scaled to [-1, 1] (mean 0.5, std 0.5), H and W multiples of 32.
Output: alpha [N, 1, H, W] in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from porter.zoo.load import ZooModel

__all__ = ["MODNet", "preprocess", "ENC_CHANNELS"]

ENC_CHANNELS = (16, 24, 32, 96, 1280)  # backbone features at 1/2, 1/4, 1/8, 1/16, 1/32

# MobileNetV2 inverted-residual settings: expansion t, out channels c, repeats n, first stride s.
_MOBILENETV2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))


# ---------------------------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------------------------
def _conv_bn_relu6(cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> list:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU6()]


class InvertedResidual(nn.Module):
    """MobileNetV2 block: (expand 1x1) -> depthwise 3x3 -> project 1x1, residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = round(cin * expansion)
        self.use_residual = stride == 1 and cin == cout
        layers = [] if expansion == 1 else _conv_bn_relu6(cin, hidden, 1, 1)
        layers += _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden)
        layers += [nn.Conv2d(hidden, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """The MobileNetV2 feature extractor (no classifier), 19 stages in ``features``."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Sequential(*_conv_bn_relu6(in_channels, 32, 3, 2))]
        cin = 32
        for t, c, n, s in _MOBILENETV2:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(nn.Sequential(*_conv_bn_relu6(cin, ENC_CHANNELS[4], 1, 1)))
        self.features = nn.Sequential(*layers)


class MobileNetV2Backbone(nn.Module):
    """Returns the 1/2, 1/4 and 1/32 features MODNet uses."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.model = MobileNetV2(in_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = self.model.features
        enc2x = f[1](f[0](x))
        enc4x = f[3](f[2](enc2x))
        x = enc4x
        for i in range(4, 19):
            x = f[i](x)
        return enc2x, enc4x, x


class IBNorm(nn.Module):
    """BatchNorm on the first half of the channels, non-affine InstanceNorm on the rest."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bnorm_channels = channels // 2
        self.bnorm = nn.BatchNorm2d(self.bnorm_channels)
        self.inorm = nn.InstanceNorm2d(channels - self.bnorm_channels, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.bnorm_channels
        return torch.cat((self.bnorm(x[:, :n]), self.inorm(x[:, n:])), dim=1)


class Conv2dIBNormRelu(nn.Module):
    """Conv (with bias) -> IBNorm -> ReLU; the head convs skip the norm and the ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0,
                 with_ibn: bool = True, with_relu: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, padding, bias=True)]
        if with_ibn:
            layers.append(IBNorm(cout))
        if with_relu:
            layers.append(nn.ReLU())
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class SEBlock(nn.Module):
    """Squeeze-and-excitation: channel weights from a global average, two bias-free linears."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(channels, channels // reduction, bias=False), nn.ReLU(),
                                nn.Linear(channels // reduction, channels, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.fc(self.pool(x).flatten(1))
        return x * w[:, :, None, None]


def _resize(x: torch.Tensor, scale: float) -> torch.Tensor:
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)


class LRBranch(nn.Module):
    """Low-resolution (semantic) branch: 1/32 features -> SE -> 1/16 -> 1/8."""

    def __init__(self, enc: Sequence[int] = ENC_CHANNELS) -> None:
        super().__init__()
        self.se_block = SEBlock(enc[4], reduction=4)
        self.conv_lr16x = Conv2dIBNormRelu(enc[4], enc[3], 5, padding=2)
        self.conv_lr8x = Conv2dIBNormRelu(enc[3], enc[2], 5, padding=2)

    def forward(self, enc32x: torch.Tensor) -> torch.Tensor:
        lr16x = self.conv_lr16x(_resize(self.se_block(enc32x), 2))
        return self.conv_lr8x(_resize(lr16x, 2))


class HRBranch(nn.Module):
    """High-resolution (detail) branch at 1/4 and 1/2 of the input."""

    def __init__(self, hr: int = 32, enc: Sequence[int] = ENC_CHANNELS) -> None:
        super().__init__()
        self.tohr_enc2x = Conv2dIBNormRelu(enc[0], hr, 1)
        self.conv_enc2x = Conv2dIBNormRelu(hr + 3, hr, 3, stride=2, padding=1)
        self.tohr_enc4x = Conv2dIBNormRelu(enc[1], hr, 1)
        self.conv_enc4x = Conv2dIBNormRelu(2 * hr, 2 * hr, 3, padding=1)
        self.conv_hr4x = nn.Sequential(
            # hr4x, the upsampled low-resolution features and the 1/4 image; upstream
            # writes 3 * hr + 3, which equals this only when hr == enc[2] (32)
            Conv2dIBNormRelu(2 * hr + enc[2] + 3, 2 * hr, 3, padding=1),
            Conv2dIBNormRelu(2 * hr, 2 * hr, 3, padding=1),
            Conv2dIBNormRelu(2 * hr, hr, 3, padding=1))
        self.conv_hr2x = nn.Sequential(
            Conv2dIBNormRelu(2 * hr, 2 * hr, 3, padding=1),
            Conv2dIBNormRelu(2 * hr, hr, 3, padding=1),
            Conv2dIBNormRelu(hr, hr, 3, padding=1),
            Conv2dIBNormRelu(hr, hr, 3, padding=1))

    def forward(self, img: torch.Tensor, enc2x: torch.Tensor, enc4x: torch.Tensor,
                lr8x: torch.Tensor) -> torch.Tensor:
        img2x, img4x = _resize(img, 1 / 2), _resize(img, 1 / 4)
        enc2x = self.tohr_enc2x(enc2x)
        hr4x = self.conv_enc2x(torch.cat((img2x, enc2x), dim=1))
        enc4x = self.tohr_enc4x(enc4x)
        hr4x = self.conv_enc4x(torch.cat((hr4x, enc4x), dim=1))
        hr4x = self.conv_hr4x(torch.cat((hr4x, _resize(lr8x, 2), img4x), dim=1))
        return self.conv_hr2x(torch.cat((_resize(hr4x, 2), enc2x), dim=1))


class FusionBranch(nn.Module):
    """Fuses the semantic and detail branches into the full-resolution alpha logits."""

    def __init__(self, hr: int = 32, enc: Sequence[int] = ENC_CHANNELS) -> None:
        super().__init__()
        self.conv_lr4x = Conv2dIBNormRelu(enc[2], hr, 5, padding=2)
        self.conv_f2x = Conv2dIBNormRelu(2 * hr, hr, 3, padding=1)
        self.conv_f = nn.Sequential(
            Conv2dIBNormRelu(hr + 3, hr // 2, 3, padding=1),
            Conv2dIBNormRelu(hr // 2, 1, 1, with_ibn=False, with_relu=False))

    def forward(self, img: torch.Tensor, lr8x: torch.Tensor, hr2x: torch.Tensor) -> torch.Tensor:
        lr2x = _resize(self.conv_lr4x(_resize(lr8x, 2)), 2)
        f2x = self.conv_f2x(torch.cat((lr2x, hr2x), dim=1))
        return self.conv_f(torch.cat((_resize(f2x, 2), img), dim=1))


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------
class MODNet(nn.Module, ZooModel):
    """MODNet inference network: ``forward(img) -> alpha``; see the module docstring."""

    def __init__(self, in_channels: int = 3, hr_channels: int = 32) -> None:
        super().__init__()
        self.in_channels, self.hr_channels = in_channels, hr_channels
        self.backbone = MobileNetV2Backbone(in_channels)
        self.lr_branch = LRBranch()
        self.hr_branch = HRBranch(hr_channels)
        self.f_branch = FusionBranch(hr_channels)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        enc2x, enc4x, enc32x = self.backbone(img)
        lr8x = self.lr_branch(enc32x)
        hr2x = self.hr_branch(img, enc2x, enc4x, lr8x)
        return torch.sigmoid(self.f_branch(img, lr8x, hr2x))

    def constructor_kwargs(self) -> dict[str, Any]:
        return {"in_channels": self.in_channels, "hr_channels": self.hr_channels}


#: The input contract every MODNet export shares; recorded in manifests and model cards, and
#: what ``preprocess`` implements.
PREPROCESSING = {"layout": "NCHW", "channels": "RGB", "dtype": "float32", "scale": 1 / 255,
                 "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "size_multiple": 32,
                 "resize": "bilinear to the nearest multiple (at least one multiple)"}


def preprocess(image: np.ndarray, multiple: int = PREPROCESSING["size_multiple"]) -> torch.Tensor:
    """uint8 HxWx3 RGB -> [1, 3, H', W'] normalised per ``PREPROCESSING``: scaled to [0, 1],
    (x - mean) / std, resized (bilinear) so H' and W' are multiples of 32, as MODNet needs."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {image.shape}")
    x = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)[None].float()
    x = x / round(1 / PREPROCESSING["scale"])  # / 255, bit-identical to the reference
    h, w = x.shape[2:]
    th, tw = max(multiple, round(h / multiple) * multiple), max(multiple, round(w / multiple) * multiple)
    if (th, tw) != (h, w):
        x = F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False)
    mean = torch.tensor(PREPROCESSING["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(PREPROCESSING["std"]).view(1, 3, 1, 1)
    return (x - mean) / std


# ---------------------------------------------------------------------------------------------
# Port: ONNX exports of MODNet, aligned by structure (their tensor names carry no meaning)
# ---------------------------------------------------------------------------------------------
VERIFY_SHAPES = ((1, 3, 512, 512), (2, 3, 512, 672), (1, 3, 256, 256))


def _kwargs_from_onnx(source: Any) -> dict[str, Any]:
    """Constructor kwargs read off the source: input channels and the fusion head's width."""
    inputs = source.meta.get("inputs", [])
    cin = inputs[0]["shape"][1] if inputs and len(inputs[0]["shape"]) == 4 else 3
    heads = [r.shape for r in source.tensors.values()
             if len(r.shape) == 4 and r.shape[0] == 1 and r.shape[2:] == (1, 1)]
    hr = 2 * heads[-1][1] if heads else 32
    return {"in_channels": int(cin) if isinstance(cin, int) else 3, "hr_channels": int(hr)}


def _port_onnx(source: Any, **_: Any):
    from porter.graphs import Ported
    from porter.mapping.align import align_by_structure
    from porter.mapping.recipe import load_strict

    kwargs = _kwargs_from_onnx(source)
    with torch.device("meta"):  # every slot is filled from the source: skip random init
        module = MODNet(**kwargs).eval()
    state, report = align_by_structure(source, module)
    load_strict(module, state, assign=True)
    inputs = [v["name"] for v in source.meta["inputs"]]
    outputs = [v["name"] for v in source.meta["outputs"]]
    return Ported(module, "porter.graphs.modnet:MODNet", kwargs, report, inputs, outputs)


def _matches_onnx(source: Any) -> bool:
    """Exact structural match: every unit pairs and every tensor is accounted for."""
    from porter.errors import MappingError
    from porter.mapping.align import align_by_structure

    if source.format != "onnx" or len(source.meta.get("inputs", [])) != 1:
        return False
    with torch.device("meta"):
        module = MODNet(**_kwargs_from_onnx(source)).eval()
    try:
        align_by_structure(source, module, check_only=True)
    except MappingError:
        return False
    return True


def _cases(source: Any, ported: Any) -> list:
    """VERIFY_SHAPES that fit the source's declared input (an ATC export fixes batch 1 and may
    fix H/W); the declared shape itself when none fits."""
    from porter.verification.parity import random_cases

    declared = next((i.get("shape") for i in source.meta.get("inputs", [])), None) or []
    fixed = [d if isinstance(d, int) and d > 0 else None for d in declared]

    def fits(shape: tuple) -> bool:
        return len(fixed) != len(shape) or all(f is None or f == d for f, d in zip(fixed, shape))

    shapes = [s for s in VERIFY_SHAPES if fits(s)]
    if not shapes:
        shapes = [tuple(f or 32 for f in fixed)]
    return random_cases(ported.input_names[0], shapes, seed=0)


def _reference(source: Any, ported: Any):
    from porter.verification.runtimes.onnxruntime import source_runner

    return source_runner(source)


def _register() -> None:
    from porter.graphs import GraphPort, register_port
    from porter.verification.parity import Tolerance

    register_port(GraphPort(
        name="modnet", formats=("onnx",), graph="porter.graphs.modnet:MODNet",
        matches=_matches_onnx, port=_port_onnx, cases=_cases, reference=_reference,
        example_inputs=lambda ported: (torch.zeros(1, 3, 256, 256),),
        reference_name="onnxruntime", tolerance=Tolerance(max_abs=1e-4),
        description="MODNet portrait matting (MobileNetV2 + LR/HR/fusion branches, IBNorm)",
        aliases=("modnet_photographic",)))


_register()
