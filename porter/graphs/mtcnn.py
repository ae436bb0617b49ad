"""MTCNN P-Net: the proposal network of the MTCNN face detector, ported from TensorFlow 1.x.

Paper: K. Zhang, Z. Zhang, Z. Li, Y. Qiao, "Joint Face Detection and Alignment using
Multi-task Cascaded Convolutional Networks", IEEE SPL 2016 (arXiv:1604.02878).
Origin of the weights: AITTSMD/MTCNN-Tensorflow (``data/MTCNN_model/PNet_landmark/PNet-18``),
MIT licence; a name-based TF1 checkpoint with its training MetaGraph.

Topology (read from PNet-18.meta): conv 3x3 VALID (10) + PReLU, max-pool 2x2 stride 2 SAME,
conv 3x3 VALID (16) + PReLU, conv 3x3 VALID (32) + PReLU, then three 1x1 heads: face
classification (2, softmax over channels), bounding-box regression (4), landmarks (10).
TF's PReLU is written ``relu(x) + alphas * (x - |x|) * 0.5``, which is exactly ``prelu``.
Fully convolutional: a 12x12 crop gives one 1x1 output cell, a larger image a map of them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from porter.importers.tf1 import TRAINING_STATE_RULES
from porter.mapping.layouts_tf import hwio_to_oihw
from porter.mapping.recipe import Recipe
from porter.mapping.tf_padding import TFSamePad2d
from porter.zoo.load import ZooModel

__all__ = ["PNet", "PNET_FROM_TF1", "pnet_tf1", "PNET_OUTPUTS", "PNET_TF1_FETCHES"]

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


# ----------------------------------------------------------------------------------- port

def _matches(source: Any) -> bool:
    """Exactly P-Net: every tensor maps or drops by the recipe, every slot filled, shapes fit."""
    with torch.device("meta"):
        return PNET_FROM_TF1.fits(source.tensors, PNet())


def _metagraph_path(source: Any) -> str | None:
    if source.format == "tf1-metagraph":
        return str(source.path)
    return source.meta.get("metagraph")


def _checkpoint(source: Any) -> str:
    return str(source.meta.get("prefix") or source.meta.get("checkpoint"))


def _port(source: Any, keep: tuple[str, ...] = (), **_: Any):
    """Map the checkpoint onto PNet; ``keep`` lists drop-rule regexes to refuse dropping."""
    from porter.graphs import Ported
    from porter.mapping.recipe import load_strict

    module = PNet().eval()
    state, report = PNET_FROM_TF1.apply(source.tensors, module, keep=keep)
    load_strict(module, state)
    report.notes.append("TF kernels HWIO -> OIHW; PReLU alphas as PReLU weights; "
                        "max-pool SAME padding reproduced with -inf fill")
    return Ported(module, "porter.graphs.mtcnn:PNet", {}, report, ["image"], list(PNET_OUTPUTS))


def _fixed_input_shape(source: Any) -> list[int] | None:
    """NHWC shape of the MetaGraph's ``input_image`` placeholder when fully defined."""
    for inp in source.meta.get("inputs", []):
        if inp["name"] == "input_image:0" and inp["shape"] and all(
                d > 0 for d in inp["shape"]):
            return list(inp["shape"])
    return None


def _cases(source: Any, ported: Any) -> list:
    """The MetaGraph's own fixed input (256x12x12 for PNet-18), else several image sizes."""
    from porter.verify.parity import random_cases

    fixed = _fixed_input_shape(source) if _metagraph_path(source) else None
    if fixed is not None:
        n, h, w, c = fixed
        return random_cases("image", [(n, c, h, w)], seed=0)
    return random_cases("image", [(1, 3, 12, 12), (2, 3, 37, 50), (1, 3, 97, 64)], seed=0)


def _reference(source: Any, ported: Any):
    """TensorFlow in a child: the MetaGraph restored from the checkpoint, else P-Net rebuilt."""
    from porter.verify.runtimes.child import ChildRuntime

    meta = _metagraph_path(source)
    if meta and _fixed_input_shape(source) is not None:
        return ChildRuntime("porter.verify.runtimes.tf1:metagraph", {
            "meta": meta, "checkpoint": _checkpoint(source),
            "inputs": {"image": "input_image:0"}, "outputs": PNET_TF1_FETCHES},
            name="tensorflow")
    return ChildRuntime("porter.verify.runtimes.tf1:rebuilt", {
        "builder": "porter.graphs.mtcnn:pnet_tf1", "checkpoint": _checkpoint(source)},
        name="tensorflow")


def _register() -> None:
    from porter.graphs import GraphPort, register_port
    from porter.verify.parity import Tolerance

    register_port(GraphPort(
        name="mtcnn_pnet", formats=("tf1-checkpoint", "tf1-metagraph"),
        graph="porter.graphs.mtcnn:PNet", matches=_matches, port=_port, cases=_cases,
        reference=_reference, example_inputs=lambda ported: (torch.zeros(1, 3, 48, 64),),
        reference_name="tensorflow", tolerance=Tolerance(max_abs=1e-5),
        description="MTCNN P-Net face proposal network (3 conv + PReLU, 3 heads)"))


_register()
