"""Files porter finds beside a model (TF data shards, Paddle ``.pdiparams``) are refused when a
symlink or a hard link makes them a file outside the model's folder (issue 10, "what to build"
item 4)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from porter.importers.tf_bundle import crc32c, mask_crc
from tests.security import tfwire
from tests.security.conftest import assert_one_line_error, open_all

SECRET = np.arange(6, dtype="<f4").tobytes()


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_tf_shard_linked_outside(arena, link: str) -> None:
    model, cwd = arena
    (cwd / "secret").write_bytes(SECRET)
    tfwire.write_bundle(model / "m", [("w", tfwire.entry((2, 3), 0, len(SECRET),
                                                         mask_crc(crc32c(SECRET))))], b"")
    shard = model / "m.data-00000-of-00001"
    shard.unlink()
    (os.symlink if link == "symlink" else os.link)(cwd / "secret", shard)
    line = assert_one_line_error(open_all(model / "m", cwd), "data shard")
    assert "outside" in line or "hard link" in line


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_paddle_params_linked_outside(arena, link: str) -> None:
    model, cwd = arena
    (cwd / "secret").write_bytes(SECRET)
    (model / "inference.pdmodel").write_bytes(b"\x0a\x00")
    (os.symlink if link == "symlink" else os.link)(cwd / "secret", model / "inference.pdiparams")
    line = assert_one_line_error(open_all(model / "inference.pdmodel", cwd), "parameter file")
    assert "outside" in line or "hard link" in line
