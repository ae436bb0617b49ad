"""Hostile TF1 checkpoints and graphs (issue 10, cases 6, 7 and 9), written without TensorFlow
by :mod:`tests.security.tfwire`: each is a one-line porter error, fast, under a 2 GiB cap."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from porter.importers.tf_bundle import crc32c, mask_crc
from tests.security import tfwire
from tests.security.conftest import assert_one_line_error, open_all, porter_cli

W = np.arange(6, dtype="<f4").tobytes()


def _good(prefix: Path) -> None:
    tfwire.write_bundle(prefix, [("w", tfwire.entry((2, 3), 0, len(W), mask_crc(crc32c(W))))], W)


def test_checkpoint_state_file_cannot_point_outside(arena) -> None:
    """Case 6: ``model_checkpoint_path`` absolute or ``../..`` opened another checkpoint."""
    model, cwd = arena
    other = cwd / "elsewhere"
    other.mkdir()
    _good(other / "secret.ckpt")
    for target in (str(other / "secret.ckpt"), "../cwd/elsewhere/secret.ckpt"):
        (model / "checkpoint").write_text(f'model_checkpoint_path: "{target}"\n')
        assert_one_line_error(open_all(model, cwd), "unknown format")  # nothing to open here
    # the folder's own checkpoint is still found, whatever the state file names
    _good(model / "mine.ckpt")
    proc = open_all(model, cwd)
    assert proc.returncode == 0 and '"tensors": 1' in proc.stdout, proc.stderr[-2000:]


def test_a_billion_shards_is_refused(arena) -> None:
    """Case 7: ``num_shards=1e9`` built a billion paths."""
    model, cwd = arena
    tfwire.write_bundle(model / "m", [("w", tfwire.entry((2, 3), 0, len(W),
                                                         mask_crc(crc32c(W))))], W,
                        num_shards=10 ** 9)
    t0 = time.monotonic()
    assert_one_line_error(open_all(model / "m", cwd, timeout=60), "PORTER_MAX_TF_SHARDS")
    assert time.monotonic() - t0 < 30


def test_repeated_block_handle_is_refused(arena) -> None:
    """Case 7: one data-block handle repeated 20,000 times (30 s for 240 KB before)."""
    model, cwd = arena
    items = [(b"", tfwire.header())] + [(f"v{i:05d}".encode(), tfwire.entry(
        (2, 3), 0, len(W), mask_crc(crc32c(W)))) for i in range(200)]
    tfwire.write_index(model / "m.index", items, repeat_handle=20_000)
    (model / "m.data-00000-of-00001").write_bytes(W)
    t0 = time.monotonic()
    assert_one_line_error(open_all(model / "m", cwd, timeout=60), "overlaps or repeats")
    assert time.monotonic() - t0 < 30


def test_snappy_block_claiming_gigabytes_is_refused(arena) -> None:
    """Case 7: a compressed index block whose header claims 4 GB, expanded byte by byte."""
    model, cwd = arena
    # varint size 4e9, one literal byte, then copies of it (offset 1, length 64) repeated
    snappy = tfwire.varint(4_000_000_000) + b"\x00a" + b"\xfe\x01\x00" * 20_000
    tfwire.write_index(model / "m.index", [], compressed=snappy)
    (model / "m.data-00000-of-00001").write_bytes(W)
    t0 = time.monotonic()
    assert_one_line_error(open_all(model / "m", cwd, timeout=60), "snappy")
    assert time.monotonic() - t0 < 30


def test_negative_offset_and_oversize_entries_are_format_errors(arena) -> None:
    """Case 9: a negative TF offset raised a raw OSError/ValueError; a size past the shard
    would have been allocated before the read."""
    model, cwd = arena
    for offset, size, match in ((-8, len(W), "outside"), (0, 1 << 40, "outside"),
                                (0, 8, "bytes for shape")):
        tfwire.write_bundle(model / "m", [("w", tfwire.entry((2, 3), offset, size, 0))], W)
        assert_one_line_error(open_all(model / "m", cwd), match)


def _graph(nodes: list[bytes]) -> bytes:
    return b"".join(tfwire.field(1, n) for n in nodes)


def _node(name: str, op: str, attrs: dict[str, bytes]) -> bytes:
    out = tfwire.field(1, name.encode()) + tfwire.field(2, op.encode())
    for k, v in attrs.items():
        out += tfwire.field(5, tfwire.field(1, k.encode()) + tfwire.field(2, v))
    return out


def test_filled_tensor_attribute_is_not_decoded_at_inspect(arena) -> None:
    """Case 7: a node attribute holding a fill-encoded [6e8] tensor (one value) took 2.35 GB
    in ``porter inspect``; tensor attributes are now described, weights stay lazy."""
    model, cwd = arena
    shape = tfwire.field(2, tfwire.field(1, 600_000_000))
    tensor = tfwire.field(1, 1) + tfwire.field(2, shape) + tfwire.field(5, b"\x00\x00\x80\x3f")
    attr = tfwire.field(8, tensor)
    dtype = tfwire.field(6, 1)
    path = model / "g.pb"
    path.write_bytes(_graph([_node("x", "Placeholder", {"dtype": dtype, "fill": attr}),
                             _node("y", "Identity", {"T": dtype})]))
    proc = porter_cli("inspect", str(path), cwd=cwd, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_varint_where_a_message_belongs(arena) -> None:
    """Case 9: a 4-byte .pb whose node attribute entry is a number, not a message."""
    model, cwd = arena
    path = model / "g.pb"
    path.write_bytes(b"\x0a\x02\x28\x01")
    assert_one_line_error(open_all(path, cwd), "message belongs")


def test_number_where_a_name_belongs_is_not_allocated(arena) -> None:
    """Fuzzer find: a node name written as the varint 10**12 was turned into bytes(10**12)."""
    model, cwd = arena
    path = model / "g.pb"
    node = tfwire.varint(1 << 3) + tfwire.varint(10 ** 12) + tfwire.field(2, b"Placeholder")
    path.write_bytes(tfwire.field(1, node))
    assert_one_line_error(open_all(path, cwd), "number where text")
