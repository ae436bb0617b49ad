"""The generic converter on real third-party ONNX models, against onnxruntime."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

MODELS = Path(__file__).resolve().parents[2].parent / "shared" / "models"
MODNET = MODELS / "modnet_photographic_portrait_matting.onnx"
PPOCR = MODELS / "ppocr_cls_paddle" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not MODELS.is_dir(), reason=f"real models not found at {MODELS}"),
]


def _ort(path: Path, name: str, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {name: x})[0]


@pytest.fixture(scope="module")
def modnet():
    from porter.converters import convert_onnx

    return convert_onnx(MODNET)


@pytest.mark.parametrize("hw", [(512, 512), (512, 672)])
def test_modnet_matches_onnxruntime(modnet, hw) -> None:
    import torch

    x = np.random.default_rng(0).random((1, 3, *hw), dtype=np.float32)
    with torch.no_grad():
        y = modnet(torch.from_numpy(x)).numpy()
    assert np.abs(y - _ort(MODNET, "input", x)).max() <= 1e-4


def test_ppocr_cls_constant_weights_match(tmp_path) -> None:
    import torch

    from porter.converters import convert_onnx

    module = convert_onnx(PPOCR)
    assert all("initializer" not in n for n, _ in module.named_parameters())
    assert "conv1.weight" in dict(module.named_parameters())
    x = np.random.default_rng(0).random((3, 3, 48, 192), dtype=np.float32)
    with torch.no_grad():
        y = module(torch.from_numpy(x)).numpy()
    assert np.abs(y - _ort(PPOCR, "x", x)).max() <= 1e-5


def test_modnet_source_export_is_short_and_matches(tmp_path) -> None:
    from porter.converters import export_source

    path = export_source(MODNET, tmp_path / "modnet")
    text = path.read_text()
    assert len(text.splitlines()) < 600
    imports = [ln for ln in text.splitlines() if ln.startswith(("import ", "from "))]
    assert imports == ["from __future__ import annotations", "import torch",
                       "import torch.nn.functional as F", "from torch import nn"]
    x = np.random.default_rng(2).random((1, 3, 256, 320), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np, torch; sys.path.insert(0, sys.argv[1]);"
            "from safetensors.torch import load_file; from model import Model;"
            "m = Model(); m.load_state_dict(load_file(sys.argv[1] + '/model.safetensors'));"
            "m.eval(); x = torch.from_numpy(np.load(sys.argv[2]));"
            "np.save(sys.argv[3], m(x).detach().numpy())")
    subprocess.run([sys.executable, "-c", code, str(path.parent), str(tmp_path / "x.npy"),
                    str(tmp_path / "y.npy")], check=True)
    assert np.abs(np.load(tmp_path / "y.npy") - _ort(MODNET, "input", x)).max() <= 1e-4
