"""MTCNN P-Net, R-Net and O-Net: the three stages of the MTCNN face detector, from TF 1.x.

Paper: K. Zhang, Z. Zhang, Z. Li, Y. Qiao, "Joint Face Detection and Alignment using
Multi-task Cascaded Convolutional Networks", IEEE SPL 2016 (arXiv:1604.02878).
Origin of the weights: AITTSMD/MTCNN-Tensorflow (``data/MTCNN_model/PNet_landmark/PNet-18``),
MIT licence; a name-based TF1 checkpoint with its training MetaGraph.

Topology (read from PNet-18.meta): conv 3x3 VALID (10) + PReLU, max-pool 2x2 stride 2 SAME,
conv 3x3 VALID (16) + PReLU, conv 3x3 VALID (32) + PReLU, then three 1x1 heads: face
classification (2, softmax over channels), bounding-box regression (4), landmarks (10).
TF's PReLU is written ``relu(x) + alphas * (x - |x|) * 0.5``, which is exactly ``prelu``.
Fully convolutional: a 12x12 crop gives one 1x1 output cell, a larger image a map of them.

R-Net and O-Net (``R_Net`` / ``O_Net`` in that repository's train_models/mtcnn_model.py, same
checkpoint layout: ``convN/{weights,biases,alphas}``, ``fc1``, ``cls_fc``, ``bbox_fc``,
``landmark_fc``): on fixed 24x24 (R-Net) and 48x48 (O-Net) crops, 3x3/2x2 VALID convolutions
with per-channel PReLU, 3x3 stride-2 max-pools (the first SAME, the next VALID, O-Net's last a
2x2 SAME), then TF's NHWC flatten, a ReLU fully connected layer (slim's default activation;
only the convolutions take PReLU) and three linear heads, softmax on the classifier.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from porter.importers.tf1 import TRAINING_STATE_RULES
from porter.mapping.layouts_tf import dense_to_linear, hwio_to_oihw
from porter.mapping.recipe import Recipe
from porter.mapping.tf_padding import TFSamePad2d
from porter.zoo.load import ZooModel

__all__ = ["PNet", "PNET_FROM_TF1", "pnet_tf1", "PNET_OUTPUTS", "PNET_TF1_FETCHES",
           "RNet", "ONet", "RNET_FROM_TF1", "ONET_FROM_TF1", "rnet_tf1", "onet_tf1",
           "REFINE_TF1_FETCHES"]

PNET_OUTPUTS = ("cls_prob", "bbox_pred", "landmark_pred")

# torch output -> TF tensor in the training MetaGraph ([tensor, like]: reshape to `like` first;
# the softmax runs on a [-1, 2] reshape of conv4_1's NHWC output).
PNET_TF1_FETCHES: dict[str, Any] = {
    "cls_prob": ["conv4_1/Softmax:0", "conv4_1/BiasAdd:0"],
    "bbox_pred": "conv4_2/BiasAdd:0",
    "landmark_pred": "conv4_3/BiasAdd:0",
}


# ---------------------------------------------------------------------------------- model

class PNet(nn.Module, ZooModel):
    """MTCNN P-Net on NCHW images normalised as ``(rgb - 127.5) / 128``.

    Returns ``(cls_prob [N,2,h,w], bbox_pred [N,4,h,w], landmark_pred [N,10,h,w])`` with
    ``h = ceil((H - 2) / 2) - 4`` (likewise ``w``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, 3)
        self.prelu1 = nn.PReLU(10)
        self.pool1_pad = TFSamePad2d(2, 2, value=float("-inf"))
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(10, 16, 3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, 3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)
        self.conv4_3 = nn.Conv2d(32, 10, 1)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.pool1_pad(self.prelu1(self.conv1(image))))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_1(x).softmax(1), self.conv4_2(x), self.conv4_3(x)


# -------------------------------------------------------------------------------- recipes

PNET_FROM_TF1 = Recipe("mtcnn_pnet_from_tf1", rules=[
    (r"^(conv[123]|conv4_[123])/weights$", r"\1.weight", hwio_to_oihw),
    (r"^(conv[123]|conv4_[123])/biases$", r"\1.bias"),
    (r"^conv([123])/alphas$", r"prelu\1.weight"),
    *TRAINING_STATE_RULES,
    (r"^Variable$", None, "training step counter (a bare int32 tf.Variable)"),
])


# ---------------------------------------------------------------- TF1 reference definition

