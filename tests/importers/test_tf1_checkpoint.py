"""TF1 importers against what TensorFlow itself reads (TF runs only in the fixture's child)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import porter
from porter.errors import FormatError
from porter.importers.tf1 import classify_variable
from porter.importers.tf_bundle import (
    BundleReader,
    crc32c,
    mask_crc,
    read_table,
    snappy_decompress,
)

SHARED_MODELS = Path(__file__).resolve().parents[3] / "shared" / "models"


def _same(ours: np.ndarray, theirs: np.ndarray) -> bool:
    if ours.dtype != theirs.dtype or ours.shape != theirs.shape:
        return False
    if theirs.dtype.kind == "O":
        return [bytes(x) for x in ours.ravel()] == [bytes(x) for x in theirs.ravel()]
    return ours.tobytes() == theirs.tobytes()


def _check_all(source: porter.Source, expected: dict) -> int:
    assert set(source.tensors) == set(expected)
    bad = [k for k, v in expected.items() if not _same(source.tensors[k].numpy(), v)]
    assert not bad, f"differ from TensorFlow: {bad}"
    return len(expected)


def test_every_variable_bit_exact_with_tensorflow(tf1_fixtures):
    out, exp = tf1_fixtures
    src = porter.open(exp["mixed"]["prefix"])
    assert src.format == "tf1-checkpoint"
    assert _check_all(src, exp["mixed"]["tensors"]) == 24
    dtypes = {str(src.tensors[k].dtype) for k in src.tensors}
    assert {"float16", "bfloat16", "float64", "int8", "uint8", "int64", "bool",
            "object"} <= dtypes
    assert sorted(src.meta["partitioned"]) == ["part/cols", "part/rows"]
    assert all(src.tensors[k].kind == "variable" for k in src.tensors)


def test_sharded_checkpoint_bit_exact(tf1_fixtures):
    _, exp = tf1_fixtures
    assert "error" not in exp["sharded"], exp["sharded"].get("error")
    src = porter.open(exp["sharded"]["prefix"])
    assert src.meta["header"]["num_shards"] == 2
    assert _check_all(src, exp["sharded"]["tensors"]) == 2


@pytest.mark.skipif(not (SHARED_MODELS / "mtcnn_pnet").is_dir(),
                    reason="../shared/models/mtcnn_pnet not present")
def test_real_pnet_checkpoint_bit_exact(tf1_fixtures):
    _, exp = tf1_fixtures
    prefix = str(SHARED_MODELS / "mtcnn_pnet" / "PNet-18")
    assert _check_all(porter.open(prefix), exp["read"][prefix]) == 31


def test_every_way_to_name_a_checkpoint(tf1_fixtures):
    _, exp = tf1_fixtures
    prefix = Path(exp["mixed"]["prefix"])
    names = {}
    for path in (prefix, prefix.parent, Path(f"{prefix}.index"),
                 Path(f"{prefix}.data-00000-of-00001"), Path(f"{prefix}.meta")):
        src = porter.open(path)
        names[path.name] = (src.format, sorted(src.tensors))
    formats = {v[0] for v in names.values()}
    assert formats == {"tf1-checkpoint", "tf1-metagraph"}
    assert len({tuple(v[1]) for v in names.values()}) == 1


def test_classify_variables(tf1_fixtures):
    _, exp = tf1_fixtures
    src = porter.open(exp["mixed"]["prefix"])
    kinds = {k: classify_variable(k, r.shape, r.dtype) for k, r in src.tensors.items()}
    assert {k for k, v in kinds.items() if v == "optimizer"} == {
        "conv/weights/Momentum", "conv/biases/Momentum", "dense/kernel/Adam",
        "dense/kernel/Adam_1", "beta1_power", "beta2_power"}
    assert {k for k, v in kinds.items() if v == "ema"} == {"conv/weights/ExponentialMovingAverage"}
    assert {k for k, v in kinds.items() if v == "step"} == {"global_step"}
    assert classify_variable("Variable", (), np.int32) == "step"
    assert classify_variable("Variable", (3,), np.float32) == "weight"
    assert classify_variable("layer/RMSProp_1") == "optimizer"


def _plain(v):
    return [int(x) if isinstance(x, int) else x for x in v] if isinstance(v, list) else v


def _check_graph(graph, summary) -> None:
    assert list(graph) == [n[0] for n in summary]
    for name, op, inputs, attrs in summary:
        node = graph.nodes[name]
        assert node["op_type"] == op
        assert node["inputs"] == [i if ":" in i or i.startswith("^") else f"{i}:0"
                                  for i in inputs]
        for key, value in attrs.items():
            ours = node["attrs"][key]
            if isinstance(value, float):
                assert np.float32(ours) == np.float32(value), (name, key)
            else:
                assert _plain(ours) == value, (name, key)


def test_metagraph_graph_matches_tensorflow(tf1_fixtures):
    _, exp = tf1_fixtures
    src = porter.open(exp["mixed"]["prefix"] + ".meta")
    assert src.format == "tf1-metagraph" and src.meta["checkpoint"] == exp["mixed"]["prefix"]
    _check_graph(src.graph, exp["mixed"]["graph"])
    assert src.meta["inputs"] == [{"name": "x:0", "dtype": "float32", "shape": [-1, 8, 8, 3]}]


def test_frozen_constants_bit_exact_and_graph(tf1_fixtures):
    _, exp = tf1_fixtures
    src = porter.open(exp["frozen"]["path"])
    assert src.format == "tf1-frozen"
    consts = exp["frozen"]["consts"]
    for name, value in consts.items():
        ours = src.tensors[name].numpy() if name in src.tensors else \
            src.graph.nodes[name]["attrs"]["value"]
        assert _same(np.asarray(ours), value), name
    assert {"half", "bf", "fill", "c1/w", "fc/kernel"} <= set(src.tensors)
    assert all(src.tensors[k].kind == "constant" for k in src.tensors)
    _check_graph(src.graph, exp["frozen"]["graph"])
    assert src.graph.nodes["bn/FusedBatchNorm"]["attrs"]["epsilon"] == np.float32(0.0123)
    edge = src.graph.edges["c1/conv", "bn/FusedBatchNorm"]
    assert edge["tensor"] == "c1/conv:0"


# ------------------------------------------------------------------------------ corruptions

def _copy_checkpoint(prefix: str, dest: Path) -> Path:
    for f in Path(prefix).parent.glob(Path(prefix).name + ".*"):
        shutil.copy(f, dest / f.name)
    return dest / Path(prefix).name


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_truncated_index(tf1_fixtures, tmp_path):
    _, exp = tf1_fixtures
    prefix = _copy_checkpoint(exp["mixed"]["prefix"], tmp_path)
    index = Path(f"{prefix}.index")
    data = index.read_bytes()
    for cut in (len(data) - 10, 30):
        index.write_bytes(data[:cut])
        with pytest.raises(FormatError) as exc:
            porter.open(prefix)
        assert "index" in _one_line(exc)


def test_corrupt_index_block(tf1_fixtures, tmp_path):
    _, exp = tf1_fixtures
    prefix = _copy_checkpoint(exp["mixed"]["prefix"], tmp_path)
    index = Path(f"{prefix}.index")
    data = bytearray(index.read_bytes())
    data[20] ^= 0x40
    index.write_bytes(bytes(data))
    with pytest.raises(FormatError) as exc:
        porter.open(prefix)
    assert "CRC32C" in _one_line(exc)


def test_missing_shard_and_crc_mismatch(tf1_fixtures, tmp_path):
    _, exp = tf1_fixtures
    prefix = _copy_checkpoint(exp["mixed"]["prefix"], tmp_path)
    reader = BundleReader(prefix)
    entry = reader.entries["dtypes/big"]
    shard = Path(f"{prefix}.data-00000-of-00001")
    data = bytearray(shard.read_bytes())
    data[entry.offset + 12345] ^= 1
    shard.write_bytes(bytes(data))
    src = porter.open(prefix)
    with pytest.raises(FormatError) as exc:
        src.tensors["dtypes/big"].numpy()
    assert "CRC32C mismatch" in _one_line(exc) and "dtypes/big" in str(exc.value)
    np.testing.assert_array_equal(src.tensors["dtypes/f64"].numpy(),
                                  exp["mixed"]["tensors"]["dtypes/f64"])
    shard.unlink()
    # the open source decodes from the bytes it read once at import, never the path again
    np.testing.assert_array_equal(src.tensors["dtypes/f64"].numpy(),
                                  exp["mixed"]["tensors"]["dtypes/f64"])
    with pytest.raises(FormatError) as exc:  # a fresh open says the shard is missing
        porter.open(prefix)
    assert "data shard missing" in _one_line(exc)


# ------------------------------------------------------------- CRC32C, snappy, compressed table

def test_crc32c_known_values():
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value
    assert crc32c(b"\0" * 32) == 0x8A9136AA  # RFC 3720 test vector
    big = np.random.default_rng(0).integers(0, 256, 1_000_003, dtype=np.uint8).tobytes()
    assert crc32c(big) == crc32c(big[700_000:], crc32c(big[:700_000]))
    assert crc32c(big) != crc32c(big[:-1] + b"\0")


def _snappy_compress(data: bytes) -> bytes:
    """A small greedy snappy encoder (literals, 2-byte-offset copies, overlapping allowed)."""

    def varint(n: int) -> bytes:
        out = bytearray()
        while n >= 0x80:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        return bytes(out + bytes([n]))

    def literal(chunk: bytes) -> bytes:
        n = len(chunk) - 1
        if n < 60:
            return bytes([n << 2]) + chunk
        return bytes([61 << 2]) + n.to_bytes(2, "little") + chunk

    out, lit, i, table = bytearray(varint(len(data))), bytearray(), 0, {}
    while i < len(data):
        key = data[i:i + 4]
        j = table.get(key)
        table[key] = i
        if j is not None and len(key) == 4 and i - j < 65536:
            length = 4
            while i + length < len(data) and length < 64 and data[j + length] == data[i + length]:
                length += 1
            if lit:
                out += literal(bytes(lit))
                lit.clear()
            out += bytes([(length - 1) << 2 | 2]) + (i - j).to_bytes(2, "little")
            i += length
        else:
            lit.append(data[i])
            i += 1
    if lit:
        out += literal(bytes(lit))
    return bytes(out)


def test_snappy_decoder_round_trip():
    rng = np.random.default_rng(3)
    data = (b"abc" * 50 + rng.integers(0, 256, 300, dtype=np.uint8).tobytes()
            + b"\0" * 200 + b"tensor/name/Momentum" * 9)
    packed = _snappy_compress(data)
    assert len(packed) < len(data)
    assert snappy_decompress(packed) == data
    # copy with a 1-byte offset (tag 01) repeating a 2-byte pattern: "ab" * 5
    assert snappy_decompress(bytes([10, 1 << 2, 97, 98, 0b001 | (4 << 2), 2])) == b"ab" * 5
    with pytest.raises(FormatError):
        snappy_decompress(bytes([10, 0b001, 9]))


def _write_table(entries: list[tuple[bytes, bytes]], compress: bool) -> bytes:
    """An SSTable as TF writes it: prefix-compressed block, index block, footer, trailers."""

    def varint(n: int) -> bytes:
        out = bytearray()
        while n >= 0x80:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        return bytes(out + bytes([n]))

    def block(items: list[tuple[bytes, bytes]]) -> bytes:
        body, prev, restarts = bytearray(), b"", []
        for i, (k, v) in enumerate(items):
            shared = 0
            if i % 4:
                while shared < min(len(k), len(prev)) and k[shared] == prev[shared]:
                    shared += 1
            else:
                restarts.append(len(body))
            body += varint(shared) + varint(len(k) - shared) + varint(len(v)) + k[shared:] + v
            prev = k
        for r in restarts:
            body += r.to_bytes(4, "little")
        return bytes(body + len(restarts).to_bytes(4, "little"))

    def emit(out: bytearray, contents: bytes, kind: int) -> bytes:
        handle = varint(len(out)) + varint(len(contents))
        trailer = bytes([kind])
        out += contents + trailer + mask_crc(crc32c(contents + trailer)).to_bytes(4, "little")
        return handle

    out = bytearray()
    raw = block(entries)
    data_handle = emit(out, _snappy_compress(raw) if compress else raw, 1 if compress else 0)
    meta_handle = emit(out, block([]), 0)
    index_handle = emit(out, block([(entries[-1][0], data_handle)]), 0)
    footer = (meta_handle + index_handle).ljust(40, b"\0") + (0xDB4775248B80FB57).to_bytes(
        8, "little")
    return bytes(out + footer)


def test_snappy_compressed_index(tf1_fixtures, tmp_path):
    _, exp = tf1_fixtures
    prefix = _copy_checkpoint(exp["mixed"]["prefix"], tmp_path)
    entries = [(k, bytes(v)) for k, v in read_table(f"{prefix}.index")]
    packed = _write_table(entries, compress=True)
    assert len(packed) < len(_write_table(entries, compress=False))
    Path(f"{prefix}.index").write_bytes(packed)
    src = porter.open(prefix)
    assert _check_all(src, exp["mixed"]["tensors"]) == 24
