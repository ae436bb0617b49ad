"""Generic accounting: unread tensors are dropped as unused (not "rewritten"); layouts and
near-equal folds are found only when unambiguous."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import porter
from porter.generic import generic_port
from porter.mapping.folds import find_close, layout_candidates


def test_unread_initializers_are_dropped_as_unused(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(np.array(7, np.int64), "bn.num_batches_tracked"),
             numpy_helper.from_array(rng.normal(size=3).astype(np.float32), "stale")]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])], inits)
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    _, ported = generic_port(porter.open(path))
    rows = {e.source: e for e in ported.mapping.entries}
    assert rows["w"].action == "mapped"
    np.testing.assert_array_equal(ported.module.state_dict()[rows["w"].target].numpy().ravel(),
                                  w.ravel() if rows["w"].transform is None else w.T.ravel())
    for name in ("bn.num_batches_tracked", "stale"):
        assert rows[name].action == "dropped" and rows[name].note.startswith("unused")
    assert ported.mapping.counts()["rewritten"] == 0


def test_find_close_needs_one_candidate_within_tolerance():
    a = np.linspace(-2, 2, 24).reshape(2, 3, 4)
    params = {"p": a.astype(np.float32), "q": (a + 1e-3).astype(np.float32)}
    assert find_close(a, params)[0] == "p"
    assert find_close(a, {**params, "r": a.astype(np.float32)}) is None  # a tie: refuse
    assert find_close(a + 1e-2, params) is None
    assert find_close(a.reshape(1, 2, 3, 4), params)[0] == "p"  # size-1 axes ignored


def test_layout_candidates_cover_tf_kernels():
    hwio = np.arange(3 * 3 * 2 * 5, dtype=np.float32).reshape(3, 3, 2, 5)
    names = [t for _, t in layout_candidates(hwio)]
    assert names == [None, "hwio_to_oihw", "depthwise_to_oihw"]
    oihw = dict((t, a) for a, t in layout_candidates(hwio))["hwio_to_oihw"]
    np.testing.assert_array_equal(oihw, hwio.transpose(3, 2, 0, 1))
