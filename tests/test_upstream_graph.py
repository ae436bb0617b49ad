"""PyTorch checkpoints of networks porter has no clean graph for: traced from the upstream
network (``--upstream FILE.py:NAME`` plus ``--shape``), converted generically, verified
against that network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import porter
from porter.cli.main import main
from porter.errors import PorterError
from porter.pipeline import convert

UPSTREAM = '''import torch
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    """Two inputs, BatchNorm, GELU, and named outputs (a dict)."""

    def __init__(self, width: int = 6):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.head = nn.Conv2d(width, 2, 1)
        self.fc = nn.Linear(width, 4)

    def forward(self, image, scale, train_only_flag: bool = False):
        y = F.gelu(self.bn(self.conv(image))) * scale
        return {"mask": torch.sigmoid(self.head(y)), "logits": self.fc(y.mean((2, 3)))}
'''


@pytest.fixture()
def upstream(tmp_path):
    """(upstream spec, the network with its weights, a .pth and a .safetensors of them)."""
    path = tmp_path / "upstream_net.py"
    path.write_text(UPSTREAM)
    from porter.verification.runtimes.torch_upstream import import_upstream

    torch.manual_seed(0)
    net = import_upstream(f"{path}:Net")().eval()
    with torch.no_grad():  # running stats that are not the identity, so BN is exercised
        net.bn.running_mean.uniform_(-0.3, 0.3)
        net.bn.running_var.uniform_(0.5, 2.0)
    pth = tmp_path / "ckpt.pth"
    torch.save({"state_dict": net.state_dict(), "epoch": 7}, pth)
    st = tmp_path / "weights.safetensors"
    save_file(dict(net.state_dict()), st)
    return f"{path}:Net", net, pth, st


SHAPES = ["image=1x3x20x28", "scale=1x1x1x1"]


@pytest.mark.parametrize("which", ["pth", "safetensors"])
def test_traced_upstream_converts_and_verifies_against_it(tmp_path, upstream, which):
    spec, net, pth, st = upstream
    src = pth if which == "pth" else st
    res = convert(src, verify="cpu", upstream=spec, shapes=SHAPES, out=tmp_path / "out")
    parity = res.manifest["parity"]
    assert parity["passed"] and parity["reference"] == "torch-upstream"
    assert [c["name"] for c in parity["cases"]] == ["1x3x20x28 1x1x1x1", "2x3x20x28 2x1x1x1"]
    assert res.manifest["io"] == {"inputs": ["image", "scale"], "outputs": ["mask", "logits"]}
    rows = {e["source"]: e for e in res.manifest["mapping"]["entries"]}
    # BatchNorm stays in the trace, so every weight is found verbatim; the step counter is
    # read by nothing
    assert {n for n, e in rows.items() if e["action"] == "mapped"} == {
        k for k in net.state_dict() if not k.endswith("num_batches_tracked")}
    assert rows["bn.num_batches_tracked"]["action"] == "dropped"
    assert any("traced by torch.onnx" in n for n in res.manifest["mapping"]["notes"])

    # the written module needs neither the upstream file nor its class
    code = (tmp_path / "out" / "model.py").read_text()
    assert "upstream_net" not in code
    loaded = porter.load(tmp_path / "out", trust_code=True)
    rng = np.random.default_rng(3)
    image = torch.from_numpy(rng.uniform(-1, 1, (3, 3, 20, 28)).astype(np.float32))
    scale = torch.full((3, 1, 1, 1), 0.5)
    with torch.no_grad():
        want = net(image, scale)
        got = loaded(image, scale)
    assert torch.allclose(got[0], want["mask"], atol=1e-5)
    assert torch.allclose(got[1], want["logits"], atol=1e-5)


def test_missing_sizes_and_missing_upstream_say_what_to_give(tmp_path, upstream):
    spec, _, pth, _ = upstream
    with pytest.raises(PorterError, match=r"--shape image=1x3x224x224 --shape "
                                          r"scale=1x3x224x224 for forward\(image, scale\)"):
        convert(pth, verify="cpu", upstream=spec, out=None)
    with pytest.raises(PorterError, match=r"--shape names 'x'.*forward takes 'image', 'scale'"):
        convert(pth, verify="cpu", upstream=spec, shapes=["x=1x3x8x8", *SHAPES], out=None)
    with pytest.raises(PorterError, match=r"--upstream FILE\.py:NAME \(and its input sizes "
                                          r"with --shape\)"):
        convert(pth, verify="cpu", out=None)


def test_upstream_that_does_not_fit_the_checkpoint_is_refused(tmp_path, upstream):
    spec, _, pth, _ = upstream
    other = tmp_path / "other.py"
    other.write_text(UPSTREAM.replace("width: int = 6", "width: int = 5"))
    with pytest.raises(PorterError, match="cannot load|does not load strictly|size mismatch"):
        convert(pth, verify="cpu", upstream=f"{other}:Net", shapes=SHAPES, out=None)


def test_cli_converts_a_checkpoint_with_its_upstream(tmp_path, upstream, capsys):
    spec, _, pth, _ = upstream
    out = tmp_path / "cli_out"
    code = main(["convert", str(pth), "--upstream", spec, "--shape", SHAPES[0], "--shape",
                 SHAPES[1], "--verify", "npu", "--out", str(out), "-q"])
    assert code == 0, capsys.readouterr().err
    assert (out / "model.safetensors").is_file() and (out / "model.py").is_file()


SIZE_AS_CONSTANT = '''import torch
from torch import nn


class Net(nn.Module):
    """Splits the image in 4 tiles and back, with the batch taken as a Python int (as Swin's
    window_reverse does), and two layers holding equal index buffers."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        for i in range(2):
            self.register_buffer(f"order{i}", torch.tensor([3, 2, 1, 0]))

    def forward(self, x):
        y = self.conv(x)
        tiles = y.unfold(2, 4, 4).unfold(3, 4, 4)  # B, C, 2, 2, 4, 4
        t = tiles.permute(0, 2, 3, 1, 4, 5).reshape(-1, 4, 4, 4)  # 4B tiles
        b = int(t.shape[0] / 4)  # a traced constant: 1
        t = t[:, self.order0][:, self.order1]
        # as Swin's window_reverse: -1 takes up what the constant b misses, and the reshape
        # back uses the input's own (free) batch, so at batch 2 the shapes fit, scrambled
        u = t.reshape(b, 2, 2, 4, 4, -1).permute(0, 5, 1, 3, 2, 4)
        return u.reshape(x.shape[0], 4, 8, 8)
