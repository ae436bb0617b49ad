"""Benchmark the write step (``write_output``) and ``publish`` against safetensors' save_file.

    .venv/bin/python scripts/bench_write.py [--runs 5] [--models modnet,ben2-size,many-small]

For each model, in one process and alternating so machine noise hits all alike:

- peer: ``safetensors.torch.save_file`` of the module's state dict plus ``json.dump`` of the
  manifest (what the bytes cost);
- peer + sha256: the same plus hashing the written file (the manifest carries that digest);
- porter write: ``porter.pipeline.write_output`` (staged folder, model.safetensors, manifest,
  config.json, README.md, swap into place);
- porter publish: ``porter.zoo.publish.publish`` of that output into a fresh zoo.

Prints the medians and each ratio against the peer. The kinds take turns going first and each
result is removed at once, so all write into page cache in the same state. Models: ``modnet``
(the real MODNet ONNX converted by porter, 6.5M parameters, 215 tensors), ``ben2-size``
(94M float32 parameters in 535 tensors, BEN2's size), ``many-small`` (20000 tensors of
16-256 values). Files go to a temporary folder on local disk and are removed.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
MODNET = ROOT.parent / "shared" / "models" / "modnet_photographic_portrait_matting.onnx"


class Bag(nn.Module):
    """A module that only holds parameters (the write step never runs the model)."""

    def __init__(self, sizes: list[int], seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.p = nn.ParameterList(nn.Parameter(torch.randn(n, generator=g), requires_grad=False)
                                  for n in sizes)


def _modnet():
    from porter.pipeline import convert

    res = convert(MODNET, verify="none", out=None)
    return res.module, res.manifest


def _synthetic(sizes: list[int], template: dict) -> tuple[nn.Module, dict]:
    manifest = copy.deepcopy(template)
    manifest["graph"] = {"class": "porter.graphs.bench:Bag", "kwargs": {}, "port": "bench"}
    return Bag(sizes), manifest


def _ben2_sizes() -> list[int]:
    # 535 tensors, 94.1M values: 60 large matrices and many small biases/norms, as in BEN2
    big = [1_500_000] * 60
    small = [((i * 37) % 1024) + 64 for i in range(475)]
    rest = 94_134_658 - sum(big) - sum(small)
    return big[:-1] + [big[-1] + rest] + small


def _peer(folder: Path, module: nn.Module, manifest: dict, digest: bool) -> None:
    from safetensors.torch import save_file

    folder.mkdir()
    state = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"),
              metadata={"format": "pt", "porter_graph": manifest["graph"]["class"]})
    m = dict(manifest)
    if digest:
        h = hashlib.sha256()
        with open(folder / "model.safetensors", "rb") as fh:
            while block := fh.read(8 << 20):
                h.update(block)
        m["weights"] = {"sha256": h.hexdigest()}
    (folder / "manifest.json").write_text(json.dumps(m, indent=2, default=str) + "\n")


def bench(name: str, module: nn.Module, manifest: dict, runs: int, tmp: Path) -> dict:
    from porter.pipeline import write_output
    from porter.zoo.publish import publish

    times: dict[str, list[float]] = {"peer": [], "peer+sha256": [], "write": [], "publish": []}
    nbytes = sum(v.numel() * v.element_size() for v in module.state_dict().values())
    source = tmp / "publish-source"  # what publish copies from, written once
    write_output(source, module, copy.deepcopy(manifest))
    kinds = list(times)
    for r in range(runs):
        # rotate the order and remove each result at once: every kind then writes into page
        # cache freed a moment ago (on a fresh VM, never-touched memory costs far more)
        for kind in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:
            folder = tmp / f"{kind}-{r}"
            t = time.perf_counter()
            if kind == "publish":
                publish(source, name, root=folder)
            elif kind == "write":
                write_output(folder, module, copy.deepcopy(manifest))
            else:
                _peer(folder, module, manifest, kind == "peer+sha256")
            times[kind].append(time.perf_counter() - t)
            shutil.rmtree(folder)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"model": name, "tensors": len(module.state_dict()), "MiB": nbytes / 2**20,
            **{f"{k}_s": v for k, v in med.items()},
            "write/peer": med["write"] / med["peer"],
            "write/peer+sha256": med["write"] / med["peer+sha256"],
            "publish/peer": med["publish"] / med["peer"],
            "publish/peer+sha256": med["publish"] / med["peer+sha256"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--models", default="modnet,ben2-size,many-small")
    args = ap.parse_args()
    torch.set_num_threads(1)
    module, manifest = _modnet()
    models = {"modnet": lambda: (module, manifest),
              "ben2-size": lambda: _synthetic(_ben2_sizes(), manifest),
              "many-small": lambda: _synthetic([16 + (i * 7) % 241 for i in range(20000)],
                                               manifest)}
    print(f"{'model':<11} {'tensors':>7} {'MiB':>7} {'peer':>7} {'+sha256':>7} {'write':>7} "
          f"{'publish':>7}  write/peer (/+sha)  publish/peer (/+sha)")
    for name in args.models.split(","):
        mod, man = models[name]()
        with tempfile.TemporaryDirectory(dir="/tmp", prefix="porter-bench-write-") as tmp:
            r = bench(name, mod, man, args.runs, Path(tmp))
        print(f"{r['model']:<11} {r['tensors']:>7} {r['MiB']:>7.1f} {r['peer_s']:>7.3f} "
              f"{r['peer+sha256_s']:>7.3f} {r['write_s']:>7.3f} {r['publish_s']:>7.3f}  "
              f"{r['write/peer']:.2f}x ({r['write/peer+sha256']:.2f}x)        "
              f"{r['publish/peer']:.2f}x ({r['publish/peer+sha256']:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
