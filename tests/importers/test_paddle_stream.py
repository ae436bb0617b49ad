"""Big Paddle inference models stream: the ``.pdiparams`` is opened once and mapped, not read
into memory, so a conversion holds about one copy of the weights, not the file plus a copy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from conversion_rss import conversion_rss  # noqa: E402

_BUILD = r"""
import sys, numpy as np, paddle
folder, width, depth = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
paddle.seed(0)
layers = []
for _ in range(depth):
    layers += [paddle.nn.Linear(width, width), paddle.nn.ReLU()]
net = paddle.nn.Sequential(*layers)
net.eval()
spec = [paddle.static.InputSpec([None, width], "float32", "x")]
paddle.jit.save(net, folder + "/inference", input_spec=spec)
print(sum(int(np.prod(p.shape)) * 4 for p in net.parameters()))
"""



def _build(folder: Path, width: int, depth: int) -> int:
    folder.mkdir(parents=True)
    proc = subprocess.run([sys.executable, "-c", _BUILD, str(folder), str(width), str(depth)],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        pytest.skip(f"paddle could not build the model: {proc.stderr.strip()[-300:]}")
    return int(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_paddle_conversion_holds_about_one_copy_of_the_weights(tmp_path) -> None:
    pytest.importorskip("paddle")
    from safetensors import safe_open

    nbytes = _build(tmp_path / "big", 1792, 4)  # about 49 MiB of float32 weights
    _build(tmp_path / "tiny", 8, 1)
    out = tmp_path / "out"
    r = conversion_rss(tmp_path / "big", out, tmp_path / "tiny", tmp_path / "tiny-out",
                       timeout=600)
    net = r["peak"] - r["base"]
    # the file read into memory plus the converted copy would be >= 2x; porter holds ~1x
    assert net <= 1.5 * nbytes, f"peak RSS grew by {net / nbytes:.2f}x the weights"
    with safe_open(str(out / "model.safetensors"), framework="np") as f:
        total = sum(f.get_tensor(k).nbytes for k in f.keys())
    assert total == nbytes
