"""PyTorch checkpoint importer: bit-exact with torch.load(weights_only=True) on the zip and
legacy formats and every dtype, nested containers resolved and reported, crafted pickles
refused before their side effect can happen."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from porter.errors import FormatError, UnsafeSourceError
from porter.importers import open_source, sniff

ZIP_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64,
              torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool, torch.complex64,
              torch.uint16, torch.uint32, torch.float8_e4m3fn, torch.float8_e5m2]
# the legacy writer has no typed storages for the newer dtypes
LEGACY_DTYPES = ZIP_DTYPES[:11]


def _raw(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def _state(dtypes) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    sd: dict[str, torch.Tensor] = OrderedDict(
        (f"w.{str(dt)[6:]}", (torch.randn(3, 4, generator=gen) * 7).to(dt)) for dt in dtypes)
    base = torch.randn(6, 5, generator=gen)
    sd["view.transposed"] = base.t()          # shares base's storage, non-contiguous
    sd["view.rows"] = base[2:4]               # offset into the same storage
    sd["view.base"] = base
    sd["view.strided"] = base[:, ::2]
    sd["scalar"] = torch.tensor(3.25)
    sd["empty"] = torch.zeros(0, 3)
    sd["param"] = torch.nn.Parameter(torch.randn(2, 2, generator=gen))
    return sd


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_bit_exact_with_torch_load(tmp_path: Path, legacy: bool):
    path = tmp_path / "ckpt.pth"
    sd = _state(LEGACY_DTYPES if legacy else ZIP_DTYPES)
    torch.save({"model_state_dict": sd, "epoch": 7}, path,
               _use_new_zipfile_serialization=not legacy)
    assert sniff(path) == "torch-checkpoint"
    src = open_source(path)
    assert src.meta["container"] == ("legacy" if legacy else "zip")
    ref = torch.load(path, weights_only=True)["model_state_dict"]
    assert list(src.tensors) == list(ref)
    for k, t in ref.items():
        arr = src.tensors[k].numpy()
        assert tuple(arr.shape) == tuple(t.shape), k
        assert arr.dtype.itemsize == t.element_size(), k
        assert arr.tobytes() == _raw(t), k
    assert src.tensors["param"].kind == "parameter"


def test_nested_containers_reported(tmp_path: Path):
    sd = {"module.conv.weight": torch.ones(2, 3), "module.conv.bias": torch.zeros(2)}
    ema = {"module.conv.weight": torch.full((2, 3), 2.0), "module.conv.bias": torch.ones(2)}
    path = tmp_path / "train.pt"
    torch.save({"state_dict": sd, "state_dict_ema": ema, "optimizer": {"state": {}},
                "epoch": 3, "arch": "x"}, path)
    src = open_source(path)
    assert sorted(src.tensors) == ["conv.bias", "conv.weight"]
    assert src.tensors["conv.weight"].numpy().tolist() == [[1.0] * 3] * 2  # not the EMA copy
    assert src.meta["branch"] == "state_dict"
    assert src.meta["prefix_stripped"] == "module."
    assert src.meta["dropped"] == {"state_dict_ema": "2 tensors", "optimizer": "dict",
                                   "epoch": "int", "arch": "str"}


def test_ema_only_and_deep_nesting(tmp_path: Path):
    path = tmp_path / "ema.bin"
    torch.save({"model_ema": {"net": {"a.weight": torch.ones(1)}}, "step": 1}, path)
    src = open_source(path)
    assert list(src.tensors) == ["a.weight"] and src.meta["branch"] == "model_ema.net"


def test_plain_state_dict_top_level(tmp_path: Path):
    path = tmp_path / "plain.pth"
    torch.save(OrderedDict([("x", torch.arange(4)), ("y", torch.eye(2))]), path)
    src = open_source(path)
    assert src.meta["branch"] == "" and list(src.tensors) == ["x", "y"]


def test_ambiguous_checkpoint_refused(tmp_path: Path):
    path = tmp_path / "two.pth"
    torch.save({"generator_a": {"w": torch.ones(1)}, "disc_b": {"w": torch.ones(1)}}, path)
    with pytest.raises(FormatError, match="no state dict found"):
        open_source(path)


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalEvil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({self.marker!r}, 'w').write('x')",))


@pytest.mark.parametrize("evil", [_Evil, _EvalEvil])
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_crafted_pickle_refused_without_side_effect(tmp_path: Path, evil, legacy: bool):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    # torch.save itself pickles the object (the reduce is recorded, not run)
    torch.save({"state_dict": {"w": torch.ones(2)}, "payload": evil(str(marker))}, path,
               _use_new_zipfile_serialization=not legacy)
    assert not marker.exists()
    with pytest.raises(UnsafeSourceError, match="is not allowed"):
        open_source(path)
    assert not marker.exists()
    # the payload is real: an unrestricted unpickler would have run it
    with pytest.raises(Exception):  # noqa: B017 - torch's own refusal type
        torch.load(path, weights_only=True)
    assert not marker.exists()


def test_crafted_data_pkl_in_zip_refused(tmp_path: Path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps(_Evil(str(marker)), protocol=2))
        zf.writestr("archive/version", "3\n")
    with pytest.raises(UnsafeSourceError, match="posix.system|os.system|nt.system"):
        open_source(path)
    assert not marker.exists()


def test_torchscript_archive_refused(tmp_path: Path):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(UnsafeSourceError, match="TorchScript"):
        open_source(path)


def test_truncated_and_corrupt(tmp_path: Path):
    good = tmp_path / "good.pth"
    torch.save({"w": torch.randn(64, 64)}, good, _use_new_zipfile_serialization=False)
    raw = good.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(raw[: len(raw) - 100])
    with pytest.raises(FormatError, match="truncated"):
        open_source(cut)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x80\x02garbage")
    with pytest.raises(FormatError):
        open_source(junk)
    zipped = tmp_path / "z.pth"
    torch.save({"w": torch.randn(4)}, zipped)
    data = zipped.read_bytes()
    bad = tmp_path / "bad.pth"
    bad.write_bytes(data[:-30])  # central directory cut
    with pytest.raises(FormatError, match="not a readable torch zip"):
        open_source(bad)


def test_storage_overrun_refused(tmp_path: Path):
    """A size/stride that reaches past its storage is refused, not read out of bounds."""
    path = tmp_path / "over.pth"
    torch.save({"w": torch.ones(4)}, path)
    with zipfile.ZipFile(path) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    pkl = next(n for n in entries if n.endswith("data.pkl"))
    # size (4,) -> (9,): same pickle length, so only the claim changes
    data = entries[pkl]
    buf = io.BytesIO()
    forged = data.replace(b"K\x04\x85", b"K\x09\x85", 1)
    assert forged != data
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for n, b in entries.items():
            zf.writestr(n, forged if n == pkl else b)
    path.write_bytes(buf.getvalue())
    with pytest.raises(FormatError, match="overruns its storage"):
        open_source(path).tensors["w"].numpy()
