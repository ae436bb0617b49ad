"""Paddle runtimes in child processes agree with Paddle's static executor and with each other."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from porter.errors import PorterError
from porter.verification.runtimes.paddle import dygraph_runtime, paddle_inference_runtime

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def models(paddle_models: Path) -> Path:
    return paddle_models


@pytest.mark.parametrize("mode", ["legacy", "pir"])
def test_inference_predictor_matches_static_executor(models: Path, mode: str) -> None:
    with open(models / mode / "inference.ref.pkl", "rb") as fh:  # our own fixture builder
        ref = pickle.load(fh)
    with paddle_inference_runtime(models / mode) as run:
        assert run.info["inputs"] == ["x"]
        out = run({"x": ref["x"]})
        with pytest.raises(PorterError, match="missing inputs"):
            run({"y": ref["x"]})
    (got,) = out.values()
    assert got.shape == ref["y"].shape == (2, 3)
    assert np.max(np.abs(got - ref["y"])) <= 1e-6
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-6)


def test_dygraph_runner_matches_inference_model(models: Path) -> None:
    with open(models / "legacy" / "inference.ref.pkl", "rb") as fh:
        ref = pickle.load(fh)
    with dygraph_runtime("scripts.build_paddle_fixtures:build_small_net",
                         params=models / "net.pdparams", outputs=["prob"]) as run:
        assert run.info["runtime"] == "paddle-dygraph"
        got = run({"x": ref["x"]})["prob"]
    assert np.max(np.abs(got - ref["y"])) <= 1e-6


def test_dygraph_runner_refuses_a_mismatched_state_dict(models: Path) -> None:
    with pytest.raises(PorterError, match="state dict mismatch|missing"):
        dygraph_runtime("scripts.build_paddle_fixtures:build_small_net",
                        params=models / "dtypes.pdparams")
