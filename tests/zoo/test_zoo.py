"""Publishing, listing, verifying and loading zoo entries on every backend (local folder and
loopback S3, see conftest.py); a flipped byte is refused."""

from __future__ import annotations

import pytest
import torch

from porter.errors import IntegrityError, ZooError
from porter.graphs.modnet import MODNet
from porter.pipeline import build_manifest, write_output
from porter.zoo.layout import blob_key
from porter.zoo.load import load_output, zoo_root
from porter.zoo.publish import list_entries, publish, verify_entry
from porter.zoo.pull import pull
from porter.zoo.store import open_store


def _tiny_output(tmp_path):
    torch.manual_seed(0)
    module = MODNet().eval()
    manifest = {"name": "tiny", "graph": {"class": "porter.graphs.modnet:MODNet",
                                          "kwargs": module.constructor_kwargs(), "port": "modnet"},
                "parity": {"worst_max_abs": 1e-6}, "npu": {"device": "audit"},
                "source": {"sha256": "0" * 64}}
    return module, write_output(tmp_path / "out", module, manifest)


@pytest.fixture()
def published(tmp_path, zoo):
    module, out = _tiny_output(tmp_path)
    entry = publish(out, "tiny", zoo)
    return module, zoo, entry


def test_publish_list_verify_and_load(published):
    import porter

    module, zoo, entry = published
    assert entry.ref == "tiny@1" and entry.zoo == str(zoo)
    [listed] = list_entries(zoo)
    assert listed["name"] == "tiny" and listed["graph"] == "porter.graphs.modnet:MODNet"
    assert verify_entry("tiny", zoo)["ok"]
    for loaded in (MODNet.from_zoo("tiny", zoo), MODNet.from_zoo("tiny@1", zoo),
                   porter.load("tiny", zoo=zoo)):
        for k, v in module.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v)


def test_flipped_byte_fails_verify_and_load(published, tmp_path):
    _, zoo, entry = published
    folder = pull("tiny", zoo)
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[len(data) // 2] ^= 0x01
    (tmp_path / "flipped").write_bytes(bytes(data))
    open_store(zoo_root(zoo)).upload(blob_key(entry.weights_sha256), tmp_path / "flipped")
    (folder / "model.safetensors").write_bytes(bytes(data))  # the cached copy too
    with pytest.raises(IntegrityError, match="corrupt in the zoo"):
        verify_entry("tiny", zoo)
    with pytest.raises(IntegrityError, match="refusing it"):
        MODNet.from_zoo("tiny", zoo)
    with pytest.raises(IntegrityError, match="refusing to load"):
        load_output(folder)


def test_unknown_entry_and_bad_names(tmp_path):
    with pytest.raises(ZooError, match="no zoo entry"):
        verify_entry("nothing", tmp_path)
    with pytest.raises(ZooError, match="invalid"):
        verify_entry("../escape", tmp_path)
    with pytest.raises(ZooError, match="version after '@' is a number"):
        verify_entry("m@latest", tmp_path)
    with pytest.raises(ZooError, match="no '@'"):
        publish(tmp_path, "a@b", tmp_path / "zoo")


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


def test_an_entry_in_the_old_folder_layout_is_named_with_its_migration(tmp_path, monkeypatch):
    """Local zoos written before versioning held one folder per entry: listed as such, with
    the command that publishes it anew, and never read as an entry."""
    import shutil

    monkeypatch.setenv("PORTER_CACHE", str(tmp_path / "cache"))
    _, out = _tiny_output(tmp_path)
    zoo = tmp_path / "zoo"
    publish(out, "tiny", zoo)
    shutil.copytree(out, zoo / "old")
    entries = {e["name"]: e for e in list_entries(zoo)}
    assert entries["tiny"]["ref"] == "tiny@1"
    assert f"porter zoo push {zoo / 'old'} --name old" in entries["old"]["error"]
    with pytest.raises(ZooError, match="no zoo entry 'old'"):
        MODNet.from_zoo("old", zoo)
