"""The direct Paddle-op -> torch converter against Paddle Inference, on Paddle 3 programs
(PIR JSON and legacy ProgramDesc) saved by ``paddle.jit.save`` in a child process
(scripts/build_paddle_fixtures.py: ``opsnet`` covers the common vision ops, with the
float-list ``scale`` of ``nearest_interp_v2`` that paddle2onnx rejects; ``edgenet`` the
padding and resizing rules where Paddle and torch differ)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import porter
from porter.converters.paddle import UnsupportedPaddleOpsError, convert_paddle, supported_ops
from porter.errors import PorterError
from porter.verification.runtimes.paddle import paddle_inference_runtime

SHAPES = [(1, 3, 16, 16), (2, 3, 20, 28), (1, 3, 33, 17)]


def _parity(path: Path, shapes=SHAPES, tol: float = 1e-5) -> dict[str, float]:
    """Worst max|Δ| per output of the direct conversion vs Paddle Inference over ``shapes``
    (bound: ``tol``, relative to the output's peak where that exceeds 1)."""
    module = convert_paddle(porter.open(path))
    worst: dict[str, float] = {}
    with paddle_inference_runtime(path) as run:
        for k, shape in enumerate(shapes):
            x = np.random.default_rng(k).uniform(-1, 1, shape).astype("float32")
            ref = run({module.input_names[0]: x})
            with torch.no_grad():
                got = module(torch.from_numpy(x))
            got = got if isinstance(got, tuple) else (got,)
            assert sorted(ref) == sorted(module.output_names)
            for name, g in zip(module.output_names, got):
                assert tuple(g.shape) == ref[name].shape, (name, shape)
                err = float(np.max(np.abs(g.numpy().astype(np.float64) - ref[name])))
                peak = float(np.max(np.abs(ref[name]))) if ref[name].size else 0.0
                assert err <= tol * max(1.0, peak), (name, shape, err, peak)
                worst[name] = max(worst.get(name, 0.0), err)
    return worst


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["pir", "legacy"])
@pytest.mark.parametrize("net", ["opsnet", "edgenet", "extranet"])
def test_direct_conversion_matches_paddle_inference(paddle_models: Path, mode: str,
                                                    net: str) -> None:
    worst = _parity(paddle_models / mode / net)
    assert len(worst) >= 2


@pytest.mark.parametrize("mode", ["pir", "legacy"])
def test_program_carries_float_list_scale(paddle_models: Path, mode: str) -> None:
    src = porter.open(paddle_models / mode / "opsnet")
    interp = [d for _, d in src.graph.nodes(data=True) if "nearest_interp" in d["op_type"]]
    assert interp and interp[0]["attrs"]["scale"] == [2.0, 2.0]
    assert src.meta["program_format"] == ("pir" if mode == "pir" else "program-desc")


@pytest.mark.slow
def test_paddle2onnx_failure_reason_reaches_the_user(paddle_models: Path) -> None:
    """paddle2onnx 2.1 cannot read the f64 ``scale`` list of a Paddle 3 program; its reason
    (printed on the child's stdout) is in the error, not just an exit code."""
    from porter.importers.paddle import to_onnx

    with pytest.raises(PorterError) as err:
        to_onnx(paddle_models / "pir" / "opsnet")
    assert "FloatAttribute" in str(err.value) and "exit code" in str(err.value)


def test_generic_port_goes_direct_and_accounts_every_tensor(paddle_models: Path) -> None:
    from porter.generic import generic_port

    src = porter.open(paddle_models / "pir" / "opsnet")
    port, ported = generic_port(src)
    report = ported.mapping
    entries = [e for e in report.entries if e.source is not None]
    assert sorted(e.source for e in entries) == sorted(src.tensors) and len(entries) == 17
    assert all(e.action == "mapped" and e.note.startswith("bit-exact") for e in entries), [
        e.source for e in entries if e.action != "mapped"]
    assert any("direct converter" in n for n in report.notes)
    assert report.counts()["accounted"] == 17
    text = ported.render_files()["model.py"]  # executed and compared inside render_files
    assert "class Model(nn.Module)" in text and "F.batch_norm" in text


def test_unsupported_ops_are_listed_at_once(paddle_models: Path) -> None:
    src = porter.open(paddle_models / "pir" / "opsnet")
    renamed = {}
    for key, d in src.graph.nodes(data=True):
        if d["op_type"] in ("pd_op.softmax", "pd_op.gelu"):
            renamed[key] = d["op_type"]
            d["op_type"] = d["op_type"].replace("pd_op.", "pd_op.custom_")
    assert len(renamed) == 2
    with pytest.raises(UnsupportedPaddleOpsError) as err:
        convert_paddle(src)
    assert "pd_op.custom_softmax" in str(err.value) and "pd_op.custom_gelu" in str(err.value)
    assert err.value.counts == {"pd_op.custom_softmax": 1, "pd_op.custom_gelu": 1}


