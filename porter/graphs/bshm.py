"""BSHM: Boosting Semantic Human Matting with Coarse Annotations, as a clean PyTorch module.

Paper: Jinlin Liu, Yuan Yao, Wendi Hou, Miaomiao Cui, Xuansong Xie, Changshui Zhang, Xian-Sheng
Hua, "Boosting Semantic Human Matting with Coarse Annotations", CVPR 2020 (arXiv:2004.04955).
Origin: ModelScope ``damo/cv_unet_image-matting`` ships it as a TF 1.x frozen GraphDef (fed
``input_image:0`` H×W×3 RGB 0-255, read at ``output_png:0`` RGBA). Licence: the weights are
under whatever that model card states (DAMO cards are usually Apache-2.0; not verified here),
so check it before redistributing converted weights; this file is porter's own code.
No public training code or variable names exist, so this architecture is defined from the paper:

- MPN (mask prediction network): a U-Net (two 3×3 conv-BN-ReLU per level, 2×2 max-pools, three
  downsamplings, bilinear upsampling + skip concatenation), sigmoid head -> coarse mask;
- QUN (quality unification network): a small U-Net over image + coarse mask with stride-2 convs,
  sigmoid head -> unified coarse mask;
- MRN (matting refinement network): an encoder-decoder over image + unified mask with stride-2
  convs and skips, sigmoid head -> alpha.

Assumed (not known of the released graph): the widths (``mpn_channels``, ``qun_channels``,
``mrn_channels``, doubled per level), 3×3 kernels, ImageNet mean/std normalisation after /255,
no resizing inside the module (the released graph resizes internally; here the caller picks the
size). Conventions follow TF exactly: BatchNorm epsilon 1e-3 (read from the graph when there is
one), "SAME" padding (asymmetric, more at the end, for stride-2 convs), half-pixel bilinear
resizing. Input: ``image`` float (B, 3, H, W), RGB 0-255, the TF graph's ``input_image`` in NCHW
with a batch dimension; output: ``alpha`` (B, 1, H, W) in [0, 1].
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from porter import graphs
from porter.errors import MappingError, PorterError
from porter.importers.tf1 import TRAINING_STATE_RULES
from porter.mapping.layouts_tf import batchnorm_epsilons, hwio_to_oihw
from porter.mapping.recipe import Recipe, load_strict
from porter.mapping.tf_padding import TFSamePad2d
from porter.verification.parity import Case, Tolerance, random_cases
from porter.zoo.load import ZooModel

__all__ = ["BSHM", "ConvBNReLU", "BSHM_FROM_TF1", "port_bshm", "infer_kwargs"]

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
TF_BN_EPS = 1e-3  # tf.layers / fused_batch_norm default; torch's is 1e-5


# ---------------------------------------------------------------------------------------- blocks

class ConvBNReLU(nn.Module):
    """3×3 conv (no bias, TF SAME padding) -> BatchNorm (TF epsilon) -> ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1, eps: float = TF_BN_EPS) -> None:
        super().__init__()
        # stride 1: SAME is symmetric and static; stride 2: the odd pixel goes at the end
        self.pad = TFSamePad2d(3, stride) if stride != 1 else nn.Identity()
        self.conv = nn.Conv2d(cin, cout, 3, stride, padding=1 if stride == 1 else 0, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(self.pad(x))))


def stage(cin: int, widths: Sequence[int], stride: int = 1, eps: float = TF_BN_EPS
          ) -> nn.Sequential:
    """``conv1``, ``conv2`` … ConvBNReLU in a row; only the first may be strided."""
    units, c = OrderedDict(), cin
    for i, w in enumerate(widths, start=1):
        units[f"conv{i}"] = ConvBNReLU(c, w, stride if i == 1 else 1, eps)
        c = w
    return nn.Sequential(units)


