"""No second open of a swappable path (issue 10, part 2).

Between porter's import step and its verify step a hostile actor replaces the model's files.
The reference must still run the bytes porter read and hashed (here: the swap would change
the outputs, or break the model outright, so parity would fail if a reference reopened a
path), and the manifest's digest must be the digest of what was verified, not of the swapped
files. The hook sits where the pipeline asks the port for its reference (a test-only
monkeypatch of the pipeline step).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

import porter
from porter import generic, pipeline

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "models"


def swap_before_reference(monkeypatch: pytest.MonkeyPatch, swap) -> list[str]:
    """Run ``swap()`` after import and mapping, just before the reference is built."""
    calls: list[str] = []

    def wrap(port):
        def reference(source, ported):
            swap()
            calls.append(source.format)
            return port.reference(source, ported)

        return dataclasses.replace(port, reference=reference)

    select, make_generic = pipeline._select_port, generic.generic_port

    def selected(*args, **kwargs):
        port = select(*args, **kwargs)
        return None if port is None else wrap(port)

    def generic_port(*args, **kwargs):
        port, ported = make_generic(*args, **kwargs)
        return wrap(port), ported

    monkeypatch.setattr(pipeline, "_select_port", selected)
    monkeypatch.setattr(generic, "generic_port", generic_port)
    return calls


def _onnx_model(weight: np.ndarray) -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])],
        [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def test_onnx_swapped_after_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    original = _onnx_model(rng.standard_normal((3, 2, 3, 3)).astype(np.float32))
    other = _onnx_model(rng.standard_normal((3, 2, 3, 3)).astype(np.float32) + 5)
    path = tmp_path / "m.onnx"
    path.write_bytes(original)
    calls = swap_before_reference(monkeypatch, lambda: path.write_bytes(other))
    result = porter.convert(path, graph="generic", out=tmp_path / "out")
    assert calls == ["onnx"] and path.read_bytes() == other  # the swap happened
    import hashlib

    assert result.manifest["source"]["sha256"] == hashlib.sha256(original).hexdigest()
    assert result.manifest["parity"]["passed"]


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "ppocr_cls_paddle" / "inference.pdmodel").is_file(),
                    reason="../shared/models/ppocr_cls_paddle not present")
def test_paddle_inference_swapped_after_import(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "ppocr"
    model.mkdir()
    for name in ("inference.pdmodel", "inference.pdiparams"):
        shutil.copy(SHARED / "ppocr_cls_paddle" / name, model / name)
    digest = porter.open(model).sha256()

    def swap() -> None:  # a program that cannot load, and weights that would differ
        (model / "inference.pdmodel").write_bytes(b"\x0a\x03bad" * 64)
        params = bytearray((model / "inference.pdiparams").read_bytes())
        params[-4096:] = bytes(4096)
        other = model / "inference.pdiparams.new"
        other.write_bytes(bytes(params))
        other.replace(model / "inference.pdiparams")  # renamed over: porter holds the original

    calls = swap_before_reference(monkeypatch, swap)
    result = porter.convert(model, graph="generic", out=tmp_path / "out")
    assert calls == ["paddle-inference"]
    assert result.manifest["source"]["sha256"] == digest
    assert result.manifest["parity"]["passed"]


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "ppocr_cls_paddle" / "inference.pdmodel").is_file(),
                    reason="../shared/models/ppocr_cls_paddle not present")
def test_paddle_params_rewritten_in_place_is_refused(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``.pdiparams`` is mapped, not read into memory (a converted weight views it), so a
    write in place (same inode) after import would show through; porter notices before it
    hands the bytes to Paddle or records a digest, and writes nothing."""
    model = tmp_path / "ppocr"
    model.mkdir()
    for name in ("inference.pdmodel", "inference.pdiparams"):
        shutil.copy(SHARED / "ppocr_cls_paddle" / name, model / name)

    def rewrite() -> None:
        with open(model / "inference.pdiparams", "r+b") as fh:
            fh.seek(-4096, 2)
            fh.write(bytes(4096))

    swap_before_reference(monkeypatch, rewrite)
    with pytest.raises(porter.PorterError, match="modified while porter was reading"):
        porter.convert(model, graph="generic", out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "mtcnn_pnet" / "PNet-18.meta").is_file(),
                    reason="../shared/models/mtcnn_pnet not present")