_COMMON = ("conv2d depthwise_conv2d conv2d_transpose batch_norm layer_norm relu relu6 "
           "hard_swish hard_sigmoid sigmoid swish gelu leaky_relu prelu tanh elementwise_add "
           "elementwise_sub elementwise_mul elementwise_div elementwise_pow pool2d matmul "
           "matmul_v2 mul fc softmax scale concat split slice reshape2 transpose2 "
           "flatten_contiguous_range squeeze2 unsqueeze2 nearest_interp_v2 bilinear_interp_v2 "
           "pad3d shape cast fill_constant dropout clip arg_max").split()
_PIR = ("conv2d depthwise_conv2d conv2d_transpose batch_norm_ layer_norm relu relu6 hardswish "
        "hardsigmoid sigmoid swish gelu leaky_relu prelu tanh add subtract multiply divide "
        "elementwise_pow pool2d matmul softmax scale concat split split_with_num slice reshape "
        "transpose flatten squeeze unsqueeze nearest_interp bilinear_interp pad3d shape64 cast "
        "full full_int_array dropout clip argmax").split()


def test_registry_covers_the_common_vision_ops() -> None:
    have = set(supported_ops())
    missing = [op for op in _COMMON if op not in have]
    missing += [f"pd_op.{op}" for op in _PIR if f"pd_op.{op}" not in have]
    assert not missing
    assert {"builtin.combine", "builtin.split"} <= have


@pytest.mark.slow
def test_both_paths_failing_report_both_reasons(paddle_models: Path) -> None:
    """Where the direct converter refuses, paddle2onnx is tried; when it fails too, the one
    error names the unsupported op and paddle2onnx's own reason."""
    from porter.generic import generic_port

    src = porter.open(paddle_models / "pir" / "opsnet")
    for _, d in src.graph.nodes(data=True):
        if d["op_type"] == "pd_op.gelu":
            d["op_type"] = "pd_op.custom_gelu"
    with pytest.raises(PorterError) as err:
        generic_port(src)
    msg = str(err.value)
    assert "pd_op.custom_gelu" in msg and "FloatAttribute" in msg


def test_inexpressible_attributes_are_refused_by_op(paddle_models: Path) -> None:
    """An attribute no converter can express names the op (and its index), once per op."""
    from porter.converters.paddle.context import Unsupported

    src = porter.open(paddle_models / "legacy" / "opsnet")
    pools = [d for _, d in src.graph.nodes(data=True) if d["op_type"] == "pool2d"]
    for d in pools:
        d["attrs"]["pooling_type"] = "lp"
    with pytest.raises(Unsupported) as err:
        convert_paddle(src)
    msg = str(err.value)
    assert msg.count("pool2d (op ") == len(pools) >= 2 and "pooling_type 'lp'" in msg


@pytest.mark.slow
def test_lstm_converts_directly(paddle_models: Path) -> None:
    """A bidirectional two-layer LSTM (``pd_op.rnn``) against Paddle Inference; its
    non-persistable dropout state is declared in the program but not in the params file."""
    src = porter.open(paddle_models / "pir" / "lstm")
    assert len(src.tensors) == 16
    worst = _parity(paddle_models / "pir" / "lstm", [(1, 5, 6), (3, 7, 6), (2, 1, 6)])
    assert len(worst) == 1


@pytest.mark.slow
def test_unconvertible_ops_fall_back_to_paddle2onnx(paddle_models: Path) -> None:
    """A program the direct converter refuses (here: an op renamed to one it does not know,
    the model file itself untouched) converts through paddle2onnx, says so, and still matches
    Paddle Inference."""
    from porter.generic import generic_port

    src = porter.open(paddle_models / "pir" / "lstm")
    for _, d in src.graph.nodes(data=True):
        if d["op_type"] == "pd_op.rnn":
            d["op_type"] = "pd_op.custom_rnn"
    port, ported = generic_port(src)
    assert any("pd_op.custom_rnn" in n and "paddle2onnx" in n for n in ported.mapping.notes)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 7, 6)).astype("float32")
    with paddle_inference_runtime(paddle_models / "pir" / "lstm") as run:
        ref = run({"x": x})
    with torch.no_grad():
        got = ported.module(torch.from_numpy(x))
    (name,) = ref
    assert ref[name].shape == (3, 7, 10)
    assert float(np.max(np.abs(got.numpy() - ref[name]))) <= 1e-5
