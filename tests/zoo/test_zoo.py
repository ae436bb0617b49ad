"""Publishing, listing, verifying and loading zoo entries; a flipped byte is refused."""

from __future__ import annotations

import pytest
import torch

from porter.errors import IntegrityError, ZooError
from porter.graphs.modnet import MODNet
from porter.pipeline import build_manifest, write_output
from porter.zoo.load import load_output
from porter.zoo.publish import list_entries, publish, verify_entry


@pytest.fixture()
def published(tmp_path):
    torch.manual_seed(0)
    module = MODNet().eval()
    manifest = {"name": "tiny", "graph": {"class": "porter.graphs.modnet:MODNet",
                                          "kwargs": module.constructor_kwargs(), "port": "modnet"},
                "parity": {"worst_max_abs": 1e-6}, "npu": {"device": "audit"},
                "source": {"sha256": "0" * 64}}
    out = write_output(tmp_path / "out", module, manifest)
    zoo = tmp_path / "zoo"
    dest = publish(out, "tiny", zoo)
    return module, zoo, dest


def test_publish_list_verify_and_load(published):
    module, zoo, dest = published
    assert dest == zoo / "tiny" and not [p for p in zoo.iterdir() if p.name.startswith(".")]
    [entry] = list_entries(zoo)
    assert entry["name"] == "tiny" and entry["graph"] == "porter.graphs.modnet:MODNet"
    assert verify_entry("tiny", zoo)["ok"]
    loaded = MODNet.from_zoo("tiny", zoo)
    for k, v in module.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


def test_flipped_byte_fails_verify_and_load(published):
    _, zoo, dest = published
    weights = dest / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="does not match the manifest"):
        verify_entry("tiny", zoo)
    with pytest.raises(IntegrityError, match="refusing to load"):
        MODNet.from_zoo("tiny", zoo)
    with pytest.raises(IntegrityError):
        load_output(dest)


def test_unknown_entry_and_bad_names(tmp_path):
    with pytest.raises(ZooError, match="no zoo entry"):
        verify_entry("nothing", tmp_path)
    with pytest.raises(ZooError, match="invalid"):
        verify_entry("../escape", tmp_path)


def test_manifest_builder_records_mapping_and_versions(tmp_path):
    from porter.graphs import Ported
    from porter.mapping.report import MappingReport
    from porter.source import Source

    src_file = tmp_path / "m.onnx"
    src_file.write_bytes(b"abc")
    source = Source(src_file, "onnx", {}, meta={"opset": 11})
    rep = MappingReport("structure")
    ported = Ported(torch.nn.Identity(), "porter.graphs.modnet:MODNet", {}, rep, ["x"], ["y"])
    port = type("P", (), {"name": "modnet"})()
    m = build_manifest(source, port, ported, ported.module, [], None, None, name="n")
    assert m["source"]["sha256"] == \
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert m["versions"]["torch"] == torch.__version__ and m["mapping"]["method"] == "structure"