def pnet_tf1(tf: Any, height: int | None = None, width: int | None = None,
             batch: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The original TF1 P-Net (variables named as in the checkpoint), for ``tf1:rebuilt``.

    Called in a TensorFlow child process with ``tf`` passed in, so this module never imports
    TensorFlow. Returns (inputs, outputs) keyed by the torch names.
    """
    v1 = tf.compat.v1
    image = v1.placeholder(tf.float32, [batch, height, width, 3], name="input_image")

    def conv(x: Any, scope: str, cin: int, cout: int, k: int) -> Any:
        with v1.variable_scope(scope):
            w = v1.get_variable("weights", [k, k, cin, cout])
            b = v1.get_variable("biases", [cout])
            return tf.nn.bias_add(tf.nn.conv2d(x, w, [1, 1, 1, 1], "VALID"), b)

    def prelu(x: Any, scope: str, c: int) -> Any:
        with v1.variable_scope(scope):
            alphas = v1.get_variable("alphas", [c])
            return tf.nn.relu(x) + alphas * (x - tf.abs(x)) * 0.5

    x = prelu(conv(image, "conv1", 3, 10, 3), "conv1", 10)
    x = tf.nn.max_pool2d(x, 2, 2, "SAME")
    x = prelu(conv(x, "conv2", 10, 16, 3), "conv2", 16)
    x = prelu(conv(x, "conv3", 16, 32, 3), "conv3", 32)
    outputs = {"cls_prob": tf.nn.softmax(conv(x, "conv4_1", 32, 2, 1), axis=-1,
                                         name="conv4_1/Softmax"),
               "bbox_pred": conv(x, "conv4_2", 32, 4, 1),
               "landmark_pred": conv(x, "conv4_3", 32, 10, 1)}
    return {"image": image}, outputs



# R-Net / O-Net outputs in their training MetaGraph (slim.fully_connected names).
REFINE_TF1_FETCHES: dict[str, Any] = {
    "cls_prob": "cls_fc/Softmax:0",
    "bbox_pred": "bbox_fc/BiasAdd:0",
    "landmark_pred": "landmark_fc/BiasAdd:0",
}


class _Refine(nn.Module):
    """Shared body of R-Net and O-Net: conv+PReLU stages with pools, NHWC flatten, fc1, heads.

    ``stages``: per conv, (out channels, kernel, pool after it: None or (kernel, stride,
    "SAME"|"VALID")). ``size``: the fixed square input the fully connected layer needs.
    """

    size: int

    def __init__(self, stages: list[tuple[int, int, tuple[int, int, str] | None]],
                 fc: int) -> None:
        super().__init__()
        cin, n = 3, self.size
        for i, (cout, k, pool) in enumerate(stages, 1):
            setattr(self, f"conv{i}", nn.Conv2d(cin, cout, k))
            setattr(self, f"prelu{i}", nn.PReLU(cout))
            n = n - k + 1
            if pool is not None:
                pk, ps, padding = pool
                if padding == "SAME":
                    setattr(self, f"pool{i}_pad", TFSamePad2d(pk, ps, value=float("-inf")))
                    n = -(-n // ps)
                else:
                    n = (n - pk) // ps + 1
                setattr(self, f"pool{i}", nn.MaxPool2d(pk, ps))
            cin = cout
        self.stages = len(stages)
        self.fc1 = nn.Linear(n * n * cin, fc)
        self.cls_fc = nn.Linear(fc, 2)
        self.bbox_fc = nn.Linear(fc, 4)
        self.landmark_fc = nn.Linear(fc, 10)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = image
        for i in range(1, self.stages + 1):
            x = getattr(self, f"prelu{i}")(getattr(self, f"conv{i}")(x))
            if hasattr(self, f"pool{i}_pad"):
                x = getattr(self, f"pool{i}_pad")(x)
            if hasattr(self, f"pool{i}"):
                x = getattr(self, f"pool{i}")(x)
        x = torch.relu(self.fc1(x.permute(0, 2, 3, 1).flatten(1)))  # TF flattens NHWC
        return self.cls_fc(x).softmax(1), self.bbox_fc(x), self.landmark_fc(x)


class RNet(_Refine, ZooModel):
    """MTCNN R-Net on 24x24 NCHW crops normalised as ``(rgb - 127.5) / 128``.

    Returns ``(cls_prob [N,2], bbox_pred [N,4], landmark_pred [N,10])``.
    """

    size = 24

    def __init__(self) -> None:
        super().__init__([(28, 3, (3, 2, "SAME")), (48, 3, (3, 2, "VALID")), (64, 2, None)], 128)


class ONet(_Refine, ZooModel):
    """MTCNN O-Net on 48x48 NCHW crops normalised as ``(rgb - 127.5) / 128``.

    Returns ``(cls_prob [N,2], bbox_pred [N,4], landmark_pred [N,10])``.
    """

    size = 48

    def __init__(self) -> None:
        super().__init__([(32, 3, (3, 2, "SAME")), (64, 3, (3, 2, "VALID")),
                          (64, 3, (2, 2, "SAME")), (128, 2, None)], 256)


def _refine_recipe(name: str, convs: str) -> Recipe:
    return Recipe(name, rules=[
        (rf"^(conv[{convs}])/weights$", r"\1.weight", hwio_to_oihw),
        (rf"^(conv[{convs}])/biases$", r"\1.bias"),
        (rf"^conv([{convs}])/alphas$", r"prelu\1.weight"),
        (r"^(fc1|cls_fc|bbox_fc|landmark_fc)/weights$", r"\1.weight", dense_to_linear),
        (r"^(fc1|cls_fc|bbox_fc|landmark_fc)/biases$", r"\1.bias"),
        *TRAINING_STATE_RULES,
        (r"^Variable$", None, "training step counter (a bare int32 tf.Variable)"),
    ])


RNET_FROM_TF1 = _refine_recipe("mtcnn_rnet_from_tf1", "123")
ONET_FROM_TF1 = _refine_recipe("mtcnn_onet_from_tf1", "1234")


def _refine_tf1(tf: Any, stages: list[tuple[int, int, tuple[int, int, str] | None]], fc: int,
                size: int, batch: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
    v1 = tf.compat.v1
    image = v1.placeholder(tf.float32, [batch, size, size, 3], name="input_image")
    x, cin = image, 3
    for i, (cout, k, pool) in enumerate(stages, 1):
        with v1.variable_scope(f"conv{i}"):
            w = v1.get_variable("weights", [k, k, cin, cout])
            b = v1.get_variable("biases", [cout])
            x = tf.nn.bias_add(tf.nn.conv2d(x, w, [1, 1, 1, 1], "VALID"), b)
            alphas = v1.get_variable("alphas", [cout])
            x = tf.nn.relu(x) + alphas * (x - tf.abs(x)) * 0.5
        if pool is not None:
            x = tf.nn.max_pool2d(x, pool[0], pool[1], pool[2], name=f"pool{i}")
        cin = cout
    x = tf.reshape(x, [-1, int(np.prod(x.shape[1:]))], name="Flatten/flatten/Reshape")

    def dense(x: Any, scope: str, cout: int) -> Any:
        with v1.variable_scope(scope):
            w = v1.get_variable("weights", [x.shape[-1], cout])
            b = v1.get_variable("biases", [cout])
            return tf.nn.bias_add(tf.matmul(x, w, name="MatMul"), b, name="BiasAdd")

    fc1 = tf.nn.relu(dense(x, "fc1", fc), name="fc1/Relu")
    outputs = {"cls_prob": tf.nn.softmax(dense(fc1, "cls_fc", 2), name="cls_fc/Softmax"),
               "bbox_pred": dense(fc1, "bbox_fc", 4),
               "landmark_pred": dense(fc1, "landmark_fc", 10)}
    return {"image": image}, outputs


def rnet_tf1(tf: Any, batch: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The TF1 R-Net with the published variable and op names, for ``tf1:rebuilt``."""
    return _refine_tf1(tf, [(28, 3, (3, 2, "SAME")), (48, 3, (3, 2, "VALID")), (64, 2, None)],
                       128, 24, batch)


def onet_tf1(tf: Any, batch: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The TF1 O-Net with the published variable and op names, for ``tf1:rebuilt``."""
    return _refine_tf1(tf, [(32, 3, (3, 2, "SAME")), (64, 3, (3, 2, "VALID")),
                            (64, 3, (2, 2, "SAME")), (128, 2, None)], 256, 48, batch)


# ----------------------------------------------------------------------------------- port

@dataclass(frozen=True)
class _Stage:
    """What differs between the three MTCNN ports."""

    name: str
    model: type
    recipe: Recipe
    builder: str  # "module:function" rebuilding the TF1 graph for tf1:rebuilt
    fetches: dict[str, Any]  # torch output -> tensor(s) in the training MetaGraph
    sizes: tuple[tuple[int, int, int, int], ...]  # NCHW parity cases without a fixed MetaGraph
    note: str
    description: str


STAGES = {s.name: s for s in (
    _Stage("mtcnn_pnet", PNet, PNET_FROM_TF1, "porter.graphs.mtcnn:pnet_tf1", PNET_TF1_FETCHES,
           ((1, 3, 12, 12), (2, 3, 37, 50), (1, 3, 97, 64)),
           "TF kernels HWIO -> OIHW; PReLU alphas as PReLU weights; "
           "max-pool SAME padding reproduced with -inf fill",
           "MTCNN P-Net face proposal network (3 conv + PReLU, 3 heads)"),
    _Stage("mtcnn_rnet", RNet, RNET_FROM_TF1, "porter.graphs.mtcnn:rnet_tf1", REFINE_TF1_FETCHES,
           ((1, 3, 24, 24), (5, 3, 24, 24)),
           "TF kernels HWIO -> OIHW, dense kernels [in, out] -> [out, in]; PReLU alphas as "
           "PReLU weights; SAME max-pool with -inf fill; NHWC flatten kept before fc1",
           "MTCNN R-Net face refinement network (24x24; 3 conv + PReLU, fc 128, 3 heads)"),
    _Stage("mtcnn_onet", ONet, ONET_FROM_TF1, "porter.graphs.mtcnn:onet_tf1", REFINE_TF1_FETCHES,
           ((1, 3, 48, 48), (5, 3, 48, 48)),
           "TF kernels HWIO -> OIHW, dense kernels [in, out] -> [out, in]; PReLU alphas as "
           "PReLU weights; SAME max-pools with -inf fill; NHWC flatten kept before fc1",
           "MTCNN O-Net face output network (48x48; 4 conv + PReLU, fc 256, 3 heads)"),
)}


def _matches(source: Any, stage: _Stage = STAGES["mtcnn_pnet"]) -> bool:
    """Exactly this stage: every tensor maps or drops by its recipe, every slot filled."""
    with torch.device("meta"):
        return stage.recipe.fits(source.tensors, stage.model())


def _metagraph_path(source: Any) -> str | None:
    if source.format == "tf1-metagraph":
        return str(source.path)
    return source.meta.get("metagraph")


def _checkpoint(source: Any) -> str:
    return str(source.meta.get("prefix") or source.meta.get("checkpoint"))


def _port(source: Any, keep: tuple[str, ...] = (), stage: _Stage = STAGES["mtcnn_pnet"],
          **_: Any):
    """Map the checkpoint onto the stage's module; ``keep`` lists drop-rule regexes to refuse."""
    from porter.graphs import Ported
    from porter.mapping.recipe import load_strict

    module = stage.model().eval()
    state, report = stage.recipe.apply(source.tensors, module, keep=keep)
    load_strict(module, state)
    report.notes.append(stage.note)
    return Ported(module, f"porter.graphs.mtcnn:{stage.model.__name__}", {}, report, ["image"],
                  list(PNET_OUTPUTS))


def _fixed_input_shape(source: Any) -> list[int] | None:
    """NHWC shape of the MetaGraph's ``input_image`` placeholder when fully defined."""
    for inp in source.meta.get("inputs", []):
        if inp["name"] == "input_image:0" and inp["shape"] and all(
                d > 0 for d in inp["shape"]):
            return list(inp["shape"])
    return None


def _cases(source: Any, ported: Any, stage: _Stage = STAGES["mtcnn_pnet"]) -> list:
    """The MetaGraph's own fixed input (256x12x12 for PNet-18), else the stage's sizes."""
    from porter.verification.parity import random_cases

    fixed = _fixed_input_shape(source) if _metagraph_path(source) else None
    if fixed is not None:
        n, h, w, c = fixed
        return random_cases("image", [(n, c, h, w)], seed=0)
    return random_cases("image", list(stage.sizes), seed=0)


def _reference(source: Any, ported: Any, stage: _Stage = STAGES["mtcnn_pnet"]):
    """TensorFlow in a child: the MetaGraph restored from the checkpoint, else rebuilt."""
    from porter.verification.runtimes.child import ChildRuntime
    from porter.verification.runtimes.tf1 import pinned_files

    meta = _metagraph_path(source)
    if meta and _fixed_input_shape(source) is not None:
        return ChildRuntime("porter.verification.runtimes.tf1:metagraph", {
            "meta": meta, "checkpoint": _checkpoint(source),
            "inputs": {"image": "input_image:0"}, "outputs": stage.fetches,
            **pinned_files(source, meta, _checkpoint(source))}, name="tensorflow")
    return ChildRuntime("porter.verification.runtimes.tf1:rebuilt", {
        "builder": stage.builder, "checkpoint": _checkpoint(source),
        **pinned_files(source, None, _checkpoint(source))}, name="tensorflow")


def _example(stage: _Stage) -> tuple[torch.Tensor]:
    size = getattr(stage.model, "size", None)
    return (torch.zeros(1, 3, size, size) if size else torch.zeros(1, 3, 48, 64),)


def _register() -> None:
    from functools import partial

    from porter.graphs import GraphPort, register_port
    from porter.verification.parity import Tolerance

    for stage in STAGES.values():
        register_port(GraphPort(
            name=stage.name, formats=("tf1-checkpoint", "tf1-metagraph"),
            graph=f"porter.graphs.mtcnn:{stage.model.__name__}",
            matches=partial(_matches, stage=stage), port=partial(_port, stage=stage),
            cases=partial(_cases, stage=stage), reference=partial(_reference, stage=stage),
            example_inputs=lambda ported, stage=stage: _example(stage),
            reference_name="tensorflow", tolerance=Tolerance(max_abs=1e-5),
            description=stage.description))


_register()
