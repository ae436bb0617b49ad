"""apply_substitutes: rule selection, copy vs in place, records with module paths."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from porter.errors import PorterError
from porter.substitutes import DEFAULT_RULES, SUBSTITUTES, apply_substitutes
from porter.substitutes.registry import substitute


def _model() -> nn.Module:
    torch.manual_seed(0)
    enc = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.InstanceNorm2d(8, affine=True),
                        nn.ReLU(inplace=True))
    return nn.Sequential(nn.ModuleDict({"enc": enc}), nn.Conv2d(8, 2, 1).double()).eval()


class _Wrap(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = _model()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body[0]["enc"](x)
        return self.body[1](h.to(self.body[1].weight.dtype)).float()


def test_every_rule_declares_what_it_replaces() -> None:
    assert set(DEFAULT_RULES) == set(SUBSTITUTES) == {
        "instance_norm", "out_of_place_activation", "gelu_erf", "float32_only"}
    for rule in SUBSTITUTES.values():
        assert rule.replaces and rule.replacement and rule.applies_when


def test_records_paths_and_copy_is_default() -> None:
    model = _Wrap()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        want = model(x)
    new, records = apply_substitutes(model)
    assert [(r["rule"], r["module"]) for r in records] == [
        ("out_of_place_activation", "body.0.enc.2"),
        ("instance_norm", "body.0.enc.1"),
        ("float32_only", "body.1"), ("float32_only", "body.1")]
    assert type(model.body[0]["enc"][1]) is nn.InstanceNorm2d  # original untouched
    assert model.body[0]["enc"][2].inplace
    assert type(new.body[0]["enc"][1]).__name__ == "ManualInstanceNorm2d"
    with torch.no_grad():
        got = new(x)
    assert (got - want).abs().max().item() < 1e-5


def test_inplace_and_unknown_rule() -> None:
    model = _model()
    same, records = apply_substitutes(model, ["instance_norm"], inplace=True)
    assert same is model and len(records) == 1
    assert type(model[0]["enc"][1]).__name__ == "ManualInstanceNorm2d"
    with pytest.raises(PorterError, match="unknown substitute 'nope'.*instance_norm"):
        apply_substitutes(model, ["nope"])


def test_duplicate_rule_name_fails() -> None:
    with pytest.raises(PorterError, match="registered twice"):
        substitute("instance_norm", replaces="x", replacement="y", applies_when="z")(
            lambda m: [])
