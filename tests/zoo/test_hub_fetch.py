"""Hub-only models (BEN2): the catalog names ModelScope and the Hugging Face mirror; with the
hubs unreachable, fetching fails with one clear line and downloads nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from porter.zoo.catalog import load_catalog

ROOT = Path(__file__).resolve().parents[2]


def test_ben2_catalog_entries():
    cat = load_catalog()
    for name, file in (("ben2_base", "BEN2_Base.pth"), ("ben2_base_safetensors", "model.safetensors")):
        entry = cat[name]
        assert entry["graph"] == "ben2" and entry["file"] == file
        hubs = [(h["hub"], h["repo"], h["file"]) for h in entry["source"]["hubs"]]
        assert hubs == [("modelscope", "PramaLLC/BEN2", file), ("huggingface", "PramaLLC/BEN2", file)]


def test_fetch_unreachable_hubs_is_one_line(tmp_path):
    env = {**os.environ, "PORTER_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", "from porter.cli.main import entry; entry()",
                           "fetch", "ben2_base"], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)
    assert proc.returncode != 0
    err = proc.stderr.strip().splitlines()
    assert err[-1].startswith("porter: error: ben2_base: could not fetch BEN2_Base.pth from any hub")
    assert "modelscope PramaLLC/BEN2" in err[-1] and "huggingface PramaLLC/BEN2" in err[-1]
    assert not any("Traceback" in line for line in err)
    assert not list((tmp_path / "cache").rglob("BEN2_Base.pth"))
