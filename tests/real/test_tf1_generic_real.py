"""The real MTCNN P-Net (AITTSMD/MTCNN-Tensorflow PNet-18) on the generic path: its training
MetaGraph prepared by TensorFlow with the variables kept out, tf2onnx, porter's converter given
the checkpoint's tensors; parity against the restored MetaGraph, and every checkpoint variable
traced (none left as merely "rewritten")."""

from __future__ import annotations

from pathlib import Path

import pytest

from porter.pipeline import convert

PNET = Path(__file__).resolve().parents[3] / "shared" / "models" / "mtcnn_pnet" / "PNet-18"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path(f"{PNET}.index").is_file(),
                       reason=f"real model not present: {PNET}.index (../shared/models)"),
]


def test_real_pnet_metagraph_converts_generically(tmp_path):
    result = convert(PNET, graph="generic", verify="cpu", out=tmp_path / "out")
    m = result.manifest
    assert m["io"]["inputs"] == ["input_image:0"]
    assert set(m["io"]["outputs"]) == {"Reshape_4:0", "bbox_pred:0", "landmark_pred:0"}
    assert m["parity"]["passed"] and m["parity"]["reference"] == "tensorflow"
    assert m["parity"]["worst_max_abs"] < 1e-5
    assert m["parity"]["cases"][0]["shapes"]["input_image:0"] == [256, 12, 12, 3]
    c = m["mapping"]["counts"]
    assert (c["source_tensors"], c["mapped"], c["folded"], c["dropped"], c["rewritten"]) == (
        31, 15, 0, 16, 0)
    rows = {e["source"]: e for e in m["mapping"]["entries"]}
    for i in (1, 2, 3):  # never constants to tf2onnx: PReLU's "* 0.5" stays an op of the graph
        assert (rows[f"conv{i}/alphas"]["action"], rows[f"conv{i}/alphas"]["note"]) == (
            "mapped", "bit-exact")
    assert rows["conv2/weights"]["transform"] == "hwio_to_oihw"
    assert rows["Variable"]["action"] == "dropped"
