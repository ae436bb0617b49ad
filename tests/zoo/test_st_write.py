"""porter's one-pass safetensors writer against safetensors' own writer and reader."""

from __future__ import annotations

import hashlib

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from porter.zoo.st_write import DTYPES, write_safetensors


def _every_dtype() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = {}
    for name in DTYPES:
        dt = getattr(torch, name, None)
        if dt is None or name == "complex64":  # safetensors' torch API has no complex64
            continue
        size = torch.empty(0, dtype=dt).element_size()
        raw = torch.randint(0, 256, (3, 8 * size), generator=g, dtype=torch.uint8)
        out[f"t_{name}"] = raw.view(dt)
    out["scalar"] = torch.tensor(3.5)
    out["empty"] = torch.zeros(0, 4)
    out["strided"] = torch.arange(12.0).reshape(3, 4).t()  # not contiguous
    out["big"] = torch.randn(3 << 20, generator=g)  # spans several write chunks
    return out


def test_bytes_identical_to_save_file(tmp_path) -> None:
    tensors = _every_dtype()
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / "ref"),
              metadata={"format": "pt"})
    got = write_safetensors(tmp_path / "mine", tensors, {"format": "pt"})
    ref = (tmp_path / "ref").read_bytes()
    assert (tmp_path / "mine").read_bytes() == ref
    assert got == {"sha256": hashlib.sha256(ref).hexdigest(), "bytes": len(ref),
                   "tensors": len(tensors)}


def test_safetensors_reader_reads_it_bit_exact(tmp_path) -> None:
    tensors = _every_dtype()
    meta = {"format": "pt", "porter_graph": "porter.graphs.modnet:MODNet", "é": "ü"}
    released: list[str] = []
    write_safetensors(tmp_path / "w", tensors, meta, release=released.append)
    assert sorted(released) == sorted(tensors)
    with safe_open(str(tmp_path / "w"), framework="pt") as f:
        assert f.metadata() == meta
        assert sorted(f.keys()) == sorted(tensors)
        for name, want in tensors.items():
            got = f.get_tensor(name)
            assert got.dtype == want.dtype and got.shape == want.shape, name
            assert torch.equal(got.reshape(-1).view(torch.uint8),
                               want.contiguous().reshape(-1).view(torch.uint8)), name


def test_unsupported_dtype_is_one_error(tmp_path) -> None:
    from porter.errors import PorterError

    with pytest.raises(PorterError, match="complex128"):
        write_safetensors(tmp_path / "x", {"c": torch.zeros(2, dtype=torch.complex128)})
    assert not (tmp_path / "x").exists()
