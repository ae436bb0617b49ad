"""In-place reuse of dying activations: taken where safe, refused wherever a tensor is shared."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch.utils._python_dispatch import TorchDispatchMode

from porter.converters import convert_onnx

RNG = np.random.default_rng(3)


class _Ops(TorchDispatchMode):
    """Records the ATen overloads a forward pass calls."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.__name__)
        return func(*args, **(kwargs or {}))


def _graph(nodes, outputs, inits=None, x_shape=(1, 4, 6, 6)):
    w = numpy_helper.from_array(RNG.standard_normal((4, 4, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(RNG.standard_normal(4).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1])] + nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        [w, b] + (inits or []))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _check(model, *, expect_inplace: set[str] | None = None,
           forbid_inplace: set[str] | None = None) -> list[str]:
    """Run inference on the converted model, compare with onnxruntime, return the ATen ops."""
    x = RNG.standard_normal(tuple(d.dim_value for d in
                                  model.graph.input[0].type.tensor_type.shape.dim)).astype(
        np.float32)
    ref = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    module = convert_onnx(model)
    xt = torch.from_numpy(x.copy())
    with torch.inference_mode(), _Ops() as seen:
        got = module(xt)
    got = [got] if isinstance(got, torch.Tensor) else list(got)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g.numpy(), r, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(xt.numpy(), x)  # the caller's input is never touched
    for op in expect_inplace or ():
        assert op in seen.names, seen.names
    for op in forbid_inplace or ():
        assert op not in seen.names, seen.names
    return seen.names


def test_relu_after_conv_runs_in_place_only_without_autograd():
    model = _graph([helper.make_node("Relu", ["c"], ["y"])], ["y"])
    _check(model, expect_inplace={"relu_.default"})
    module = convert_onnx(model)
    with _Ops() as seen:  # autograd on: the out-of-place op, so backward stays correct
        module(torch.randn(1, 4, 6, 6))
    assert "relu_.default" not in seen.names and "relu.default" in seen.names


def test_clip_and_sigmoid_chain_reuse_one_buffer():
    clip = [numpy_helper.from_array(np.array(0.0, np.float32), "lo"),
            numpy_helper.from_array(np.array(6.0, np.float32), "hi")]
    model = _graph([helper.make_node("Clip", ["c", "lo", "hi"], ["k"]),
                    helper.make_node("Sigmoid", ["k"], ["y"])], ["y"], clip)
    _check(model, expect_inplace={"hardtanh_.default", "sigmoid_.default"})


def test_identity_alias_still_live_is_not_overwritten():
    # Identity returns the very tensor object, so 'i' and 'c' are one tensor: Relu is the last
    # reader of 'c' but overwriting it would corrupt the graph output 'i'.
    model = _graph([helper.make_node("Identity", ["c"], ["i"]),
                    helper.make_node("Relu", ["c"], ["y"])], ["y", "i"])
    _check(model, forbid_inplace={"relu_.default"})


def test_view_of_the_input_keeps_it_from_being_overwritten():
    shape = numpy_helper.from_array(np.array([1, -1], np.int64), "shape")
    model = _graph([helper.make_node("Reshape", ["c", "shape"], ["v"]),
                    helper.make_node("Relu", ["c"], ["y"])], ["y", "v"], [shape])
    _check(model, forbid_inplace={"relu_.default"})


def test_graph_input_is_never_overwritten():
    model = _graph([helper.make_node("Relu", ["x"], ["y"]),
                    helper.make_node("Add", ["c", "y"], ["z"])], ["z"])
    _check(model, forbid_inplace={"relu_.default"})


@pytest.mark.parametrize("bias_first", [False, True])
def test_broadcast_add_writes_into_the_full_size_operand(bias_first):
    bias = numpy_helper.from_array(RNG.standard_normal((1, 4, 1, 1)).astype(np.float32), "k")
    nodes = [helper.make_node("Mul", ["k", "k"], ["kk"]),  # a runtime tensor, not a weight
             helper.make_node("Add", ["kk", "c"] if bias_first else ["c", "kk"], ["y"])]
    names = _check(_graph(nodes, ["y"], [bias]))
    assert "add.out" in names  # written into the conv output, whichever operand it is


def test_intermediates_are_recorded_unclobbered():
    model = _graph([helper.make_node("Relu", ["c"], ["r"]),
                    helper.make_node("Neg", ["r"], ["y"])], ["y"])
    module = convert_onnx(model)
    x = torch.randn(1, 4, 6, 6)
    with torch.inference_mode():
        rec = module.run_with_intermediates(x)
    assert torch.equal(rec["r"], torch.relu(rec["c"]))
    assert torch.equal(rec["y"], -rec["r"])


def test_backward_through_converted_module_unaffected():
    model = _graph([helper.make_node("Relu", ["c"], ["r"]),
                    helper.make_node("Sigmoid", ["r"], ["y"])], ["y"])
    module = convert_onnx(model).train()
    module(torch.randn(1, 4, 6, 6)).sum().backward()
    assert all(p.grad is not None for p in module.parameters())


@pytest.mark.parametrize("op", ["Sub", "Mul"])
def test_non_commutative_or_scaling_binary_into_second_operand(op):
    k = numpy_helper.from_array(RNG.standard_normal((1, 4, 1, 1)).astype(np.float32), "k")
    nodes = [helper.make_node("Neg", ["k"], ["nk"]),
             helper.make_node(op, ["nk", "c"], ["y"])]  # the full-size operand comes second
    names = _check(_graph(nodes, ["y"], [k]))
    assert f"{op.lower()}.out" in names


def test_output_buffers_reuse_only_what_nobody_holds() -> None:
    """A kept output is handed out again only when no reference and no view of it remains."""
    from porter.converters.reuse import OutputBuffers

    bufs = OutputBuffers()
    shape = torch.Size((1, 4, 1024, 1024))  # 16 MiB: large enough to keep
    first = bufs.keep(0, torch.empty(shape))
    ptr = first.data_ptr()
    assert bufs.take(0, shape, torch.float32) is None  # `first` is still held here
    bufs.keep(0, first)
    view = first[:, :1]
    del first
    assert bufs.take(0, shape, torch.float32) is None  # a view of it is alive
    again = torch.empty(shape)
    bufs.keep(0, again)
    ptr = again.data_ptr()
    del view, again
    assert bufs.take(0, torch.Size((1, 4, 512, 512)), torch.float32) is None  # other shape
    bufs.keep(0, torch.empty(shape))
    got = bufs.take(0, shape, torch.float32)
    assert got is not None and got.shape == shape
    assert bufs.take(0, shape, torch.float32) is None  # taken: a second caller gets nothing
    small = torch.empty(16)
    bufs.keep(1, small)
    assert 1 not in bufs.slots and ptr  # small outputs are never kept


def test_output_buffers_are_per_thread_and_copies_start_empty() -> None:
    import copy
    import pickle
    import threading

    from porter.converters.reuse import OutputBuffers

    bufs = OutputBuffers()
    bufs.keep(0, torch.empty(1 << 22))
    seen = []
    t = threading.Thread(target=lambda: seen.append(dict(bufs.slots)))
    t.start()
    t.join()
    assert seen == [{}] and 0 in bufs.slots
    for other in (copy.deepcopy(bufs), pickle.loads(pickle.dumps(bufs))):
        assert other.slots == {}
