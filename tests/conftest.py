"""Shared fixtures. Frameworks (TensorFlow, Paddle) only ever run in child processes."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_MODELS = ROOT.parent / "shared" / "models"


@pytest.fixture(scope="session")
def tf1_fixtures(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """TF1 checkpoints / MetaGraph / frozen graph built by TensorFlow in one child process,
    with what TensorFlow itself reads from them and from every real checkpoint under
    ../shared/models (see scripts/build_tf1_fixtures.py)."""
    out = tmp_path_factory.mktemp("tf1")
    real = [str(p)[:-len(".index")] for p in sorted(SHARED_MODELS.glob("*/*.index"))]
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_tf1_fixtures.py"),
                           str(out), *real], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(out / "expected.pkl", "rb") as fh:
        return out, pickle.load(fh)


def _real_model(relpath: str) -> Path:
    path = SHARED_MODELS / relpath
    if not path.exists():
        pytest.skip(f"real model {relpath} not available ({SHARED_MODELS} is missing; CI has it)")
    return path


@pytest.fixture(scope="session")
def real_model():
    """real_model(relpath) -> path under ../shared/models, or skip with the reason."""
    return _real_model


@pytest.fixture(scope="session")
def modnet_onnx(tmp_path_factory: pytest.TempPathFactory):
    """factory(opset) -> (path, module): graphs.modnet with seeded random weights (BatchNorm
    statistics included) exported by torch.onnx (TorchScript exporter) at that opset."""
    import warnings

    import torch

    from porter.graphs.modnet import MODNet

    cache: dict[int, tuple[Path, object]] = {}
    gen = torch.Generator().manual_seed(1234)
    module = MODNet().eval()
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=gen) * 0.2)

    def build(opset: int):
        if opset not in cache:
            path = tmp_path_factory.mktemp(f"modnet_op{opset}") / "modnet.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(module, (torch.zeros(1, 3, 64, 64),), str(path),
                                  opset_version=opset, dynamo=False, input_names=["input"],
                                  output_names=["output"],
                                  dynamic_axes={"input": {0: "n", 2: "h", 3: "w"},
                                                "output": {0: "n", 2: "h", 3: "w"}})
            cache[opset] = (path, module)
        return cache[opset]

    return build


@pytest.fixture(scope="session")
def paddle_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Paddle fixtures (``params``, ``legacy`` ProgramDesc, ``pir`` JSON), each in its own
    sub-folder, built once per session by Paddle itself in child processes
    (scripts/build_paddle_fixtures.py records what Paddle reads back)."""
    import os

    out = tmp_path_factory.mktemp("paddle_models")
    for mode in ("params", "legacy", "pir"):
        env = {**os.environ, "OMP_NUM_THREADS": "1",
               "FLAGS_enable_pir_api": "0" if mode == "legacy" else "1"}
        subprocess.run([sys.executable, str(ROOT / "scripts" / "build_paddle_fixtures.py"),
                        str(out), mode], check=True, capture_output=True, env=env, timeout=600)
    return out
