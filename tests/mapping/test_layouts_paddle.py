"""Paddle layout rules, proved on a real Paddle model run through Paddle (in a child)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import porter
from porter.mapping.layouts_paddle import (
    BATCHNORM_RULES,
    bn_momentum_to_torch,
    conv_transpose_weight,
    fill_num_batches_tracked,
    linear_weight,
    recipe_for_module,
)
from porter.mapping.recipe import Recipe, load_strict
from porter.verification.runtimes.paddle import dygraph_runtime

ROOT = Path(__file__).resolve().parents[2]


class SmallNet(nn.Module):
    """torch twin of scripts/build_paddle_fixtures.py:build_small_net."""

    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8, momentum=bn_momentum_to_torch(0.9))
        self.act = nn.PReLU(8)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2, groups=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pool(self.up(self.act(self.bn(self.conv(x))))).flatten(1)
        return torch.softmax(self.fc(y), dim=-1)


@pytest.fixture(scope="module")
def pdparams(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("paddle_layouts")
    subprocess.run([sys.executable, str(ROOT / "scripts/build_paddle_fixtures.py"), str(out),
                    "params"], check=True, capture_output=True)
    return out / "net.pdparams"


def test_named_transforms() -> None:
    a = np.arange(6, dtype="float32").reshape(2, 3)
    assert np.array_equal(linear_weight(a), a.T) and linear_weight(a).flags.c_contiguous
    w = np.arange(16, dtype="float32").reshape(2, 2, 2, 2)
    assert conv_transpose_weight(w) is w
    with pytest.raises(ValueError):
        conv_transpose_weight(a)
    n = fill_num_batches_tracked(())
    assert n.dtype == np.int64 and n.shape == () and int(n) == 0
    assert bn_momentum_to_torch(0.9) == pytest.approx(0.1)
    recipe = Recipe("bn", BATCHNORM_RULES)
    assert recipe.target_of("enc.bn1._mean")[0] == "enc.bn1.running_mean"
    assert recipe.target_of("enc.bn1._variance")[0] == "enc.bn1.running_var"


def test_recipe_ports_a_paddle_model_exactly(pdparams: Path) -> None:
    src = porter.open(pdparams)
    model = SmallNet().eval()
    state, report = recipe_for_module("small_net_from_paddle", model).apply(src.tensors, model)
    load_strict(model, state)
    by_target = {e.target: e for e in report.entries}
    assert by_target["fc.weight"].transform == "linear_weight"
    assert by_target["up.weight"].transform == "conv_transpose_weight"
    assert by_target["bn.num_batches_tracked"].action == "filled"
    # Weights bit-exact after the layout rules.
    fc = src.tensors["fc.weight"].numpy()
    assert np.array_equal(model.fc.weight.detach().numpy(), fc.T)
    assert np.array_equal(model.bn.running_var.numpy(), src.tensors["bn._variance"].numpy())
    assert np.array_equal(model.act.weight.detach().numpy(), src.tensors["act._weight"].numpy())
    assert int(model.bn.num_batches_tracked) == 0
    # Numbers: the torch port against Paddle itself running the same .pdparams.
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16)).astype("float32")
    with dygraph_runtime("scripts.build_paddle_fixtures:build_small_net", params=pdparams,
                         outputs=["prob"]) as run:
        want = run({"x": x})["prob"]
    with torch.no_grad():
        got = model(torch.from_numpy(x)).numpy()
    assert want.shape == (2, 3)
    assert np.max(np.abs(got - want)) <= 1e-6
