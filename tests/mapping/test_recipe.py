"""Recipes: rules as data, strict loading that names both leftover sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from porter.errors import MappingError
from porter.mapping.layouts import transpose_2d
from porter.mapping.recipe import Recipe, load_strict


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.bn = nn.BatchNorm1d(2)


RECIPE = Recipe("paddle-style", rules=[
    (r"^(.*)\._mean$", r"\1.running_mean"),
    (r"^(.*)\._variance$", r"\1.running_var"),
    (r"^(fc)\.weight$", r"\1.weight", transpose_2d),
    (r"/Momentum$", None, "optimizer slot"),
    (r"^(.*)$", r"\1"),
], fill={r"num_batches_tracked$": lambda shape: np.zeros(shape, np.int64)})


def _tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"fc.weight": rng.standard_normal((3, 2)).astype(np.float32),
            "fc.bias": rng.standard_normal(2).astype(np.float32),
            "bn.weight": np.ones(2, np.float32), "bn.bias": np.zeros(2, np.float32),
            "bn._mean": rng.standard_normal(2).astype(np.float32),
            "bn._variance": rng.uniform(0.5, 1.5, 2).astype(np.float32),
            "fc.weight/Momentum": np.zeros((3, 2), np.float32)}


def test_recipe_maps_transforms_drops_and_fills():
    net = _Net()
    t = _tensors()
    state, report = RECIPE.apply(t, net)
    load_strict(net, state)
    assert torch.equal(net.fc.weight, torch.from_numpy(t["fc.weight"].T))
    assert torch.equal(net.bn.running_var, torch.from_numpy(t["bn._variance"]))
    c = report.counts()
    assert (c["mapped"], c["dropped"], c["filled"]) == (6, 1, 1)
    dropped = [e for e in report.entries if e.action == "dropped"]
    assert dropped[0].source == "fc.weight/Momentum" and dropped[0].note == "optimizer slot"
    mapped = {e.source: e for e in report.entries if e.action == "mapped"}
    assert mapped["fc.weight"].transform == "transpose_2d"


def test_leftovers_on_both_sides_are_named():
    t = _tensors()
    t["extra.thing"] = np.zeros(5, np.float32)
    del t["bn._mean"]
    with pytest.raises(MappingError) as err:
        RECIPE.apply(t, _Net())
    msg = str(err.value)
    assert "extra.thing" in msg and "bn.running_mean" in msg


def test_shape_mismatch_is_reported():
    t = _tensors()
    t["fc.bias"] = np.zeros(3, np.float32)
    with pytest.raises(MappingError, match=r"fc.bias \[3\] does not fit fc.bias \[2\]"):
        RECIPE.apply(t, _Net())


def test_keep_turns_a_drop_into_a_leftover():
    with pytest.raises(MappingError, match="Momentum"):
        RECIPE.apply(_tensors(), _Net(), keep=[r"Momentum"])


def test_fits_agrees_with_apply_without_reading_data():
    class Unreadable:  # shape and dtype only: fits must never call .numpy()
        def __init__(self, a: np.ndarray) -> None:
            self.shape, self.dtype = a.shape, a.dtype

        def numpy(self):
            raise AssertionError("fits read tensor data")

    good = _tensors()
    with torch.device("meta"):
        net = _Net()
    assert RECIPE.fits({k: Unreadable(v) for k, v in good.items()}, net)
    RECIPE.apply(good, _Net())  # the same tensors really load

    bad_shape = dict(good, **{"fc.bias": np.zeros(3, np.float32)})
    extra = dict(good, **{"extra.thing": np.zeros(5, np.float32)})
    missing = {k: v for k, v in good.items() if k != "bn._mean"}
    wrong_rank = dict(good, **{"fc.weight": np.zeros((3, 2, 1), np.float32)})  # transpose_2d refuses
    for tensors in (bad_shape, extra, missing, wrong_rank):
        assert not RECIPE.fits(tensors, _Net())
        with pytest.raises((MappingError, ValueError)):
            RECIPE.apply(tensors, _Net())