def up_concat(x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """Bilinear (half-pixel, like TF ``resize_bilinear(half_pixel_centers=True)``) to the skip's
    size, then ``[x, skip]`` on channels."""
    x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
    return torch.cat([x, skip], dim=1)


def sigmoid_head(cin: int) -> nn.Conv2d:
    return nn.Conv2d(cin, 1, 3, padding=1, bias=True)


class MaskPredictionNet(nn.Module):
    """MPN: U-Net with max-pools, three levels + bridge, widths c, 2c, 4c, 8c."""

    def __init__(self, c: int, eps: float = TF_BN_EPS) -> None:
        super().__init__()
        self.enc1 = stage(3, [c, c], eps=eps)
        self.enc2 = stage(c, [2 * c, 2 * c], eps=eps)
        self.enc3 = stage(2 * c, [4 * c, 4 * c], eps=eps)
        self.bridge = stage(4 * c, [8 * c, 8 * c], eps=eps)
        self.dec3 = stage(12 * c, [4 * c, 4 * c], eps=eps)
        self.dec2 = stage(6 * c, [2 * c, 2 * c], eps=eps)
        self.dec1 = stage(3 * c, [c, c], eps=eps)
        self.head = sigmoid_head(c)
        # TF SAME 2×2/2 max-pool pads an odd edge at the end; ceil_mode gives the same windows
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        e3 = self.enc3(self.pool(e2))
        x = self.bridge(self.pool(e3))
        x = self.dec3(up_concat(x, e3))
        x = self.dec2(up_concat(x, e2))
        x = self.dec1(up_concat(x, e1))
        return torch.sigmoid(self.head(x))


class QualityUnificationNet(nn.Module):
    """QUN: small U-Net over image + coarse mask (4 channels), stride-2 convs, widths q, 2q, 4q."""

    def __init__(self, q: int, eps: float = TF_BN_EPS) -> None:
        super().__init__()
        self.enc1 = stage(4, [q], eps=eps)
        self.enc2 = stage(q, [2 * q, 2 * q], stride=2, eps=eps)
        self.enc3 = stage(2 * q, [4 * q, 4 * q], stride=2, eps=eps)
        self.dec2 = stage(6 * q, [2 * q], eps=eps)
        self.dec1 = stage(3 * q, [q], eps=eps)
        self.head = sigmoid_head(q)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        x = self.enc3(e2)
        x = self.dec2(up_concat(x, e2))
        x = self.dec1(up_concat(x, e1))
        return torch.sigmoid(self.head(x))


class MattingRefinementNet(nn.Module):
    """MRN: encoder-decoder over image + unified mask, stride-2 convs, widths m … 8m."""

    def __init__(self, m: int, eps: float = TF_BN_EPS) -> None:
        super().__init__()
        self.enc1 = stage(4, [m, m], eps=eps)
        self.enc2 = stage(m, [2 * m, 2 * m], stride=2, eps=eps)
        self.enc3 = stage(2 * m, [4 * m, 4 * m], stride=2, eps=eps)
        self.enc4 = stage(4 * m, [8 * m, 8 * m], stride=2, eps=eps)
        self.dec3 = stage(12 * m, [4 * m, 4 * m], eps=eps)
        self.dec2 = stage(6 * m, [2 * m, 2 * m], eps=eps)
        self.dec1 = stage(3 * m, [m, m], eps=eps)
        self.head = sigmoid_head(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        x = self.enc4(e3)
        x = self.dec3(up_concat(x, e3))
        x = self.dec2(up_concat(x, e2))
        x = self.dec1(up_concat(x, e1))
        return torch.sigmoid(self.head(x))


# ----------------------------------------------------------------------------------------- model

class BSHM(nn.Module, ZooModel):
    """MPN -> QUN -> MRN. ``forward(image)`` takes (B, 3, H, W) RGB 0-255, returns alpha
    (B, 1, H, W) in [0, 1]; ``stages(image)`` also returns the coarse and unified masks."""

    def __init__(self, mpn_channels: int = 32, qun_channels: int = 16, mrn_channels: int = 32,
                 bn_eps: float = TF_BN_EPS) -> None:
        super().__init__()
        self.mpn = MaskPredictionNet(mpn_channels, bn_eps)
        self.qun = QualityUnificationNet(qun_channels, bn_eps)
        self.mrn = MattingRefinementNet(mrn_channels, bn_eps)
        # fixed preprocessing, not weights: kept out of the state dict
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    def stages(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (image / 255.0 - self.mean) / self.std  # same op order as the TF graph
        coarse = self.mpn(x)
        unified = self.qun(torch.cat([x, coarse], dim=1))
        alpha = self.mrn(torch.cat([x, unified], dim=1))
        return {"coarse_mask": coarse, "unified_mask": unified, "alpha": alpha}

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.stages(image)["alpha"]


# --------------------------------------------------------------------------------------- recipes

def zero_batches_tracked(shape: tuple[int, ...]) -> np.ndarray:
    """TF keeps no BatchNorm step count; torch's ``num_batches_tracked`` starts at 0."""
    return np.zeros(shape, np.int64)


_UNIT = r"^(mpn|qun|mrn)/(enc\d|bridge|dec\d)/(conv\d)"
_READ = r"(?:/read)?$"  # a frozen graph may name the Const or its Identity reader

BSHM_FROM_TF1 = Recipe(
    name="bshm_from_tf1",
    rules=[
        *TRAINING_STATE_RULES,  # optimizer slots, beta{1,2}_power, EMA shadows, global_step
        (_UNIT + r"/kernel" + _READ, r"\1.\2.\3.conv.weight", hwio_to_oihw),
        (_UNIT + r"/batch_normalization/gamma" + _READ, r"\1.\2.\3.bn.weight"),
        (_UNIT + r"/batch_normalization/beta" + _READ, r"\1.\2.\3.bn.bias"),
        (_UNIT + r"/batch_normalization/moving_mean" + _READ, r"\1.\2.\3.bn.running_mean"),
        (_UNIT + r"/batch_normalization/moving_variance" + _READ, r"\1.\2.\3.bn.running_var"),
        (r"^(mpn|qun|mrn)/head/kernel" + _READ, r"\1.head.weight", hwio_to_oihw),
        (r"^(mpn|qun|mrn)/head/bias" + _READ, r"\1.head.bias"),
        # frozen graphs only: shape arithmetic the module does itself (resize targets, axes)
        (r"/up/(strided_slice/stack(_\d+)?|concat/axis)$", None,
         "graph constant: upsampling target size / concat axis"),
        (r"^(qun|mrn)_input/axis$", None, "graph constant: concat axis"),
    ],
    fill={r"\.num_batches_tracked$": zero_batches_tracked},
)

# Frozen-graph constants checked against the module's fixed preprocessing, not loaded.
PREPROCESS_CONSTANTS = {
    r"^preprocess/mean$": np.array(MEAN, np.float32),
    r"^preprocess/std$": np.array(STD, np.float32),
    r"^preprocess/truediv/y$": np.array(255.0, np.float32),
}

WIDTH_TENSORS = {"mpn_channels": "mpn/enc1/conv1/kernel", "qun_channels": "qun/enc1/conv1/kernel",
                 "mrn_channels": "mrn/enc1/conv1/kernel"}


def _tensors(source: Any) -> Mapping[str, Any]:
    return getattr(source, "tensors", source)


def _find(tensors: Mapping[str, Any], name: str) -> Any:
    for key in (name, name + "/read"):
        if key in tensors:
            return tensors[key]
    raise MappingError(f"bshm: source has no {name!r} (is this a BSHM checkpoint?)")


def bn_epsilon(source: Any) -> tuple[float, str]:
    """The BatchNorm epsilon of the source graph's FusedBatchNorm ops, else TF's default."""
    graph = getattr(source, "graph", None)
    found = set(batchnorm_epsilons(graph).values()) if graph is not None else set()
    if len(found) > 1:
        raise MappingError(f"bshm: BatchNorm epsilons differ across the graph: {sorted(found)}")
    if found:
        return found.pop(), "BatchNorm epsilon read from the graph's FusedBatchNorm ops"
    return TF_BN_EPS, "no graph: BatchNorm epsilon assumed to be TF's default 1e-3"


def infer_kwargs(source: Any) -> dict[str, Any]:
    """Constructor kwargs from the source's tensor shapes (and graph, for epsilon)."""
    tensors = _tensors(source)
    kwargs: dict[str, Any] = {k: int(_find(tensors, n).shape[-1]) for k, n in WIDTH_TENSORS.items()}
    kwargs["bn_eps"] = bn_epsilon(source)[0]
    return kwargs


def _split_preprocess(tensors: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    weights, consts = {}, {}
    for name, ref in tensors.items():
        hit = any(re.search(p, name) for p in PREPROCESS_CONSTANTS)
        (consts if hit else weights)[name] = ref
    return weights, consts


def port_bshm(source: Any, keep: Sequence[str] = (), **_: Any) -> graphs.Ported:
    """Build :class:`BSHM` with widths read from ``source`` and load it strictly.

    ``source`` is a porter Source (TF1 checkpoint, meta graph or frozen GraphDef) or any mapping
    of TF names to arrays. ``keep``: regexes of would-be-dropped tensors to refuse instead.
    """
    kwargs = infer_kwargs(source)
    module = BSHM(**kwargs)
    weights, consts = _split_preprocess(_tensors(source))
    state, report = BSHM_FROM_TF1.apply(weights, module, keep=keep)
    for name, ref in consts.items():
        value = ref.numpy() if hasattr(ref, "numpy") else np.asarray(ref)
        expected = next(v for p, v in PREPROCESS_CONSTANTS.items() if re.search(p, name))
        if value.shape != expected.shape or not np.allclose(value, expected, rtol=0, atol=1e-6):
            raise MappingError(f"bshm: graph constant {name} = {value.tolist()} differs from "
                               f"the module's preprocessing {expected.tolist()}")
        report.add(name, None, "structure", None, list(value.shape), None,
                   "preprocessing constant, equal to the module's")
    report.notes.append(bn_epsilon(source)[1] + f" ({kwargs['bn_eps']:g})")
    load_strict(module, state)
    return graphs.Ported(module.eval(), "porter.graphs.bshm:BSHM", kwargs, report,
                         input_names=["image"], output_names=["alpha"])


# ------------------------------------------------------------------------------------------ port

FORMATS = ("tf1-checkpoint", "tf1-metagraph", "tf1-frozen")
CASE_SHAPES = ((1, 3, 64, 64), (2, 3, 96, 128), (1, 3, 50, 70))


def matches_bshm(source: Any) -> bool:
    """True when every source tensor has a BSHM rule and every module slot a fitting tensor."""
    try:
        with torch.device("meta"):  # shapes are all that matching needs
            module = BSHM(**infer_kwargs(source))
    except (MappingError, TypeError, ValueError, IndexError):
        return False
    weights, _ = _split_preprocess(_tensors(source))
    return BSHM_FROM_TF1.fits(weights, module)


def bshm_cases(source: Any, ported: graphs.Ported) -> list[Case]:
    return random_cases("image", CASE_SHAPES, seed=0, low=0.0, high=255.0)


INPUT_TENSOR, OUTPUT_TENSOR = "input_image:0", "alpha:0"


def bshm_reference(source: Any, ported: graphs.Ported) -> Any:
    """A TF session over the source in a child process (TF never shares porter's process)."""
    from porter.verification.runtimes.child import ChildRuntime

    io = {"inputs": {"image": INPUT_TENSOR}, "outputs": {"alpha": OUTPUT_TENSOR}}
    if source.format == "tf1-frozen":
        return ChildRuntime("porter.verification.runtimes.tf1:frozen",
                            {"graph": str(source.path), "graph_bytes": source.native, **io},
                            name="tensorflow")
    meta = source.meta.get("metagraph")
    checkpoint = source.meta.get("prefix") or source.meta.get("checkpoint")
    if not meta or not checkpoint:
        raise PorterError(f"{source.path}: the TF reference needs both the .meta graph and the "
                          "checkpoint")
    from porter.verification.runtimes.tf1 import pinned_files

    return ChildRuntime("porter.verification.runtimes.tf1:metagraph",
                        {"meta": meta, "checkpoint": checkpoint, **io,
                         **pinned_files(source, meta, checkpoint)}, name="tensorflow")


def bshm_example_inputs(ported: graphs.Ported) -> tuple[torch.Tensor, ...]:
    return (torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 255,)


graphs.register_port(graphs.GraphPort(
    name="bshm",
    formats=FORMATS,
    graph="porter.graphs.bshm:BSHM",
    matches=matches_bshm,
    port=port_bshm,
    cases=bshm_cases,
    reference=bshm_reference,
    example_inputs=bshm_example_inputs,
    reference_name="tensorflow",
    tolerance=Tolerance(max_abs=1e-4),
    description="BSHM human matting (MPN -> QUN -> MRN) from a TF1 checkpoint or frozen graph",
))