def test_tf_checkpoint_swapped_after_import(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "pnet"
    shutil.copytree(SHARED / "mtcnn_pnet", model)
    digest = porter.open(model / "PNet-18.meta").sha256()

    def swap() -> None:  # garbage renamed over the graph, the index and the weights
        for f in list(model.iterdir()):
            other = f.with_name(f.name + ".new")
            other.write_bytes(b"\x0a\x03bad" * (f.stat().st_size // 6 + 1))
            other.replace(f)

    calls = swap_before_reference(monkeypatch, swap)
    result = porter.convert(model / "PNet-18.meta", out=tmp_path / "out")
    assert calls and calls[0].startswith("tf1-")
    assert result.manifest["source"]["sha256"] == digest
    assert result.manifest["parity"]["passed"]


@pytest.mark.slow
def test_tf_checkpoint_shard_rewritten_in_place_is_refused(tf1_fixtures, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """A data shard written in place (same inode) after import would show through the private
    map porter reads its weights from (as ONNX external data); porter notices before it hands
    the bytes to TensorFlow or records a digest, and writes nothing. The index and MetaGraph
    are held as the bytes porter read, so rewriting those changes nothing."""
    _, exp = tf1_fixtures
    prefix = Path(exp["generic"]["prefix"])
    model = tmp_path / "generic"
    model.mkdir()
    for f in prefix.parent.glob(prefix.name + ".*"):
        shutil.copy(f, model / f.name)
    shard = model / f"{prefix.name}.data-00000-of-00001"
    before = porter.open(model / f"{prefix.name}.meta").sha256()

    def rewrite() -> None:
        data = bytearray(shard.read_bytes())
        data[:64] = bytes(64)
        with open(shard, "r+b") as fh:
            fh.write(bytes(data))

    swap_before_reference(monkeypatch, rewrite)
    with pytest.raises(porter.PorterError, match="modified while porter was reading"):
        porter.convert(model / f"{prefix.name}.meta", out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert porter.open(model / f"{prefix.name}.meta").sha256() != before  # it did change


def test_cross_check_twin_is_read_once_through_the_importer(tmp_path: Path) -> None:
    """A twin's bytes are read once (porter's importer: external data checked in its folder);
    onnxruntime runs those bytes and the recorded digest is theirs."""
    import hashlib

    rng = np.random.default_rng(1)
    data = _onnx_model(rng.standard_normal((3, 2, 3, 3)).astype(np.float32))
    path, twin = tmp_path / "m.onnx", tmp_path / "twin.onnx"
    path.write_bytes(data)
    twin.write_bytes(data)
    result = porter.convert(path, graph="generic", cross_check=[twin], out=tmp_path / "out")
    (check,) = result.manifest["cross_checks"]
    assert check["sha256"] == hashlib.sha256(data).hexdigest() and check["passed"]


def _external_model(folder: Path, weight: np.ndarray) -> Path:
    """The Conv+Relu model with its weight in ``w.bin`` beside it (external data)."""
    import onnx

    model = onnx.load_from_string(_onnx_model(weight))
    onnx.external_data_helper.convert_model_to_external_data(
        model, all_tensors_to_one_file=True, location="w.bin", size_threshold=0)
    path = folder / "m.onnx"
    onnx.save_model(model, path)
    return path


def test_onnx_external_data_renamed_over_after_import(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A weights file renamed over the original after import is never read: the converted
    weights, onnxruntime's and the digest are all of the original bytes."""
    import hashlib

    from safetensors.numpy import load_file

    rng = np.random.default_rng(2)
    weight = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    path = _external_model(tmp_path, weight)
    original = path.read_bytes(), (tmp_path / "w.bin").read_bytes()
    (tmp_path / "other.bin").write_bytes((weight + 5).tobytes())

    def swap() -> None:
        (tmp_path / "other.bin").replace(tmp_path / "w.bin")

    calls = swap_before_reference(monkeypatch, swap)
    result = porter.convert(path, graph="generic", out=tmp_path / "out")
    assert calls == ["onnx"]
    assert (tmp_path / "w.bin").read_bytes() == (weight + 5).tobytes()  # the swap happened
    assert result.manifest["parity"]["passed"]
    want = hashlib.sha256(original[0] + b"w.bin\0" + original[1]).hexdigest()
    assert result.manifest["source"]["sha256"] == want
    (saved,) = [v for v in load_file(tmp_path / "out" / "model.safetensors").values()
                if v.shape == weight.shape]
    assert np.array_equal(saved, weight)


def test_onnx_external_data_rewritten_in_place_is_refused(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """A weights file written in place (same inode) after import would show through the map;
    porter notices before it records a digest and writes nothing."""
    rng = np.random.default_rng(3)
    weight = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    path = _external_model(tmp_path, weight)

    def rewrite() -> None:
        with open(tmp_path / "w.bin", "r+b") as fh:
            fh.write((weight + 5).tobytes())

    swap_before_reference(monkeypatch, rewrite)
    with pytest.raises(porter.PorterError, match="modified while porter was reading"):
        porter.convert(path, graph="generic", out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