'''


def test_a_trace_that_fixes_the_batch_is_exported_with_a_fixed_batch(tmp_path):
    """With a free batch the trace fails or, worse, computes the wrong thing at batch 2 (a
    Swin-style window_reverse does, its shapes still fitting); porter checks the trace at
    batch 2 against the network first and fixes the batch, saying why. Equal buffers
    torch.onnx merged into one initializer are read, not 'unused'."""
    path = tmp_path / "tiles.py"
    path.write_text(SIZE_AS_CONSTANT)
    from porter.verification.runtimes.torch_upstream import import_upstream

    torch.manual_seed(0)
    net = import_upstream(f"{path}:Net")().eval()
    pth = tmp_path / "tiles.pth"
    torch.save(net.state_dict(), pth)
    res = convert(pth, verify="cpu", upstream=f"{path}:Net", shapes=["1x3x8x8"], out=None)
    assert res.manifest["parity"]["passed"]
    assert [c["name"] for c in res.manifest["parity"]["cases"]] == ["1x3x8x8"]
    notes = " ".join(res.manifest["mapping"]["notes"])
    assert "batch fixed: traced with a free batch, output differs from the network at " \
        "batch 2" in notes
    rows = {e["source"]: e for e in res.manifest["mapping"]["entries"]}
    assert rows["order1"]["action"] != "dropped" and rows["order0"]["action"] != "dropped"
