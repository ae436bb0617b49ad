"""PP-OCR mobile v2 text-direction classifier (Paddle inference model, legacy ProgramDesc).

open -> weights bit-exact vs Paddle (child) -> to_onnx (paddle2onnx, child) -> convert_onnx ->
parity with Paddle Inference (<= 1e-5 on the probabilities) and with the ONNX twin.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import porter
from porter.importers.paddle import to_onnx
from porter.verification.runtimes.onnxruntime import OrtRunner
from porter.verification.runtimes.paddle import paddle_inference_runtime

MODEL = Path(__file__).resolve().parents[2].parent / "shared" / "models" / "ppocr_cls_paddle"
TWIN = MODEL / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
OUTPUT = "softmax_0.tmp_0"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (MODEL / "inference.pdmodel").is_file(),
                       reason=f"real model not present at {MODEL} (see ../shared/models/README.md)"),
]

_PADDLE_READ = """
import pickle, sys, numpy as np, paddle
paddle.enable_static()
exe = paddle.static.Executor(paddle.CPUPlace())
prog, _, _ = paddle.static.load_inference_model(sys.argv[1], exe)
scope = paddle.static.global_scope()
out = {v.name: np.array(scope.find_var(v.name).get_tensor()) for v in prog.list_vars()
       if v.persistable and v.name not in ("feed", "fetch")}
with open(sys.argv[2], "wb") as fh:
    pickle.dump(out, fh)
"""


@pytest.fixture(scope="module")
def inputs() -> dict[str, np.ndarray]:
    # The classifier's preprocessing: 3x48x192, normalised to [-1, 1].
    rng = np.random.default_rng(0)
    return {"x": rng.uniform(-1, 1, (4, 3, 48, 192)).astype("float32")}


@pytest.fixture(scope="module")
def paddle_out(inputs) -> np.ndarray:
    with paddle_inference_runtime(MODEL) as run:
        return run(inputs)[OUTPUT]


def test_weights_bit_exact_against_paddle(tmp_path: Path) -> None:
    src = porter.open(MODEL)
    out = tmp_path / "ref.pkl"
    env = {**os.environ, "FLAGS_enable_pir_api": "0", "GLOG_minloglevel": "2"}
    subprocess.run([sys.executable, "-c", _PADDLE_READ, str(MODEL / "inference"), str(out)],
                   check=True, capture_output=True, env=env)
    with open(out, "rb") as fh:  # written by the child above
        ref = pickle.load(fh)
    assert len(ref) == len(src.tensors) == 213
    for name, want in ref.items():
        got = src.tensors[name].numpy()
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), name


def test_generic_path_parity_with_paddle_and_twin(inputs, paddle_out) -> None:
    model = to_onnx(porter.open(MODEL))
    twin = OrtRunner(TWIN)
    twin_out = twin({twin.input_names[0]: inputs["x"]})[twin.output_names[0]]
    ort_out = OrtRunner(model)(inputs)[OUTPUT]
    assert paddle_out.shape == (4, 2)
    assert np.max(np.abs(ort_out - paddle_out)) <= 1e-5
    try:
        from porter.converters import convert_onnx
    except ImportError:  # the generic converter is optional for this check
        convert_onnx = None
    if convert_onnx is not None:
        import torch

        module = convert_onnx(model).eval()
        with torch.no_grad():
            got = module(torch.from_numpy(inputs["x"]))
        got = (got[OUTPUT] if isinstance(got, dict) else
               got[0] if isinstance(got, (tuple, list)) else got).numpy()
    else:
        got = ort_out
    assert np.max(np.abs(got - paddle_out)) <= 1e-5
    assert np.max(np.abs(got - twin_out)) <= 1e-5
    assert np.array_equal(got.argmax(1), paddle_out.argmax(1))
    np.testing.assert_allclose(got.sum(1), 1.0, rtol=1e-5)


def test_direct_converter_parity_and_accounting(inputs, paddle_out) -> None:
    """The direct Paddle-op converter (no ONNX): <= 1e-5 against Paddle Inference at two
    input sizes, and every .pdiparams tensor found bit-exact in the module."""
    import torch

    from porter.converters.paddle import convert_paddle
    from porter.generic import account_verbatim

    src = porter.open(MODEL)
    module = convert_paddle(src)
    with torch.no_grad():
        got = module(torch.from_numpy(inputs["x"])).numpy()
    assert np.max(np.abs(got - paddle_out)) <= 1e-5
    wide = np.random.default_rng(1).uniform(-1, 1, (2, 3, 48, 320)).astype("float32")
    with paddle_inference_runtime(MODEL) as run:
        want = run({"x": wide})[OUTPUT]
    with torch.no_grad():
        got = module(torch.from_numpy(wide)).numpy()
    assert want.shape == (2, 2) and np.max(np.abs(got - want)) <= 1e-5
    report = account_verbatim(src, dict(module.state_dict()))
    assert report.counts()["mapped"] == len(src.tensors) == 213
