"""Measure onnxslim against onnxsim on porter's ONNX exports (nodes left, time, parity).

Usage: python scripts/bench_simplify.py [MODEL.onnx ...]
Without arguments it exports MODNet (random weights, opset 11, dynamic H/W) and a small
Mask2Former (transformers, offline, opset 16, float64 pass applied). onnxsim is the `bench`
extra, not a runtime dependency.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import torch


def _run(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})


def _exports():
    from porter.export.passes import run_passes
    from porter.export.torch_onnx import export_lowest_opset
    from porter.graphs.modnet import MODNet

    torch.manual_seed(0)
    ex = export_lowest_opset(MODNet().eval(), [torch.zeros(1, 3, 64, 64)], ["input"], ["output"],
                             pick=lambda o: (o,), dynamic_axes={"input": {2: "h", 3: "w"}})
    yield "MODNet (opset 11, dynamic H/W)", ex.model, (1, 3, 64, 64)
    import transformers

    bb = transformers.SwinConfig(embed_dim=32, depths=[1, 1, 1, 1], num_heads=[1, 2, 4, 8],
                                 window_size=4, image_size=64,
                                 out_features=["stage1", "stage2", "stage3", "stage4"])
    cfg = transformers.Mask2FormerConfig(
        backbone_config=bb, hidden_dim=32, mask_feature_size=32, feature_size=32, num_queries=8,
        encoder_layers=1, decoder_layers=2, encoder_feedforward_dim=64, dim_feedforward=64,
        num_attention_heads=2, num_labels=5, common_stride=4)
    m = transformers.Mask2FormerForUniversalSegmentation(cfg).eval()
    ex = export_lowest_opset(lambda_module(m), [torch.zeros(1, 3, 64, 64)], ["pixel_values"],
                             ["logits", "masks"], pick=tuple)
    run_passes(ex.model)
    yield f"Mask2Former small (opset {ex.opset})", ex.model, (1, 3, 64, 64)


def lambda_module(m):
    class Wrap(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = m

        def forward(self, x):
            o = self.m(pixel_values=x)
            return o.class_queries_logits, o.masks_queries_logits

    return Wrap().eval()


def main(argv: list[str]) -> int:
    import onnxsim
    import onnxslim

    warnings.simplefilter("ignore")
    models = ([(p, onnx.load(p), None) for p in argv] if argv else list(_exports()))
    print("| model | raw nodes | onnxslim nodes (s) | onnxsim nodes (s) | max|Δ| slim / sim |")
    print("|---|---|---|---|---|")
    for name, model, shape in models:
        shape = shape or [d.dim_value or 64 for d in model.graph.input[0].type.tensor_type.shape.dim]
        x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
        ref = _run(model, x)
        row = [name, str(len(model.graph.node))]
        deltas = []
        for tool in ("slim", "sim"):
            t = time.perf_counter()
            out = onnxslim.slim(onnx.ModelProto.FromString(model.SerializeToString())) \
                if tool == "slim" else onnxsim.simplify(
                    onnx.ModelProto.FromString(model.SerializeToString()))[0]
            dt = time.perf_counter() - t
            left = Counter(n.op_type for n in out.graph.node)
            row.append(f"{len(out.graph.node)} ({dt:.2f}); Constant {left.get('Constant', 0)}")
            deltas.append(max(float(np.abs(a - b).max()) for a, b in zip(ref, _run(out, x))))
        row.append(" / ".join(f"{d:.1e}" for d in deltas))
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
